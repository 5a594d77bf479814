#include "http_serving.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <thread>

#include <fmt/format.h>

namespace gpushare::exporter {
namespace {

// The stop signal that arrived, or 0 when the server ended by itself first.
int wait_for_stop_signal(const sigset_t& signals, const std::atomic<bool>& server_ended) {
  const timespec poll_interval{0, 100'000'000};
  while (!server_ended) {
    const int signal = sigtimedwait(&signals, nullptr, &poll_interval);
    if (signal > 0) return signal;
  }
  return 0;
}

}  // namespace

sigset_t stop_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

int bind_or_say_why(httplib::Server& server, const ListenAddress& address, std::string_view program,
                    std::string_view listen) {
  errno = 0;
  const int port = address.port == 0 ? server.bind_to_any_port(address.host)
                                     : (server.bind_to_port(address.host, address.port) ? address.port : -1);
  if (port <= 0) {
    fmt::print(stderr, "{}: cannot listen on {}: {}\n", program, listen,
               errno != 0 ? std::strerror(errno) : "the host is not an address of this machine");
    return -1;
  }
  return port;
}

int serve_until_stopped(httplib::Server& server, const sigset_t& signals, std::string_view program,
                        std::string_view listen) {
  std::atomic<bool> server_ended{false};
  bool served = false;
  std::thread serving([&] {
    served = server.listen_after_bind();
    server_ended = true;
  });
  const int signal = wait_for_stop_signal(signals, server_ended);
  if (signal != 0) {
    // stop() acts only on a running server: a signal that came before listen_after_bind started
    // must wait for it rather than be lost.
    while (!server.is_running() && !server_ended) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    server.stop();
  }
  serving.join();
  if (signal == 0 && !served) {
    fmt::print(stderr, "{}: the server on {} stopped accepting connections\n", program, listen);
    return 1;
  }
  return 0;
}

}  // namespace gpushare::exporter
