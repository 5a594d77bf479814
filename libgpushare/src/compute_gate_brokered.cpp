// ComputeGate's slow paths in isolation mode: the process maps the state read-only and the node
// agent decides (SliceBroker). What the process still writes is its own page: its activity lanes and
// its waiting mark. The grant, the handover bit and the charges are the agent's.
//
// The grant is taken up exactly as in the daemonless mode: the agent stores the handover bit
// before it takes a mark it granted on (withdrawing an untaken grant), the waiter takes its mark
// and then reads the holder word again, both sequentially consistent on the page they share.
#include <algorithm>
#include <optional>

#include "core/arbiter.hpp"
#include "core/compute_gate.hpp"

namespace gpushare {
namespace {
constexpr auto kAcquire = std::memory_order_acquire;
constexpr auto kRelaxed = std::memory_order_relaxed;
// How long a waiter sleeps between looks, and how often it tells the agent again that it waits (a
// withdrawn grant or a lost message must not leave it waiting for good).
constexpr std::uint64_t kLookNs = 5'000'000;
constexpr std::uint64_t kAskAgainNs = 50'000'000;
}  // namespace

Status ComputeGate::hand_over_brokered(std::uint32_t gpu, const Drain& drain) {
  const layout::GpuSchedule& schedule = state_.state().schedules[gpu];
  const std::uint32_t slice_seen = schedule.grant_seq.load(kAcquire);
  drain_observed(gpu, drain, schedule.handover_asked_ns.load(kRelaxed));
  broker_->done(gpu, slice_seen, monotonic_now_ns());
  return Ok{};
}

void ComputeGate::ask_renewal(std::uint32_t gpu) {
  const std::uint32_t slice = state_.state().schedules[gpu].grant_seq.load(kAcquire);
  if (renewal_asked_[gpu].exchange(slice, kRelaxed) != slice) broker_->renew(gpu);
}

Status ComputeGate::acquire_brokered(std::uint32_t gpu, const Drain& drain) {
  const layout::GpuSchedule& schedule = state_.state().schedules[gpu];
  auto& waiting_threads = slot_compute(gpu).threads_waiting;
  waiting_threads.fetch_add(1, std::memory_order_seq_cst);
  mark_waiting(gpu, monotonic_now_ns());
  broker_->wanted(gpu);
  std::uint64_t asked_at = monotonic_now_ns();
  // The slice this thread handed over last (grant_seq), and when: until the agent has ended it, the
  // holder word still names this process with the handover bit, and handing it over again would
  // only drain again and flood the agent with stale messages. Told again after kAskAgainNs, in
  // case a message was lost.
  std::optional<std::uint32_t> handed_over;
  std::uint64_t handed_over_at = 0;
  const auto handed_over_already = [&](std::uint32_t slice, std::uint64_t now) {
    return handed_over == slice && now - handed_over_at < kAskAgainNs;
  };
  Status status = Ok{};
  for (;;) {
    if (!broker_->usable()) {
      status = Error{"the agent cannot be reached"};
      break;
    }
    if (layout::holder_slot(schedule.holder_word.load(std::memory_order_seq_cst)) == slot_) {
      unmark_waiting(gpu);
      const std::uint32_t word = schedule.holder_word.load(std::memory_order_seq_cst);
      if (word == holder_token(slot_)) break;
      if (word == (holder_token(slot_) | layout::kHandoverBit)) {
        // A gang's rank goes on to its gang's stop count first (see acquire_daemonless).
        if (goes_on_to_gang_stop(gpu, /*collective=*/false, monotonic_now_ns())) break;
        const std::uint32_t slice = schedule.grant_seq.load(kAcquire);
        if (!handed_over_already(slice, monotonic_now_ns())) {
          mark_waiting(gpu, monotonic_now_ns());
          (void)hand_over_brokered(gpu, drain);
          broker_->wanted(gpu);
          asked_at = handed_over_at = monotonic_now_ns();
          handed_over = slice;
          continue;
        }
      }
    }
    mark_waiting(gpu, monotonic_now_ns());
    const std::uint32_t seen = schedule.grant_seq.load(kAcquire);
    if (layout::holder_slot(schedule.holder_word.load(kAcquire)) == slot_ &&
        !handed_over_already(seen, monotonic_now_ns())) {
      continue;
    }
    if (const std::uint64_t now = monotonic_now_ns(); now - asked_at >= kAskAgainNs) {
      broker_->wanted(gpu);
      asked_at = now;
    }
    wait_for_grant(state_.state(), gpu, seen, kLookNs);
  }
  unmark_waiting(gpu);
  if (std::uint32_t threads = waiting_threads.load(kRelaxed); threads != 0) {
    waiting_threads.compare_exchange_strong(threads, threads - 1, kRelaxed);
  }
  return status;
}

Status ComputeGate::checkpoint_brokered(std::uint32_t gpu, const Drain& drain, std::uint64_t now) {
  const layout::GpuSchedule& schedule = state_.state().schedules[gpu];
  const std::uint32_t word = schedule.holder_word.load(std::memory_order_seq_cst);
  if (word == (holder_token(slot_) | layout::kHandoverBit)) {
    (void)hand_over_brokered(gpu, drain);
    return acquire(gpu, drain);
  }
  // Whether someone else waits is known to the agent only (the others' marks are in their pages).
  if (now >= slice_end_of(schedule, now)) ask_renewal(gpu);
  return broker_->usable() ? Status{Ok{}} : Status{Error{"the agent cannot be reached"}};
}

Status ComputeGate::release_if_wanted_brokered(std::uint32_t gpu, const Drain& drain, std::uint64_t now) {
  const layout::GpuSchedule& schedule = state_.state().schedules[gpu];
  const std::uint32_t word = schedule.holder_word.load(kAcquire);
  if (layout::holder_slot(word) != slot_) return Ok{};
  if ((word & layout::kHandoverBit) != 0) return hand_over_brokered(gpu, drain);
  if (now >= slice_end_of(schedule, now) && schedule.waiting.load(kRelaxed) != 0) ask_renewal(gpu);
  return Ok{};
}

}  // namespace gpushare
