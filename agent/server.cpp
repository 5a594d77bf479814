#include "server.hpp"

#include "fd_passing.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace gpushare::agent {

namespace {
constexpr std::size_t kReadChunkBytes = 4096;
constexpr int kReadsPerWakeup = 8;  // per client and wake-up: a flooding client is served in turns
constexpr int kEventsPerWait = 64;

std::string describe(const SocketPeer& peer) {
  return fmt::format("pid {} uid {} gid {}", peer.credentials.pid, peer.credentials.uid, peer.credentials.gid);
}
}  // namespace

std::string_view disconnect_reason_text(DisconnectReason reason) {
  switch (reason) {
    case DisconnectReason::kClosedByPeer: return "closed by the client";
    case DisconnectReason::kMalformed: return "cut off: malformed message";
    case DisconnectReason::kStalled: return "cut off: no complete message within the deadline";
    case DisconnectReason::kNotReading: return "cut off: not reading its answers";
    case DisconnectReason::kProtocolViolation: return "cut off: protocol violation";
    case DisconnectReason::kRefused: return "closed: refused by the policy";
    case DisconnectReason::kShutdown: return "closed: the agent is stopping";
  }
  return "closed";
}

struct Server::Client {
  int fd = -1;
  SocketPeer peer;
  std::string input;
  std::string output;
  // Descriptors to pass, each group with the offset in `output` of the first byte of its message.
  std::vector<std::pair<std::size_t, std::vector<int>>> output_fds;
  std::vector<int> input_fds;  // passed by the client, not yet used by a request
  Clock::time_point connected_at;
  std::optional<Clock::time_point> partial_since;  // part of a message has arrived since then
  std::optional<Clock::time_point> closing_since;  // an answer is being flushed before closing
  DisconnectReason closing_reason = DisconnectReason::kProtocolViolation;
  bool welcomed = false;
  bool watching_output = false;  // EPOLLOUT registered
  // Set while the client is being served; the loop closes it once nothing refers to it.
  std::optional<std::pair<DisconnectReason, std::string>> doom;

  // When the exchange under way began: what the deadline counts from.
  std::optional<Clock::time_point> exchange_started() const {
    if (closing_since) return closing_since;
    if (!welcomed) return connected_at;
    return partial_since;
  }
};

Server::Server(ListenSocket socket, std::optional<std::uint32_t> admin_gid, ServerLimits limits, ServerHooks hooks)
    : socket_(std::move(socket)), admin_gid_(admin_gid), limits_(limits), hooks_(std::move(hooks)) {}

Server::~Server() {
  while (!clients_.empty()) cut_off(clients_.begin()->first, DisconnectReason::kShutdown);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  if (timer_fd_ >= 0) ::close(timer_fd_);
}

void Server::watch(int fd, std::function<void()> ready) { watched_[fd] = std::move(ready); }

Status Server::run(int stop_fd) {
  if (epoll_fd_ < 0) epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return Error{fmt::format("epoll_create1: {}", std::strerror(errno))};
  if (timer_fd_ < 0) timer_fd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  if (timer_fd_ < 0) return Error{fmt::format("timerfd_create: {}", std::strerror(errno))};
  std::vector<int> listened{socket_.fd(), stop_fd, timer_fd_};
  for (const auto& [fd, ready] : watched_) listened.push_back(fd);
  for (const int fd : listened) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0 && errno != EEXIST) {
      return Error{fmt::format("epoll_ctl: {}", std::strerror(errno))};
    }
  }
  std::array<epoll_event, kEventsPerWait> events{};
  bool stopping = false;
  while (!stopping) {
    cut_off_stalled(Clock::now());
    const int timeout = wait_timeout_ms(Clock::now());
    if (hooks_.on_wake) {
      // A zero it_value disarms the timer: the shortest wait is a nanosecond.
      const std::int64_t wanted = std::max<std::int64_t>(1, hooks_.on_wake().count());
      itimerspec when{};
      when.it_value.tv_sec = static_cast<time_t>(wanted / 1'000'000'000);
      when.it_value.tv_nsec = static_cast<long>(wanted % 1'000'000'000);
      ::timerfd_settime(timer_fd_, 0, &when, nullptr);
    }
    const int ready = ::epoll_wait(epoll_fd_, events.data(), kEventsPerWait, timeout);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return Error{fmt::format("epoll_wait: {}", std::strerror(errno))};
    }
    for (int i = 0; i < ready; ++i) {
      const int fd = events[i].data.fd;
      if (fd == stop_fd) {
        stopping = true;
        continue;
      }
      if (fd == socket_.fd()) {
        accept_clients();
        continue;
      }
      if (fd == timer_fd_) {
        std::uint64_t expirations = 0;
        [[maybe_unused]] const ssize_t read = ::read(timer_fd_, &expirations, sizeof expirations);
        continue;  // on_wake runs before the next wait
      }
      if (const auto watched = watched_.find(fd); watched != watched_.end()) {
        watched->second();
        continue;
      }
      const auto found = clients_.find(fd);
      if (found == clients_.end()) continue;  // closed earlier in this batch
      Client& client = *found->second;
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) serve_readable(client);
      if ((events[i].events & EPOLLOUT) && !client.doom) flush(client);
      if (client.doom) cut_off(fd, client.doom->first, client.doom->second);
    }
  }
  while (!clients_.empty()) cut_off(clients_.begin()->first, DisconnectReason::kShutdown);
  return Ok{};
}

void Server::accept_clients() {
  while (true) {
    const int fd = ::accept4(socket_.fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && hooks_.log_info) hooks_.log_info(fmt::format("accept: {}", std::strerror(errno)));
      return;
    }
    auto peer = read_socket_peer(fd);
    if (!peer || clients_.size() >= limits_.max_clients) {
      if (hooks_.log_info) {
        hooks_.log_info(peer ? fmt::format("refused {}: {} clients already", describe(*peer), clients_.size())
                             : fmt::format("refused a client: {}", peer.error().message));
      }
      ::close(fd);
      continue;
    }
    epoll_event event{};
    event.events = EPOLLIN | EPOLLRDHUP;
    event.data.fd = fd;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) {
      ::close(fd);
      continue;
    }
    auto client = std::make_unique<Client>();
    client->fd = fd;
    client->peer = std::move(peer).value();
    client->peer.connection_id = next_connection_id_++;
    client->connected_at = Clock::now();
    if (hooks_.log_info) hooks_.log_info(fmt::format("connected: {}", describe(client->peer)));
    clients_[fd] = std::move(client);
  }
}

void Server::serve_readable(Client& client) {
  for (int round = 0; round < kReadsPerWakeup && !client.doom; ++round) {
    char chunk[kReadChunkBytes];
    const ssize_t received = receive_some(client, chunk, sizeof chunk);
    if (received == 0) {
      client.doom = {DisconnectReason::kClosedByPeer, ""};
      return;
    }
    if (received < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) client.doom = {DisconnectReason::kClosedByPeer, std::strerror(errno)};
      return;
    }
    if (client.closing_since) continue;  // the answer is final: what follows is not read
    client.input.append(chunk, static_cast<std::size_t>(received));
    // Complete messages are taken from the front; what is left is less than one message.
    while (!client.doom && !client.closing_since) {
      auto frame = decode_frame(client.input);
      if (!frame) {
        client.doom = {DisconnectReason::kMalformed, frame.error().message};
        return;
      }
      if (!*frame) break;
      client.input.erase(0, (*frame)->consumed_bytes);
      handle_message(client, (*frame)->message);
    }
    if (client.input.empty()) {
      client.partial_since.reset();
    } else if (!client.partial_since) {
      client.partial_since = Clock::now();
    }
  }
}

// recv that also keeps what descriptors the client passes, a few at most (the rest are closed).
ssize_t Server::receive_some(Client& client, char* buffer, std::size_t size) {
  return receive_with_fds(client.fd, buffer, size, MSG_DONTWAIT, client.input_fds, kMaxPassedFds);
}

void Server::handle_message(Client& client, const Message& message) {
  // The client gets what was sent to it, then the connection closes (within the deadline).
  const auto close_after_answer = [&](DisconnectReason reason) {
    if (!client.closing_since) client.closing_since = Clock::now();
    client.closing_reason = reason;
    if (client.output.empty() && !client.doom) client.doom = {client.closing_reason, "after its answer"};
  };
  const auto refuse_and_close = [&](ErrorCode code, std::string text) {
    send(client, ErrorMessage{code, std::move(text)});
    close_after_answer(DisconnectReason::kProtocolViolation);
  };
  if (const auto* hello = std::get_if<Hello>(&message)) {
    if (client.welcomed) return refuse_and_close(ErrorCode::kNotWelcomed, "Hello was already said");
    if (hello->protocol_version != kProtocolVersion) {
      return refuse_and_close(ErrorCode::kUnsupportedVersion,
                              fmt::format("protocol version {} is not supported (this agent speaks {})",
                                          hello->protocol_version, kProtocolVersion));
    }
    client.welcomed = true;
    Welcome welcome{true, "", client.peer.credentials};
    if (hooks_.assign_tenant && hello->kind != ClientKind::kAdministrator) {
      auto tenant = hooks_.assign_tenant(client.peer);
      welcome.accepted = tenant.ok();
      welcome.tenant_or_refusal = tenant ? std::move(tenant).value() : tenant.error().message;
    }
    const bool refused = !welcome.accepted;
    send(client, std::move(welcome));
    if (refused) close_after_answer(DisconnectReason::kRefused);
    return;
  }
  if (!client.welcomed) return refuse_and_close(ErrorCode::kNotWelcomed, "the first message must be Hello");
  if (const auto* ping = std::get_if<Ping>(&message)) return send(client, Pong{ping->nonce});
  const MessageType type = message_type(message);
  if (is_admin_message(type) && !is_administrator(client.peer, admin_gid_)) {
    return send(client, ErrorMessage{ErrorCode::kPermissionDenied,
                                     fmt::format("permission denied: uid {} is neither root nor in the admin group",
                                                 client.peer.credentials.uid)});
  }
  if (const auto* request = std::get_if<AdminRequest>(&message)) {
    if (!hooks_.on_admin) return send(client, ErrorMessage{ErrorCode::kRequestFailed, "no admin requests are served"});
    auto reply = hooks_.on_admin(client.peer, request->command);
    if (!reply) return send(client, ErrorMessage{ErrorCode::kRequestFailed, reply.error().message});
    return send(client, AdminReply{std::move(reply).value()});
  }
  // The typed admin requests (checked above) go to on_request like a tenant's.
  if (type == MessageType::kJoin || type == MessageType::kAttachGpu || type == MessageType::kLease ||
      type == MessageType::kLeaseTrim || type == MessageType::kSliceWanted || type == MessageType::kSliceDone ||
      type == MessageType::kSliceRenew || type == MessageType::kRejoin ||
      is_admin_message(type)) {
    if (!hooks_.on_request) return send(client, ErrorMessage{ErrorCode::kRequestFailed, "no tenants are served"});
    auto answers = hooks_.on_request(client.peer, message, client.input_fds);
    for (const int unused : client.input_fds) ::close(unused);
    client.input_fds.clear();
    if (!answers) return send(client, ErrorMessage{ErrorCode::kRequestFailed, answers.error().message});
    for (const Outgoing& answer : answers.value()) send(client, answer.message, answer.fds);
    return;
  }
  // Welcome, Pong, Error, AdminReply, Joined, GpuAttached and LeaseReply only travel from the agent.
  client.doom = {DisconnectReason::kProtocolViolation,
                 fmt::format("a {} message from a client", message_type_name(message_type(message)))};
}

void Server::send(Client& client, const Message& message, const std::vector<int>& fds) {
  const std::string bytes = encode(message);
  if (client.output.size() + bytes.size() > limits_.max_output_bytes) {
    client.doom = {DisconnectReason::kNotReading, fmt::format("{} bytes unsent", client.output.size())};
    return;
  }
  if (!fds.empty()) {
    std::vector<int> copies;
    for (const int fd : std::span(fds).first(std::min(fds.size(), kMaxPassedFds))) {
      const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (copy < 0) {
        for (const int made : copies) ::close(made);
        client.doom = {DisconnectReason::kShutdown, fmt::format("cannot pass a descriptor: {}", std::strerror(errno))};
        return;
      }
      copies.push_back(copy);
    }
    client.output_fds.emplace_back(client.output.size(), std::move(copies));
  }
  client.output += bytes;
  flush(client);
}

// Sends from the front of the output; a descriptor goes with the first byte of its message, and no
// call carries two (each stops short of the next descriptor's message).
ssize_t Server::send_some(Client& client) {
  std::size_t length = client.output.size();
  const bool passes_fd = !client.output_fds.empty() && client.output_fds.front().first == 0;
  if (client.output_fds.size() > (passes_fd ? 1u : 0u)) length = client.output_fds[passes_fd ? 1 : 0].first;
  const std::span<const int> fds =
      passes_fd ? std::span<const int>(client.output_fds.front().second) : std::span<const int>();
  const ssize_t sent = send_with_fds(client.fd, client.output.data(), length, fds, MSG_DONTWAIT);
  if (sent <= 0) return sent;
  if (passes_fd) {
    for (const int passed : client.output_fds.front().second) ::close(passed);
    client.output_fds.erase(client.output_fds.begin());
  }
  for (auto& [offset, fd] : client.output_fds) offset -= static_cast<std::size_t>(sent);
  return sent;
}

void Server::flush(Client& client) {
  while (!client.output.empty()) {
    const ssize_t sent = send_some(client);
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        client.doom = {DisconnectReason::kClosedByPeer, std::strerror(errno)};
        return;
      }
      break;
    }
    client.output.erase(0, static_cast<std::size_t>(sent));
  }
  const bool want_output = !client.output.empty();
  if (want_output != client.watching_output) {
    epoll_event event{};
    event.events = EPOLLIN | EPOLLRDHUP | (want_output ? EPOLLOUT : 0u);
    event.data.fd = client.fd;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, client.fd, &event) == 0) client.watching_output = want_output;
  }
  if (!want_output && client.closing_since && !client.doom) client.doom = {client.closing_reason, "after an Error"};
}

void Server::cut_off(int fd, DisconnectReason reason, std::string_view detail) {
  const auto found = clients_.find(fd);
  if (found == clients_.end()) return;
  const std::unique_ptr<Client> client = std::move(found->second);
  clients_.erase(found);
  for (const auto& [offset, passed] : client->output_fds) {
    for (const int passed_fd : passed) ::close(passed_fd);
  }
  for (const int passed_fd : client->input_fds) ::close(passed_fd);
  if (epoll_fd_ >= 0) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  ::close(fd);
  if (hooks_.log_info) {
    hooks_.log_info(fmt::format("{}: {}{}{}", describe(client->peer), disconnect_reason_text(reason),
                                detail.empty() ? "" : " — ", detail));
  }
  if (hooks_.on_disconnect) hooks_.on_disconnect(client->peer, reason);
}

void Server::cut_off_stalled(Clock::time_point now) {
  std::vector<int> stalled;
  for (const auto& [fd, client] : clients_) {
    const auto started = client->exchange_started();
    if (started && now - *started >= limits_.exchange_deadline) stalled.push_back(fd);
  }
  for (const int fd : stalled) {
    cut_off(fd, DisconnectReason::kStalled, fmt::format("{} ms", limits_.exchange_deadline.count()));
  }
}

int Server::wait_timeout_ms(Clock::time_point now) const {
  std::optional<Clock::duration> soonest;
  for (const auto& [fd, client] : clients_) {
    const auto started = client->exchange_started();
    if (!started) continue;
    const Clock::duration left = std::max(Clock::duration::zero(), *started + limits_.exchange_deadline - now);
    if (!soonest || left < *soonest) soonest = left;
  }
  if (!soonest) return -1;
  return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(*soonest).count());
}

}  // namespace gpushare::agent
