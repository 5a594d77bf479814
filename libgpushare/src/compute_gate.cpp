#include "core/compute_gate.hpp"

#include <algorithm>

#include "core/arbiter.hpp"
#include "core/gang.hpp"

namespace gpushare {
using layout::GpuSchedule;
using layout::kHandoverBit;
using layout::kMaxTenants;
using layout::StateLayout;

namespace {
constexpr auto kRelaxed = std::memory_order_relaxed;
constexpr auto kAcquire = std::memory_order_acquire;

// 0 is no gate: a LaneClaim starts there.
std::atomic<std::uint64_t> g_next_gate_id{1};

}  // namespace

bool fenced_or_watched_still(const layout::ProcessSlot& holder, std::uint32_t gpu, std::uint64_t seen) {
  const layout::SlotCompute& compute = holder.compute[gpu];
  if (holder.fenced.load(kRelaxed) != 0 && fence::registered_processes()) return layout::activity_of(compute) == seen;
  const std::uint64_t until = monotonic_now_ns() + kStoreVisibleNs;
  do {
    if (layout::activity_of(compute) != seen) return false;
  } while (monotonic_now_ns() < until);
  return true;
}

ComputeGate::ComputeGate(SharedState& state, std::uint32_t slot, ArbiterTiming timing, SliceBroker* broker)
    : state_(state),
      slot_(slot),
      tenant_(state.state().slots[slot].tenant_index.load(kRelaxed)),
      id_(g_next_gate_id.fetch_add(1, kRelaxed)),
      fenced_own_(fence::register_process_for_own()),
      timing_(timing),
      probe_file_(OwnFileDescription::open_read_write(state.descriptor_path())),
      broker_(broker) {
  // Registering again (a second gate in the process, or after a fork: the child inherits its
  // parent's registration) is harmless. Stored either way: only a registered process's slot may
  // say so, whatever an earlier owner left there.
  state_.state().slots[slot_].fenced.store(fence::register_process_for_global() ? 1 : 0, kRelaxed);
}

unsigned ComputeGate::claim_lane(std::uint32_t gpu, LaneClaim& claim) {
  // Threads past the private lanes share lane 0 for good; the count stops there.
  std::atomic<unsigned>& claimed_so_far = lanes_claimed_[gpu];
  unsigned claimed = claimed_so_far.load(kRelaxed);
  unsigned lane = 0;
  while (claimed + 1 < layout::kActivityLanes) {
    if (claimed_so_far.compare_exchange_weak(claimed, claimed + 1, kRelaxed)) {
      lane = claimed + 1;
      break;
    }
  }
  claim = {id_, lane};
  return lane;
}

Status ComputeGate::hand_over(std::uint32_t gpu, const Drain& drain) {
  // Stop submitting, wait for what is in flight, then pass the GPU on: the charge runs to the
  // end of the drain. The handover is asked for first (unless a waiter did), so that the
  // process's other launching threads stop at their next launch (holds() turns false for them;
  // one already inside a launch still submits it) instead of adding to what the drain waits for.
  // They come here too, each with a drain of its own: only the slice seen now is ended, never one
  // granted to the process again while a sibling was still draining.
  StateLayout& state = state_.state();
  std::uint32_t slice_seen = 0;
  std::uint64_t asked_ns = 0;
  bool asked_self = false;
  {
    auto lock = lock_schedule(state, gpu);
    if (!lock) return lock.error();
    GpuSchedule& schedule = state.schedules[gpu];
    slice_seen = schedule.grant_seq.load(kRelaxed);
    if (schedule.holder_word.load(kAcquire) == holder_token(slot_)) {
      schedule.handover_asked_ns.store(monotonic_now_ns(), kRelaxed);
      schedule.holder_word.store(holder_token(slot_) | kHandoverBit, std::memory_order_seq_cst);
      asked_self = true;
    }
    asked_ns = schedule.handover_asked_ns.load(kRelaxed);
  }
  // Its own slice is over: a gang hands over everywhere at once.
  if (asked_self && tenant_ < kMaxTenants) ask_gang_to_hand_over(state, gpu, tenant_, asked_ns);
  drain_observed(gpu, drain, asked_ns);
  {
    auto lock = lock_schedule(state, gpu);
    if (!lock) return lock.error();
    const GpuSchedule& schedule = state.schedules[gpu];
    if (layout::holder_slot(schedule.holder_word.load(kAcquire)) == slot_ &&
        schedule.grant_seq.load(kRelaxed) == slice_seen) {
      end_slice(state, gpu, monotonic_now_ns());
    }
  }
  wake_waiters(state, gpu);
  if (tenant_ < kMaxTenants) wake_gang(state, gpu, tenant_);
  return Ok{};
}

Status ComputeGate::release_if_wanted(std::uint32_t gpu, const Drain& drain, std::uint64_t now) {
  if (broker_ != nullptr) return release_if_wanted_brokered(gpu, drain, now);
  const GpuSchedule& schedule = state_.state().schedules[gpu];
  const std::uint32_t word = schedule.holder_word.load(kAcquire);
  if (layout::holder_slot(word) != slot_) return Ok{};
  const bool asked = (word & kHandoverBit) != 0;
  // `waiting` is a hint, enough here: nobody to give it to.
  const bool over = now >= slice_end_of(schedule, now) && schedule.waiting.load(kRelaxed) != 0;
  return asked || over ? hand_over(gpu, drain) : Status{Ok{}};
}

void ComputeGate::mark_waiting(std::uint32_t gpu, std::uint64_t now) {
  std::uint64_t unmarked = 0;
  if (slot_compute(gpu).waiting_since_ns.compare_exchange_strong(unmarked, std::max<std::uint64_t>(now, 1),
                                                                 std::memory_order_seq_cst) &&
      broker_ == nullptr) {  // the agent counts the marks itself
    state_.state().schedules[gpu].waiting.fetch_add(1, kRelaxed);
  }
}

bool ComputeGate::unmark_waiting(std::uint32_t gpu) {
  if (broker_ != nullptr) return slot_compute(gpu).waiting_since_ns.exchange(0, std::memory_order_seq_cst) != 0;
  return take_waiting_mark(state_.state().schedules[gpu], slot_compute(gpu));
}

void ComputeGate::drain_observed(std::uint32_t gpu, const Drain& drain, std::uint64_t asked_ns) {
  if (observer_.load(kRelaxed) == nullptr) {
    if (drain) drain(gpu);
    return;
  }
  const std::uint64_t now = monotonic_now_ns();
  // The request's time comes from the schedule (anyone may have written it): only a past one is used.
  notify(gpu, GateEvent::kHandoverAsked, asked_ns != 0 && asked_ns <= now ? asked_ns : now);
  notify(gpu, GateEvent::kDrainBegun, now);
  if (drain) drain(gpu);
  notify(gpu, GateEvent::kDrainEnded, monotonic_now_ns());
}

Status ComputeGate::acquire(std::uint32_t gpu, const Drain& drain) {
  // Asked while the caller was on its way here (in the in-flight bound, say): a gang's rank goes on
  // to its gang's stop count first (its collective, if this launch is one, is withdrawn meanwhile).
  if (goes_on_to_gang_stop(gpu, /*collective=*/false, monotonic_now_ns())) return Ok{};
  if (observer_.load(kRelaxed) == nullptr) {
    return broker_ != nullptr ? acquire_brokered(gpu, drain) : acquire_daemonless(gpu, drain);
  }
  notify(gpu, GateEvent::kWaitBegun, monotonic_now_ns());
  Status status = broker_ != nullptr ? acquire_brokered(gpu, drain) : acquire_daemonless(gpu, drain);
  const std::uint64_t now = monotonic_now_ns();
  notify(gpu, GateEvent::kWaitEnded, now);
  if (status && holds(gpu)) notify(gpu, GateEvent::kGranted, now);
  return status;
}

Status ComputeGate::acquire_daemonless(std::uint32_t gpu, const Drain& drain) {
  StateLayout& state = state_.state();
  GpuSchedule& schedule = state.schedules[gpu];
  const std::uint64_t started = monotonic_now_ns();
  // Counted while it is here: a sibling thread inside a launch on a grant means the grant is used.
  auto& waiting_threads = slot_compute(gpu).threads_waiting;
  waiting_threads.fetch_add(1, std::memory_order_seq_cst);
  mark_waiting(gpu, started);
  Status status = Ok{};
  const HolderProbes probes{[this](std::uint32_t slot) { return slot_alive(slot); }, fenced_or_watched_still};
  for (;;) {
    // At every look: a slot written over while this thread waits would never be granted the GPU.
    if (tenant_ < kMaxTenants) layout::restore_own_slot(state.slots[slot_], tenant_);
    if (layout::holder_slot(schedule.holder_word.load(std::memory_order_seq_cst)) == slot_) {
      // Granted (perhaps while this thread was not running): taking the mark takes the grant up,
      // unless the arbiter withdrew it first (it takes the mark it was granted on, after storing
      // the handover bit). No mark to take: a sibling thread took the grant up, or marked again
      // (then its mark differs from the granted one and the arbiter cannot withdraw it). Either
      // way the process holds the slice unless the word now says otherwise.
      unmark_waiting(gpu);
      const std::uint32_t word = schedule.holder_word.load(std::memory_order_seq_cst);
      if (word == holder_token(slot_)) break;
      if (word == (holder_token(slot_) | kHandoverBit)) {
        // Asked to hand over already (the slice ran out before this thread ran, or a higher class
        // came): at once, not after the holder's grace; a gang's rank first goes on to its gang's
        // stop count (a sibling, granted in time, may have launched a part that waits for this one's).
        if (goes_on_to_gang_stop(gpu, /*collective=*/false, monotonic_now_ns())) break;
        mark_waiting(gpu, monotonic_now_ns());
        if (auto handed = hand_over(gpu, drain); !handed) {
          status = handed;
          break;
        }
        continue;
      }
    }
    // Waiting again if the grant was lost meanwhile, or the arbiter passed this process over while
    // it was not running.
    mark_waiting(gpu, monotonic_now_ns());
    const std::uint32_t seen = schedule.grant_seq.load(kAcquire);
    Arbitration decided;
    {
      auto lock = lock_schedule(state, gpu);
      if (!lock) {
        status = lock.error();
        break;
      }
      decided = arbitrate(state, gpu, monotonic_now_ns(), slot_, timing_, probes);
    }
    if (decided.changed) wake_waiters(state, gpu);
    wake_waiters_on(state, decided.wake_gpus);
    ask_gang_to_hand_over(state, gpu, decided.gang_to_ask, monotonic_now_ns());
    if (decided.granted_to_requester || layout::holder_slot(schedule.holder_word.load(kAcquire)) == slot_) continue;
    wait_for_grant(state, gpu, seen, decided.recheck_after_ns);
  }
  unmark_waiting(gpu);
  if (std::uint32_t threads = waiting_threads.load(kRelaxed); threads != 0) {
    waiting_threads.compare_exchange_strong(threads, threads - 1, kRelaxed);  // never below 0 if written over
  }
  charge_wait(state, tenant_, gpu, started, monotonic_now_ns());
  return status;
}

Status ComputeGate::checkpoint(std::uint32_t gpu, const Drain& drain, std::uint64_t now) {
  // The slice may have gone while the caller waited (in the in-flight bound): then the slice end
  // below is someone else's.
  if (!holds(gpu)) return acquire(gpu, drain);
  if (broker_ != nullptr) return checkpoint_brokered(gpu, drain, now);
  StateLayout& state = state_.state();
  GpuSchedule& schedule = state.schedules[gpu];
  if (now < slice_end_of(schedule, now)) return Ok{};
  if (tenant_ >= kMaxTenants || !capped(state.tenants[tenant_])) {
    // Nobody who could take over waits (a scan, once per slice; the `waiting` counter is only a
    // hint): roll the slice over, so the charge follows use slice by slice and an idle spell inside
    // a long tenure is never charged as one block.
    auto lock = lock_schedule(state, gpu);
    if (!lock) return lock.error();
    if (schedule.holder_word.load(std::memory_order_seq_cst) != holder_token(slot_)) return Ok{};
    if (!contender_waits(state, gpu, slot_, now)) {
      end_slice(state, gpu, now);
      if (tenant_ < kMaxTenants) grant(state, gpu, slot_, tenant_, now, /*mark=*/0);  // else no renewal
      return Ok{};
    }
  }
  if (asks_gang_and_goes_on(gpu)) return Ok{};
  mark_waiting(gpu, now);
  if (auto handed = hand_over(gpu, drain); !handed) {
    unmark_waiting(gpu);  // not waiting after all: it would be granted a slice nobody takes up
    return handed;
  }
  return acquire(gpu, drain);
}

bool ComputeGate::higher_class_recently(std::uint32_t gpu, std::uint64_t now) const {
  const StateLayout& state = state_.state();
  if (tenant_ >= kMaxTenants) return false;
  const std::uint32_t mine = layout::priority_class(state.tenants[tenant_].compute_policy.priority.load(kRelaxed));
  for (std::uint32_t higher = mine + 1; higher < layout::kPriorityClasses; ++higher) {
    const std::uint64_t granted = state.schedules[gpu].class_granted_ns[higher].load(kRelaxed);
    if (granted != 0 && now - granted < static_cast<std::uint64_t>(timing_.higher_class_memory.count())) return true;
  }
  return false;
}

bool ComputeGate::slot_alive(std::uint32_t slot) {
  // The slot's liveness lock, probed through this gate's own descriptor: called under the schedule
  // mutex, so it must not take the shared state's probe mutex (a sweep holds that one and then
  // takes schedule mutexes). Threads of this process may probe at once; a probe is only a look.
  if (!probe_file_.valid()) return true;
  if (!ofd_lock::try_lock(probe_file_.fd(), layout::kSlotLockBase + slot)) return true;
  ofd_lock::unlock(probe_file_.fd(), layout::kSlotLockBase + slot);
  return false;
}

}  // namespace gpushare
