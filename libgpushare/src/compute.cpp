#include "core/compute.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <climits>
#include <ctime>

#include <fmt/format.h>

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
constexpr std::uint64_t kDefaultSliceNs = 10'000'000;


// Whether a process's activity still stands at `seen`, right after the caller asked it to hand
// over. A thread that owns an activity lane moves it with a plain store, which may wait in its
// core's store buffer while the thread already reads the holder word: a single look could miss a
// launch that did not see the request either. So its threads are fenced first, or, where that
// cannot be done, the lanes are watched for kStoreVisibleNs.
bool stands_still(const layout::ProcessSlot& slot, std::uint32_t gpu, std::uint64_t seen) {
  const layout::SlotCompute& compute = slot.compute[gpu];
  if (slot.fenced.load(kRelaxed) != 0 && fence::registered_processes()) return layout::activity_of(compute) == seen;
  const std::uint64_t until = monotonic_now_ns() + kStoreVisibleNs;
  do {
    if (layout::activity_of(compute) != seen) return false;
  } while (monotonic_now_ns() < until);
  return true;
}

// The longest slice a tenant may ask for (GPUSHARE_SLICE_MS): whatever the file says, no slice
// lasts longer, so a number written into it cannot keep the GPU from the others.
constexpr std::uint64_t kMaxSliceNs = 1'000'000'000;

std::uint64_t slice_ns_of(const layout::TenantRecord& tenant) {
  const std::uint32_t slice_us = tenant.compute_policy.slice_us.load(kRelaxed);
  return slice_us == 0 ? kDefaultSliceNs : std::min(std::uint64_t{slice_us} * 1000, kMaxSliceNs);
}

// When the slice in progress ends, as far as the file can be believed: never more than kMaxSliceNs
// after its start, and now for a start in the future.
std::uint64_t slice_end_of(const GpuSchedule& schedule, std::uint64_t now) {
  const std::uint64_t start = schedule.slice_start_ns.load(kRelaxed);
  if (start > now) return now;
  return std::min(schedule.slice_end_ns.load(kRelaxed), start + kMaxSliceNs);
}

// A hard cap below 100 % is in force (GPUSHARE_COMPUTE_LIMIT).
bool capped(const layout::TenantRecord& tenant) {
  const std::uint32_t limit = tenant.compute_policy.limit_pct.load(kRelaxed);
  return limit != 0 && limit < 100;
}

bool tenant_waits(const StateLayout& state, std::uint32_t gpu, std::uint32_t tenant) {
  for (const auto& slot : state.slots) {
    if (slot.state.load(kAcquire) == kInUse && slot.tenant_index.load(kRelaxed) == tenant &&
        slot.compute[gpu].waiting_since_ns.load(kRelaxed) != 0) {
      return true;
    }
  }
  return false;
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

// Weight in percent points: the share, or an equal part of what the shares leave.
std::uint64_t weight_of(const StateLayout& state, std::uint32_t gpu, std::uint32_t tenant) {
  const std::uint32_t own = state.tenants[tenant].compute_policy.share_pct.load(kRelaxed);
  if (own != 0) return own;
  std::uint64_t explicit_sum = 0, active = 0, unspecified = 0;
  for (std::uint32_t t = 0; t < kMaxTenants; ++t) {
    if (state.tenants[t].state.load(kAcquire) != kInUse) continue;
    if (state.tenants[t].compute[gpu].active.load(kRelaxed) == 0 && t != tenant) continue;
    ++active;
    const std::uint32_t share = state.tenants[t].compute_policy.share_pct.load(kRelaxed);
    if (share == 0) ++unspecified; else explicit_sum += share;
  }
  if (explicit_sum < 100 && unspecified > 0) return std::max<std::uint64_t>(1, (100 - explicit_sum) / unspecified);
  return std::max<std::uint64_t>(1, explicit_sum / std::max<std::uint64_t>(active, 1));
}

// A capped tenant's hard-cap budget at `now`: what it had, refilled at limit% of the time since,
// at most one slice deep (a new tenant starts with a full slice).
std::int64_t budget_at(const layout::TenantRecord& tenant, std::uint32_t gpu, std::uint64_t now) {
  const std::uint32_t limit = tenant.compute_policy.limit_pct.load(kRelaxed);
  const auto& entry = tenant.compute[gpu];
  const auto depth = static_cast<std::int64_t>(slice_ns_of(tenant));
  const std::uint64_t last = entry.budget_at_ns.load(kRelaxed);
  if (last == 0) return depth;
  std::int64_t budget = entry.budget_ns.load(kRelaxed);
  if (now > last) budget += static_cast<std::int64_t>((now - last) * limit / 100);
  return std::min(budget, depth);
}

// Grant only with at least half a slice of budget: tiny slices would cost a handover each.
std::int64_t budget_needed(const layout::TenantRecord& tenant) {
  return static_cast<std::int64_t>(slice_ns_of(tenant) / 2);
}

// Whether a tenant may be granted a slice at `now` (uncapped, or with budget enough).
bool may_be_granted(const layout::TenantRecord& tenant, std::uint32_t gpu, std::uint64_t now) {
  return !capped(tenant) || budget_at(tenant, gpu, now) >= budget_needed(tenant);
}

// Refills a capped tenant's budget; returns whether it may be granted a slice now, and if not,
// how long until it may.
bool refill_budget(layout::TenantRecord& tenant, std::uint32_t gpu, std::uint64_t now, std::uint64_t* wait_ns) {
  // Read once: another process may change it between a check and a division.
  const std::uint32_t limit = tenant.compute_policy.limit_pct.load(kRelaxed);
  if (limit == 0 || limit >= 100) return true;
  const std::int64_t budget = budget_at(tenant, gpu, now);
  tenant.compute[gpu].budget_ns.store(budget, kRelaxed);
  tenant.compute[gpu].budget_at_ns.store(now, kRelaxed);
  const std::int64_t needed = budget_needed(tenant);
  if (budget >= needed) return true;
  *wait_ns = static_cast<std::uint64_t>(needed - budget) * 100 / limit + 1;
  return false;
}

// Grants the slice to `slot` of `tenant` (an index checked by the caller: the slot's own field may
// change meanwhile). `mark`: the waiting mark it was granted on (SlotCompute::waiting_since_ns), or
// 0 for a holder's slice renewed; only a grant made on a mark can be withdrawn as untaken.
void grant(StateLayout& state, std::uint32_t gpu, std::uint32_t slot, std::uint32_t tenant, std::uint64_t now,
           std::uint64_t mark) {
  GpuSchedule& schedule = state.schedules[gpu];
  auto& record = state.tenants[tenant];
  std::uint64_t slice = slice_ns_of(record);
  if (capped(record)) {
    slice = std::min<std::uint64_t>(slice, static_cast<std::uint64_t>(std::max<std::int64_t>(
                                               record.compute[gpu].budget_ns.load(kRelaxed), 0)));
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

// The waiting slot that should hold the GPU next (slot kNone: nobody), its tenant and the mark it
// waits with; *wait_ns says when a capped tenant becomes eligible if that is why nobody can be chosen.
struct Choice {
  std::uint32_t slot = kNone;
  std::uint32_t tenant = 0;
  std::uint64_t mark = 0;
};
Choice pick(StateLayout& state, std::uint32_t gpu, std::uint64_t now, std::uint64_t* wait_ns) {
  std::uint32_t best = kNone, best_tenant = 0;
  std::uint32_t best_priority = 0;
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
    if (tenant >= kMaxTenants) continue;
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
    const bool better = best == kNone || priority > best_priority ||
                        (priority == best_priority &&
                         (virtual_ns < best_virtual || (virtual_ns == best_virtual && since < best_since)));
    if (better) {
      best = s;
      best_tenant = tenant;
      best_priority = priority;
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
int highest_waiting_class(const StateLayout& state, std::uint32_t gpu, std::uint32_t holder, std::uint64_t now) {
  int highest = -1;
  for (std::uint32_t s = 0; s < kMaxSlots; ++s) {
    if (s == holder || state.slots[s].compute[gpu].waiting_since_ns.load(kRelaxed) == 0 ||
        state.slots[s].state.load(kAcquire) != kInUse) {
      continue;
    }
    const std::uint32_t tenant = state.slots[s].tenant_index.load(kRelaxed);
    if (tenant < kMaxTenants && !may_be_granted(state.tenants[tenant], gpu, now)) continue;
    highest = std::max(highest, static_cast<int>(priority_of_slot(state, s)));
  }
  return highest;
}

// Whether someone who could take the holder's place waits: a process of the holder's class or a
// higher one. Lower classes get nothing while a higher one wants the GPU, so asking the holder to
// hand over to them would only cost it a drain before being granted again. For a capped holder
// anyone waiting counts: its slice ends when its budget does.
bool contender_waits(const StateLayout& state, std::uint32_t gpu, std::uint32_t holder, std::uint64_t now) {
  const int highest = highest_waiting_class(state, gpu, holder, now);
  const std::uint32_t tenant = state.slots[holder].tenant_index.load(kRelaxed);
  if (tenant < kMaxTenants && capped(state.tenants[tenant])) return highest >= 0;
  return highest >= static_cast<int>(priority_of_slot(state, holder));
}

// How long the holder's launch count may stand still before it loses the slice for idleness.
// Normally timing.idle_after. A holder with only lower classes waiting behind it keeps the GPU
// through pauses up to its slice length: a `high` service that answers a request every few
// milliseconds would otherwise hand the GPU to a `low` trainer in every pause and then find the
// trainer's kernels running when its next request comes (a launch gate cannot stop them; on an
// H200 that put the high tenant's p99 at 6.7x its solo p99). The pause is charged to the holder:
// the GPU was kept for it. Not for capped tenants, whose budget should go to work.
std::uint64_t idle_after_for(const StateLayout& state, std::uint32_t gpu, std::uint32_t holder,
                             const ArbiterTiming& timing, std::uint64_t now) {
  const auto idle_after = static_cast<std::uint64_t>(timing.idle_after.count());
  const std::uint32_t tenant = state.slots[holder].tenant_index.load(kRelaxed);
  if (tenant >= kMaxTenants || contender_waits(state, gpu, holder, now)) return idle_after;
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

long futex(std::atomic<std::uint32_t>* word, int op, std::uint32_t value, const timespec* timeout) {
  // Not FUTEX_PRIVATE: the word lives in memory shared between processes.
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), op, value, timeout, nullptr, 0);
}

}  // namespace

std::uint64_t monotonic_now_ns() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(now.tv_nsec);
}

Result<Priority> parse_priority(std::string_view text) {
  if (text == "high") return Priority::kHigh;
  if (text == "normal") return Priority::kNormal;
  if (text == "low") return Priority::kLow;
  return Error{fmt::format("invalid priority '{}' (expected high, normal or low)", text)};
}

std::string_view priority_name(Priority priority) {
  switch (priority) {
    case Priority::kHigh: return "high";
    case Priority::kLow: return "low";
    default: return "normal";
  }
}

void end_slice(StateLayout& state, std::uint32_t gpu, std::uint64_t now) {
  GpuSchedule& schedule = state.schedules[gpu];
  const std::uint32_t holder = layout::holder_slot(schedule.holder_word.load(kAcquire));
  if (holder == kNone || holder >= kMaxSlots) {
    schedule.holder_word.store(0, kRelease);
    return;
  }
  schedule.charge_seq.fetch_add(1, std::memory_order_acq_rel);  // odd: charging
  const std::uint32_t tenant = state.slots[holder].tenant_index.load(kRelaxed);
  if (tenant < kMaxTenants) {
    auto& record = state.tenants[tenant];
    auto& entry = record.compute[gpu];
    const std::uint64_t start = schedule.slice_start_ns.load(kRelaxed);
    const std::uint64_t used = now > start ? now - start : 0;
    entry.gpu_ns.fetch_add(used, kRelaxed);
    entry.virtual_ns.fetch_add(used * 100 / weight_of(state, gpu, tenant), kRelaxed);
    if (capped(record)) entry.budget_ns.fetch_sub(static_cast<std::int64_t>(used), kRelaxed);
    entry.launches.fetch_add(layout::calls_between(schedule.activity_at_grant.load(kRelaxed),
                                                   layout::activity_of(state.slots[holder].compute[gpu])),
                             kRelaxed);
    if (!tenant_waits(state, gpu, tenant)) entry.active.store(0, kRelaxed);
    // The class held the GPU until now: a long tenure (a hold through pauses, renewals only every
    // few launches) must not look like a class long gone to the lower ones that come next.
    const std::uint32_t priority = layout::priority_class(record.compute_policy.priority.load(kRelaxed));
    schedule.class_granted_ns[priority].store(now, kRelaxed);
  }
  schedule.holder_word.store(0, kRelease);
  schedule.charge_seq.fetch_add(1, kRelease);  // even: charged, and no slice in progress
  schedule.grant_seq.fetch_add(1, kRelease);
}

std::uint64_t gone_holder_used_until(const GpuSchedule& schedule, std::uint64_t now) {
  const std::uint64_t last_seen =
      std::max(schedule.slice_start_ns.load(kRelaxed), schedule.observed_at_ns.load(kRelaxed));
  return std::min(now, last_seen);
}

Arbitration arbitrate(StateLayout& state, std::uint32_t gpu, std::uint64_t now, std::uint32_t requester,
                      const ArbiterTiming& timing, const SlotAlive& slot_alive) {
  GpuSchedule& schedule = state.schedules[gpu];
  Arbitration result;
  std::uint64_t recheck = static_cast<std::uint64_t>(timing.max_sleep.count());
  const std::uint32_t word = schedule.holder_word.load(kAcquire);
  const std::uint32_t holder = layout::holder_slot(word);
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
      if (stood >= static_cast<std::uint64_t>(timing.idle_after.count()) && slot_alive && !slot_alive(holder)) {
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
        if (stands_still(state.slots[holder], gpu, seen) &&
            since.compare_exchange_strong(mark, 0, std::memory_order_seq_cst)) {
          uncount_waiter(schedule);
          take_away = true;
          charge_until = schedule.slice_start_ns.load(kRelaxed);
        } else {
          std::uint32_t asked = word | kHandoverBit;
          schedule.holder_word.compare_exchange_strong(asked, word, std::memory_order_seq_cst);
        }
      } else if (layout::threads_inside(seen) == 0 && stood != 0 &&
                 stood >= idle_after_for(state, gpu, holder, timing, now)) {
        // Idle between launches. The hot path moves its lane and then reads the holder word; here
        // the word is changed and then the lanes read again, after fencing the holder's threads
        // (or watching for kStoreVisibleNs: stands_still), so a launch that starts at this moment
        // is either seen here or sees the handover bit and hands over itself.
        schedule.holder_word.store(word | kHandoverBit, std::memory_order_seq_cst);
        if (stands_still(state.slots[holder], gpu, seen)) {
          take_away = true;
          charge_until = std::min(now, std::max(schedule.observed_at_ns.load(kRelaxed),
                                                schedule.slice_start_ns.load(kRelaxed)));
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
    // A holder whose activity has stood still for a whole slice and its grace period is blocked (in
    // a synchronize, say) on something that may depend on a waiter of a lower class: it is asked,
    // and then made, to hand over to anyone waiting. Holding the GPU is for pauses between launches.
    const bool over = !take_away && now >= slice_end;
    const std::uint64_t grace = over ? handover_grace(state, gpu, holder, timing) : 0;  // it scans the slots
    const std::uint32_t holder_tenant = over ? state.slots[holder].tenant_index.load(kRelaxed) : kNone;
    const bool stuck = over && holder_tenant < kMaxTenants &&
                       stood >= slice_ns_of(state.tenants[holder_tenant]) + grace &&
                       highest_waiting_class(state, gpu, holder, now) >= 0;
    if (over && (stuck || contender_waits(state, gpu, holder, now))) {
      if ((word & kHandoverBit) == 0) {
        schedule.holder_word.store(word | kHandoverBit, kRelease);
        schedule.handover_asked_ns.store(now, kRelaxed);
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
    const Choice next = pick(state, gpu, now, &cap_wait);
    if (next.slot != kNone) {
      grant(state, gpu, next.slot, next.tenant, now, next.mark);
      result.changed = true;
      result.granted_to_requester = next.slot == requester;
    } else if (cap_wait != 0) {
      recheck = std::min(recheck, cap_wait);
    }
  }
  result.recheck_after_ns = std::max<std::uint64_t>(recheck, 50'000);
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

void wake_waiters(StateLayout& state, std::uint32_t gpu) {
  futex(&state.schedules[gpu].grant_seq, FUTEX_WAKE, INT_MAX, nullptr);
}

void wait_for_grant(StateLayout& state, std::uint32_t gpu, std::uint32_t seen, std::uint64_t timeout_ns) {
  const timespec timeout{static_cast<time_t>(timeout_ns / 1'000'000'000), static_cast<long>(timeout_ns % 1'000'000'000)};
  futex(&state.schedules[gpu].grant_seq, FUTEX_WAIT, seen, &timeout);
}

namespace fence {
namespace {
bool membarrier(int command) { return ::syscall(SYS_membarrier, command, 0u, 0) == 0; }
}  // namespace
bool register_process_for_global() { return membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED); }
bool register_process_for_own() { return membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED); }
bool registered_processes() { return membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED); }
bool own_threads() { return membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED); }
}  // namespace fence

namespace {
// 0 is no gate: a LaneClaim starts there.
std::atomic<std::uint64_t> g_next_gate_id{1};
}  // namespace

ComputeGate::ComputeGate(SharedState& state, std::uint32_t slot, ArbiterTiming timing)
    : state_(state),
      slot_(slot),
      tenant_(state.state().slots[slot].tenant_index.load(kRelaxed)),
      id_(g_next_gate_id.fetch_add(1, kRelaxed)),
      fenced_own_(fence::register_process_for_own()),
      timing_(timing),
      probe_fd_(::open(state.descriptor_path().c_str(), O_RDWR | O_CLOEXEC)) {
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

ComputeGate::~ComputeGate() {
  if (probe_fd_ >= 0) ::close(probe_fd_);
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
  {
    auto lock = lock_schedule(state, gpu);
    if (!lock) return lock.error();
    GpuSchedule& schedule = state.schedules[gpu];
    slice_seen = schedule.grant_seq.load(kRelaxed);
    if (schedule.holder_word.load(kAcquire) == holder_token(slot_)) {
      schedule.handover_asked_ns.store(monotonic_now_ns(), kRelaxed);
      schedule.holder_word.store(holder_token(slot_) | kHandoverBit, std::memory_order_seq_cst);
    }
  }
  if (drain) drain(gpu);
  {
    auto lock = lock_schedule(state, gpu);
    if (!lock) return lock.error();
    const GpuSchedule& schedule = state.schedules[gpu];
    if (layout::holder_slot(schedule.holder_word.load(kAcquire)) == slot_ && schedule.grant_seq.load(kRelaxed) == slice_seen) {
      end_slice(state, gpu, monotonic_now_ns());
    }
  }
  wake_waiters(state, gpu);
  return Ok{};
}

Status ComputeGate::release_if_wanted(std::uint32_t gpu, const Drain& drain, std::uint64_t now) {
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
                                                                  std::memory_order_seq_cst)) {
    state_.state().schedules[gpu].waiting.fetch_add(1, kRelaxed);
  }
}

bool ComputeGate::unmark_waiting(std::uint32_t gpu) {
  return take_waiting_mark(state_.state().schedules[gpu], slot_compute(gpu));
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

Status ComputeGate::acquire(std::uint32_t gpu, const Drain& drain) {
  StateLayout& state = state_.state();
  GpuSchedule& schedule = state.schedules[gpu];
  const std::uint64_t started = monotonic_now_ns();
  // Counted while it is here: a sibling thread inside a launch on a grant means the grant is used.
  auto& waiting_threads = slot_compute(gpu).threads_waiting;
  waiting_threads.fetch_add(1, std::memory_order_seq_cst);
  mark_waiting(gpu, started);
  Status status = Ok{};
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
        // came): at once, not after the holder's grace.
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
      decided = arbitrate(state, gpu, monotonic_now_ns(), slot_, timing_,
                          [this](std::uint32_t slot) { return slot_alive(slot); });
    }
    if (decided.changed) wake_waiters(state, gpu);
    if (decided.granted_to_requester || layout::holder_slot(schedule.holder_word.load(kAcquire)) == slot_) continue;
    wait_for_grant(state, gpu, seen, decided.recheck_after_ns);
  }
  unmark_waiting(gpu);
  if (std::uint32_t threads = waiting_threads.load(kRelaxed); threads != 0) {
    waiting_threads.compare_exchange_strong(threads, threads - 1, kRelaxed);  // never below 0 if written over
  }
  if (tenant_ < kMaxTenants) {
    state.tenants[tenant_].compute[gpu].wait_ns.fetch_add(monotonic_now_ns() - started, kRelaxed);
  }
  return status;
}

Status ComputeGate::checkpoint(std::uint32_t gpu, const Drain& drain, std::uint64_t now) {
  // The slice may have gone while the caller waited (in the in-flight bound): then the slice end
  // below is someone else's.
  if (!holds(gpu)) return acquire(gpu, drain);
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
  mark_waiting(gpu, now);
  if (auto handed = hand_over(gpu, drain); !handed) {
    unmark_waiting(gpu);  // not waiting after all: it would be granted a slice nobody takes up
    return handed;
  }
  return acquire(gpu, drain);
}

bool ComputeGate::higher_class_recently(std::uint32_t gpu, std::uint64_t now) const {
  const StateLayout& state = state_.state();
  const std::uint32_t tenant = state.slots[slot_].tenant_index.load(kRelaxed);
  if (tenant >= kMaxTenants) return false;
  const std::uint32_t mine = layout::priority_class(state.tenants[tenant].compute_policy.priority.load(kRelaxed));
  for (std::uint32_t higher = mine + 1; higher <= 2; ++higher) {
    const std::uint64_t granted = state.schedules[gpu].class_granted_ns[higher].load(kRelaxed);
    if (granted != 0 && now - granted < static_cast<std::uint64_t>(timing_.higher_class_memory.count())) return true;
  }
  return false;
}

bool ComputeGate::slot_alive(std::uint32_t slot) {
  // The slot's liveness lock, probed through this gate's own descriptor: called under the schedule
  // mutex, so it must not take the shared state's probe mutex (a sweep holds that one and then
  // takes schedule mutexes). Threads of this process may probe at once; a probe is only a look.
  if (probe_fd_ < 0) return true;
  if (!ofd_lock::try_lock(probe_fd_, layout::kSlotLockBase + slot)) return true;
  ofd_lock::unlock(probe_fd_, layout::kSlotLockBase + slot);
  return false;
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

}  // namespace gpushare
