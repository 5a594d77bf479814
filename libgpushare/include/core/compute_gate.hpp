// A process's side of the time-slice arbiter (arbiter.hpp) on every GPU: the launch hooks'
// hot-path check and the slow paths that wait for a slice, hand it over and renew it.
//
// Hot path (holds, begin_launch, end_launch): inline here, no lock, no system call, and no locked
// instruction for the first launching threads of a process on a GPU (each has a private activity
// lane). Slow paths (acquire, checkpoint, release_if_wanted): compute_gate.cpp, under the GPU's
// schedule mutex, sleeping on its futex (platform.hpp) while another process holds the slice.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>

#include "core/compute_policy.hpp"
#include "core/platform.hpp"
#include "core/result.hpp"
#include "core/shared_state.hpp"

namespace gpushare {

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

// Isolation mode: the node agent alone writes the schedule, so a gate whose process maps the state
// read-only tells the agent what it would otherwise do itself (compute_gate_brokered.cpp). Each is
// a message that needs no answer: the process watches the holder word, as it always does.
class SliceBroker {
 public:
  virtual ~SliceBroker() = default;
  // The process has marked itself waiting for `gpu` (its own waiting mark): decide.
  virtual void wanted(std::uint32_t gpu) = 0;
  // The process, asked to hand over, has drained its work (at `drained_at_ns`): end the slice
  // granted as `slice_seen` (grant_seq) if it is still the one in force.
  virtual void done(std::uint32_t gpu, std::uint32_t slice_seen, std::uint64_t drained_at_ns) = 0;
  // The holder's slice is over: renew it if nobody else waits, else ask it to hand over.
  virtual void renew(std::uint32_t gpu) = 0;
  // False once the agent cannot be told (gone): the slow paths fail and launches pass ungated.
  virtual bool usable() const = 0;
};

// The arbiter's HolderStandsStill for real processes: the holder's threads are fenced (the global
// membarrier, for which its slot says it registered) and the lanes looked at once; where that
// cannot be done, the lanes are watched for kStoreVisibleNs.
bool fenced_or_watched_still(const layout::ProcessSlot& holder, std::uint32_t gpu, std::uint64_t seen);

// What a gate tells an observer (trace mode) on its slow paths, never on the hot path: a thread of
// the process began or ended waiting for the GPU's slice, the process was granted the slice, was
// asked to hand it over, began and ended draining its work.
enum class GateEvent { kWaitBegun, kWaitEnded, kGranted, kHandoverAsked, kDrainBegun, kDrainEnded };
class GateObserver {
 public:
  virtual ~GateObserver() = default;
  // `at_ns`: the monotonic clock (monotonic_now_ns). Called on the thread in the gate; must not
  // call into the gate.
  virtual void gate_event(std::uint32_t gpu, GateEvent event, std::uint64_t at_ns) = 0;
};

// How long after a request to hand over a gang's rank may go on to the gang's stop count: a rank
// whose collectives never reach it (its ranks launch different ones) stops then all the same.
inline constexpr std::uint64_t kGangCatchUpNs = 10'000'000;

class ComputeGate {
 public:
  // `drain` waits until everything this process submitted to the GPU has finished.
  using Drain = std::function<void(std::uint32_t gpu)>;
  // `broker`: null in the daemonless mode (this process decides under the schedule mutex), else the
  // agent's messenger (isolation mode), which must outlive the gate.
  ComputeGate(SharedState& state, std::uint32_t slot, ArbiterTiming timing = {}, SliceBroker* broker = nullptr);
  ComputeGate(const ComputeGate&) = delete;
  ComputeGate& operator=(const ComputeGate&) = delete;

  // Hot path: no lock, no system call.
  // Sequentially consistent (a plain load on x86): begin_launch's store comes first, and the idle
  // check in arbitrate stores the handover bit before it looks at the activity again.
  bool holds(std::uint32_t gpu) const {
    return state_.state().schedules[gpu].holder_word.load(std::memory_order_seq_cst) == layout::holder_token(slot_);
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
  std::uint64_t threads_inside(std::uint32_t gpu) {
    return layout::threads_inside(layout::activity_of(slot_compute(gpu)));
  }
  // Makes this process's other threads' lane stores visible (fence::own_threads), if it can.
  bool fence_own_threads() const { return fenced_own_ && fence::own_threads(); }

  // Slow path before a launch when holds() is false: hands over first if this process was asked
  // to, then waits until it holds the slice. A gang's rank asked to hand over that goes on to its
  // gang's stop count (goes_on_to_gang_stop) returns at once, without the slice.
  Status acquire(std::uint32_t gpu, const Drain& drain);
  // Gives the slice up, without waiting for it again, if this process holds it and was asked to
  // hand over, or its slice is over and someone else waits: for a process whose launches are
  // being captured into a graph (they need no GPU now, so it has no reason to wait for its turn).
  Status release_if_wanted(std::uint32_t gpu, const Drain& drain, std::uint64_t now = monotonic_now_ns());
  // Called by the holder every few launches: ends its slice when it is over and someone waits,
  // or when its tenant's cap is spent; then waits for its next turn.
  // `now`: the monotonic clock, if the caller has just read it.
  Status checkpoint(std::uint32_t gpu, const Drain& drain, std::uint64_t now = monotonic_now_ns());
  // Whether this process holds the slice but was asked to hand it over, within `within_ns` of the
  // request.
  bool asked_to_hand_over(std::uint32_t gpu, std::uint64_t now, std::uint64_t within_ns) const {
    const layout::GpuSchedule& schedule = state_.state().schedules[gpu];
    if (schedule.holder_word.load(std::memory_order_seq_cst) != (layout::holder_token(slot_) | layout::kHandoverBit)) {
      return false;
    }
    const std::uint64_t asked = schedule.handover_asked_ns.load(std::memory_order_relaxed);
    return asked <= now && now - asked < within_ns;
  }
  // Counts a collective this process is about to launch on `gpu` (ProcessSlot::collectives), before
  // it looks at its gate: a gang's stop count either includes it or the launch finds itself asked
  // (gang.hpp). withdraw_collective takes it back when the launch waits for its turn instead.
  void note_collective(std::uint32_t gpu) {
    state_.state().slots[slot_].collectives[gpu].fetch_add(1, std::memory_order_seq_cst);
  }
  void withdraw_collective(std::uint32_t gpu) {
    state_.state().slots[slot_].collectives[gpu].fetch_sub(1, std::memory_order_seq_cst);
  }
  // Whether a launch on `gpu` goes on although this process was asked to hand over: it is a gang's
  // rank, asked within kGangCatchUpNs, whose collectives there are below the gang's stop count (up
  // to it, this launch's included, when `collective`), so that its siblings' parts, which wait on
  // their GPUs for this rank's, can end before everyone drains. Slow path (compute_gate_gang.cpp).
  bool goes_on_to_gang_stop(std::uint32_t gpu, bool collective, std::uint64_t now);
  // Tells `observer` (null: nobody) the gate's events from now on; it must outlive the gate.
  void observe(GateObserver* observer) { observer_.store(observer, std::memory_order_release); }
  // Whether a higher priority class than this process's held the GPU recently (timing_).
  bool higher_class_recently(std::uint32_t gpu, std::uint64_t now) const;

  // The process has mapped another process's GPU memory (CUDA IPC, imported allocations): its
  // kernels may then wait for another process's, so the arbiter gives it only the short handover
  // grace (SlotCompute::depends_on_others). Opening another process's event does not count: an
  // event wait only waits for work already submitted.
  void note_depends_on_other_processes() {
    for (auto& compute : state_.state().slots[slot_].compute) {
      if (compute.depends_on_others.load(std::memory_order_relaxed) == 0) {
        compute.depends_on_others.store(1, std::memory_order_relaxed);
      }
    }
  }

 private:
  Status hand_over(std::uint32_t gpu, const Drain& drain);
  // At the end of a gang's slice (checkpoint): asks this process and its gang to hand over, and
  // returns whether it goes on to the gang's stop count first (compute_gate_gang.cpp).
  bool asks_gang_and_goes_on(std::uint32_t gpu);
  // Whether processes of this tenant hold two GPUs or more.
  bool tenant_holds_several_gpus() const;
  void notify(std::uint32_t gpu, GateEvent event, std::uint64_t at_ns) const {
    if (GateObserver* observer = observer_.load(std::memory_order_acquire)) observer->gate_event(gpu, event, at_ns);
  }
  // The drain between kDrainBegun and kDrainEnded, and the handover's request before them: at
  // `asked_ns` when the schedule says when it was asked (0 or a time to come: now).
  void drain_observed(std::uint32_t gpu, const Drain& drain, std::uint64_t asked_ns);
  // acquire's wait in the daemonless mode (acquire adds the events around either mode's).
  Status acquire_daemonless(std::uint32_t gpu, const Drain& drain);
  // The same slow paths when the agent decides (compute_gate_brokered.cpp).
  Status acquire_brokered(std::uint32_t gpu, const Drain& drain);
  Status checkpoint_brokered(std::uint32_t gpu, const Drain& drain, std::uint64_t now);
  Status release_if_wanted_brokered(std::uint32_t gpu, const Drain& drain, std::uint64_t now);
  Status hand_over_brokered(std::uint32_t gpu, const Drain& drain);
  // Asks the agent to renew or end the slice, once per slice.
  void ask_renewal(std::uint32_t gpu);
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
  bool fenced_own_;                                                      // registered for fence::own_threads
  ArbiterTiming timing_;
  OwnFileDescription probe_file_;  // of the state file, for liveness probes (daemonless mode)
  SliceBroker* broker_;
  // Per GPU: the slice (grant_seq) for which a renewal was last asked of the broker.
  std::array<std::atomic<std::uint32_t>, layout::kMaxGpus> renewal_asked_{};
  std::atomic<GateObserver*> observer_{nullptr};
};

}  // namespace gpushare
