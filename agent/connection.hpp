// A client's end of the agent's socket: connect, send a message, wait for one, each with a
// deadline, so that a client never hangs on an agent that is gone or stuck.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <sys/types.h>

#include "core/result.hpp"
#include "protocol.hpp"

namespace gpushare::agent {

class AgentConnection {
 public:
  static Result<AgentConnection> connect(const std::string& socket_path);
  AgentConnection(AgentConnection&& other) noexcept;
  AgentConnection& operator=(AgentConnection&&) = delete;
  AgentConnection(const AgentConnection&) = delete;
  ~AgentConnection();

  // `fd`: a descriptor to pass with the message (SCM_RIGHTS), -1 for none.
  Status send(const Message& message, std::chrono::milliseconds timeout, int fd = -1);
  // The next message from the agent; an Error when none arrives in time, the agent closed the
  // connection, or its bytes do not decode.
  Result<Message> receive(std::chrono::milliseconds timeout);
  // The oldest descriptor the agent passed (SCM_RIGHTS) that nobody has taken yet, or -1. The
  // caller owns it. A descriptor arrives with the first bytes of its message, so once that message
  // has been received it is here.
  int take_passed_fd();
  int fd() const { return fd_; }

 private:
  explicit AgentConnection(int fd) : fd_(fd) {}
  ssize_t receive_some(char* buffer, std::size_t size);
  int fd_ = -1;
  std::string input_;
  std::vector<int> passed_fds_;
};

}  // namespace gpushare::agent
