#include "slice_service.hpp"

#include <algorithm>
#include <limits>

#include "core/arbiter.hpp"
#include "core/compute_gate.hpp"
#include "core/gang.hpp"

namespace gpushare::agent {
namespace {
constexpr auto kRelaxed = std::memory_order_relaxed;
constexpr auto kAcquire = std::memory_order_acquire;
}  // namespace

SliceService::SliceService(SharedState& state, std::function<bool(std::uint32_t)> live_slot, ArbiterTiming timing)
    : state_(state), live_slot_(std::move(live_slot)), timing_(timing) {}

void SliceService::wanted(std::uint32_t slot, std::uint32_t gpu) {
  if (slot >= layout::kMaxSlots || gpu >= layout::kMaxGpus) return;
  // Requests that come faster than decisions are worth (a flood, or many waiters at once) are
  // answered together by the next look, at most kCoalesceNs later.
  const std::uint64_t now = monotonic_now_ns();
  if (now - last_decided_ns_[gpu] < kCoalesceNs) {
    const std::uint64_t soon = last_decided_ns_[gpu] + kCoalesceNs;
    if (next_look_ns_[gpu] == 0 || next_look_ns_[gpu] > soon) next_look_ns_[gpu] = soon;
    return;
  }
  decide(gpu);
}

void SliceService::done(std::uint32_t slot, std::uint32_t gpu, std::uint32_t slice_seen, std::uint64_t drained_at_ns) {
  if (slot >= layout::kMaxSlots || gpu >= layout::kMaxGpus) return;
  layout::StateLayout& state = state_.state();
  const layout::GpuSchedule& schedule = state.schedules[gpu];
  if (auto lock = lock_schedule(state, gpu)) {
    if (layout::holder_slot(schedule.holder_word.load(kAcquire)) == slot &&
        schedule.grant_seq.load(kRelaxed) == slice_seen) {
      const std::uint64_t now = monotonic_now_ns();
      const std::uint64_t earliest = std::min(
          now, std::max(schedule.handover_asked_ns.load(kRelaxed), schedule.slice_start_ns.load(kRelaxed)));
      end_slice(state, gpu, std::clamp(drained_at_ns, earliest, now));
    }
  }
  decide(gpu);
}

void SliceService::renew(std::uint32_t slot, std::uint32_t gpu) {
  if (slot >= layout::kMaxSlots || gpu >= layout::kMaxGpus) return;
  layout::StateLayout& state = state_.state();
  layout::GpuSchedule& schedule = state.schedules[gpu];
  std::uint32_t gang_asked = layout::kMaxTenants;
  {
    auto lock = lock_schedule(state, gpu);
    if (!lock || schedule.holder_word.load(std::memory_order_seq_cst) != holder_token(slot)) return;
    const std::uint64_t now = monotonic_now_ns();
    if (now < slice_end_of(schedule, now)) return;
    const std::uint32_t tenant = state.slots[slot].tenant_index.load(kRelaxed);
    if (tenant < layout::kMaxTenants && !capped(state.tenants[tenant]) && !contender_waits(state, gpu, slot, now)) {
      // Nobody could take over: the slice rolls over, charged slice by slice as in the daemonless mode.
      end_slice(state, gpu, now);
      grant(state, gpu, slot, tenant, now, /*mark=*/0);
    } else {
      schedule.handover_asked_ns.store(now, kRelaxed);
      schedule.holder_word.store(holder_token(slot) | layout::kHandoverBit, std::memory_order_seq_cst);
      gang_asked = tenant;
    }
  }
  ask_gang_to_hand_over(state, gpu, gang_asked, monotonic_now_ns());
  wake_waiters(state, gpu);
  decide(gpu);
}

void SliceService::slot_released() {
  for (std::uint32_t gpu = 0; gpu < layout::kMaxGpus; ++gpu) {
    if (state_.state().gpus[gpu].state.load(kAcquire) == layout::kInUse) decide(gpu);
  }
}

void SliceService::decide(std::uint32_t gpu) {
  layout::StateLayout& state = state_.state();
  layout::GpuSchedule& schedule = state.schedules[gpu];
  const std::uint64_t now = monotonic_now_ns();
  last_decided_ns_[gpu] = now;
  Arbitration decided;
  std::uint32_t waiting = 0;
  {
    auto lock = lock_schedule(state, gpu);
    if (!lock) return;
    // The waiters' marks are in their pages, which the agent maps: the count is made from them, and
    // the highest class among them asks (a higher class takes the GPU at once).
    std::uint32_t requester = kNoRequester;
    std::uint32_t best_class = 0;
    for (std::uint32_t slot = 0; slot < layout::kMaxSlots; ++slot) {
      const layout::ProcessSlot& record = state.slots[slot];
      if (record.state.load(kAcquire) != layout::kInUse || !live_slot_(slot) ||
          record.compute[gpu].waiting_since_ns.load(kRelaxed) == 0) {
        continue;
      }
      ++waiting;
      const std::uint32_t tenant = record.tenant_index.load(kRelaxed);
      const std::uint32_t its_class =
          tenant < layout::kMaxTenants
              ? layout::priority_class(state.tenants[tenant].compute_policy.priority.load(kRelaxed))
              : 0;
      if (requester == kNoRequester || its_class > best_class) {
        requester = slot;
        best_class = its_class;
      }
    }
    schedule.waiting.store(waiting, kRelaxed);
    const std::uint32_t before = schedule.holder_word.load(kAcquire);
    const HolderProbes probes{live_slot_, fenced_or_watched_still};
    decided = arbitrate(state, gpu, now, requester, timing_, probes);
    const std::uint32_t after = schedule.holder_word.load(kAcquire);
    // A waiter granted the GPU waited from its mark until now.
    const std::uint32_t holder = layout::holder_slot(after);
    const std::uint64_t mark = schedule.granted_mark.load(kRelaxed);
    if (after != before && holder < layout::kMaxSlots && mark != 0 && mark <= now) {
      const std::uint32_t tenant = state.slots[holder].tenant_index.load(kRelaxed);
      charge_wait(state, tenant, gpu, mark, now);
    }
  }
  if (decided.changed) wake_waiters(state, gpu);
  ask_gang_to_hand_over(state, gpu, decided.gang_to_ask, now);
  // Nobody waiting: nothing to decide until someone asks (SliceWanted) or the holder's slice ends
  // (SliceRenew); a lone holder keeps the GPU.
  next_look_ns_[gpu] = waiting > 0 ? now + decided.recheck_after_ns : 0;
  // A gang's holder changed here: its other GPUs are decided again at the next tick (gang.hpp).
  for (std::uint32_t other = 0; other < layout::kMaxGpus; ++other) {
    if ((decided.wake_gpus & (1U << other)) != 0) next_look_ns_[other] = now;
  }
}

std::chrono::nanoseconds SliceService::tick() {
  std::uint64_t soonest = std::numeric_limits<std::uint64_t>::max();
  for (std::uint32_t gpu = 0; gpu < layout::kMaxGpus; ++gpu) {
    if (next_look_ns_[gpu] != 0 && monotonic_now_ns() >= next_look_ns_[gpu]) decide(gpu);
    if (next_look_ns_[gpu] != 0) soonest = std::min(soonest, next_look_ns_[gpu]);
  }
  if (soonest == std::numeric_limits<std::uint64_t>::max()) return std::chrono::seconds(1);
  const std::uint64_t now = monotonic_now_ns();
  return std::chrono::nanoseconds(soonest > now ? soonest - now : 0);
}

}  // namespace gpushare::agent
