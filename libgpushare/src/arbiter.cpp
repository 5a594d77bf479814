#include "core/arbiter.hpp"

#include <algorithm>
#include <array>

#include "core/gang.hpp"
#include "core/platform.hpp"

namespace gpushare {
using layout::GpuSchedule;
using layout::kHandoverBit;
using layout::kInUse;
using layout::kMaxSlots;
using layout::kMaxTenants;
using layout::StateLayout;

namespace {
constexpr auto kRelaxed = std::memory_order_relaxed;
constexpr auto kAcquire = std::memory_order_acquire;
constexpr auto kRelease = std::memory_order_release;
constexpr std::uint32_t kNone = layout::kNoHolder;
// A waiter sleeps at least this long between looks, so that a deadline due now cannot make it spin
// on the schedule mutex.
constexpr std::uint64_t kShortestRecheckNs = 50'000;

// Whether the holder's activity still stands at `seen` right after the handover bit was stored:
// the probe's answer, or one look at the lanes where none was passed in.
bool stands_still(const HolderProbes& probes, const layout::ProcessSlot& holder, std::uint32_t gpu,
                  std::uint64_t seen) {
  if (probes.stands_still) return probes.stands_still(holder, gpu, seen);
  return layout::activity_of(holder.compute[gpu]) == seen;
}

// Whether a process of the tenant waits for a GPU other than `gpu`. Then the tenant's work here
// may be blocked on that (a collective across GPUs, NCCL): a holder that waits for it only stalls
// both GPUs, and gets no more than the ordinary grace to hand over.
bool tenant_waits_elsewhere(const StateLayout& state, std::uint32_t gpu, std::uint32_t tenant) {
  for (const auto& slot : state.slots) {
    if (slot.state.load(kAcquire) != kInUse || slot.tenant_index.load(kRelaxed) != tenant) continue;
    for (std::uint32_t other = 0; other < layout::kMaxGpus; ++other) {
      if (other != gpu && slot.compute[other].waiting_since_ns.load(kRelaxed) != 0) return true;
    }
  }
  return false;
}

// How long a holder asked to hand over has to do it (see ArbiterTiming::handover_grace).
std::uint64_t handover_grace(const StateLayout& state, std::uint32_t gpu, std::uint32_t holder,
                             const ArbiterTiming& timing) {
  const std::uint32_t tenant = state.slots[holder].tenant_index.load(kRelaxed);
  const bool may_wait_for_others = state.slots[holder].compute[gpu].depends_on_others.load(kRelaxed) != 0 ||
                                   tenant >= kMaxTenants || tenant_waits_elsewhere(state, gpu, tenant);
  return static_cast<std::uint64_t>(may_wait_for_others ? timing.short_handover_grace.count()
                                                        : timing.handover_grace.count());
}

// The waiting slot that should hold the GPU next (slot kNone: nobody), its tenant and the mark it
// waits with; *wait_ns says when a capped tenant becomes eligible if that is why nobody can be chosen.
struct Choice {
  std::uint32_t slot = kNone;
  std::uint32_t tenant = 0;
  std::uint64_t mark = 0;
};
// Within a class, a tenant that may lead on this GPU (GangView::may_lead) goes before one that may
// not: a gang's follower is granted a GPU before its anchor only when nobody else wants it.
Choice pick(StateLayout& state, std::uint32_t gpu, std::uint64_t now, std::uint64_t* wait_ns, const GangView& gangs) {
  std::uint32_t best = kNone, best_tenant = 0;
  std::uint32_t best_priority = 0;
  bool best_leads = false;
  std::uint64_t best_virtual = 0, best_since = 0;
  // Tenants marked active whose processes no longer wait (their waiter died, say) are active no
  // more: they would skew the default weights and skip the re-entry clamp below.
  std::array<bool, kMaxTenants> waits{};
  for (const auto& slot : state.slots) {
    const std::uint32_t tenant = slot.tenant_index.load(kRelaxed);
    if (tenant < kMaxTenants && slot.compute[gpu].waiting_since_ns.load(kRelaxed) != 0 &&
        slot.state.load(kAcquire) == kInUse) {
      waits[tenant] = true;
    }
  }
  for (std::uint32_t t = 0; t < kMaxTenants; ++t) {
    if (!waits[t]) state.tenants[t].compute[gpu].active.store(0, kRelaxed);
  }
  for (std::uint32_t s = 0; s < kMaxSlots; ++s) {
    auto& slot = state.slots[s];
    const std::uint64_t since = slot.compute[gpu].waiting_since_ns.load(kRelaxed);
    if (since == 0 || slot.state.load(kAcquire) != kInUse) continue;
    const std::uint32_t tenant = slot.tenant_index.load(kRelaxed);
    if (tenant >= kMaxTenants || gangs.anchor_in_transit(tenant, gpu)) continue;
    auto& record = state.tenants[tenant];
    auto& entry = record.compute[gpu];
    const std::uint32_t priority = layout::priority_class(record.compute_policy.priority.load(kRelaxed));
    if (entry.active.load(kRelaxed) == 0) {
      // Re-entering after idleness: start at its class's current virtual clock, so time not used
      // while idle is not saved up to be spent later.
      const std::uint64_t virtual_clock = state.schedules[gpu].virtual_clock_ns[priority].load(kRelaxed);
      entry.virtual_ns.store(std::max(entry.virtual_ns.load(kRelaxed), virtual_clock), kRelaxed);
      entry.active.store(1, kRelaxed);
    }
    std::uint64_t wait = 0;
    if (!refill_budget(record, gpu, now, &wait)) {
      *wait_ns = *wait_ns == 0 ? wait : std::min(*wait_ns, wait);
      continue;
    }
    const std::uint64_t virtual_ns = entry.virtual_ns.load(kRelaxed);
    const bool leads = gangs.may_lead(tenant, gpu);
    if (!leads && gangs.awaited_by_another_leader(tenant, gpu)) continue;
    const bool better =
        best == kNone || priority > best_priority ||
        (priority == best_priority &&
         ((leads && !best_leads) ||
          (leads == best_leads && (virtual_ns < best_virtual || (virtual_ns == best_virtual && since < best_since)))));
    if (better) {
      best = s;
      best_tenant = tenant;
      best_priority = priority;
      best_leads = leads;
      best_virtual = virtual_ns;
      best_since = since;
    }
  }
  return {best, best_tenant, best_since};
}

std::uint32_t priority_of_slot(const StateLayout& state, std::uint32_t slot) {
  const std::uint32_t tenant = state.slots[slot].tenant_index.load(kRelaxed);
  return tenant < kMaxTenants ? layout::priority_class(state.tenants[tenant].compute_policy.priority.load(kRelaxed))
                              : 0;
}

// The highest priority class among the processes other than `holder` waiting for the GPU that
// could be granted it at `now` (a capped tenant out of budget could not), or -1.
// A gang's follower waiting without its anchor (gang.hpp) is no contender: it would only wait there
// for its anchor's ranks.
int highest_waiting_class(const StateLayout& state, std::uint32_t gpu, std::uint32_t holder, std::uint64_t now,
                          const GangView& gangs) {
  int highest = -1;
  for (std::uint32_t s = 0; s < kMaxSlots; ++s) {
    if (s == holder || state.slots[s].compute[gpu].waiting_since_ns.load(kRelaxed) == 0 ||
        state.slots[s].state.load(kAcquire) != kInUse) {
      continue;
    }
    const std::uint32_t tenant = state.slots[s].tenant_index.load(kRelaxed);
    if (tenant < kMaxTenants && (!may_be_granted(state.tenants[tenant], gpu, now) || !gangs.may_lead(tenant, gpu))) {
      continue;
    }
    highest = std::max(highest, static_cast<int>(priority_of_slot(state, s)));
  }
  return highest;
}

// How long the holder's launch count may stand still before it loses the slice for idleness.
// Normally timing.idle_after. A holder with only lower classes waiting behind it keeps the GPU
// through pauses up to its slice length: a `high` service that answers a request every few
// milliseconds would otherwise hand the GPU to a `low` trainer in every pause and then find the
// trainer's kernels running when its next request comes (a launch gate cannot stop them; what that
// costs is in docs/performance.md). The pause is charged to the holder: the GPU was kept for it.
// Not for capped tenants, whose budget should go to work.
std::uint64_t idle_after_for(const StateLayout& state, std::uint32_t gpu, std::uint32_t holder,
                             const ArbiterTiming& timing, std::uint64_t now, const GangView& gangs) {
  const auto idle_after = static_cast<std::uint64_t>(timing.idle_after.count());
  const std::uint32_t tenant = state.slots[holder].tenant_index.load(kRelaxed);
  if (tenant >= kMaxTenants || contender_waits(state, gpu, holder, now, gangs)) return idle_after;
  return std::max(idle_after, slice_ns_of(state.tenants[tenant]));
}

// Whether the holder was granted the slice while it waited (its mark is older than the slice) and
// has not come back for it for timing.idle_after: no launch of any of its threads since the grant.
// The mark it was granted on is still there (a sibling thread's later mark, or a renewed slice,
// does not count).
bool grant_untaken(const StateLayout& state, std::uint32_t gpu, std::uint32_t holder, std::uint64_t activity,
                   std::uint64_t now, const ArbiterTiming& timing) {
  const GpuSchedule& schedule = state.schedules[gpu];
  const std::uint64_t mark = schedule.granted_mark.load(kRelaxed);
  const std::uint64_t start = schedule.slice_start_ns.load(kRelaxed);
  const layout::SlotCompute& compute = state.slots[holder].compute[gpu];
  return mark != 0 && compute.waiting_since_ns.load(std::memory_order_seq_cst) == mark &&
         activity == schedule.activity_at_grant.load(kRelaxed) &&
         layout::threads_inside(activity) <= compute.threads_waiting.load(kRelaxed) && now >= start &&
         now - start >= static_cast<std::uint64_t>(timing.idle_after.count());
}

}  // namespace

void grant(StateLayout& state, std::uint32_t gpu, std::uint32_t slot, std::uint32_t tenant, std::uint64_t now,
           std::uint64_t mark) {
  GpuSchedule& schedule = state.schedules[gpu];
  auto& record = state.tenants[tenant];
  std::uint64_t slice = slice_ns_of(record);
  if (capped(record)) {
    slice = std::min<std::uint64_t>(
        slice, static_cast<std::uint64_t>(std::max<std::int64_t>(record.compute[gpu].budget_ns.load(kRelaxed), 0)));
  }
  const std::uint64_t activity = layout::activity_of(state.slots[slot].compute[gpu]);
  schedule.slice_start_ns.store(now, kRelaxed);
  schedule.slice_end_ns.store(now + slice, kRelaxed);
  schedule.handover_asked_ns.store(0, kRelaxed);
  schedule.observed_activity.store(activity, kRelaxed);
  schedule.observed_at_ns.store(now, kRelaxed);
  schedule.looked_at_ns.store(now, kRelaxed);
  schedule.activity_at_grant.store(activity, kRelaxed);
  schedule.granted_mark.store(mark, kRelaxed);
  const std::uint32_t priority = layout::priority_class(record.compute_policy.priority.load(kRelaxed));
  schedule.virtual_clock_ns[priority].store(record.compute[gpu].virtual_ns.load(kRelaxed), kRelaxed);
  schedule.class_granted_ns[priority].store(now, kRelaxed);
  schedule.holder_word.store(holder_token(slot), kRelease);
  schedule.grant_seq.fetch_add(1, kRelease);
}

// Lower classes get nothing while a higher one wants the GPU, so asking the holder to hand over to
// them would only cost it a drain before being granted again. For a capped holder anyone waiting
// counts: its slice ends when its budget does.
bool contender_waits(const StateLayout& state, std::uint32_t gpu, std::uint32_t holder, std::uint64_t now) {
  return contender_waits(state, gpu, holder, now, GangView(state));
}

bool contender_waits(const StateLayout& state, std::uint32_t gpu, std::uint32_t holder, std::uint64_t now,
                     const GangView& gangs) {
  const int highest = highest_waiting_class(state, gpu, holder, now, gangs);
  const std::uint32_t tenant = state.slots[holder].tenant_index.load(kRelaxed);
  if (tenant < kMaxTenants && capped(state.tenants[tenant])) return highest >= 0;
  return highest >= static_cast<int>(priority_of_slot(state, holder));
}

Arbitration arbitrate(StateLayout& state, std::uint32_t gpu, std::uint64_t now, std::uint32_t requester,
                      const ArbiterTiming& timing, const HolderProbes& probes) {
  GpuSchedule& schedule = state.schedules[gpu];
  Arbitration result;
  std::uint64_t recheck = static_cast<std::uint64_t>(timing.max_sleep.count());
  const std::uint32_t word = schedule.holder_word.load(kAcquire);
  const std::uint32_t holder = layout::holder_slot(word);
  const GangView gangs(state);
  std::uint32_t old_tenant = kMaxTenants;
  if (holder != kNone) {
    bool take_away = holder >= kMaxSlots || state.slots[holder].state.load(kAcquire) != kInUse;
    // Up to when the holder is charged: now, unless it lost the slice for idleness, in which case
    // its use ended when it was last seen launching.
    std::uint64_t charge_until = now;
    // How long the holder's activity has stood still (0 when it just moved).
    std::uint64_t stood = 0;
    if (!take_away) {
      // Idle (or dead) holders: their activity stops moving.
      const layout::SlotCompute& activity = state.slots[holder].compute[gpu];
      const std::uint64_t seen = layout::activity_of(activity);
      const std::uint64_t last_look = schedule.looked_at_ns.exchange(now, kRelaxed);
      if (seen != schedule.observed_activity.load(kRelaxed)) {
        // When nobody looked for a while, the change happened at some unknown moment since the last
        // look: take the earliest, so that an idle spell is never charged as use.
        const bool watched = now - last_look <= 2 * static_cast<std::uint64_t>(timing.max_sleep.count());
        schedule.observed_activity.store(seen, kRelaxed);
        schedule.observed_at_ns.store(watched ? now : std::max(last_look, schedule.observed_at_ns.load(kRelaxed)),
                                      kRelaxed);
      } else {
        stood = now - schedule.observed_at_ns.load(kRelaxed);
      }
      if (stood >= static_cast<std::uint64_t>(timing.idle_after.count()) && probes.slot_alive &&
          !probes.slot_alive(holder)) {
        // Gone (its liveness lock is free), perhaps inside a launch: it loses the slice whatever
        // hold it had, charged up to when it was last seen launching. It is no waiter either,
        // whatever its slot says, until its slot is reclaimed.
        take_away = true;
        charge_until = gone_holder_used_until(schedule, now);
        take_waiting_mark(schedule, state.slots[holder].compute[gpu]);
      } else if (grant_untaken(state, gpu, holder, seen, now, timing)) {
        // Granted while it waited, and its waiting thread has not come back for the grant: it is
        // not running (a CPU limit, a busy host, SIGSTOP). That thread counts as inside, so the
        // holder never looks idle, and asking it to hand over would cost everyone the grace. The
        // grant is withdrawn, uncharged, and the slot is no waiter until its thread runs and asks
        // again. The waiter takes a grant up by taking its own waiting mark (ComputeGate::acquire);
        // here the bit is stored before the mark is taken, both sequentially consistent, so exactly
        // one of the two gets the mark, and a waiter that takes it sees the bit and hands over.
        schedule.holder_word.store(word | kHandoverBit, std::memory_order_seq_cst);
        auto& since = state.slots[holder].compute[gpu].waiting_since_ns;
        std::uint64_t mark = schedule.granted_mark.load(kRelaxed);
        if (stands_still(probes, state.slots[holder], gpu, seen) &&
            since.compare_exchange_strong(mark, 0, std::memory_order_seq_cst)) {
          uncount_waiter(schedule);
          take_away = true;
          charge_until = schedule.slice_start_ns.load(kRelaxed);
        } else {
          std::uint32_t asked = word | kHandoverBit;
          schedule.holder_word.compare_exchange_strong(asked, word, std::memory_order_seq_cst);
        }
      } else if (layout::threads_inside(seen) == 0 && stood != 0 &&
                 stood >= idle_after_for(state, gpu, holder, timing, now, gangs)) {
        // Idle between launches. The hot path moves its lane and then reads the holder word; here
        // the word is changed and then the lanes read again, after fencing the holder's threads
        // (or watching for kStoreVisibleNs: HolderStandsStill), so a launch that starts at this moment
        // is either seen here or sees the handover bit and hands over itself.
        schedule.holder_word.store(word | kHandoverBit, std::memory_order_seq_cst);
        if (stands_still(probes, state.slots[holder], gpu, seen)) {
          take_away = true;
          charge_until =
              std::min(now, std::max(schedule.observed_at_ns.load(kRelaxed), schedule.slice_start_ns.load(kRelaxed)));
        } else {
          std::uint32_t asked = word | kHandoverBit;
          schedule.holder_word.compare_exchange_strong(asked, word, std::memory_order_seq_cst);
        }
      }
    }
    // A higher class takes the GPU at once (the holder finds out at its next launch), if it may
    // run now: a capped tenant with no budget left would only leave the GPU idle.
    if (!take_away && requester != kNoRequester && requester != holder &&
        priority_of_slot(state, requester) > priority_of_slot(state, holder)) {
      const std::uint32_t tenant = state.slots[requester].tenant_index.load(kRelaxed);
      std::uint64_t unused = 0;
      take_away = tenant < kMaxTenants && refill_budget(state.tenants[tenant], gpu, now, &unused);
    }
    const std::uint64_t slice_end = slice_end_of(schedule, now);
    // A gang's follower that no longer holds its anchor hands over at once to one who may lead here:
    // its ranks would only wait for the anchor's (gang.hpp).
    if (holder < kMaxSlots) old_tenant = state.slots[holder].tenant_index.load(kRelaxed);
    // (highest_waiting_class counts only waiters that may lead here.)
    const bool off_anchor =
        !take_away && old_tenant < kMaxTenants && gangs.lost_its_anchor(old_tenant, gpu) &&
        highest_waiting_class(state, gpu, holder, now, gangs) >= static_cast<int>(priority_of_slot(state, holder));
    // A holder whose activity has stood still for a whole slice and its grace period is blocked (in
    // a synchronize, say) on something that may depend on a waiter of a lower class: it is asked,
    // and then made, to hand over to anyone waiting. Holding the GPU is for pauses between launches.
    const bool over = !take_away && (now >= slice_end || off_anchor);
    // A follower without its anchor that does not hand over within the idle threshold is stuck in a
    // collective waiting for the anchor's ranks: it loses the GPU then, its part left to finish later.
    const std::uint64_t grace = !over        ? 0
                                : off_anchor ? static_cast<std::uint64_t>(timing.idle_after.count())
                                             : handover_grace(state, gpu, holder, timing);  // it scans the slots
    const std::uint32_t holder_tenant = over ? old_tenant : kNone;
    const bool stuck = over && holder_tenant < kMaxTenants &&
                       stood >= slice_ns_of(state.tenants[holder_tenant]) + grace &&
                       highest_waiting_class(state, gpu, holder, now, gangs) >= 0;
    if (over && (off_anchor || stuck || contender_waits(state, gpu, holder, now, gangs))) {
      if ((word & kHandoverBit) == 0) {
        schedule.holder_word.store(word | kHandoverBit, kRelease);
        schedule.handover_asked_ns.store(now, kRelaxed);
        if (gangs.gang(old_tenant)) result.gang_to_ask = old_tenant;
      } else {
        take_away = now - schedule.handover_asked_ns.load(kRelaxed) >= grace;
      }
    } else if (!take_away && now < slice_end) {
      recheck = std::min(recheck, slice_end - now);
    }
    if (take_away) {
      end_slice(state, gpu, charge_until);
      result.changed = true;
    }
  }
  if (schedule.holder_word.load(kAcquire) == 0) {
    std::uint64_t cap_wait = 0;
    const Choice next = pick(state, gpu, now, &cap_wait, gangs);
    if (next.slot != kNone) {
      grant(state, gpu, next.slot, next.tenant, now, next.mark);
      result.changed = true;
      result.granted_to_requester = next.slot == requester;
      // The new holder's gang: its followers may now lead on its other GPUs. Every other gang
      // anchored here: its followers, held back while the anchor changed hands, may take what is left.
      if (gangs.gang(next.tenant)) result.wake_gpus |= gangs.gpus_of(next.tenant);
      result.wake_gpus |= gangs.gpus_of_gangs_anchored_at(gpu);
    } else if (cap_wait != 0) {
      recheck = std::min(recheck, cap_wait);
    }
  }
  // The old holder's gang, if it lost this GPU: where it follows, it now holds its anchor no more.
  if (result.changed && gangs.gang(old_tenant)) result.wake_gpus |= gangs.gpus_of(old_tenant);
  result.wake_gpus &= ~(1U << gpu);
  result.recheck_after_ns = std::max(recheck, kShortestRecheckNs);
  return result;
}

Result<shared_mutex::Guard> lock_schedule(StateLayout& state, std::uint32_t gpu) {
  return shared_mutex::Guard::acquire(&state.schedules[gpu].mutex, kScheduleLockWait, [&] {
    // A process died deciding: whatever it half-did, the safe state is a free GPU (the holder, if
    // any, asks again at its next launch).
    GpuSchedule& schedule = state.schedules[gpu];
    schedule.holder_word.store(0, kRelease);
    // A death in the middle of end_slice leaves the sequence odd: readers would retry forever.
    if ((schedule.charge_seq.load(kAcquire) & 1) != 0) schedule.charge_seq.fetch_add(1, kRelease);
    schedule.grant_seq.fetch_add(1, kRelease);
    wake_waiters(state, gpu);
  });
}

void wake_waiters(StateLayout& state, std::uint32_t gpu) { futex::wake_all(state.schedules[gpu].grant_seq); }

void wake_waiters_on(StateLayout& state, std::uint32_t gpus) {
  for (std::uint32_t gpu = 0; gpu < layout::kMaxGpus; ++gpu) {
    if ((gpus & (1U << gpu)) != 0) wake_waiters(state, gpu);
  }
}

void wait_for_grant(StateLayout& state, std::uint32_t gpu, std::uint32_t seen, std::uint64_t timeout_ns) {
  futex::wait(state.schedules[gpu].grant_seq, seen, timeout_ns);
}

void uncount_waiter(GpuSchedule& schedule) {
  std::uint32_t count = schedule.waiting.load(kRelaxed);
  while (count != 0 && !schedule.waiting.compare_exchange_weak(count, count - 1, kRelaxed)) {
  }
}

bool take_waiting_mark(GpuSchedule& schedule, layout::SlotCompute& compute) {
  if (compute.waiting_since_ns.exchange(0, std::memory_order_seq_cst) == 0) return false;
  uncount_waiter(schedule);
  return true;
}

}  // namespace gpushare
