// Time-slicing one GPU between tenants.
//
// Per GPU, one process at a time holds the *slice* and may submit work; everyone else who wants
// the GPU sleeps on a futex in the shared state. There is no daemon: the decisions are taken by
// whichever process is in the slow path (a waiter, or a holder at a checkpoint), under the GPU's
// schedule mutex, by `arbitrate` below.
//
// Policy:
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
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>

#include "core/result.hpp"
#include "core/shared_mutex.hpp"
#include "core/shared_state.hpp"

namespace gpushare {

enum class Priority : std::uint32_t { kLow = 0, kNormal = 1, kHigh = 2 };
Result<Priority> parse_priority(std::string_view text);
std::string_view priority_name(Priority priority);

struct ComputePolicyValues {
  std::uint32_t share_pct = 0;  // 0 = not given
  std::uint32_t limit_pct = 0;  // 0 = no cap
  Priority priority = Priority::kNormal;
  std::chrono::microseconds slice{10'000};
};

// Tunables of the arbiter (not per tenant).
struct ArbiterTiming {
  // A holder whose activity has not moved for this long, no thread inside, is idle and
  // loses the slice.
  std::chrono::nanoseconds idle_after{std::chrono::milliseconds(2)};
  // A holder asked to hand over that has not done so after this long loses the slice anyway. It is
  // still waiting for its own work then (a whole captured step, a synchronize after one): taken
  // earlier, that work would run on, uncharged, into the next holder's slice. So the grace is long,
  // and bounded; it is short for a holder whose work may wait for another process, perhaps for the
  // waiter itself: one that maps another process's GPU memory (SlotCompute::depends_on_others), or
  // whose tenant waits for another GPU (a collective across GPUs).
  std::chrono::nanoseconds handover_grace{std::chrono::seconds(1)};
  std::chrono::nanoseconds short_handover_grace{std::chrono::milliseconds(50)};
  // Longest a waiter sleeps before looking again (it is woken at once on every grant).
  std::chrono::nanoseconds max_sleep{std::chrono::milliseconds(1)};
  // A lower class keeps almost nothing in flight for this long after a higher class last held the
  // GPU, so the higher one's next request waits behind as little queued work as possible.
  std::chrono::nanoseconds higher_class_memory{std::chrono::milliseconds(100)};
};

// Outcome of one arbitration, for the process that ran it.
struct Arbitration {
  bool granted_to_requester = false;
  bool changed = false;                // the holder changed: wake the waiters
  std::uint64_t recheck_after_ns = 0;  // when to look again if still waiting
};

using layout::holder_token;

// REQUIRES: the GPU's schedule mutex held (see lock_schedule). `requester` is the slot asking
// (it has set its waiting_since), or kNoRequester for a look by someone who only passes by.
// A holder whose activity has stopped moving is idle when no thread of it is inside a
// launch, and dead when `slot_alive` says so (a launch blocked on a full GPU queue is neither).
inline constexpr std::uint32_t kNoRequester = UINT32_MAX;
using SlotAlive = std::function<bool(std::uint32_t slot)>;
Arbitration arbitrate(layout::StateLayout& state, std::uint32_t gpu, std::uint64_t now_ns, std::uint32_t requester,
                      const ArbiterTiming& timing, const SlotAlive& slot_alive = {});

// Ends the current holder's slice, charging its tenant from the slice start to now_ns.
// REQUIRES: the schedule mutex held.
void end_slice(layout::StateLayout& state, std::uint32_t gpu, std::uint64_t now_ns);

// Up to when a holder that is gone (exited or killed while holding the slice) used the GPU: its
// last observed launch, never before its slice started, never after now. Charging it up to the
// moment someone notices would bill its tenant for time nobody used.
std::uint64_t gone_holder_used_until(const layout::GpuSchedule& schedule, std::uint64_t now_ns);

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

// Wakes every process sleeping on the GPU's grant_seq.
void wake_waiters(layout::StateLayout& state, std::uint32_t gpu);
// Sleeps until grant_seq differs from `seen` or `timeout` passes.
void wait_for_grant(layout::StateLayout& state, std::uint32_t gpu, std::uint32_t seen, std::uint64_t timeout_ns);

std::uint64_t monotonic_now_ns();

// Asymmetric fences (Linux membarrier: the private one from 4.14, the global one from 4.16): for
// the rare readers that pair with the hot path's plain stores (ComputeGate::begin_launch). The hot
// path pays nothing; the reader makes the writers' running threads pass a full memory barrier (an
// interrupt to the CPUs that run them, ~1.3 µs on the 2-CPU development machine; the global one
// reaches every CPU running a registered process), after which each thread's store is visible or
// its next load comes after the reader's own store. Each returns false where the kernel, or a
// seccomp profile, refuses it. The global one is called under a GPU's schedule mutex: the kernel
// serialises expedited membarriers system-wide and holds off CPU hotplug meanwhile, so it may wait
// behind other programs' (.NET's garbage collector, liburcu), usually for microseconds.
namespace fence {
// Once per process, before its first launch: for both of the others.
bool register_process_for_global();
bool register_process_for_own();
// Every running thread of every process registered for it (MEMBARRIER_CMD_GLOBAL_EXPEDITED).
bool registered_processes();
// Every running thread of this process (MEMBARRIER_CMD_PRIVATE_EXPEDITED).
bool own_threads();
}  // namespace fence

// Where no fence is to be had, how long such a reader keeps looking instead. A store leaves its
// core's store buffer in nanoseconds, a few hundred with a cache miss. That is an assumption about
// the hardware (neither C++ nor x86-64 nor AArch64 bounds it), not a guarantee: should a store ever
// take longer, one launch runs, uncharged, at the start of the next holder's slice.
inline constexpr std::uint64_t kStoreVisibleNs = 10'000;

// A thread's activity lane, from begin_launch (or begin_wait) to end_launch.
struct ActivityLane {
  std::atomic<std::uint64_t>* word;
  bool shared;  // lane 0, written by several threads
};

// The private activity lane a thread owns on one GPU, in the gate whose id is `gate_id` (gate ids
// are never reused, so a claim made in another gate, or in the parent's before a fork, is never
// taken for one in this gate). Kept by the caller, one per thread and GPU (the preload library's
// launch hooks keep them thread-local): the core library has no thread-local state of its own, so
// shared objects that link it and are loaded with dlopen (the NVML shadow) need no static TLS.
struct LaneClaim {
  std::uint64_t gate_id = 0;
  unsigned lane = 0;
};

// A process's side of the arbiter on every GPU: the hot-path check and the slow paths.
class ComputeGate {
 public:
  // `drain` waits until everything this process submitted to the GPU has finished.
  using Drain = std::function<void(std::uint32_t gpu)>;
  ComputeGate(SharedState& state, std::uint32_t slot, ArbiterTiming timing = {});
  ~ComputeGate();
  ComputeGate(const ComputeGate&) = delete;
  ComputeGate& operator=(const ComputeGate&) = delete;

  // Hot path: no lock, no system call.
  // Sequentially consistent (a plain load on x86): begin_launch's store comes first, and the idle
  // check in arbitrate stores the handover bit before it looks at the activity again.
  bool holds(std::uint32_t gpu) const {
    return state_.state().schedules[gpu].holder_word.load(std::memory_order_seq_cst) == holder_token(slot_);
  }
  // Bracket each gated launch or synchronize: the process's activity (layout::kCallBegun) moves
  // with every call and counts the threads inside one (perhaps blocked on a full GPU queue, or
  // waiting for their work), so that a busy process is never taken for idle. Only this process
  // writes it.
  //
  // A launching thread with a private lane on the GPU (`claim`, see LaneClaim) moves it with a
  // plain load and store, no locked instruction; the compiler keeps that store ahead of the
  // holds() that follows, and the two readers that pair with it fence this process's threads
  // first (`fence`), or watch for kStoreVisibleNs where that is refused. A thread past the private
  // lanes adds to lane 0 atomically. Not async-signal-safe (a gated call from a signal handler,
  // between the load and the store, would lose one launch from the count; the driver is not
  // async-signal-safe either). One gate per slot in a process: lanes are claimed per gate.
  [[gnu::always_inline]] ActivityLane begin_launch(std::uint32_t gpu, LaneClaim& claim) {
    const unsigned lane = claim.gate_id == id_ ? claim.lane : claim_lane(gpu, claim);
    if (lane == 0) return begin_wait(gpu);
    std::atomic<std::uint64_t>& word = slot_compute(gpu).activity[lane];
    word.store(word.load(std::memory_order_relaxed) + layout::kCallBegun, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    return {&word, false};
  }
  // The shared lane: for a synchronize, which blocks anyway (leaving the private lanes to launching
  // threads), and for launching threads past the private lanes.
  ActivityLane begin_wait(std::uint32_t gpu) {
    std::atomic<std::uint64_t>& word = slot_compute(gpu).activity[0];
    word.fetch_add(layout::kCallBegun, std::memory_order_seq_cst);
    return {&word, true};
  }
  // Relaxed on a private lane: no reader needs more, and a release store would wait, on AArch64,
  // for every store before it (the driver's own) to drain.
  [[gnu::always_inline]] static void end_launch(ActivityLane lane) {
    if (lane.shared) {
      lane.word->fetch_sub(layout::kCallEnded, std::memory_order_seq_cst);
    } else {
      lane.word->store(lane.word->load(std::memory_order_relaxed) - layout::kCallEnded, std::memory_order_relaxed);
    }
  }

  // How many threads of this process are inside a gated call on the GPU now.
  std::uint64_t threads_inside(std::uint32_t gpu) { return layout::threads_inside(layout::activity_of(slot_compute(gpu))); }
  // Makes this process's other threads' lane stores visible (fence::own_threads), if it can.
  bool fence_own_threads() const { return fenced_own_ && fence::own_threads(); }

  // Slow path before a launch when holds() is false: hands over first if this process was asked
  // to, then waits until it holds the slice.
  Status acquire(std::uint32_t gpu, const Drain& drain);
  // Gives the slice up, without waiting for it again, if this process holds it and was asked to
  // hand over, or its slice is over and someone else waits: for a process whose launches are
  // being captured into a graph (they need no GPU now, so it has no reason to wait for its turn).
  Status release_if_wanted(std::uint32_t gpu, const Drain& drain, std::uint64_t now = monotonic_now_ns());
  // Called by the holder every few launches: ends its slice when it is over and someone waits,
  // or when its tenant's cap is spent; then waits for its next turn.
  // `now`: the monotonic clock, if the caller has just read it.
  Status checkpoint(std::uint32_t gpu, const Drain& drain, std::uint64_t now = monotonic_now_ns());
  // Whether a higher priority class than this process's held the GPU recently (timing_).
  bool higher_class_recently(std::uint32_t gpu, std::uint64_t now) const;

  // The process has opened another process's GPU memory or events (see
  // SlotCompute::depends_on_others).
  void note_depends_on_other_processes() {
    for (auto& compute : state_.state().slots[slot_].compute) {
      if (compute.depends_on_others.load(std::memory_order_relaxed) == 0) {
        compute.depends_on_others.store(1, std::memory_order_relaxed);
      }
    }
  }

 private:
  Status hand_over(std::uint32_t gpu, const Drain& drain);
  // The process's waiting mark on the GPU (SlotCompute::waiting_since_ns, shared by its threads)
  // and the GPU's count of waiters move together: whoever sets the mark counts it, whoever takes
  // it away (a thread taking a grant up, the arbiter withdrawing an untaken grant, a sweep) uncounts
  // it. unmark_waiting returns whether this call took it.
  void mark_waiting(std::uint32_t gpu, std::uint64_t now);
  bool unmark_waiting(std::uint32_t gpu);
  bool slot_alive(std::uint32_t slot);
  layout::SlotCompute& slot_compute(std::uint32_t gpu) { return state_.state().slots[slot_].compute[gpu]; }
  // Gives the calling thread the next private activity lane on the GPU, or the shared lane 0 when
  // none is left (threads never give one back: launching threads usually live as long as the
  // process), and records it in `claim`.
  unsigned claim_lane(std::uint32_t gpu, LaneClaim& claim);

  SharedState& state_;
  std::uint32_t slot_;
  // The slot's tenant when the gate was made (just after the process joined): trusted over the
  // slot's field, which anyone may write later; checked before each use all the same.
  std::uint32_t tenant_;
  std::uint64_t id_;  // unique in the process, never reused: what a thread's LaneClaim names
  std::array<std::atomic<unsigned>, layout::kMaxGpus> lanes_claimed_{};  // per GPU
  bool fenced_own_;  // registered for fence::own_threads
  ArbiterTiming timing_;
  int probe_fd_;  // its own open file description of the state, for liveness probes
};

// Sets the tenant's compute policy if it has none yet (the first process decides), returning the
// policy in force. `quota set` uses set_tenant_compute_policy instead.
// REQUIRES: the registry mutex held (TenantMembership::adopt_compute_policy takes it).
ComputePolicyValues adopt_compute_policy(layout::StateLayout& state, std::uint32_t tenant,
                                         const ComputePolicyValues& wanted);
// Changes a live tenant's policy; the arbiter reads it at every decision, so it takes effect
// within one slice.
struct ComputePolicyChange {
  std::optional<std::uint32_t> share_pct;
  std::optional<std::uint32_t> limit_pct;
  std::optional<Priority> priority;
};
Status set_tenant_compute_policy(SharedState& state, std::string_view tenant, const ComputePolicyChange& change);

}  // namespace gpushare
