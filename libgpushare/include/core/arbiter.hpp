// Time-slicing one GPU between tenants: the decision.
//
// Per GPU, one process at a time holds the *slice* and may submit work; everyone else who wants
// the GPU sleeps on a futex in the shared state. There is no daemon: the decisions are taken by
// whichever process is in the slow path (a waiter, or a holder at a checkpoint: compute_gate.hpp),
// under the GPU's schedule mutex, by `arbitrate` below. They are functions of the schedule state,
// the `now` passed in and the answers of the process-side probes passed in (HolderProbes: is a
// slot's process alive, does a holder's activity stand still once its threads are fenced), so unit
// tests drive them with a fake clock and fake probes. The arbiter's own system calls are futex
// wakes and waits around a decision (wake_waiters, wait_for_grant, lock_schedule's repair).
//
// Policy (the values: compute_policy.hpp):
//   * Priority classes are strict: a waiting `high` tenant takes the GPU from a `normal` or `low`
//     holder at once (it does not wait for the holder's queue to drain), and lower classes are not
//     granted a slice while a higher one wants the GPU.
//   * Within a class, start-time fair queueing: each tenant's virtual time advances by the GPU time
//     it was charged divided by its weight; the waiting tenant with the smallest virtual time goes
//     next. A tenant that was idle re-enters at the current virtual clock, so idleness is not
//     banked. Charges cover the slice from its start to the end of the holder's drain, so overruns
//     are paid for and long-run shares stay exact.
//   * Weights are the tenants' shares in percent; tenants without a share split what is left of
//     100 among themselves (equally with the others when nothing is left).
//   * A hard cap (limit, %) is a token bucket refilled at limit% of wall time, at most one slice
//     deep: a capped tenant is not granted a slice until its budget is back, even on an idle GPU.
//   * A holder is asked to hand over when its slice has ended and someone of its class or a higher
//     one waits (anyone, if it is capped or has been stuck for a slice and the grace period); a
//     holder that stops launching (idle: 2 ms, or up to its slice length while only lower classes
//     wait) or dies loses the slice without being asked.
//
// arbiter.cpp holds the decision and the waiting marks; schedule_charges.cpp what a slice costs:
// slice lengths and ends, hard-cap budgets and the charge at the end of a slice.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include "core/compute_policy.hpp"
#include "core/result.hpp"
#include "core/shared_mutex.hpp"
#include "core/state_layout.hpp"

namespace gpushare {

class GangView;
using layout::holder_token;

// Outcome of one arbitration, for the process that ran it.
struct Arbitration {
  bool granted_to_requester = false;
  bool changed = false;                // the holder changed: wake the waiters
  std::uint64_t recheck_after_ns = 0;  // when to look again if still waiting
  // Other GPUs whose waiters should look again (a gang's holder changed here: gang.hpp): bit h for
  // GPU h. The caller wakes them (wake_waiters_on) after releasing the schedule mutex.
  std::uint32_t wake_gpus = 0;
  // A gang asked here to hand over: the tenant whose other GPUs the caller asks too
  // (ask_gang_to_hand_over, after releasing the schedule mutex); kMaxTenants when none.
  std::uint32_t gang_to_ask = layout::kMaxTenants;
};

// Whether the process in `slot` is alive (its liveness lock is held).
using SlotAlive = std::function<bool(std::uint32_t slot)>;
// Whether `holder`'s activity on `gpu` still stands at `seen`, asked right after the handover bit
// was stored. A thread that owns an activity lane moves it with a plain store, which may wait in
// its core's store buffer while the thread already reads the holder word, so a single look could
// miss a launch that did not see the bit either: the process's threads are fenced first, or the
// lanes watched for kStoreVisibleNs (ComputeGate supplies that one).
using HolderStandsStill = std::function<bool(const layout::ProcessSlot& holder, std::uint32_t gpu, std::uint64_t seen)>;
// What the arbiter asks of the processes beyond the shared state: system calls, passed in so that
// a decision takes no time of its own and tests can answer for the processes.
struct HolderProbes {
  SlotAlive slot_alive;            // empty: every slot is alive
  HolderStandsStill stands_still;  // empty: one look at the lanes (no thread of the holder runs)
};

// REQUIRES: the GPU's schedule mutex held (see lock_schedule). `requester` is the slot asking
// (it has set its waiting_since), or kNoRequester for a look by someone who only passes by.
// A holder whose activity has stopped moving is idle when no thread of it is inside a
// launch, and dead when `probes.slot_alive` says so (a launch blocked on a full GPU queue is neither).
inline constexpr std::uint32_t kNoRequester = UINT32_MAX;
Arbitration arbitrate(layout::StateLayout& state, std::uint32_t gpu, std::uint64_t now_ns, std::uint32_t requester,
                      const ArbiterTiming& timing, const HolderProbes& probes = {});

// Grants the slice to `slot` of `tenant` (a tenant index checked by the caller: the slot's own
// field may change meanwhile). `mark`: the waiting mark it was granted on
// (SlotCompute::waiting_since_ns), or 0 for a holder's slice renewed; only a grant made on a mark
// can be withdrawn as untaken. REQUIRES: the schedule mutex held, no holder.
void grant(layout::StateLayout& state, std::uint32_t gpu, std::uint32_t slot, std::uint32_t tenant,
           std::uint64_t now_ns, std::uint64_t mark);

// Whether someone who could take the holder's place waits: a process of the holder's class or a
// higher one (for a capped holder, anyone) that could be granted the GPU at `now_ns`.
// REQUIRES: `holder` < layout::kMaxSlots.
bool contender_waits(const layout::StateLayout& state, std::uint32_t gpu, std::uint32_t holder,
                     std::uint64_t now_ns);
// The same with a GangView already taken (gang.hpp): a gang's follower waiting without its anchor is
// no contender.
bool contender_waits(const layout::StateLayout& state, std::uint32_t gpu, std::uint32_t holder,
                     std::uint64_t now_ns, const GangView& gangs);

// --- What a slice costs (schedule_charges.cpp) ---

// The tenant's slice length: its policy's, kDefaultSlice when it names none, never over kLongestSlice.
std::uint64_t slice_ns_of(const layout::TenantRecord& tenant);
// When the slice in progress ends, as far as the file can be believed: never more than
// kLongestSlice after its start, and now for a start in the future.
std::uint64_t slice_end_of(const layout::GpuSchedule& schedule, std::uint64_t now_ns);
// A hard cap below 100 % is in force (GPUSHARE_COMPUTE_LIMIT).
bool capped(const layout::TenantRecord& tenant);
// Whether a tenant may be granted a slice at `now_ns` (uncapped, or with budget enough).
bool may_be_granted(const layout::TenantRecord& tenant, std::uint32_t gpu, std::uint64_t now_ns);
// Refills a capped tenant's budget; returns whether it may be granted a slice now, and if not,
// sets *wait_ns to how long until it may. REQUIRES: the schedule mutex held.
bool refill_budget(layout::TenantRecord& tenant, std::uint32_t gpu, std::uint64_t now_ns, std::uint64_t* wait_ns);

// Ends the current holder's slice, charging its tenant from the slice start to now_ns.
// REQUIRES: the schedule mutex held.
void end_slice(layout::StateLayout& state, std::uint32_t gpu, std::uint64_t now_ns);

// Up to when a holder that is gone (exited or killed while holding the slice) used the GPU: its
// last observed launch, never before its slice started, never after now. Charging it up to the
// moment someone notices would bill its tenant for time nobody used.
std::uint64_t gone_holder_used_until(const layout::GpuSchedule& schedule, std::uint64_t now_ns);

// --- The schedule mutex, waiting marks and the futex (arbiter.cpp) ---

// The schedule mutex, repaired if its holder died: a half-made grant is undone (the GPU is free).
// Every waiter takes it to arbitrate, and holds it for microseconds; one that is stopped or
// descheduled while it holds it (SIGSTOP, a CPU limit) stops the GPU's arbitration. So the wait is
// short: after kScheduleLockWait the caller launches ungated for a while rather than letting the
// GPU stand idle (interpose/compute_hooks.cpp).
inline constexpr std::chrono::milliseconds kScheduleLockWait{20};
Result<shared_mutex::Guard> lock_schedule(layout::StateLayout& state, std::uint32_t gpu);

// A process's waiting mark on a GPU (SlotCompute::waiting_since_ns) is counted in the schedule's
// `waiting` hint while it is set. take_waiting_mark clears the mark and uncounts it, returning
// whether there was one; uncount_waiter lowers the count, never below 0 (a sweep's recount may
// have missed a mark made while it counted).
void uncount_waiter(layout::GpuSchedule& schedule);
bool take_waiting_mark(layout::GpuSchedule& schedule, layout::SlotCompute& compute);

// Wakes every process sleeping on the GPU's grant_seq: the caller's job after a decision that
// changed the holder (Arbitration::changed), or after ending a slice.
void wake_waiters(layout::StateLayout& state, std::uint32_t gpu);
// One decision for a gang (gang.hpp): `tenant` was asked to hand over `gpu` at `now_ns`; if it is a
// gang, it is asked on every other GPU it holds too, its anchor's request time (an earlier one
// there stands) made the time of every request, and its stop count published under that time, so
// that its ranks stop together at one point. Takes each GPU's schedule mutex in turn (never two at
// once); a GPU whose mutex is not had in time is left to its own arbitration.
void ask_gang_to_hand_over(layout::StateLayout& state, std::uint32_t gpu, std::uint32_t tenant, std::uint64_t now_ns);
// wake_waiters on every GPU of the mask (bit h: GPU h).
void wake_waiters_on(layout::StateLayout& state, std::uint32_t gpus);
// After a process of `tenant` ended its slice on `gpu` (a handover): wakes the waiters of the
// tenant's other GPUs if it is a gang, where its followers now hold no anchor.
void wake_gang(layout::StateLayout& state, std::uint32_t gpu, std::uint32_t tenant);
// Sleeps until grant_seq differs from `seen` or `timeout_ns` passes.
void wait_for_grant(layout::StateLayout& state, std::uint32_t gpu, std::uint32_t seen, std::uint64_t timeout_ns);

}  // namespace gpushare
