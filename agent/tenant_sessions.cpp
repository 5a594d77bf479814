#include "tenant_sessions.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "core/administration.hpp"
#include "core/size.hpp"
#include "core/tenant_name.hpp"
#include "lower_only.hpp"

namespace gpushare::agent {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

// What a process asked for in its own settings, in the form lower_only reads.
Settings wishes_of(const Join& join) {
  Settings wished = default_settings();
  if (join.share_pct != 0) wished.compute.share_pct = join.share_pct;
  if (join.limit_pct != 0) wished.compute.limit_pct = join.limit_pct;
  if (join.priority != kNoPriorityWish) wished.compute.priority = static_cast<Priority>(join.priority);
  return wished;
}

std::vector<Outgoing> answer(Message message) { return {Outgoing{std::move(message), {}}}; }

// Marks a slot's lease and ledger bytes as moving (ProcessSlot::lease_seq odd) for its lifetime.
// Nested moves of one slot count once.
class LeaseMove {
 public:
  explicit LeaseMove(layout::ProcessSlot& slot) : seq_(slot.lease_seq) {
    outer_ = (seq_.load(std::memory_order_relaxed) & 1) == 0;
    if (outer_) seq_.fetch_add(1, std::memory_order_acq_rel);
  }
  ~LeaseMove() {
    if (outer_) seq_.fetch_add(1, std::memory_order_release);
  }
  LeaseMove(const LeaseMove&) = delete;
  LeaseMove& operator=(const LeaseMove&) = delete;

 private:
  std::atomic<std::uint32_t>& seq_;
  bool outer_ = false;
};

}  // namespace

struct TenantSessions::Session {
  SocketPeer peer;
  std::optional<Assignment> assignment;
  std::optional<PodOrigin> pod;
  std::unique_ptr<TenantMembership> membership;
  int page_fd = -1;
  void* page = nullptr;  // the slot's owner page in the agent's view, once the private page is mapped there
  std::uint32_t attached = 0;  // bit g: GPU record g attached
  std::string log_name;
  std::array<std::uint32_t, layout::kMaxGpus> ordinal{};  // the process's device ordinal of GPU record g
};

TenantSessions::TenantSessions(SharedState& state) : state_(state) {
  state_fd_ = ::open(state.descriptor_path().c_str(), O_RDWR | O_CLOEXEC);
  state_read_fd_ = ::open(state.descriptor_path().c_str(), O_RDONLY | O_CLOEXEC);
}

TenantSessions::~TenantSessions() {
  while (!sessions_.empty()) disconnected(sessions_.begin()->first);
  if (state_fd_ >= 0) ::close(state_fd_);
  if (state_read_fd_ >= 0) ::close(state_read_fd_);
}

Status TenantSessions::check_page_size() {
  const long page = ::sysconf(_SC_PAGESIZE);
  if (page != static_cast<long>(layout::kSlotPageBytes)) {
    return Error{fmt::format("isolation mode needs {}-byte memory pages; this system uses {}", layout::kSlotPageBytes,
                             page)};
  }
  return Ok{};
}

void TenantSessions::assigned(const SocketPeer& peer, Assignment assignment, std::optional<PodOrigin> pod) {
  auto& session = sessions_[peer.connection_id];
  if (!session) session = std::make_unique<Session>();
  session->peer = peer;
  session->pod = std::move(pod);
  session->log_name = fmt::format("pid {} (tenant {})", peer.credentials.pid, assignment.tenant);
  session->assignment = std::move(assignment);
}

Result<std::vector<Outgoing>> TenantSessions::handle(const SocketPeer& peer, const Message& request,
                                                     std::vector<int>& passed_fds) {
  const auto found = sessions_.find(peer.connection_id);
  if (found == sessions_.end() || !found->second->assignment) return Error{"no tenant was assigned to this process"};
  Session& session = *found->second;
  if (const auto* join_request = std::get_if<Join>(&request)) return join(peer, session, *join_request);
  if (const auto* rejoin_request = std::get_if<Rejoin>(&request)) {
    return rejoin(peer, session, *rejoin_request, passed_fds);
  }
  if (!session.membership) return Error{"Join first"};
  if (const auto* attach_request = std::get_if<AttachGpu>(&request)) return attach(session, *attach_request);
  if (const auto* lease_request = std::get_if<Lease>(&request)) return lease(session, *lease_request);
  if (const auto* trim_request = std::get_if<LeaseTrim>(&request)) {
    trim(session, trim_request->gpu);
    return std::vector<Outgoing>{};
  }
  return Error{fmt::format("unexpected {}", message_type_name(message_type(request)))};
}

Result<std::vector<Outgoing>> TenantSessions::join(const SocketPeer& peer, Session& session, const Join& request) {
  if (session.membership) return Error{"this process has joined already"};
  const Assignment& assignment = *session.assignment;
  auto membership = TenantMembership::join(state_, assignment.tenant);
  if (!membership) return membership.error();
  session.membership = std::move(membership).value();
  const std::uint32_t slot = session.membership->slot_index();
  live_slots_.set(slot);
  state_.state().slots[slot].pid.store(static_cast<std::uint64_t>(peer.credentials.pid), kRelaxed);
  if (auto mapped = map_page(session); !mapped) {
    live_slots_.reset(slot);
    session.membership.reset();
    return mapped.error();
  }
  const LoweredLimits lowered = lower_only(assignment.limits, wishes_of(request));
  for (const auto& line : lowered.ignored) fmt::print(stderr, "gpushare-agent: info: {}: {}\n", session.log_name, line);
  auto policy = session.membership->adopt_compute_policy(lowered.effective.compute);
  if (!policy) return policy.error();
  Joined joined{slot, session.membership->tenant_index(), assignment.tenant, policy->share_pct, policy->limit_pct,
                static_cast<std::uint8_t>(policy->priority)};
  return std::vector<Outgoing>{Outgoing{joined, {session.page_fd, state_read_fd_}}};
}

Result<std::vector<Outgoing>> TenantSessions::rejoin(const SocketPeer& peer, Session& session, const Rejoin& request,
                                                     std::vector<int>& passed_fds) {
  if (session.membership) return Error{"this process has joined already"};
  layout::StateLayout& state = state_.state();
  const std::uint32_t slot = request.slot;
  if (slot >= layout::kMaxSlots || request.tenant_index >= layout::kMaxTenants) return Error{"slot or tenant out of range"};
  const layout::ProcessSlot& record = state.slots[slot];
  // The slot must be this process's: its pid (as the kernel told the previous agent) and tenant.
  if (record.state.load(std::memory_order_acquire) != layout::kInUse ||
      record.pid.load(kRelaxed) != static_cast<std::uint64_t>(peer.credentials.pid) ||
      record.tenant_index.load(kRelaxed) != request.tenant_index ||
      tenant_name_of(state.tenants[request.tenant_index]) != session.assignment->tenant) {
    return Error{fmt::format("slot {} is not this process's", slot)};
  }
  if (passed_fds.empty()) return Error{"Rejoin came without the process's page"};
  const int page = passed_fds.front();
  struct stat info {};
  const int seals = ::fcntl(page, F_GET_SEALS);
  if (::fstat(page, &info) != 0 || info.st_size != static_cast<off_t>(layout::kSlotPageBytes) || seals < 0 ||
      (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
    return Error{"the page passed with Rejoin is not a sealed one-page memfd"};
  }
  if (recovery_ == nullptr || !recovery_->release_for_adoption(slot)) {
    return Error{fmt::format("slot {} is not waiting for its process (too late?)", slot)};
  }
  auto adopted = TenantMembership::adopt(state_, slot);
  if (!adopted) return adopted.error();
  session.membership = std::move(adopted).value();
  if (auto mapped = map_page_fd(session, page); !mapped) {
    session.membership.reset();
    return mapped.error();
  }
  passed_fds.erase(passed_fds.begin());
  live_slots_.set(slot);
  session.attached = record.gpus_attached.load(kRelaxed) & ((1u << layout::kMaxGpus) - 1);
  const auto& policy = state.tenants[request.tenant_index].compute_policy;
  Joined joined{slot,
                request.tenant_index,
                session.assignment->tenant,
                policy.share_pct.load(kRelaxed),
                policy.limit_pct.load(kRelaxed),
                static_cast<std::uint8_t>(layout::priority_class(policy.priority.load(kRelaxed)))};
  fmt::print(stderr, "gpushare-agent: info: {}: rejoined slot {}\n", session.log_name, slot);
  return std::vector<Outgoing>{Outgoing{joined, {state_read_fd_}}};
}

Result<std::vector<Outgoing>> TenantSessions::attach(Session& session, const AttachGpu& request) {
  Settings wished = default_settings();
  wished.memory_limit_bytes = request.wanted_limit_bytes;
  const LoweredLimits lowered = lower_only(session.assignment->limits, wished);
  for (const auto& line : lowered.ignored) fmt::print(stderr, "gpushare-agent: info: {}: {}\n", session.log_name, line);
  const std::uint64_t limit = lowered.effective.memory_on(static_cast<int>(request.ordinal), request.physical_bytes);
  std::array<char, layout::kGpuNameBytes> name{};
  std::memcpy(name.data(), request.name.data(), std::min(request.name.size(), name.size() - 1));
  auto attached = session.membership->attach_gpu(request.uuid, request.physical_bytes, limit, name.data());
  if (!attached) return attached.error();
  session.attached |= 1u << attached->gpu;
  session.ordinal[attached->gpu] = request.ordinal;
  return answer(GpuAttached{attached->gpu, attached->effective_limit_bytes});
}

std::uint64_t TenantSessions::take_back_lease(Session& session, std::uint32_t gpu, std::uint64_t keep) {
  auto& slot = state_.state().slots[session.membership->slot_index()];
  const LeaseMove moving(slot);
  const std::int64_t written = slot.lease_left_bytes[gpu].exchange(0, kRelaxed);
  const std::uint64_t unspent =
      std::min<std::uint64_t>(static_cast<std::uint64_t>(std::max<std::int64_t>(written, 0)),
                              slot.held_bytes[gpu].load(kRelaxed));
  const std::uint64_t kept = std::min(unspent, keep);
  if (kept > 0) slot.lease_left_bytes[gpu].fetch_add(static_cast<std::int64_t>(kept), kRelaxed);
  if (unspent > kept) (void)session.membership->release(gpu, unspent - kept);
  return unspent - kept;
}

Result<std::vector<Outgoing>> TenantSessions::lease(Session& session, const Lease& request) {
  const std::uint32_t gpu = request.gpu;
  if ((session.attached & (1u << gpu)) == 0) return Error{fmt::format("GPU record {} is not attached", gpu)};
  const auto& limit = state_.state().tenants[session.membership->tenant_index()].ledger[gpu].limit_bytes;
  const std::uint64_t chunk = lease_chunk_bytes(limit.load(kRelaxed));
  SlotLedger ledger(state_.state(), session.membership->slot_index(), session.membership->tenant_index());
  const auto granted = [&] { return LeaseReply{gpu, true}; };
  const LeaseMove moving(state_.state().slots[session.membership->slot_index()]);
  take_back_lease(session, gpu);
  // The bytes asked for and a lease beside them, else only the bytes.
  if (request.bytes <= UINT64_MAX - chunk) {
    auto with_lease = ledger.try_reserve(gpu, request.bytes + chunk);
    if (!with_lease) return with_lease.error();
    if (with_lease.value() == Reservation::kGranted) {
      state_.state().slots[session.membership->slot_index()].lease_left_bytes[gpu].fetch_add(
          static_cast<std::int64_t>(chunk), kRelaxed);
      return answer(granted());
    }
  }
  auto exact = ledger.try_reserve(gpu, request.bytes);
  if (!exact) return exact.error();
  if (exact.value() == Reservation::kGranted) return answer(granted());
  // Before refusing: the unspent leases of the tenant's other processes on this GPU.
  for (auto& [id, other] : sessions_) {
    if (other.get() != &session && other->membership && (other->attached & (1u << gpu)) != 0 &&
        other->membership->tenant_index() == session.membership->tenant_index()) {
      take_back_lease(*other, gpu);
    }
  }
  // The last try sweeps dead processes' bytes first, and counts the refusal if it stands.
  auto last = session.membership->try_reserve(gpu, request.bytes);
  if (!last) return last.error();
  return answer(LeaseReply{gpu, last.value() == Reservation::kGranted});
}

void TenantSessions::trim(Session& session, std::uint32_t gpu) {
  if ((session.attached & (1u << gpu)) == 0) return;
  const auto& limit = state_.state().tenants[session.membership->tenant_index()].ledger[gpu].limit_bytes;
  take_back_lease(session, gpu, lease_chunk_bytes(limit.load(kRelaxed)));
}

std::optional<std::uint32_t> TenantSessions::slot_of(std::uint64_t connection_id) const {
  const auto found = sessions_.find(connection_id);
  if (found == sessions_.end() || !found->second->membership) return std::nullopt;
  return found->second->membership->slot_index();
}

bool TenantSessions::slot_live(std::uint32_t slot) const {
  return slot < layout::kMaxSlots && live_slots_.test(slot);
}

void TenantSessions::disconnected(std::uint64_t connection_id) {
  const auto found = sessions_.find(connection_id);
  if (found == sessions_.end()) return;
  Session& session = *found->second;
  // Leaving returns every byte the slot holds, leases included, and the slice (the registry's hooks).
  if (session.membership) live_slots_.reset(session.membership->slot_index());
  session.membership.reset();
  unmap_page(session);
  sessions_.erase(found);
}

Status TenantSessions::map_page(Session& session) {
  if (state_fd_ < 0 || state_read_fd_ < 0) return Error{"the agent cannot reopen its state file"};
  const std::uint32_t slot = session.membership->slot_index();
  const int fd = ::memfd_create(fmt::format("gpushare-slot-{}", slot).c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return Error{fmt::format("memfd_create: {}", std::strerror(errno))};
  // Sealed at one page: the process can neither shrink it (which would SIGBUS the agent) nor grow it.
  if (::ftruncate(fd, layout::kSlotPageBytes) != 0 ||
      ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    const int error = errno;
    ::close(fd);
    return Error{fmt::format("cannot make a slot page: {}", std::strerror(error))};
  }
  if (auto mapped = map_page_fd(session, fd); !mapped) {
    ::close(fd);
    return mapped;
  }
  return Ok{};
}

Status TenantSessions::map_page_fd(Session& session, int fd) {
  void* where = &state_.state().slots[session.membership->slot_index()].compute;
  void* mapped = ::mmap(where, layout::kSlotPageBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
  if (mapped == MAP_FAILED) return Error{fmt::format("cannot map a slot page: {}", std::strerror(errno))};
  session.page_fd = fd;
  session.page = mapped;
  return Ok{};
}

void TenantSessions::unmap_page(Session& session) {
  if (session.page != nullptr) {
    // The file's own page again: a slot's next owner starts from it.
    const auto offset = static_cast<char*>(session.page) - reinterpret_cast<char*>(&state_.state());
    ::mmap(session.page, layout::kSlotPageBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, state_fd_, offset);
    session.page = nullptr;
  }
  if (session.page_fd >= 0) ::close(session.page_fd);
  session.page_fd = -1;
}

// A reloaded policy on the live sessions: a session whose identity still maps to its tenant takes
// the new limits (memory on each GPU it attached, the tenant's compute policy); one that now maps
// elsewhere keeps its tenant until it reconnects.
void TenantSessions::apply_policy(const Policy& policy, const std::function<void(std::string_view)>& log) {
  const Reassign by_policy = [&policy](const PeerIdentity& identity,
                                       const std::optional<PodOrigin>& pod) -> std::optional<Result<Assignment>> {
    if (pod) return std::nullopt;
    return assign(policy, identity);
  };
  reassign_live(by_policy, "the reloaded policy", log);
}

void TenantSessions::reassign_live(const Reassign& reassign, std::string_view source,
                                   const std::function<void(std::string_view)>& log) {
  std::map<std::string, ComputePolicyValues> compute_of;
  for (auto& [id, session] : sessions_) {
    if (!session->membership || !session->assignment) continue;
    PeerIdentity identity{session->peer.credentials.uid, session->peer.credentials.gid,
                          static_cast<pid_t>(session->peer.credentials.pid), ""};
    if (auto cgroup = read_cgroup(identity.pid)) identity.cgroup = std::move(cgroup).value();
    if (auto same = check_peer_process(session->peer); !same) {
      log(fmt::format("{}: keeps its tenant ({})", session->log_name, same.error().message));
      continue;
    }
    auto answer = reassign(identity, session->pod);
    if (!answer) continue;
    auto& now = *answer;
    if (!now || now->tenant != session->assignment->tenant) {
      log(fmt::format("{}: keeps its tenant until it reconnects ({}: {})", session->log_name, source,
                      now ? "tenant " + now->tenant : now.error().message));
      continue;
    }
    session->assignment->limits = now->limits;
    compute_of[now->tenant] = now->limits.compute;
    auto registry = lock_registry(state_.state());
    if (!registry) {
      log(fmt::format("{}: {}", session->log_name, registry.error().message));
      continue;
    }
    auto& tenant = state_.state().tenants[session->membership->tenant_index()];
    tenant.override_limit_bytes.store(layout::kNoOverride, kRelaxed);  // the new word replaces quota set's
    for (std::uint32_t gpu = 0; gpu < layout::kMaxGpus; ++gpu) {
      if ((session->attached & (1u << gpu)) == 0) continue;
      const std::uint64_t limit = now->limits.memory_on(static_cast<int>(session->ordinal[gpu]),
                                                        state_.state().gpus[gpu].physical_bytes.load(kRelaxed));
      tenant.ledger[gpu].limit_bytes.store(limit, kRelaxed);
    }
  }
  for (const auto& [tenant, compute] : compute_of) {
    const ComputePolicyChange change{compute.share_pct, compute.limit_pct, compute.priority};
    if (auto set = set_tenant_compute_policy(state_, tenant, change); !set) log(set.error().message);
    log(fmt::format("tenant {}: limits of {} applied", tenant, source));
  }
}

std::vector<std::pair<pid_t, std::uint32_t>> TenantSessions::joined_processes() const {
  std::vector<std::pair<pid_t, std::uint32_t>> joined;
  for (const auto& [id, session] : sessions_) {
    if (session->membership) {
      joined.emplace_back(static_cast<pid_t>(session->peer.credentials.pid), session->membership->slot_index());
    }
  }
  return joined;
}

std::map<std::string, std::vector<PodOrigin>> TenantSessions::joined_pods() const {
  std::map<std::string, std::vector<PodOrigin>> pods;
  for (const auto& [id, session] : sessions_) {
    if (session->membership && session->assignment && session->pod) {
      pods[session->assignment->tenant].push_back(*session->pod);
    }
  }
  return pods;
}

}  // namespace gpushare::agent
