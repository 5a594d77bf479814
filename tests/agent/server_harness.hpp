// The agent's connection loop run on a thread of the test, on a socket in a fresh directory, with
// every disconnection it reports recorded so that tests can wait for one.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "server.hpp"

namespace gpushare::agent::testing {

// A fresh directory (mode 0755, so that other users can reach a socket in it), removed at the end.
class TemporaryDirectory {
 public:
  TemporaryDirectory() {
    std::string pattern = (std::filesystem::temp_directory_path() / "gpushare-agent-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr || ::chmod(pattern.c_str(), 0755) != 0) {
      throw std::runtime_error("mkdtemp");
    }
    path_ = pattern;
  }
  ~TemporaryDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class RunningServer {
 public:
  explicit RunningServer(ServerLimits limits, std::optional<std::uint32_t> admin_gid = std::nullopt)
      : socket_path_(directory_.path() + "/agent.sock") {
    auto socket = ListenSocket::create(socket_path_);
    if (!socket) throw std::runtime_error(socket.error().message);
    ServerHooks hooks;
    hooks.on_disconnect = [this](const SocketPeer&, DisconnectReason reason) {
      const std::lock_guard lock(mutex_);
      reasons_.push_back(reason);
      changed_.notify_all();
    };
    hooks.on_admin = [](const SocketPeer&, std::string_view command) -> Result<std::string> {
      if (command == "check") return std::string("granted");
      return Error{"unknown"};
    };
    server_ = std::make_unique<Server>(std::move(socket).value(), admin_gid, limits, std::move(hooks));
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread([this] { run_status_ = server_->run(stop_fd_); });
  }
  ~RunningServer() {
    const std::uint64_t one = 1;
    if (::write(stop_fd_, &one, sizeof one) != sizeof one) std::terminate();
    thread_.join();
    server_.reset();
    ::close(stop_fd_);
  }

  const std::string& socket_path() const { return socket_path_; }

  // Waits until `count` disconnections for `reason` have been reported.
  bool wait_for_disconnects(DisconnectReason reason, std::size_t count, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return disconnects_locked(reason) >= count; });
  }
  std::size_t disconnects(DisconnectReason reason) {
    const std::lock_guard lock(mutex_);
    return disconnects_locked(reason);
  }

 private:
  std::size_t disconnects_locked(DisconnectReason reason) const {
    return static_cast<std::size_t>(std::count(reasons_.begin(), reasons_.end(), reason));
  }

  TemporaryDirectory directory_;
  std::string socket_path_;
  std::unique_ptr<Server> server_;
  int stop_fd_ = -1;
  std::thread thread_;
  Status run_status_ = Ok{};
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<DisconnectReason> reasons_;
};

// A plain connected socket, for clients that misbehave on purpose; -1 on failure.
inline int raw_connect(const std::string& path, bool non_blocking = false) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  if (non_blocking) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

// True once the agent has closed `fd` (end of stream or a reset), discarding what it sent before.
inline bool closed_by_agent(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd entry{fd, POLLIN, 0};
    if (::poll(&entry, 1, static_cast<int>(left.count())) <= 0) continue;
    char chunk[4096];
    const ssize_t received = ::recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
    if (received == 0 || (received < 0 && errno == ECONNRESET)) return true;
  }
}

}  // namespace gpushare::agent::testing
