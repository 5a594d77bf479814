// The agent's connection loop: one thread, one epoll set, non-blocking sockets. It accepts
// clients, reads the kernel's word on who they are, decodes their messages and answers them.
//
// Every exchange is bounded so that no client can stall the loop or the others:
//   - bytes that cannot begin a message (bad magic, type, length) cut the client off at once;
//   - a client that has not said Hello, or has sent part of a message, within `exchange_deadline`
//     is cut off;
//   - a client whose unsent answers exceed `max_output_bytes` (it stopped reading) is cut off;
//   - each wake-up reads a bounded amount per client, so a flood from one is served in turns.
// A closed connection means the process is gone: `on_disconnect` hears of every one, whatever the
// reason, so that what the process held can be given back.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "listen_socket.hpp"
#include "protocol.hpp"

namespace gpushare::agent {

struct ServerLimits {
  std::chrono::milliseconds exchange_deadline{2000};
  std::size_t max_output_bytes = 64 * 1024;
  std::size_t max_clients = 4096;
};

enum class DisconnectReason { kClosedByPeer, kMalformed, kStalled, kNotReading, kProtocolViolation, kRefused, kShutdown };
std::string_view disconnect_reason_text(DisconnectReason reason);

// An answer to a request, and descriptors to pass with it (SCM_RIGHTS, at most kMaxPassedFds). The
// server passes duplicates: the hook keeps its own.
inline constexpr std::size_t kMaxPassedFds = 4;
struct Outgoing {
  Message message;
  std::vector<int> fds;
};

struct ServerHooks {
  // One line for the log: a connection or a cut-off.
  std::function<void(std::string_view line)> log_info;
  std::function<void(const SocketPeer& peer, DisconnectReason reason)> on_disconnect;
  // Carries out an administrator's request (the caller has been checked); its text or an Error.
  std::function<Result<std::string>(const SocketPeer& peer, std::string_view command)> on_admin;
  // The tenant of a peer that said Hello, or an Error saying why it is refused (its Welcome then
  // says so and the connection closes). Unset, and for an administrator's tool (kAdministrator):
  // the peer is welcomed without a tenant.
  std::function<Result<std::string>(const SocketPeer& peer)> assign_tenant;
  // A welcomed tenant's request (Join, Rejoin, AttachGpu, Lease, LeaseTrim, Slice*), or an
  // administrator's typed request (QuotaSet, PolicyReload; the caller has been checked): the answers,
  // or an Error that is sent as kRequestFailed. Unset: such requests are answered with an Error.
  // `passed_fds`: descriptors the client passed with its messages so far (at most kMaxPassedFds); the
  // hook takes those it keeps out of the vector, the server closes the others after the call.
  std::function<Result<std::vector<Outgoing>>(const SocketPeer& peer, const Message& request,
                                              std::vector<int>& passed_fds)>
      on_request;
  // Called before every wait of the loop; returns how long the loop may sleep before the next call
  // (to the microsecond: a timerfd, not epoll's milliseconds).
  std::function<std::chrono::nanoseconds()> on_wake;
};

class Server {
 public:
  Server(ListenSocket socket, std::optional<std::uint32_t> admin_gid, ServerLimits limits, ServerHooks hooks);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Serves clients until `stop_fd` becomes readable (a signalfd, an eventfd), or an Error when the
  // loop itself fails. Clients still connected then are closed with kShutdown.
  Status run(int stop_fd);
  // Another descriptor for the loop to watch: `ready` runs when it becomes readable (a signalfd for
  // SIGHUP). REQUIRES: before run().
  void watch(int fd, std::function<void()> ready);

  std::size_t client_count() const { return clients_.size(); }
  const std::string& socket_path() const { return socket_.path(); }

 private:
  struct Client;
  using Clock = std::chrono::steady_clock;

  void accept_clients();
  void serve_readable(Client& client);
  void handle_message(Client& client, const Message& message);
  void send(Client& client, const Message& message, const std::vector<int>& fds = {});
  void flush(Client& client);
  ssize_t send_some(Client& client);
  ssize_t receive_some(Client& client, char* buffer, std::size_t size);
  void cut_off(int fd, DisconnectReason reason, std::string_view detail = {});
  void cut_off_stalled(Clock::time_point now);
  int wait_timeout_ms(Clock::time_point now) const;

  ListenSocket socket_;
  std::optional<std::uint32_t> admin_gid_;
  ServerLimits limits_;
  ServerHooks hooks_;
  int epoll_fd_ = -1;
  int timer_fd_ = -1;  // on_wake's deadline
  std::map<int, std::unique_ptr<Client>> clients_;
  std::map<int, std::function<void()>> watched_;
  std::uint64_t next_connection_id_ = 1;
};

}  // namespace gpushare::agent
