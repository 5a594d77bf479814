// The registry: tenant records, GPU records and process slots, claimed and given up.
#include "core/registry.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>

#include <fmt/format.h>

#include "core/size.hpp"
#include "core/tenant_name.hpp"

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

// The installed hooks: read without a lock by every release, changed under hooks_mutex (so the
// same hooks added by two threads at once are listed once). Both are constant-initialised.
constexpr std::size_t kMaxHookSets = 4;
constinit std::array<std::atomic<const RegistryHooks*>, kMaxHookSets> installed_hooks{};
constinit std::mutex hooks_mutex;

template <class Call>
void for_each_installed(Call&& call) {
  for (auto& entry : installed_hooks) {
    if (const RegistryHooks* hooks = entry.load(kAcquire)) call(*hooks);
  }
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

// Everything a slot holds goes back: its bytes to its tenant's ledger, the rest through the
// hooks. Returns the bytes. REQUIRES: as return_slot_bytes, and index < kMaxSlots.
std::uint64_t empty_slot(StateLayout& state, std::uint32_t index, SlotRelease why) {
  auto& slot = state.slots[index];
  const std::uint64_t bytes = return_slot_bytes(state, slot);
  for_each_installed([&](const RegistryHooks& hooks) {
    if (hooks.slot_released != nullptr) hooks.slot_released(state, index, why);
  });
  slot.gpus_attached.store(0, kRelaxed);
  return bytes;
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
  entry.peer_wait_ns.store(0, kRelaxed);
}

// REQUIRES: registry lock held, and no slot refers to tenant t.
std::uint32_t reset_tenant(StateLayout& state, std::uint32_t t, std::string_view name) {
  auto& tenant = state.tenants[t];
  store_tenant_name(tenant, name);
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
  for_each_installed([&](const RegistryHooks& hooks) {
    if (hooks.gpu_forgotten != nullptr) hooks.gpu_forgotten(state, g);
  });
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

bool add_registry_hooks(const RegistryHooks& hooks) {
  std::lock_guard lock(hooks_mutex);
  for (auto& entry : installed_hooks) {
    if (entry.load(kRelaxed) == &hooks) return true;
  }
  for (auto& entry : installed_hooks) {
    if (entry.load(kRelaxed) == nullptr) {
      entry.store(&hooks, kRelease);
      return true;
    }
  }
  return false;
}

void remove_registry_hooks(const RegistryHooks& hooks) {
  std::lock_guard lock(hooks_mutex);
  for (auto& entry : installed_hooks) {
    if (entry.load(kRelaxed) == &hooks) entry.store(nullptr, kRelease);
  }
}

bool registry_hooks_installed() {
  return std::any_of(installed_hooks.begin(), installed_hooks.end(),
                     [](const auto& entry) { return entry.load(kAcquire) != nullptr; });
}

Result<shared_mutex::Guard> lock_registry(StateLayout& state) {
  return shared_mutex::Guard::acquire(&state.registry_mutex, shared_mutex::kDefaultWait,
                                      [&] { repair_registry(state); });
}

std::optional<std::uint32_t> find_tenant(StateLayout& state, std::string_view name) {
  for (std::uint32_t t = 0; t < kMaxTenants; ++t) {
    if (state.tenants[t].state.load(kAcquire) == kInUse && tenant_name_is(state.tenants[t], name)) return t;
  }
  return std::nullopt;
}

std::string format_gpu_uuid(const GpuUuid& u) {
  return fmt::format("GPU-{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                     u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                     u[15]);
}

Result<std::unique_ptr<TenantMembership>> TenantMembership::join(SharedState& shared, std::string_view name) {
  if (auto valid = validate_tenant_name(name); !valid) return valid.error();
  if (!registry_hooks_installed()) {
    return Error{"no registry hooks installed: call install_compute_slot_release() before joining a tenant"};
  }
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
      empty_slot(state, s, SlotRelease::kOwnerGone);
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

Result<std::unique_ptr<TenantMembership>> TenantMembership::adopt(SharedState& shared, std::uint32_t slot) {
  if (slot >= kMaxSlots) return Error{fmt::format("slot {} out of range", slot)};
  StateLayout& state = shared.state();
  const int fd = ::open(shared.descriptor_path().c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Error{fmt::format("cannot open state file {}: {}", shared.path(), std::strerror(errno))};
  const std::uint32_t tenant = state.slots[slot].tenant_index.load(kRelaxed);
  if (!ofd_lock::try_lock(fd, layout::kSlotLockBase + slot)) {
    ::close(fd);
    return Error{fmt::format("slot {} is held by a live process", slot)};
  }
  if (state.slots[slot].state.load(kAcquire) != kInUse || tenant >= kMaxTenants) {
    ::close(fd);  // drops the lock
    return Error{fmt::format("slot {} is not in use", slot)};
  }
  return std::unique_ptr<TenantMembership>(new TenantMembership(shared, fd, tenant, slot));
}

TenantMembership::~TenantMembership() {
  if (!abandoned_) {
    StateLayout& state = state_.state();
    empty_slot(state, slot_, SlotRelease::kOwnerLeaving);
    state.slots[slot_].state.store(kFree, kRelease);
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

Result<Reservation> TenantMembership::try_reserve(std::uint32_t gpu, std::uint64_t bytes) {
  SlotLedger account = ledger();
  auto first = account.try_reserve(gpu, bytes);
  if (!first || first.value() == Reservation::kGranted) return first;
  // Before refusing, give back what dead processes of any tenant still hold; the refusal path
  // may make system calls, the granted path never does.
  if (const ReclaimReport swept = reclaim_dead_processes(state_); swept.processes > 0 || swept.ledgers_healed > 0) {
    auto second = account.try_reserve(gpu, bytes);
    if (!second || second.value() == Reservation::kGranted) return second;
  }
  account.count_refusal(gpu);
  return Reservation::kOverQuota;
}

Status TenantMembership::release(std::uint32_t gpu, std::uint64_t bytes) { return ledger().release(gpu, bytes); }

MemoryView TenantMembership::view(std::uint32_t gpu) const { return ledger().view(gpu); }

Result<ComputePolicyValues> TenantMembership::adopt_compute_policy(const ComputePolicyValues& wanted) {
  auto registry = lock_registry(state_.state());
  if (!registry) return registry.error();
  return gpushare::adopt_compute_policy(state_.state(), tenant_, wanted);
}

ComputePolicyValues adopt_compute_policy(StateLayout& state, std::uint32_t tenant, const ComputePolicyValues& wanted) {
  auto& record = state.tenants[tenant];
  auto& policy = record.compute_policy;
  if (record.compute_configured.load(kAcquire) == 0) {
    policy.share_pct.store(wanted.share_pct, kRelaxed);
    policy.limit_pct.store(wanted.limit_pct, kRelaxed);
    policy.priority.store(static_cast<std::uint32_t>(wanted.priority), kRelaxed);
    policy.slice_us.store(static_cast<std::uint32_t>(wanted.slice.count()), kRelaxed);
    record.compute_configured.store(1, kRelease);
    return wanted;
  }
  ComputePolicyValues in_force;
  in_force.share_pct = policy.share_pct.load(kRelaxed);
  in_force.limit_pct = policy.limit_pct.load(kRelaxed);
  in_force.priority = static_cast<Priority>(layout::priority_class(policy.priority.load(kRelaxed)));
  in_force.slice = std::chrono::microseconds(policy.slice_us.load(kRelaxed));
  return in_force;
}

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

ReclaimReport reclaim_dead_processes(SharedState& shared) {
  ReclaimReport report;
  // A slot freed without its hooks would keep, say, a slice its next owner would inherit.
  if (!registry_hooks_installed()) return report;
  StateLayout& state = shared.state();
  {
    std::lock_guard probing(shared.probe_mutex());
    for (std::uint32_t s = 0; s < kMaxSlots; ++s) {
      auto& slot = state.slots[s];
      if (slot.state.load(kAcquire) == kFree) continue;
      if (!shared.try_lock_slot(s)) continue;  // its owner is alive (or another process is reclaiming it)
      // kReclaiming with the lock free: a reclaimer died half-way; returning bytes is idempotent.
      if (slot.state.load(kAcquire) != kFree) {
        slot.state.store(kReclaiming, kRelease);
        report.bytes += empty_slot(state, s, SlotRelease::kOwnerGone);
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
    for_each_installed([&](const RegistryHooks& hooks) {
      if (hooks.gpu_swept != nullptr) hooks.gpu_swept(state, gpu);
    });
  }
  return report;
}

}  // namespace gpushare
