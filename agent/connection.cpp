#include "connection.hpp"

#include "fd_passing.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

namespace gpushare::agent {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kMaxHeldFds = 16;  // passed and not yet taken: more are closed

// Waits for `events` on fd until `deadline`; false when the time is up or poll fails.
bool wait_for(int fd, short events, Clock::time_point deadline) {
  while (true) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd entry{fd, events, 0};
    const int ready = ::poll(&entry, 1, static_cast<int>(left.count()));
    if (ready > 0) return true;
    if (ready < 0 && errno != EINTR) return false;
  }
}

}  // namespace

Result<AgentConnection> AgentConnection::connect(const std::string& socket_path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof(address.sun_path)) {
    return Error{fmt::format("bad agent socket path '{}'", socket_path)};
  }
  std::memcpy(address.sun_path, socket_path.c_str(), socket_path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error{fmt::format("socket: {}", std::strerror(errno))};
  // A Unix stream connect completes at once or fails (EAGAIN: the agent's backlog is full).
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    const int error = errno;
    ::close(fd);
    return Error{fmt::format("cannot connect to the agent at {}: {}", socket_path, std::strerror(error))};
  }
  return AgentConnection(fd);
}

AgentConnection::AgentConnection(AgentConnection&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), input_(std::move(other.input_)), passed_fds_(std::move(other.passed_fds_)) {}

AgentConnection::~AgentConnection() {
  if (fd_ >= 0) ::close(fd_);
  for (const int passed : passed_fds_) ::close(passed);
}

int AgentConnection::take_passed_fd() {
  if (passed_fds_.empty()) return -1;
  const int fd = passed_fds_.front();
  passed_fds_.erase(passed_fds_.begin());
  return fd;
}

ssize_t AgentConnection::receive_some(char* buffer, std::size_t size) {
  return receive_with_fds(fd_, buffer, size, 0, passed_fds_, kMaxHeldFds);
}

Status AgentConnection::send(const Message& message, std::chrono::milliseconds timeout, int fd) {
  const std::string bytes = encode(message);
  const auto deadline = Clock::now() + timeout;
  std::size_t done = 0;
  while (done < bytes.size()) {
    // A descriptor goes with the first byte of the message.
    const std::span<const int> fds = fd >= 0 && done == 0 ? std::span<const int>(&fd, 1) : std::span<const int>();
    const ssize_t sent = send_with_fds(fd_, bytes.data() + done, bytes.size() - done, fds, 0);
    if (sent >= 0) {
      done += static_cast<std::size_t>(sent);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_for(fd_, POLLOUT, deadline)) return Error{"the agent is not reading (send timed out)"};
    } else if (errno != EINTR) {
      return Error{fmt::format("send to the agent: {}", std::strerror(errno))};
    }
  }
  return Ok{};
}

Result<Message> AgentConnection::receive(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    auto frame = decode_frame(input_);
    if (!frame) return frame.error();
    if (*frame) {
      input_.erase(0, (*frame)->consumed_bytes);
      return std::move((*frame)->message);
    }
    char chunk[4096];
    const ssize_t received = receive_some(chunk, sizeof chunk);
    if (received > 0) {
      input_.append(chunk, static_cast<std::size_t>(received));
    } else if (received == 0) {
      return Error{"the agent closed the connection"};
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_for(fd_, POLLIN, deadline)) return Error{"no answer from the agent in time"};
    } else if (errno != EINTR) {
      return Error{fmt::format("receive from the agent: {}", std::strerror(errno))};
    }
  }
}

}  // namespace gpushare::agent
