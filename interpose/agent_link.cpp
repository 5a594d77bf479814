#include "agent_link.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

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

std::optional<std::string> agent_socket_path() { return agent::agent_socket_path(); }

Result<std::unique_ptr<AgentLink>> AgentLink::connect(const std::string& socket_path, const Settings& settings) {
  if (::sysconf(_SC_PAGESIZE) != static_cast<long>(layout::kSlotPageBytes)) {
    return Error{fmt::format("the agent's isolation mode needs {}-byte memory pages", layout::kSlotPageBytes)};
  }
  auto connection = agent::AgentConnection::connect(socket_path);
  if (!connection) return connection.error();
  std::unique_ptr<AgentLink> link(new AgentLink(std::move(connection).value()));

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
  const ClosedOnExit page{link->connection_.take_passed_fd()};
  const int state_fd = link->connection_.take_passed_fd();
  if (page.fd < 0 || state_fd < 0) {
    if (state_fd >= 0) ::close(state_fd);
    return Error{"the agent passed no state or page with Joined"};
  }
  if (joined->slot >= layout::kMaxSlots || joined->tenant_index >= layout::kMaxTenants) {
    ::close(state_fd);
    return Error{"the agent named a slot or tenant out of range"};
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
  return link;
}

AgentLink::~AgentLink() = default;

Result<agent::Message> AgentLink::exchange(const agent::Message& request) {
  std::lock_guard lock(exchange_mutex_);
  if (broken_) return Error{"the link to the agent is broken"};
  auto sent = connection_.send(request, kExchangeDeadline);
  auto answer = sent ? connection_.receive(kExchangeDeadline) : Result<agent::Message>(sent.error());
  if (!answer) broken_ = true;
  return answer;
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
    std::lock_guard lock(exchange_mutex_);
    if (!broken_ && !connection_.send(agent::LeaseTrim{gpu}, kExchangeDeadline)) broken_ = true;
  }
  return Ok{};
}

MemoryView AgentLink::view(std::uint32_t gpu) const {
  if (gpu >= layout::kMaxGpus) return {};
  const auto& slot = state_->state().slots[slot_];
  const auto& ledger = state_->state().tenants[tenant_index_].ledger[gpu];
  const std::int64_t left = slot.lease_left_bytes[gpu].load(kRelaxed);
  const std::uint64_t used = ledger.used_bytes.load(kRelaxed);
  const std::uint64_t unspent = left > 0 ? static_cast<std::uint64_t>(left) : 0;
  return {ledger.limit_bytes.load(kRelaxed), used > unspent ? used - unspent : 0};
}

void AgentLink::abandon() {
  // The descriptor closes with the object, which the child never destroys: close it now, so that
  // the parent's death closes the agent's end.
  ::close(connection_.fd());
}

}  // namespace gpushare::interpose
