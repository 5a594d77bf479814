// The registry: tenants, GPU records and process slots in the shared state, and their lifecycle.
// A process joins a tenant (claiming a slot), attaches GPUs (by UUID) and leaves; a process that
// dies without leaving is found by a sweep (its slot's liveness lock is free) and its slot freed.
//
// A member's allocations go to the memory ledger (memory_ledger.hpp), which TenantMembership
// forwards to, adding only the sweep before a refusal; the memory a slot holds goes back the same
// way. What other parts keep per slot or per GPU record (the arbiter's slices and waits) goes back
// through the registry's hooks (RegistryHooks below): the registry knows nothing of them. A
// tenant's first process also states the tenant's compute policy here (adopt_compute_policy).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/compute_policy.hpp"
#include "core/memory_ledger.hpp"
#include "core/result.hpp"
#include "core/shared_mutex.hpp"
#include "core/shared_state.hpp"

namespace gpushare {

using GpuUuid = std::array<std::uint8_t, 16>;

// "GPU-8f1c2a3b-...": the form nvidia-smi prints.
std::string format_gpu_uuid(const GpuUuid& uuid);

// Who gives a slot up: its owner, leaving, or a sweep (or a joining process) for an owner that is
// gone.
enum class SlotRelease { kOwnerLeaving, kOwnerGone };

// What the registry tells the parts that keep state of their own per slot or per GPU record. Each
// function may be null. Called with indices already checked against the table sizes.
struct RegistryHooks {
  // A slot is given up: its bytes have gone back, it is not free yet, and the caller owns it.
  void (*slot_released)(layout::StateLayout& state, std::uint32_t slot, SlotRelease why) = nullptr;
  // GPU record `gpu` is about to describe another GPU. REQUIRES: registry lock held, and no live
  // slot has the record attached.
  void (*gpu_forgotten)(layout::StateLayout& state, std::uint32_t gpu) = nullptr;
  // Every sweep, for each GPU record in use, once the dead slots are free: counts kept as hints
  // beside the slots are derived from them again.
  void (*gpu_swept)(layout::StateLayout& state, std::uint32_t gpu) = nullptr;
};
// An explicit list owned by the registry, filled by a function its users call (the arbiter's:
// install_compute_slot_release), never by a static constructor a static library could drop. The
// registry frees no slot while the list is empty: a forgotten install fails loudly, not silently.
// REQUIRES: `hooks` has static storage duration. Adding one already there does nothing; returns
// false when the list is full. Safe from any thread.
bool add_registry_hooks(const RegistryHooks& hooks);
void remove_registry_hooks(const RegistryHooks& hooks);
bool registry_hooks_installed();

// The registry mutex (tenants, GPU records, slot claims); one who inherits it from a holder that
// died inside frees a tenant record that was claimed but never named.
Result<shared_mutex::Guard> lock_registry(layout::StateLayout& state);
// The live tenant record named `name`. REQUIRES: registry lock held.
std::optional<std::uint32_t> find_tenant(layout::StateLayout& state, std::string_view name);

class TenantMembership {
 public:
  // Joins the tenant `name` (creating it when no one has) and claims a process slot. First returns
  // the slots of dead processes to their tenants. Refused while no registry hooks are installed.
  static Result<std::unique_ptr<TenantMembership>> join(SharedState& state, std::string_view name);
  // Isolation mode: a restarted agent takes back, for a process that reconnects, the slot it had:
  // its tenant and the bytes it holds stay as the previous agent left them. Refused unless the
  // slot is in use and its liveness lock is free (the caller's own placeholder given up first).
  static Result<std::unique_ptr<TenantMembership>> adopt(SharedState& state, std::uint32_t slot);

  // Leaving returns every byte still held and frees the slot. A process that dies without leaving
  // is reclaimed by the next sweep of any other process.
  ~TenantMembership();
  TenantMembership(const TenantMembership&) = delete;
  TenantMembership& operator=(const TenantMembership&) = delete;

  struct Attached {
    std::uint32_t gpu = 0;
    std::uint64_t effective_limit_bytes = 0;
    bool limit_differs = false;  // this process asked for another limit than the tenant has
  };
  // Registers a GPU by UUID and this tenant's ledger entry on it. A full table gives up the record
  // of a GPU no live process has attached. The first process of the tenant
  // to use the GPU sets the limit (unless `gpushare quota set` has set one); later processes keep
  // it and are told when theirs differs.
  // `name` (cuDeviceGetName) is for display only.
  Result<Attached> attach_gpu(const GpuUuid& uuid, std::uint64_t physical_bytes, std::uint64_t limit_bytes,
                              std::string_view name = {});

  // This slot's account in the memory ledger (SlotLedger, memory_ledger.hpp). REQUIRES: gpu was
  // returned by attach_gpu. Before refusing, dead processes are swept once, so quota held by a
  // killed process never causes a refusal.
  Result<Reservation> try_reserve(std::uint32_t gpu, std::uint64_t bytes);
  Status release(std::uint32_t gpu, std::uint64_t bytes);
  MemoryView view(std::uint32_t gpu) const;

  // The tenant's compute policy: this process's wishes if it is the first to state any (the free
  // function below, under the registry lock).
  Result<ComputePolicyValues> adopt_compute_policy(const ComputePolicyValues& wanted);

  std::uint32_t slot_index() const { return slot_; }
  std::uint32_t tenant_index() const { return tenant_; }

  // For a child after fork(): the slot and its bytes belong to the parent. Drops this object's
  // claim (and its copy of the slot's lock descriptor) without touching the shared state.
  void abandon();

 private:
  TenantMembership(SharedState& state, int fd, std::uint32_t tenant, std::uint32_t slot)
      : state_(state), fd_(fd), tenant_(tenant), slot_(slot) {}
  SlotLedger ledger() const { return SlotLedger(state_.state(), slot_, tenant_); }

  SharedState& state_;
  int fd_;  // its own open file description: holds the slot's liveness lock
  std::uint32_t tenant_;
  std::uint32_t slot_;
  bool abandoned_ = false;
};

// Sets the tenant's compute policy if it has none yet (the first process decides), returning the
// policy in force; a priority read from the file is clamped to a valid class. `gpushare quota set`
// changes it with set_tenant_compute_policy (administration.hpp). REQUIRES: the registry mutex
// held; tenant < kMaxTenants.
ComputePolicyValues adopt_compute_policy(layout::StateLayout& state, std::uint32_t tenant,
                                         const ComputePolicyValues& wanted);

struct ReclaimReport {
  std::uint32_t processes = 0;
  std::uint64_t bytes = 0;
  std::uint32_t ledgers_healed = 0;  // GPUs whose ledger did not match its slots (damage, rewritten)
};
// The sweep: finds slots whose owner has died (its liveness lock is free) and returns their bytes
// to their tenants and the rest through the hooks, then re-derives every GPU's ledger from the
// slots (used == sum of held), so that numbers written into the file heal. Safe to run from any
// number of processes at once. Does nothing while no registry hooks are installed.
ReclaimReport reclaim_dead_processes(SharedState& state);

}  // namespace gpushare
