// What the arbiter gives back when the registry frees a slot or reuses a GPU record.
#include "core/compute_slot_release.hpp"

#include "core/arbiter.hpp"
#include "core/platform.hpp"

namespace gpushare {
using layout::kMaxGpus;
using layout::StateLayout;

namespace {

constexpr auto kAcquire = std::memory_order_acquire;
constexpr auto kRelaxed = std::memory_order_relaxed;

// A slot that changes hands must not look like a waiter of any GPU, and must not keep a slice
// its old owner held: the new owner would inherit it, ungranted, with the old slice's start time.
// A leaving owner is charged up to now, a gone one up to its last observed launch.
void release_slot_compute(StateLayout& state, std::uint32_t index, SlotRelease why) {
  if (index >= layout::kMaxSlots) return;
  auto& slot = state.slots[index];
  for (std::uint32_t gpu = 0; gpu < kMaxGpus; ++gpu) {
    auto& schedule = state.schedules[gpu];
    if (const std::uint32_t word = schedule.holder_word.load(kAcquire); layout::holder_slot(word) == index) {
      auto lock = lock_schedule(state, gpu);
      if (lock && layout::holder_slot(schedule.holder_word.load(kAcquire)) == index) {
        const std::uint64_t now = monotonic_now_ns();
        end_slice(state, gpu, why == SlotRelease::kOwnerLeaving ? now : gone_holder_used_until(schedule, now));
      } else if (!lock) {
        // The lock is not to be had (its holder is stopped): free the GPU uncharged rather than
        // let the slot's next owner inherit the slice.
        std::uint32_t seen = word;
        schedule.holder_word.compare_exchange_strong(seen, 0, std::memory_order_acq_rel);
      }
      wake_waiters(state, gpu);
    }
    auto& compute = slot.compute[gpu];
    take_waiting_mark(schedule, compute);
    for (auto& lane : compute.activity) lane.store(0, kRelaxed);
    compute.depends_on_others.store(0, kRelaxed);
    compute.threads_waiting.store(0, kRelaxed);
    slot.collectives[gpu].store(0, kRelaxed);
  }
  slot.fenced.store(0, kRelaxed);
}

// A record that describes another GPU from now on starts with nobody holding or waiting for it
// and every class's virtual clock at zero (the tenants' entries on it were cleared with it).
void forget_gpu_schedule(StateLayout& state, std::uint32_t gpu) {
  if (gpu >= kMaxGpus) return;
  if (auto lock = lock_schedule(state, gpu)) {
    auto& schedule = state.schedules[gpu];
    schedule.holder_word.store(0, kRelaxed);
    schedule.waiting.store(0, kRelaxed);
    for (auto& clock : schedule.virtual_clock_ns) clock.store(0, kRelaxed);
    for (auto& granted : schedule.class_granted_ns) granted.store(0, kRelaxed);
  }
}

// The count of a GPU's waiters is only a hint (ComputeGate::release_if_wanted), moved by each mark
// without a lock; a process killed between a mark and its count, or a number written into the
// file, would leave it wrong for good: each sweep counts the marks again.
void recount_waiters(StateLayout& state, std::uint32_t gpu) {
  if (gpu >= kMaxGpus) return;
  std::uint32_t marks = 0;
  for (const auto& slot : state.slots) {
    if (slot.state.load(kAcquire) != layout::kFree && slot.compute[gpu].waiting_since_ns.load(kRelaxed) != 0) {
      ++marks;
    }
  }
  state.schedules[gpu].waiting.store(marks, kRelaxed);
}

constinit const RegistryHooks kComputeHooks{
    .slot_released = release_slot_compute,
    .gpu_forgotten = forget_gpu_schedule,
    .gpu_swept = recount_waiters,
};

}  // namespace

const RegistryHooks& compute_registry_hooks() { return kComputeHooks; }

void install_compute_slot_release() { add_registry_hooks(kComputeHooks); }

}  // namespace gpushare
