// What the tests of the real agent program share: waiting for its socket, running as another user.
#pragma once

#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace gpushare::agent {

// Waits for `name` to appear in `directory` (the agent renames its socket into place), by
// inotify rather than by polling the file system.
inline bool wait_for_entry(const std::string& directory, const std::string& name, std::chrono::milliseconds timeout) {
  const int watch = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (watch < 0) return false;
  ::inotify_add_watch(watch, directory.c_str(), IN_CREATE | IN_MOVED_TO);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool found = std::filesystem::exists(directory + "/" + name);  // after the watch: no event is missed
  while (!found) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd entry{watch, POLLIN, 0};
    if (::poll(&entry, 1, static_cast<int>(left.count())) <= 0) continue;
    alignas(inotify_event) char events[4096];
    const ssize_t length = ::read(watch, events, sizeof events);
    for (ssize_t offset = 0; offset < length;) {
      const auto* event = reinterpret_cast<const inotify_event*>(events + offset);
      if (event->len > 0 && name == event->name) found = true;
      offset += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
    }
  }
  ::close(watch);
  return found;
}

// A client as another Unix user, without any group of root's: setpriv execs the program.
inline const std::vector<std::string> kAsNobody = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};

}  // namespace gpushare::agent
