#include "core/ledger.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>

#include <fmt/format.h>

#include "core/arbiter.hpp"
#include "core/platform.hpp"
#include "core/size.hpp"

namespace gpushare {
using layout::kFree;
using layout::kInUse;
using layout::kMaxGpus;
using layout::kMaxSlots;
using layout::kMaxTenants;
using layout::kReclaiming;
using layout::StateLayout;

namespace {

constexpr auto kAcquire = std::memory_order_acquire;
constexpr auto kRelease = std::memory_order_release;
constexpr auto kRelaxed = std::memory_order_relaxed;

// Rebuilds every tenant's used_bytes on one GPU from the slots' held_bytes (the invariant
// used == sum of held over the tenant's slots). Called by whoever inherits a ledger mutex from a
// holder that died inside the critical section (it may have updated one side and not the
// other), and by every sweep: numbers written into the file by anyone else heal there. Returns
// whether any tenant's figure changed. REQUIRES: the GPU's ledger mutex held.
bool rebuild_gpu_ledger(StateLayout& state, std::uint32_t gpu) {
  std::array<std::uint64_t, kMaxTenants> sums{};
  for (const auto& slot : state.slots) {
    const std::uint32_t tenant = slot.tenant_index.load(kRelaxed);
    if (slot.state.load(kAcquire) == kFree || tenant >= kMaxTenants) continue;
    const std::uint64_t held = slot.held_bytes[gpu].load(kRelaxed);
    sums[tenant] = held > UINT64_MAX - sums[tenant] ? UINT64_MAX : sums[tenant] + held;
  }
  bool changed = false;
  for (std::uint32_t t = 0; t < kMaxTenants; ++t) {
    if (state.tenants[t].ledger[gpu].used_bytes.exchange(sums[t], kRelaxed) != sums[t]) changed = true;
  }
  return changed;
}

// The count of a GPU's waiters is only a hint (ComputeGate::release_if_wanted), moved by each mark
// without a lock; a process killed between a mark and its count, or a number written into the
// file, would leave it wrong for good: each sweep counts the marks again.
void recount_waiters(StateLayout& state, std::uint32_t gpu) {
  std::uint32_t marks = 0;
  for (const auto& slot : state.slots) {
    if (slot.state.load(kAcquire) != kFree && slot.compute[gpu].waiting_since_ns.load(kRelaxed) != 0) ++marks;
  }
  state.schedules[gpu].waiting.store(marks, kRelaxed);
}

// Repairs what the registry mutex guards after its holder died: a tenant record claimed but not
// yet named is freed (no slot can refer to it: the claim of a slot comes after).
void repair_registry(StateLayout& state) {
  for (auto& tenant : state.tenants) {
    if (tenant.state.load(kRelaxed) == kInUse && ::memchr(tenant.name, '\0', sizeof tenant.name) == nullptr) {
      tenant.state.store(kFree, kRelaxed);
    }
  }
}

Result<shared_mutex::Guard> lock_registry(StateLayout& state) {
  return shared_mutex::Guard::acquire(&state.registry_mutex, shared_mutex::kDefaultWait,
                                      [&] { repair_registry(state); });
}

Result<shared_mutex::Guard> lock_ledger(StateLayout& state, std::uint32_t gpu) {
  return shared_mutex::Guard::acquire(&state.gpus[gpu].ledger_mutex, shared_mutex::kDefaultWait,
                                      [&] { rebuild_gpu_ledger(state, gpu); });
}

std::uint64_t saturating_sub(std::uint64_t a, std::uint64_t b) { return a > b ? a - b : 0; }

// Who gives a slot up: its owner, leaving (charged up to now), or a sweep for an owner that is
// gone (charged up to its last observed launch, see gone_holder_used_until).
enum class SlotOwner { kLeaving, kGone };

// A slot that changes hands must not look like a waiter of any GPU, and must not keep a slice
// its old owner held: the new owner would inherit it, ungranted, with the old slice's start time.
void clear_slot_compute(StateLayout& state, layout::ProcessSlot& slot, SlotOwner owner) {
  const auto index = static_cast<std::uint32_t>(&slot - state.slots);
  for (std::uint32_t gpu = 0; gpu < kMaxGpus; ++gpu) {
    auto& schedule = state.schedules[gpu];
    if (const std::uint32_t word = schedule.holder_word.load(kAcquire);
        layout::holder_slot(word) == index) {
      auto lock = lock_schedule(state, gpu);
      if (lock && layout::holder_slot(schedule.holder_word.load(kAcquire)) == index) {
        const std::uint64_t now = monotonic_now_ns();
        end_slice(state, gpu, owner == SlotOwner::kLeaving ? now : gone_holder_used_until(schedule, now));
      } else if (!lock) {
        // The lock is not to be had (its holder is stopped): free the GPU uncharged rather than
        // let the slot's next owner inherit the slice.
        std::uint32_t seen = word;
        schedule.holder_word.compare_exchange_strong(seen, 0, std::memory_order_acq_rel);
      }
      wake_waiters(state, gpu);
    }
    take_waiting_mark(state.schedules[gpu], slot.compute[gpu]);
    for (auto& lane : slot.compute[gpu].activity) lane.store(0, kRelaxed);
    slot.compute[gpu].depends_on_others.store(0, kRelaxed);
    slot.compute[gpu].threads_waiting.store(0, kRelaxed);
  }
  slot.fenced.store(0, kRelaxed);
  slot.gpus_attached.store(0, kRelaxed);
}

// Moves every byte a slot holds back out of its tenant's ledger. REQUIRES: the caller owns the
// slot (its own, or a dead one it has locked and marked kReclaiming).
std::uint64_t return_slot_bytes(StateLayout& state, layout::ProcessSlot& slot) {
  std::uint64_t total = 0;
  const std::uint32_t tenant = slot.tenant_index;
  for (std::uint32_t gpu = 0; gpu < kMaxGpus; ++gpu) {
    if (slot.held_bytes[gpu].load(kRelaxed) == 0) continue;
    auto lock = lock_ledger(state, gpu);
    if (!lock) continue;  // cannot happen with a valid robust mutex; leave the bytes rather than guess
    const std::uint64_t bytes = slot.held_bytes[gpu].exchange(0, kRelaxed);
    if (tenant < kMaxTenants) {
      auto& used = state.tenants[tenant].ledger[gpu].used_bytes;
      used.store(saturating_sub(used.load(kRelaxed), bytes), kRelaxed);
    }
    total += bytes;
  }
  return total;
}

// Everything a slot holds goes back: its bytes to its tenant's ledger, its slices and waits to the
// arbiter. Returns the bytes. REQUIRES: as return_slot_bytes.
std::uint64_t empty_slot(StateLayout& state, layout::ProcessSlot& slot, SlotOwner owner) {
  const std::uint64_t bytes = return_slot_bytes(state, slot);
  clear_slot_compute(state, slot, owner);
  return bytes;
}

bool tenant_name_equals(const layout::TenantRecord& tenant, std::string_view name) {
  const char* end = static_cast<const char*>(::memchr(tenant.name, '\0', sizeof tenant.name));
  return end != nullptr && std::string_view(tenant.name, static_cast<std::size_t>(end - tenant.name)) == name;
}

std::string tenant_name(const layout::TenantRecord& tenant) {
  const char* end = static_cast<const char*>(::memchr(tenant.name, '\0', sizeof tenant.name));
  return end == nullptr ? std::string() : std::string(tenant.name, static_cast<std::size_t>(end - tenant.name));
}

std::optional<std::uint32_t> find_tenant(StateLayout& state, std::string_view name) {
  for (std::uint32_t t = 0; t < kMaxTenants; ++t) {
    if (state.tenants[t].state.load(kAcquire) == kInUse && tenant_name_equals(state.tenants[t], name)) return t;
  }
  return std::nullopt;
}

// REQUIRES: registry lock held. A tenant is unused when no slot belongs to it and it holds nothing.
bool tenant_unused(const StateLayout& state, std::uint32_t t) {
  for (const auto& slot : state.slots) {
    if (slot.state.load(kAcquire) != kFree && slot.tenant_index == t) return false;
  }
  for (const auto& entry : state.tenants[t].ledger) {
    if (entry.used_bytes.load(kRelaxed) != 0) return false;
  }
  return true;
}

// A tenant's ledger and GPU time on one GPU as they start: no limit, nothing used or charged.
void clear_entry(layout::LedgerEntry& entry) {
  entry.limit_bytes.store(kUnlimited, kRelaxed);
  entry.used_bytes.store(0, kRelaxed);
  entry.peak_bytes.store(0, kRelaxed);
  entry.oom_refusals.store(0, kRelaxed);
  entry.configured.store(0, kRelaxed);
}
void clear_entry(layout::ComputeEntry& entry) {
  entry.virtual_ns.store(0, kRelaxed);
  entry.budget_ns.store(0, kRelaxed);
  entry.budget_at_ns.store(0, kRelaxed);
  entry.gpu_ns.store(0, kRelaxed);
  entry.launches.store(0, kRelaxed);
  entry.wait_ns.store(0, kRelaxed);
  entry.active.store(0, kRelaxed);
}

// REQUIRES: registry lock held, and no slot refers to tenant t.
std::uint32_t reset_tenant(StateLayout& state, std::uint32_t t, std::string_view name) {
  auto& tenant = state.tenants[t];
  std::memset(tenant.name, 0, sizeof tenant.name);
  std::memcpy(tenant.name, name.data(), name.size());
  tenant.override_limit_bytes.store(layout::kNoOverride, kRelaxed);
  tenant.created_unix_ns = unix_now_ns();
  for (auto& entry : tenant.ledger) clear_entry(entry);
  tenant.compute_configured.store(0, kRelaxed);
  for (auto& entry : tenant.compute) clear_entry(entry);
  tenant.state.store(kInUse, kRelease);
  return t;
}

// REQUIRES: registry lock held.
Result<std::uint32_t> create_tenant(StateLayout& state, std::string_view name) {
  for (std::uint32_t t = 0; t < kMaxTenants; ++t) {
    if (state.tenants[t].state.load(kAcquire) == kFree) return reset_tenant(state, t, name);
  }
  // The table is full: recycle a tenant nobody uses any more (no process, no bytes).
  for (std::uint32_t t = 0; t < kMaxTenants; ++t) {
    if (tenant_unused(state, t)) return reset_tenant(state, t, name);
  }
  return Error{fmt::format("all {} tenant records of the shared state are in use by live processes", kMaxTenants)};
}

}  // namespace

std::string format_gpu_uuid(const GpuUuid& u) {
  return fmt::format("GPU-{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                     u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                     u[15]);
}

Status validate_tenant_name(std::string_view name) {
  if (name.empty()) return Error{"tenant name is empty"};
  if (name.size() >= layout::kTenantNameBytes) {
    return Error{fmt::format("tenant name '{}' is longer than {} bytes", name, layout::kTenantNameBytes - 1)};
  }
  for (char c : name) {
    if (c <= ' ' || c >= 127) {
      return Error{fmt::format("tenant name '{}' contains a space or a non-printable character", name)};
    }
  }
  return Ok{};
}

std::string normalize_tenant_name(std::string_view name) {
  std::string out;
  bool replaced = false;
  for (char c : name) {
    const bool unprintable = c <= ' ' || c >= 127;  // signed: bytes past 127 are negative
    out += unprintable ? '_' : c;
    replaced = replaced || unprintable;
  }
  constexpr std::size_t kMax = layout::kTenantNameBytes - 1;
  if (!replaced && out.size() <= kMax) return out;
  // A hash of the whole name keeps apart names that differ only where characters were replaced
  // ("a b" and "a_b") or in what was cut; a long name keeps its tail (the distinctive part of a path).
  const auto* bytes = reinterpret_cast<const unsigned char*>(name.data());
  const std::string tag = fmt::format("~{:016x}", layout::fnv1a(bytes, name.size()));
  if (out.size() + tag.size() <= kMax) return out + tag;
  return out.substr(out.size() - (kMax - tag.size())) + tag;
}

Result<std::unique_ptr<TenantMembership>> TenantMembership::join(SharedState& shared, std::string_view name) {
  if (auto valid = validate_tenant_name(name); !valid) return valid.error();
  reclaim_dead_processes(shared);
  StateLayout& state = shared.state();
  // A description of our own for the slot's liveness lock: the SharedState's descriptor is used
  // for probing, and a probe through the same description would see our own lock as free.
  const int fd = ::open(shared.descriptor_path().c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Error{fmt::format("cannot open state file {}: {}", shared.path(), std::strerror(errno))};

  auto registry = lock_registry(state);
  if (!registry) {
    ::close(fd);
    return registry.error();
  }
  std::uint32_t tenant = 0;
  if (auto found = find_tenant(state, name); found && !tenant_unused(state, *found)) {
    tenant = *found;
  } else if (found) {
    // Nobody runs as this tenant any more and it holds nothing: a new start takes the new
    // process's limits rather than those of a run that has ended.
    tenant = reset_tenant(state, *found, name);
  } else {
    auto created = create_tenant(state, name);
    if (!created) {
      ::close(fd);
      return created.error();
    }
    tenant = created.value();
  }
  for (std::uint32_t s = 0; s < kMaxSlots; ++s) {
    auto& slot = state.slots[s];
    if (!ofd_lock::try_lock(fd, layout::kSlotLockBase + s)) continue;  // a live owner or a reclaimer
    // With the lock ours, a slot still marked busy belongs to a dead owner (or to a reclaimer that
    // died half-way): finish returning its bytes, then take it.
    if (slot.state.load(kAcquire) != kFree) {
      empty_slot(state, slot, SlotOwner::kGone);
    }
    slot.tenant_index = tenant;
    slot.pid = static_cast<std::uint64_t>(::getpid());
    slot.started_unix_ns = unix_now_ns();
    for (auto& held : slot.held_bytes) held.store(0, kRelaxed);
    slot.state.store(kInUse, kRelease);
    return std::unique_ptr<TenantMembership>(new TenantMembership(shared, fd, tenant, s));
  }
  ::close(fd);
  return Error{fmt::format("all {} process slots of the shared state are in use", kMaxSlots)};
}

TenantMembership::~TenantMembership() {
  if (!abandoned_) {
    StateLayout& state = state_.state();
    auto& slot = state.slots[slot_];
    empty_slot(state, slot, SlotOwner::kLeaving);
    slot.state.store(kFree, kRelease);
    ofd_lock::unlock(fd_, layout::kSlotLockBase + slot_);
  }
  if (fd_ >= 0) ::close(fd_);
}

void TenantMembership::abandon() {
  // Closing our copy of the descriptor drops nothing while the parent keeps its own; keeping it
  // open would keep the parent's slot "alive" for as long as this child lives.
  abandoned_ = true;
  ::close(fd_);
  fd_ = -1;
}

namespace {

std::optional<std::uint32_t> find_gpu(const StateLayout& state, const GpuUuid& uuid) {
  for (std::uint32_t g = 0; g < kMaxGpus; ++g) {
    if (state.gpus[g].state.load(kAcquire) == kInUse && std::equal(uuid.begin(), uuid.end(), state.gpus[g].uuid)) {
      return g;
    }
  }
  return std::nullopt;
}

// REQUIRES: registry lock held. Whether no process slot has GPU record g attached.
bool gpu_unattached(const StateLayout& state, std::uint32_t g) {
  for (const auto& slot : state.slots) {
    if (slot.state.load(kAcquire) != kFree && (slot.gpus_attached.load(kRelaxed) & (1u << g)) != 0) return false;
  }
  return true;
}

// Forgets everything recorded about GPU record g, so that it can describe another GPU.
// REQUIRES: registry lock held, and gpu_unattached(g) (nobody can be using the index).
void forget_gpu(StateLayout& state, std::uint32_t g) {
  for (auto& tenant : state.tenants) {
    clear_entry(tenant.ledger[g]);
    clear_entry(tenant.compute[g]);
  }
  for (auto& slot : state.slots) slot.held_bytes[g].store(0, kRelaxed);
  if (auto lock = lock_schedule(state, g)) {
    auto& schedule = state.schedules[g];
    schedule.holder_word.store(0, kRelaxed);
    schedule.waiting.store(0, kRelaxed);
    for (auto& clock : schedule.virtual_clock_ns) clock.store(0, kRelaxed);
    for (auto& granted : schedule.class_granted_ns) granted.store(0, kRelaxed);
  }
}

// REQUIRES: registry lock held. A record for the GPU: its own, a free one, or one that no live
// process uses any more (so that a long-lived file never fills up).
std::optional<std::uint32_t> record_for_gpu(StateLayout& state, const GpuUuid& uuid, std::uint64_t physical_bytes,
                                            std::string_view name) {
  if (auto found = find_gpu(state, uuid)) return found;
  std::optional<std::uint32_t> chosen;
  for (std::uint32_t g = 0; g < kMaxGpus && !chosen; ++g) {
    if (state.gpus[g].state.load(kAcquire) == kFree) chosen = g;
  }
  for (std::uint32_t g = 0; g < kMaxGpus && !chosen; ++g) {
    if (gpu_unattached(state, g)) {
      forget_gpu(state, g);
      chosen = g;
    }
  }
  if (!chosen) return std::nullopt;
  auto& record = state.gpus[*chosen];
  record.state.store(kReclaiming, kRelease);  // readers skip it while it changes
  std::copy(uuid.begin(), uuid.end(), record.uuid);
  record.physical_bytes.store(physical_bytes, kRelaxed);
  const std::size_t name_bytes = std::min(name.size(), layout::kGpuNameBytes - 1);
  std::fill(std::begin(record.name), std::end(record.name), '\0');
  std::copy_n(name.data(), name_bytes, record.name);
  record.state.store(kInUse, kRelease);
  return chosen;
}

}  // namespace

Result<TenantMembership::Attached> TenantMembership::attach_gpu(const GpuUuid& uuid, std::uint64_t physical_bytes,
                                                                std::uint64_t limit_bytes, std::string_view name) {
  StateLayout& state = state_.state();
  // Twice at most: a full table may hold records of GPUs that only dead processes used, and their
  // slots are swept (outside the registry lock) before the second try.
  for (int attempt = 0;; ++attempt) {
    auto registry = lock_registry(state);
    if (!registry) return registry.error();
    const auto gpu = record_for_gpu(state, uuid, physical_bytes, name);
    if (!gpu && attempt == 0) {
      { auto unlock = std::move(registry).value(); }
      reclaim_dead_processes(state_);
      continue;
    }
    if (!gpu) {
      return Error{fmt::format("all {} GPU records of the shared state are used by live processes", kMaxGpus)};
    }
    state.slots[slot_].gpus_attached.fetch_or(1u << *gpu, kRelaxed);
    auto& tenant = state.tenants[tenant_];
    auto& entry = tenant.ledger[*gpu];
    if (entry.configured.load(kAcquire) == 0) {
      const std::uint64_t override_limit = tenant.override_limit_bytes.load(kRelaxed);
      entry.limit_bytes.store(override_limit != layout::kNoOverride ? override_limit : limit_bytes, kRelaxed);
      entry.configured.store(1, kRelease);
    }
    Attached attached{*gpu, entry.limit_bytes.load(kRelaxed), false};
    attached.limit_differs = attached.effective_limit_bytes != limit_bytes;
    return attached;
  }
}

Result<Reservation> TenantMembership::reserve_once(std::uint32_t gpu, std::uint64_t bytes) {
  StateLayout& state = state_.state();
  auto lock = lock_ledger(state, gpu);
  if (!lock) return lock.error();
  layout::restore_own_slot(state.slots[slot_], tenant_);
  if (auto& attached = state.slots[slot_].gpus_attached; (attached.load(kRelaxed) & (1u << gpu)) == 0) {
    attached.fetch_or(1u << gpu, kRelaxed);  // written over: the record must not go to another GPU
  }
  auto& entry = state.tenants[tenant_].ledger[gpu];
  const std::uint64_t used = entry.used_bytes.load(kRelaxed);
  const std::uint64_t limit = entry.limit_bytes.load(kRelaxed);
  if (bytes > limit || used > limit - bytes) return Reservation::kOverQuota;
  entry.used_bytes.store(used + bytes, kRelaxed);
  state.slots[slot_].held_bytes[gpu].fetch_add(bytes, kRelaxed);
  if (used + bytes > entry.peak_bytes.load(kRelaxed)) entry.peak_bytes.store(used + bytes, kRelaxed);
  return Reservation::kGranted;
}

Result<Reservation> TenantMembership::try_reserve(std::uint32_t gpu, std::uint64_t bytes) {
  if (gpu >= kMaxGpus) return Error{"GPU index out of range"};
  auto first = reserve_once(gpu, bytes);
  if (!first || first.value() == Reservation::kGranted) return first;
  // Before refusing, give back what dead processes of any tenant still hold; the refusal path
  // may make system calls, the granted path never does.
  if (const ReclaimReport swept = reclaim_dead_processes(state_); swept.processes > 0 || swept.ledgers_healed > 0) {
    auto second = reserve_once(gpu, bytes);
    if (!second || second.value() == Reservation::kGranted) return second;
  }
  state_.state().tenants[tenant_].ledger[gpu].oom_refusals.fetch_add(1, kRelaxed);
  return Reservation::kOverQuota;
}

Status TenantMembership::release(std::uint32_t gpu, std::uint64_t bytes) {
  if (gpu >= kMaxGpus) return Error{"GPU index out of range"};
  StateLayout& state = state_.state();
  auto lock = lock_ledger(state, gpu);
  if (!lock) return lock.error();
  auto& held = state.slots[slot_].held_bytes[gpu];
  const std::uint64_t returned = std::min(bytes, held.load(kRelaxed));
  held.store(held.load(kRelaxed) - returned, kRelaxed);
  auto& used = state.tenants[tenant_].ledger[gpu].used_bytes;
  used.store(saturating_sub(used.load(kRelaxed), returned), kRelaxed);
  if (returned != bytes) return Error{"released more bytes than this process holds"};
  return Ok{};
}

Result<ComputePolicyValues> TenantMembership::adopt_compute_policy(const ComputePolicyValues& wanted) {
  auto registry = lock_registry(state_.state());
  if (!registry) return registry.error();
  return gpushare::adopt_compute_policy(state_.state(), tenant_, wanted);
}

MemoryView TenantMembership::view(std::uint32_t gpu) const {
  if (gpu >= kMaxGpus) return {};
  const auto& entry = state_.state().tenants[tenant_].ledger[gpu];
  return {entry.limit_bytes.load(kRelaxed), entry.used_bytes.load(kRelaxed)};
}

ReclaimReport reclaim_dead_processes(SharedState& shared) {
  StateLayout& state = shared.state();
  ReclaimReport report;
  {
    std::lock_guard probing(shared.probe_mutex());
    for (std::uint32_t s = 0; s < kMaxSlots; ++s) {
      auto& slot = state.slots[s];
      if (slot.state.load(kAcquire) == kFree) continue;
      if (!shared.try_lock_slot(s)) continue;  // its owner is alive (or another process is reclaiming it)
      // kReclaiming with the lock free: a reclaimer died half-way; returning bytes is idempotent.
      if (slot.state.load(kAcquire) != kFree) {
        slot.state.store(kReclaiming, kRelease);
        report.bytes += empty_slot(state, slot, SlotOwner::kGone);
        report.processes += 1;
        slot.state.store(kFree, kRelease);
      }
      shared.unlock_slot(s);
    }
  }
  for (std::uint32_t gpu = 0; gpu < kMaxGpus; ++gpu) {
    if (state.gpus[gpu].state.load(kAcquire) != kInUse) continue;
    if (auto lock = lock_ledger(state, gpu); lock && rebuild_gpu_ledger(state, gpu)) {
      report.ledgers_healed += 1;
    }
    recount_waiters(state, gpu);
  }
  return report;
}

namespace {
// `gpushare quota set`: runs `change` on the named live tenant's record under the registry lock.
template <typename Change>
Status change_tenant(SharedState& shared, std::string_view name, Change&& change) {
  StateLayout& state = shared.state();
  auto registry = lock_registry(state);
  if (!registry) return registry.error();
  auto tenant = find_tenant(state, name);
  if (!tenant) return Error{fmt::format("no tenant named '{}' in {}", name, shared.path())};
  change(state.tenants[*tenant]);
  return Ok{};
}
}  // namespace

Status set_tenant_memory_limit(SharedState& shared, std::string_view name, std::uint64_t limit_bytes) {
  return change_tenant(shared, name, [&](layout::TenantRecord& record) {
    record.override_limit_bytes.store(limit_bytes, kRelaxed);
    for (auto& entry : record.ledger) {
      if (entry.configured.load(kAcquire) != 0) entry.limit_bytes.store(limit_bytes, kRelaxed);
    }
  });
}

Status set_tenant_compute_policy(SharedState& shared, std::string_view name, const ComputePolicyChange& change) {
  return change_tenant(shared, name, [&](layout::TenantRecord& record) {
    auto& policy = record.compute_policy;
    if (change.share_pct) policy.share_pct.store(*change.share_pct, kRelaxed);
    if (change.limit_pct) policy.limit_pct.store(*change.limit_pct, kRelaxed);
    if (change.priority) {
      const std::uint32_t priority = layout::priority_class(static_cast<std::uint32_t>(*change.priority));
      if (policy.priority.exchange(priority, kRelaxed) != priority) {
        // Virtual times are compared within a class: one earned in the old class would put the
        // tenant far behind its new peers (it would take the GPU until it caught up) or far ahead
        // (it would starve). It starts where its new class is.
        for (std::uint32_t g = 0; g < kMaxGpus; ++g) {
          const auto& clock = shared.state().schedules[g].virtual_clock_ns[priority];
          record.compute[g].virtual_ns.store(clock.load(kRelaxed), kRelaxed);
        }
      }
    }
    record.compute_configured.store(1, kRelease);
  });
}

std::vector<TenantSnapshot> snapshot_tenants(SharedState& shared) {
  StateLayout& state = shared.state();
  std::vector<TenantSnapshot> tenants;
  for (std::uint32_t t = 0; t < kMaxTenants; ++t) {
    const auto& record = state.tenants[t];
    if (record.state.load(kAcquire) != kInUse) continue;
    TenantSnapshot snap;
    snap.index = t;
    snap.name = tenant_name(record);
    const std::uint64_t override_limit = record.override_limit_bytes.load(kRelaxed);
    if (override_limit != layout::kNoOverride) snap.override_limit_bytes = override_limit;
    // Until a process of the tenant has stated a policy (or `quota set` has), the defaults apply.
    if (record.compute_configured.load(kAcquire) != 0) {
      snap.compute.share_pct = record.compute_policy.share_pct.load(kRelaxed);
      snap.compute.limit_pct = record.compute_policy.limit_pct.load(kRelaxed);
      snap.compute.priority =
          static_cast<Priority>(layout::priority_class(record.compute_policy.priority.load(kRelaxed)));
    }
    for (std::uint32_t g = 0; g < kMaxGpus; ++g) {
      const auto& entry = record.ledger[g];
      if (entry.configured.load(kAcquire) == 0) continue;
      LedgerSnapshot ledger;
      ledger.gpu = g;
      std::copy(std::begin(state.gpus[g].uuid), std::end(state.gpus[g].uuid), ledger.uuid.begin());
      ledger.gpu_name.assign(state.gpus[g].name, ::strnlen(state.gpus[g].name, layout::kGpuNameBytes));
      ledger.physical_bytes = state.gpus[g].physical_bytes.load(kRelaxed);
      ledger.limit_bytes = entry.limit_bytes.load(kRelaxed);
      ledger.used_bytes = entry.used_bytes.load(kRelaxed);
      ledger.peak_bytes = entry.peak_bytes.load(kRelaxed);
      ledger.oom_refusals = entry.oom_refusals.load(kRelaxed);
      ledger.gpu_ns = record.compute[g].gpu_ns.load(kRelaxed);
      ledger.launches = record.compute[g].launches.load(kRelaxed);
      ledger.wait_ns = record.compute[g].wait_ns.load(kRelaxed);
      snap.gpus.push_back(ledger);
    }
    for (std::uint32_t s = 0; s < kMaxSlots; ++s) {
      auto& slot = state.slots[s];
      if (slot.state.load(kAcquire) == kFree || slot.tenant_index != t) continue;
      ProcessSnapshot process;
      process.slot = s;
      process.pid = slot.pid;
      process.started_unix_ns = slot.started_unix_ns.load(kRelaxed);
      // A free liveness lock means the owner is gone. Tested, not taken: a sweep running at this
      // moment must not find the lock held by a mere look.
      process.alive = shared.slot_locked(s);
      for (std::uint32_t g = 0; g < kMaxGpus; ++g) process.held_bytes[g] = slot.held_bytes[g].load(kRelaxed);
      snap.processes.push_back(process);
    }
    tenants.push_back(std::move(snap));
  }
  return tenants;
}

}  // namespace gpushare
