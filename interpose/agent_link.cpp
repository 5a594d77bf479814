#include "agent_link.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "log.hpp"

namespace gpushare::interpose {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
constexpr std::chrono::milliseconds kExchangeDeadline{2000};

template <typename Expected>
Result<Expected> expect(Result<agent::Message> answer) {
  if (!answer) return answer.error();
  if (auto* typed = std::get_if<Expected>(&answer.value())) return std::move(*typed);
  if (auto* error = std::get_if<agent::ErrorMessage>(&answer.value())) return Error{"the agent: " + error->text};
  return Error{fmt::format("the agent answered with {}",
                           agent::message_type_name(agent::message_type(answer.value())))};
}

// Closes a descriptor the caller did not keep.
struct ClosedOnExit {
  int fd;
  ~ClosedOnExit() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace


Result<std::unique_ptr<AgentLink>> AgentLink::connect(const std::string& socket_path, const Settings& settings) {
  if (::sysconf(_SC_PAGESIZE) != static_cast<long>(layout::kSlotPageBytes)) {
    return Error{fmt::format("the agent's isolation mode needs {}-byte memory pages", layout::kSlotPageBytes)};
  }
  auto connection = agent::AgentConnection::connect(socket_path);
  if (!connection) return connection.error();
  std::unique_ptr<AgentLink> link(
      new AgentLink(std::make_unique<agent::AgentConnection>(std::move(connection).value())));
  link->socket_path_ = socket_path;

  auto welcome = expect<agent::Welcome>(link->exchange(agent::Hello{agent::ClientKind::kTenant}));
  if (!welcome) return welcome.error();
  if (!welcome->accepted) return Error{fmt::format("the agent at {} refuses this process: {}", socket_path,
                                                   welcome->tenant_or_refusal)};
  agent::Join join;
  join.share_pct = settings.compute.share_pct;
  join.limit_pct = settings.compute.limit_pct;
  if (settings.compute.priority != default_compute_policy().priority) {
    join.priority = static_cast<std::uint8_t>(settings.compute.priority);
  }
  auto joined = expect<agent::Joined>(link->exchange(join));
  if (!joined) return joined.error();
  const ClosedOnExit page{link->connection_->take_passed_fd()};
  const int state_fd = link->connection_->take_passed_fd();
  if (page.fd < 0 || state_fd < 0) {
    if (state_fd >= 0) ::close(state_fd);
    return Error{"the agent passed no state or page with Joined"};
  }
  if (joined->slot >= layout::kMaxSlots || joined->tenant_index >= layout::kMaxTenants) {
    ::close(state_fd);
    return Error{"the agent named a slot or tenant out of range"};
  }
  struct stat state_info {};
  if (::fstat(state_fd, &state_info) == 0) {
    link->state_device_ = state_info.st_dev;
    link->state_inode_ = state_info.st_ino;
  }
  auto state = SharedState::open_descriptor(state_fd, socket_path + " (the agent's state)");
  if (!state) return state.error();
  link->state_ = std::move(state).value();
  link->slot_ = joined->slot;
  link->tenant_index_ = joined->tenant_index;
  link->tenant_ = joined->tenant;
  link->compute_ = default_compute_policy();
  link->compute_.share_pct = joined->share_pct;
  link->compute_.limit_pct = joined->limit_pct;
  link->compute_.priority = static_cast<Priority>(joined->priority);
  struct stat info {};
  if (::fstat(page.fd, &info) != 0 || info.st_size != static_cast<off_t>(layout::kSlotPageBytes)) {
    return Error{"the agent passed a page of the wrong size"};
  }
  void* where = &link->state_->state().slots[link->slot_].compute;
  if (::mmap(where, layout::kSlotPageBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, page.fd, 0) ==
      MAP_FAILED) {
    return Error{fmt::format("cannot map this process's page: {}", std::strerror(errno))};
  }
  link->page_fd_ = ::fcntl(page.fd, F_DUPFD_CLOEXEC, 0);
  // Never joined: the link lives as long as the process (the tenancy is never destroyed).
  std::thread([raw = link.get()] { raw->watch(); }).detach();
  return link;
}

void AgentLink::mark_broken() {
  if (!broken_.exchange(true, kRelaxed)) {
    log(LogLevel::kWarn, "lost the agent at {}: running on this process's lease; allocations beyond it follow "
        "GPUSHARE_ON_ERROR and launches are not gated until it is back", socket_path_);
  }
}

void AgentLink::watch() {
  for (;;) {
    if (!broken_.load(kRelaxed)) {
      pollfd entry{connection_->fd(), POLLRDHUP, 0};
      if (::poll(&entry, 1, 1000) > 0 && (entry.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0) {
        std::lock_guard lock(exchange_mutex_);
        mark_broken();
      }
      continue;
    }
    ::usleep(100'000);
    switch (rejoin()) {
      case Rejoined::kYes: log(LogLevel::kInfo, "rejoined the agent at {} (slot {})", socket_path_, slot_); break;
      case Rejoined::kNotYet: break;
      case Rejoined::kNever: return;  // said why; the process goes on without the agent
    }
  }
}

AgentLink::Rejoined AgentLink::rejoin() {
  auto connected = agent::AgentConnection::connect(socket_path_);
  if (!connected) return Rejoined::kNotYet;  // no agent listening yet
  auto connection = std::make_unique<agent::AgentConnection>(std::move(connected).value());
  const auto ask = [&](const agent::Message& message, int fd = -1) -> Result<agent::Message> {
    if (auto sent = connection->send(message, kExchangeDeadline, fd); !sent) return sent.error();
    return connection->receive(kExchangeDeadline);
  };
  auto welcome = expect<agent::Welcome>(ask(agent::Hello{agent::ClientKind::kTenant}));
  if (!welcome) return Rejoined::kNotYet;  // starting, or busy: the next try
  auto joined = welcome->accepted ? expect<agent::Joined>(ask(agent::Rejoin{slot_, tenant_index_}, page_fd_))
                                  : Result<agent::Joined>(Error{welcome->tenant_or_refusal});
  if (!joined) {
    log(LogLevel::kWarn, "the agent at {} does not take this process back ({}): it goes on without the agent",
        socket_path_, joined.error().message);
    return Rejoined::kNever;
  }
  const ClosedOnExit state{connection->take_passed_fd()};
  struct stat info {};
  if (joined->slot != slot_ || state.fd < 0 || ::fstat(state.fd, &info) != 0 || info.st_dev != state_device_ ||
      info.st_ino != state_inode_) {
    log(LogLevel::kWarn, "the agent at {} serves another state file: this process goes on without it", socket_path_);
    return Rejoined::kNever;
  }
  std::lock_guard lock(exchange_mutex_);
  connection_ = std::move(connection);
  broken_.store(false, kRelaxed);
  return Rejoined::kYes;
}

AgentLink::~AgentLink() = default;

Result<agent::Message> AgentLink::exchange(const agent::Message& request) {
  std::lock_guard lock(exchange_mutex_);
  if (broken_.load(kRelaxed)) return Error{"the agent is not reachable"};
  auto sent = connection_->send(request, kExchangeDeadline);
  auto answer = sent ? connection_->receive(kExchangeDeadline) : Result<agent::Message>(sent.error());
  if (!answer) mark_broken();
  return answer;
}

void AgentLink::notify(const agent::Message& message) {
  std::lock_guard lock(exchange_mutex_);
  if (!broken_.load(kRelaxed) && !connection_->send(message, kExchangeDeadline)) mark_broken();
}

Result<TenantMembership::Attached> AgentLink::attach_gpu(const GpuUuid& uuid, int ordinal, std::uint64_t physical_bytes,
                                                         std::uint64_t wanted_limit_bytes, std::string_view name) {
  agent::AttachGpu request;
  request.uuid = uuid;
  request.ordinal = static_cast<std::uint32_t>(ordinal);
  request.physical_bytes = physical_bytes;
  request.wanted_limit_bytes = wanted_limit_bytes;
  request.name = std::string(name);
  auto attached = expect<agent::GpuAttached>(exchange(request));
  if (!attached) return attached.error();
  TenantMembership::Attached result;
  result.gpu = attached->gpu;
  result.effective_limit_bytes = attached->limit_bytes;
  result.limit_differs = attached->limit_bytes != wanted_limit_bytes;
  return result;
}

Result<Reservation> AgentLink::try_reserve(std::uint32_t gpu, std::uint64_t bytes) {
  if (gpu >= layout::kMaxGpus) return Error{"GPU index out of range"};
  auto& left = lease_left(gpu);
  if (bytes <= static_cast<std::uint64_t>(INT64_MAX)) {
    const auto wanted = static_cast<std::int64_t>(bytes);
    std::int64_t have = left.load(kRelaxed);
    while (have >= wanted) {
      if (left.compare_exchange_weak(have, have - wanted, kRelaxed)) return Reservation::kGranted;
    }
  }
  auto reply = expect<agent::LeaseReply>(exchange(agent::Lease{gpu, bytes}));
  if (!reply) return reply.error();
  return reply->granted ? Reservation::kGranted : Reservation::kOverQuota;
}

Status AgentLink::release(std::uint32_t gpu, std::uint64_t bytes) {
  if (gpu >= layout::kMaxGpus) return Error{"GPU index out of range"};
  const auto returned = static_cast<std::int64_t>(std::min<std::uint64_t>(bytes, INT64_MAX));
  const std::int64_t now_left = lease_left(gpu).fetch_add(returned, kRelaxed) + returned;
  const auto limit = state_->state().tenants[tenant_index_].ledger[gpu].limit_bytes.load(kRelaxed);
  if (now_left > 0 && static_cast<std::uint64_t>(now_left) > 2 * agent::lease_chunk_bytes(limit)) {
    notify(agent::LeaseTrim{gpu});
  }
  return Ok{};
}

MemoryView AgentLink::view(std::uint32_t gpu) const {
  if (gpu >= layout::kMaxGpus) return {};
  const auto& slot = state_->state().slots[slot_];
  const auto& ledger = state_->state().tenants[tenant_index_].ledger[gpu];
  // The agent may be moving this process's unspent lease back into the ledger: read both between
  // two equal, even values of lease_seq (a few tries; the move takes microseconds).
  std::int64_t left = 0;
  std::uint64_t used = 0;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const std::uint32_t before = slot.lease_seq.load(std::memory_order_acquire);
    left = slot.lease_left_bytes[gpu].load(std::memory_order_acquire);
    used = ledger.used_bytes.load(std::memory_order_acquire);
    if ((before & 1) == 0 && slot.lease_seq.load(std::memory_order_acquire) == before) break;
  }
  const std::uint64_t unspent = left > 0 ? static_cast<std::uint64_t>(left) : 0;
  return {ledger.limit_bytes.load(kRelaxed), used > unspent ? used - unspent : 0};
}

void AgentLink::abandon() {
  // The descriptor closes with the object, which the child never destroys: close it now, so that
  // the parent's death closes the agent's end.
  ::close(connection_->fd());
  if (page_fd_ >= 0) ::close(page_fd_);
}

}  // namespace gpushare::interpose
