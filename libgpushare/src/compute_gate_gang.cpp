// A gang's rank at its gang's handover (gang.hpp): it goes on to the gang's stop count.
#include <bit>
#include <thread>

#include "core/arbiter.hpp"
#include "core/compute_gate.hpp"
#include "core/gang.hpp"

namespace gpushare {
using layout::kMaxTenants;

namespace {
constexpr auto kSeqCst = std::memory_order_seq_cst;

// How long a rank of the agent's tenants waits for the stop count the agent publishes just after
// asking (it asks and publishes in one go), and how often it looks.
constexpr std::uint64_t kStopCountWaitNs = 2'000'000;
constexpr std::chrono::microseconds kStopCountLook{20};
}  // namespace

bool ComputeGate::tenant_holds_several_gpus() const {
  return std::popcount(gpus_held_by(state_.state(), tenant_)) >= 2;
}

bool ComputeGate::goes_on_to_gang_stop(std::uint32_t gpu, bool collective, std::uint64_t now) {
  if (tenant_ >= kMaxTenants || !asked_to_hand_over(gpu, now, kGangCatchUpNs)) return false;
  layout::StateLayout& state = state_.state();
  const layout::GpuSchedule& schedule = state.schedules[gpu];
  auto stop = gang_stop_count(state, tenant_, schedule.handover_asked_ns.load(kSeqCst));
  // A tenant on one GPU has no sibling whose part could wait for this process's (most asked
  // processes end here, after a look at the holder words).
  if (!stop && !tenant_holds_several_gpus()) return false;
  if (!stop && broker_ == nullptr) {
    // Asked by a waiter's arbitration, whose process has not asked the gang yet: this rank does.
    ask_gang_to_hand_over(state, gpu, tenant_, schedule.handover_asked_ns.load(kSeqCst));
    stop = gang_stop_count(state, tenant_, schedule.handover_asked_ns.load(kSeqCst));
  } else if (!stop) {
    const std::uint64_t until = monotonic_now_ns() + kStopCountWaitNs;
    while (!stop && monotonic_now_ns() < until) {
      std::this_thread::sleep_for(kStopCountLook);
      stop = gang_stop_count(state, tenant_, schedule.handover_asked_ns.load(kSeqCst));
    }
  }
  if (!stop) return false;
  const auto mine = static_cast<std::uint32_t>(state.slots[slot_].collectives[gpu].load(kSeqCst));
  const auto past_stop = static_cast<std::int32_t>(mine - *stop);  // counts compared modulo 2^32
  return collective ? past_stop <= 0 : past_stop < 0;
}

bool ComputeGate::asks_gang_and_goes_on(std::uint32_t gpu) {
  if (tenant_ >= kMaxTenants || !tenant_holds_several_gpus()) return false;
  layout::StateLayout& state = state_.state();
  std::uint64_t asked_ns = 0;
  {
    auto lock = lock_schedule(state, gpu);
    if (!lock) return false;
    layout::GpuSchedule& schedule = state.schedules[gpu];
    const std::uint32_t word = schedule.holder_word.load(kSeqCst);
    if (word == layout::holder_token(slot_)) {
      asked_ns = monotonic_now_ns();
      schedule.handover_asked_ns.store(asked_ns, kSeqCst);
      schedule.holder_word.store(layout::holder_token(slot_) | layout::kHandoverBit, kSeqCst);
    } else if (word != (layout::holder_token(slot_) | layout::kHandoverBit)) {
      return false;  // not the holder any more
    }
  }
  // Asked by a waiter meanwhile: that request is the gang's (goes_on_to_gang_stop asks the gang if
  // the waiter's process has not yet).
  if (asked_ns != 0) ask_gang_to_hand_over(state, gpu, tenant_, asked_ns);
  return goes_on_to_gang_stop(gpu, /*collective=*/false, monotonic_now_ns());
}

}  // namespace gpushare
