// The memory ledger: reservations and releases of a process's bytes against its tenant's quota.
#include "core/memory_ledger.hpp"

#include <algorithm>
#include <array>

namespace gpushare {
using layout::kFree;
using layout::kMaxGpus;
using layout::kMaxTenants;
using layout::StateLayout;

namespace {

constexpr auto kAcquire = std::memory_order_acquire;
constexpr auto kRelaxed = std::memory_order_relaxed;

std::uint64_t saturating_sub(std::uint64_t a, std::uint64_t b) { return a > b ? a - b : 0; }

}  // namespace

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

// A holder that died inside the critical section may have updated one side and not the other.
Result<shared_mutex::Guard> lock_ledger(StateLayout& state, std::uint32_t gpu) {
  return shared_mutex::Guard::acquire(&state.gpus[gpu].ledger_mutex, shared_mutex::kDefaultWait,
                                      [&] { rebuild_gpu_ledger(state, gpu); });
}

std::uint64_t return_slot_bytes(StateLayout& state, layout::ProcessSlot& slot) {
  std::uint64_t total = 0;
  const std::uint32_t tenant = slot.tenant_index;
  for (std::uint32_t gpu = 0; gpu < kMaxGpus; ++gpu) {
    slot.lease_left_bytes[gpu].store(0, kRelaxed);  // part of held_bytes: goes back with them
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

Result<Reservation> SlotLedger::try_reserve(std::uint32_t gpu, std::uint64_t bytes) {
  if (gpu >= kMaxGpus) return Error{"GPU index out of range"};
  StateLayout& state = *state_;
  auto lock = lock_ledger(state, gpu);
  if (!lock) return lock.error();
  auto& slot = state.slots[slot_];
  layout::restore_own_slot(slot, tenant_);
  if (auto& attached = slot.gpus_attached; (attached.load(kRelaxed) & (1u << gpu)) == 0) {
    attached.fetch_or(1u << gpu, kRelaxed);  // written over: the record must not go to another GPU
  }
  auto& entry = state.tenants[tenant_].ledger[gpu];
  const std::uint64_t used = entry.used_bytes.load(kRelaxed);
  const std::uint64_t limit = entry.limit_bytes.load(kRelaxed);
  if (bytes > limit || used > limit - bytes) return Reservation::kOverQuota;
  entry.used_bytes.store(used + bytes, kRelaxed);
  slot.held_bytes[gpu].fetch_add(bytes, kRelaxed);
  if (used + bytes > entry.peak_bytes.load(kRelaxed)) entry.peak_bytes.store(used + bytes, kRelaxed);
  return Reservation::kGranted;
}

void SlotLedger::count_refusal(std::uint32_t gpu) {
  if (gpu < kMaxGpus) state_->tenants[tenant_].ledger[gpu].oom_refusals.fetch_add(1, kRelaxed);
}

Status SlotLedger::release(std::uint32_t gpu, std::uint64_t bytes) {
  if (gpu >= kMaxGpus) return Error{"GPU index out of range"};
  StateLayout& state = *state_;
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

MemoryView SlotLedger::view(std::uint32_t gpu) const {
  if (gpu >= kMaxGpus) return {};
  const auto& entry = state_->tenants[tenant_].ledger[gpu];
  return {entry.limit_bytes.load(kRelaxed), entry.used_bytes.load(kRelaxed)};
}

}  // namespace gpushare
