// The per-GPU memory ledger: every tenant's bytes on every GPU, charged to the process slots that
// hold them. A part of its own: it works on the state's records by index and knows nothing of how
// slots and tenants are claimed (the registry, which forwards to it).
//
// Protocol for an allocation (rmm's limiting adaptor, made cross-process and crash-safe):
//   try_reserve(gpu, n)  -> the bytes are counted against the quota before the driver is asked,
//   driver call          -> on success nothing more is needed: the reservation *is* the charge,
//   release(gpu, n)      -> on driver failure (rollback), or when the memory is freed.
// Reservation and the quota check are one step under the GPU's ledger mutex, so two processes
// racing for the last bytes can never exceed the quota by a single byte.
//
// Invariant, restored before the ledger mutex is unlocked:
//   ledger[t][g].used_bytes == sum of held_bytes[g] over the slots of tenant t
// Cost: one uncontended process-shared robust mutex (an atomic exchange in user space; a futex
// system call only when two processes allocate on the same GPU at the same instant). The mutex,
// not lock-free counters, is what makes crash recovery exact: see state_layout.hpp.
#pragma once

#include <cstdint>

#include "core/result.hpp"
#include "core/shared_mutex.hpp"
#include "core/state_layout.hpp"

namespace gpushare {

struct MemoryView {
  std::uint64_t limit_bytes = 0;
  std::uint64_t used_bytes = 0;
};

enum class Reservation { kGranted, kOverQuota };

// One process slot's account in the ledger: the slot whose held_bytes carry the charge and the
// tenant whose quota it counts against. A plain handle: copying it is free, it owns nothing.
class SlotLedger {
 public:
  // REQUIRES: slot < kMaxSlots, tenant < kMaxTenants, and the caller owns the slot.
  SlotLedger(layout::StateLayout& state, std::uint32_t slot, std::uint32_t tenant)
      : state_(&state), slot_(slot), tenant_(tenant) {}

  // One attempt: counts `bytes` against the quota on `gpu` if they fit, else kOverQuota. Puts the
  // slot's tenant, state and attachment to `gpu` back first if someone wrote over them. Refuses
  // without looking for dead processes' bytes: that is the caller's (the registry's sweep).
  Result<Reservation> try_reserve(std::uint32_t gpu, std::uint64_t bytes);
  // Counts a refusal the caller has decided on (`status` shows them per tenant and GPU).
  void count_refusal(std::uint32_t gpu);
  // Gives back bytes this slot holds; more than it holds is an error (what it holds goes back).
  Status release(std::uint32_t gpu, std::uint64_t bytes);
  // The tenant's limit and use on `gpu`, read without the lock; all zero for a GPU out of range.
  MemoryView view(std::uint32_t gpu) const;

 private:
  layout::StateLayout* state_;
  std::uint32_t slot_;
  std::uint32_t tenant_;
};

// The GPU's ledger mutex; one who inherits it from a holder that died inside rebuilds the GPU's
// ledger from the slots first. REQUIRES: gpu < kMaxGpus.
Result<shared_mutex::Guard> lock_ledger(layout::StateLayout& state, std::uint32_t gpu);

// Rebuilds every tenant's used_bytes on one GPU from the slots' held_bytes (the invariant above):
// numbers written into the file by anyone else heal there. Returns whether any tenant's figure
// changed. REQUIRES: the GPU's ledger mutex held, gpu < kMaxGpus.
bool rebuild_gpu_ledger(layout::StateLayout& state, std::uint32_t gpu);

// Moves every byte a slot holds back out of its tenant's ledger; returns how many. REQUIRES: the
// caller owns the slot (its own, or a dead one it has locked and marked kReclaiming).
std::uint64_t return_slot_bytes(layout::StateLayout& state, layout::ProcessSlot& slot);

}  // namespace gpushare
