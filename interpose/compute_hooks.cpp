// Launch hooks: a process submits work to a GPU only while it holds that GPU's time slice.
//
// Hot path (holding the slice): the current context (cuCtxGetCurrent, its GPU cached per thread),
// one load of the schedule's holder word, a plain store into this thread's lane of the process's
// activity on the way in and out (ComputeGate::begin_launch), a thread-local countdown. No lock,
// no system call, and no locked instruction for the first five launching threads of a process on
// a GPU. At each checkpoint (every GPUSHARE_INFLIGHT_LAUNCHES / 2 launches, fewer for long
// kernels, at most 2 near a higher class) the slow path bounds the work in flight and checks
// whether the slice is over.
#include <algorithm>
#include <array>
#include <atomic>
#include <optional>
#include <thread>

#include "driver.hpp"
#include "hooks.hpp"
#include "log.hpp"
#include "tenancy.hpp"

namespace gpushare::interpose::hooks {
namespace {

// Launches between checkpoints at most: half the in-flight bound (two events in the ring), at
// least 1; the default's when the bound is off, for the slice checks alone.
unsigned checkpoint_every() {
  static const unsigned every = [] {
    const unsigned launches = process_settings().settings.inflight_launches;
    return std::max(1u, (launches == 0 ? Settings::kDefaultInflightLaunches : launches) / 2);
  }();
  return every;
}

// Stream captures going on in this process (begun and not yet ended, counted by the capture
// hooks below).
std::atomic<int> g_captures{0};

// Threads of this process inside a gated call on a GPU that are not about to submit: in the gate's
// slow path (waiting for the slice, the in-flight bound, a handover) or in a synchronize. The
// others inside are between their holds() check and the end of their launch (a few microseconds,
// unless the thread is descheduled there).
std::array<std::atomic<int>, layout::kMaxGpus> g_parked{};
class Parked {
 public:
  explicit Parked(std::uint32_t gpu) : gpu_(gpu) { g_parked[gpu_].fetch_add(1, std::memory_order_seq_cst); }
  ~Parked() { g_parked[gpu_].fetch_sub(1, std::memory_order_seq_cst); }
  Parked(const Parked&) = delete;
  Parked& operator=(const Parked&) = delete;

 private:
  std::uint32_t gpu_;
};
// Longest a handover waits for those launches to go in.
constexpr std::uint64_t kLaunchesInFlightWaitNs = 10'000'000;

// What handing over means for this process: wait until all it submitted to the GPU has run.
// cuCtxSynchronize covers every stream of the current context, including ones the program may
// have destroyed since (a stream list could dangle). But while a stream of the process is
// capturing a graph, the driver refuses to synchronize its context and invalidates the capture:
// then the drain waits for the newest event of the in-flight bound instead, the launching
// stream's work up to its last checkpoint (work queued on other streams may still be running when
// the next holder starts).
void drain(std::uint32_t gpu) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr) return;
  // Launches of other threads that passed their holds() check before the handover was asked go in
  // first: submitted after the drain, their kernels would run, uncharged, in the next holder's
  // slice (a 30/70 pair with two launching threads each, on two busy cores, ran 37/63).
  Tenancy& tenancy = Tenancy::get();
  ComputeGate& gate = tenancy.gate();
  // A thread's entry may still be on its way out of its core's store buffer: the process's threads
  // are fenced first, or, where that cannot be done, watched for kStoreVisibleNs
  // (ComputeGate::begin_launch). Threads go inside before they park and unpark before they leave:
  // counting those inside before and after the parked ones and taking the larger count never
  // misses a launching thread (one that parks or unparks meanwhile may pass for launching, for one
  // more look).
  const std::uint64_t watch_ns = gate.fence_own_threads() ? 0 : kStoreVisibleNs;
  const std::uint64_t began = monotonic_now_ns();
  for (std::uint64_t now = began; now < began + kLaunchesInFlightWaitNs; now = monotonic_now_ns()) {
    const std::uint64_t inside_before = gate.threads_inside(gpu);
    const auto parked = static_cast<std::uint64_t>(g_parked[gpu].load(std::memory_order_seq_cst));
    const bool launching = std::max(inside_before, gate.threads_inside(gpu)) > parked;
    if (!launching && now - began >= watch_ns) break;
    if (launching) std::this_thread::yield();
  }
  if (g_captures.load(std::memory_order_acquire) <= 0) {
    if (driver->cuCtxSynchronize != nullptr) driver->cuCtxSynchronize();
    return;
  }
  Tenancy::InflightBound& bound = tenancy.inflight(gpu);
  const std::lock_guard lock(bound.mutex);
  const unsigned newest = (bound.next + 1) % static_cast<unsigned>(bound.events.size());
  if (bound.recorded_at_ns[newest] != 0 && driver->cuEventSynchronize != nullptr) {
    driver->cuEventSynchronize(bound.events[newest]);
  }
}

// The bound in time (GPUSHARE_INFLIGHT_MS, default 2 ms, about the driver's own time-slice): in
// launches alone, 64 kernels of 1 ms would put 64 ms in front of a handover or of a higher class's
// next request, while 64 tiny kernels are a few hundred microseconds. 0: launches only.
std::uint64_t queue_target_ns() {
  static const std::uint64_t target = std::uint64_t{process_settings().settings.inflight_ms} * 1'000'000;
  return target;
}
// An event synchronize that took longer than this waited for the GPU (on finished work it costs
// well under a microsecond).
constexpr std::uint64_t kWaitedNs = 20'000;
// Checkpoints in a row in another context than the in-flight bound's before the bound moves there.
constexpr unsigned kMoveAfterCheckpoints = 8;

// Destroys the in-flight bound's events, which live in `bound.context`, and forgets that context:
// the next checkpoint makes new ones in its own. REQUIRES: bound.mutex held.
void release_events(const RealDriver& driver, Tenancy::InflightBound& bound) {
  for (CUevent& event : bound.events) {
    if (event != nullptr && driver.cuEventDestroy_v2 != nullptr) driver.cuEventDestroy_v2(event);
    event = nullptr;
  }
  bound.recorded_at_ns = {};
  bound.marked_work = {};
  bound.next = 0;
  bound.context = nullptr;
}

// At most (launches between checkpoints) x (events in the ring) launches in flight: before an event
// of the ring is recorded again, the work it marked must have finished. The launches between
// checkpoints adapt, between 1 and `most` (checkpoint_every(), or kNearHigherClass), so that the
// queue stays near queue_target_ns(). When a wait for an event ends as it finishes, the event spent
// (now - recorded) queued: the GPU time of the work ahead of it, about two intervals' worth; over
// the target, the interval is scaled down by target / that. Under half the target (or finished that
// soon), it grows by one: only slowly, because a short queue may just mean the GPU caught up while
// this thread was descheduled, and says little about the kernels. It starts at 1, so that a program
// of long kernels never queues much even at its start. Returns the interval for the next
// checkpoint. `*now`: the clock when called, and on return (it moves on when the bound waited).
// `queue_empty`: the caller was just granted the slice (after its handover's drain, or for its
// first launch), so the event recorded now marks no work: its finishing at once says nothing about
// how long launches are. `context`, `device`: the launch's (the current) context and its device.
unsigned bound_inflight(const RealDriver& driver, Tenancy::InflightBound& bound, CUcontext context, CUdevice device,
                        CUstream stream, unsigned most, bool queue_empty, std::uint64_t* now) {
  if (driver.cuEventCreate == nullptr || driver.cuEventRecord == nullptr || driver.cuEventSynchronize == nullptr) {
    return most;
  }
  // Every launching thread of the process takes its turn: while one waits for an event, the others
  // wait for it, or they would queue without bound meanwhile.
  const std::lock_guard lock(bound.mutex);
  if (bound.context != nullptr && bound.context != context) {
    // The events live in another context of this GPU (an event is recorded only in its own): this
    // launch is not bounded. Unless this context keeps launching (pycuda's context made before
    // PyTorch's, then left alone): then the bound moves here, after a few launches, each a
    // checkpoint meanwhile.
    if (++bound.checkpoints_elsewhere < kMoveAfterCheckpoints) return 1;
    release_events(driver, bound);
  }
  bound.checkpoints_elsewhere = 0;
  if (bound.context == nullptr) {
    bound.context = context;
    bound.device = device;
  }
  const auto size = static_cast<unsigned>(bound.events.size());
  const unsigned i = bound.next;
  const unsigned newest = (i + size - 1) % size;
  bound.next = (i + 1) % size;
  if (bound.events[i] == nullptr && driver.cuEventCreate(&bound.events[i], CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS) {
    bound.events[i] = nullptr;
    return most;
  }
  const std::uint64_t target = queue_target_ns();
  unsigned interval = target == 0 ? most : std::clamp(bound.interval.load(std::memory_order_relaxed), 1u, most);
  // Waits for event `e`; returns how long it was queued: exactly, if this wait ended when it
  // finished; at most, if it had finished before (this look may simply be late).
  const auto wait_for = [&](unsigned e, bool* waited) {
    const std::uint64_t before = *now;
    driver.cuEventSynchronize(bound.events[e]);
    *now = monotonic_now_ns();
    *waited = *now - before >= kWaitedNs;
    return *now - bound.recorded_at_ns[e];
  };
  if (bound.recorded_at_ns[i] != 0) {
    bool waited = false;
    const std::uint64_t queued = wait_for(i, &waited);
    if (target == 0) {
      // bounded in launches only
    } else if (waited && queued > target) {
      const std::uint64_t scaled = bound.interval_at_record[i] * target / queued;
      interval = static_cast<unsigned>(std::clamp<std::uint64_t>(scaled, 1, most));
      bound.long_launches = interval == 1;
    } else if (queued < target / 2 && bound.marked_work[i] && !bound.long_launches) {
      interval = std::min(most, interval + 1);
    }
  }
  // Even one launch per checkpoint queues too much when a launch alone is over half the target
  // (whole captured steps of tens of milliseconds): wait for the newest event too, so that one
  // launch runs while the next is queued, two in flight instead of three. A handover drains, and a
  // higher class waits behind, one launch fewer; the GPU stays busy all the same. How long that
  // event was queued is one launch's GPU time: it says when launches have become short again (not
  // when looked at just after a wait for the slice: it finished at some moment of that wait).
  if (bound.long_launches && interval == 1) {
    if (bound.recorded_at_ns[newest] != 0) {
      bool waited = false;
      const std::uint64_t queued = wait_for(newest, &waited);
      if (bound.marked_work[newest] && !queue_empty) bound.long_launches = queued > target / 2;
    }
  } else {
    bound.long_launches = false;
  }
  const bool recorded = driver.cuEventRecord(bound.events[i], stream) == CUDA_SUCCESS;
  bound.recorded_at_ns[i] = recorded ? std::max<std::uint64_t>(*now, 1) : 0;
  bound.interval_at_record[i] = interval;
  bound.marked_work[i] = !queue_empty;
  bound.interval.store(interval, std::memory_order_relaxed);
  return interval;
}

// Whether work sent to `stream` is being captured into a CUDA graph (PyTorch's CUDA graphs,
// torch.compile's "reduce-overhead", vLLM): it does not run now, so the gate lets it through.
// A failed query counts as capturing (the legacy stream answers CUDA_ERROR_STREAM_CAPTURE_IMPLICIT
// while a blocking stream captures): the gate then adds nothing of its own to that stream.
bool capturing(const RealDriver& driver, CUstream stream) {
  if (driver.cuStreamIsCapturing == nullptr) return false;
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
  return driver.cuStreamIsCapturing(stream, &status) != CUDA_SUCCESS || status != CU_STREAM_CAPTURE_STATUS_NONE;
}

// The gate's own synchronizations (the in-flight bound's event waits, a handover's drain) are
// "potentially unsafe" calls while a stream capture is going on in this process: in the default
// (global) capture mode they would fail and invalidate the program's capture. In relaxed mode
// they are allowed, as PyTorch's allocator does for its own calls during capture.
class RelaxedCaptureMode {
 public:
  explicit RelaxedCaptureMode(const RealDriver& driver) : driver_(driver) {
    if (driver_.cuThreadExchangeStreamCaptureMode != nullptr &&
        driver_.cuThreadExchangeStreamCaptureMode(&previous_) == CUDA_SUCCESS) {
      exchanged_ = true;
    }
  }
  ~RelaxedCaptureMode() {
    if (exchanged_) driver_.cuThreadExchangeStreamCaptureMode(&previous_);
  }
  RelaxedCaptureMode(const RelaxedCaptureMode&) = delete;
  RelaxedCaptureMode& operator=(const RelaxedCaptureMode&) = delete;

 private:
  const RealDriver& driver_;
  CUstreamCaptureMode previous_ = CU_STREAM_CAPTURE_MODE_RELAXED;
  bool exchanged_ = false;
};

// Contexts ended so far in this process (the hooks below count them): a handle of an ended context
// may come back for a new one, perhaps on another device.
std::atomic<unsigned> g_contexts_ended{0};

// Whether the process has mapped another process's GPU memory (CUDA IPC, imported allocations:
// NCCL, custom all-reduce kernels). Kernels that poll such memory wait for another process's
// kernels, which may be waiting for this GPU: the arbiter must not wait long for this process
// (ComputeGate::note_depends_on_other_processes). Events cannot cause that: an event wait only
// waits for work already submitted, which runs whoever holds the slice.
std::atomic<bool> g_imports_memory{false};

// The GPU of the current context, remembered per thread for the last context seen: asking the
// driver for the current context is cheaper than asking for its device, and a context never
// changes device (while no context has ended since). Initial-exec TLS: no __tls_get_addr call on
// the hot path.
struct LastContext {
  CUcontext context = nullptr;
  CUdevice device = 0;
  std::uint32_t gpu = 0;
  unsigned contexts_ended = 0;
};
__attribute__((tls_model("initial-exec"))) thread_local LastContext t_last;
// Launches until the next checkpoint, per GPU: the bound's interval, at most kNearHigherClass while
// a higher priority class is around (then at most ~4-6 launches of this process are queued).
// Decided at each checkpoint, so the hot path reads no clock.
constexpr unsigned kNearHigherClass = 2;
__attribute__((tls_model("initial-exec"))) thread_local std::array<unsigned, layout::kMaxGpus> t_until_checkpoint{};
// This thread's private activity lane on each GPU (ComputeGate::begin_launch).
__attribute__((tls_model("initial-exec"))) thread_local std::array<LaneClaim, layout::kMaxGpus> t_lanes{};

[[gnu::always_inline]] inline std::optional<std::uint32_t> current_gpu(const RealDriver& driver, Tenancy& tenancy,
                                                                  CUdevice* device) {
  CUcontext context = nullptr;
  if (driver.cuCtxGetCurrent == nullptr || driver.cuCtxGetCurrent(&context) != CUDA_SUCCESS || context == nullptr) {
    return std::nullopt;
  }
  const unsigned ended = g_contexts_ended.load(std::memory_order_relaxed);
  if (context == t_last.context && ended == t_last.contexts_ended) {
    *device = t_last.device;
    return t_last.gpu;
  }
  if (driver.cuCtxGetDevice == nullptr || driver.cuCtxGetDevice(device) != CUDA_SUCCESS) return std::nullopt;
  const auto gpu = tenancy.gpu_for(*device);
  if (gpu) t_last = {context, *device, *gpu, ended};
  return gpu;
}

// A launch that does not hold the slice, or whose thread is due a checkpoint. Unless it is being
// captured into a graph: then it needs no slice, and an event recorded on its stream would end up
// in the program's graph. Without a capture going on in the process (the common case) there is
// nothing to ask the driver.
// After the arbiter of a GPU failed (its schedule lock held by a stopped or descheduled process,
// damaged or forged), launches on that GPU go ungated until this time (monotonic ns) rather than
// each waiting out the lock's bound, and the GPU is never left idle; then the arbiter is tried
// again. The pause doubles with each failure in a row, from 50 ms (a process descheduled under the
// lock is back soon) to 5 s (a forged lock stays), and starts again after a success.
std::array<std::atomic<std::uint64_t>, layout::kMaxGpus> g_ungated_until{};
std::array<std::atomic<std::uint64_t>, layout::kMaxGpus> g_ungated_for_ns{};
constexpr std::uint64_t kFirstUngatedNs = 50'000'000;
constexpr std::uint64_t kLongestUngatedNs = 5'000'000'000;

void arbiter_failed(std::uint32_t gpu, CUdevice device, const Error& error) {
  const std::uint64_t last = g_ungated_for_ns[gpu].load(std::memory_order_relaxed);
  const std::uint64_t pause = last == 0 ? kFirstUngatedNs : std::min(2 * last, kLongestUngatedNs);
  g_ungated_for_ns[gpu].store(pause, std::memory_order_relaxed);
  g_ungated_until[gpu].store(monotonic_now_ns() + pause, std::memory_order_relaxed);
  log_repeated(Repeated::kArbiter, LogLevel::kError, "device {}: time-slice arbiter unusable ({}); launching ungated",
               device, error.message);
}

void arbiter_worked(std::uint32_t gpu) {
  if (g_ungated_for_ns[gpu].load(std::memory_order_relaxed) != 0) g_ungated_for_ns[gpu].store(0, std::memory_order_relaxed);
}

void before_launch_slow_path(const RealDriver& driver, Tenancy& tenancy, std::uint32_t gpu, CUdevice device,
                             CUstream stream) {
  if (const std::uint64_t until = g_ungated_until[gpu].load(std::memory_order_relaxed);
      until != 0 && monotonic_now_ns() < until) {
    return;
  }
  const Parked parked(gpu);
  ComputeGate& gate = tenancy.gate();
  const bool captures = g_captures.load(std::memory_order_acquire) > 0;
  if (captures && capturing(driver, stream)) {
    // Holding the slice through a capture (vLLM's warm-up captures graphs for seconds) would keep
    // everyone else off an idle GPU: give it up when asked, or at the end of the slice if someone
    // waits (as a checkpoint would, but without waiting for the next turn).
    const RelaxedCaptureMode relaxed(driver);
    (void)gate.release_if_wanted(gpu, drain);
    return;
  }
  std::optional<RelaxedCaptureMode> relaxed;
  if (captures) relaxed.emplace(driver);
  if (g_imports_memory.load(std::memory_order_relaxed)) gate.note_depends_on_other_processes();
  const bool granted_now = !gate.holds(gpu);
  if (granted_now) {
    if (auto acquired = gate.acquire(gpu, drain); !acquired) return arbiter_failed(gpu, device, acquired.error());
    arbiter_worked(gpu);
  }
  if (t_until_checkpoint[gpu] > 1) {
    --t_until_checkpoint[gpu];
    return;
  }
  std::uint64_t now = monotonic_now_ns();
  const unsigned most =
      gate.higher_class_recently(gpu, now) ? std::min(kNearHigherClass, checkpoint_every()) : checkpoint_every();
  if (process_settings().settings.inflight_launches != 0) {
    t_until_checkpoint[gpu] =
        bound_inflight(driver, tenancy.inflight(gpu), t_last.context, device, stream, most, granted_now, &now);
  } else {
    t_until_checkpoint[gpu] = most;
  }
  if (auto checked = gate.checkpoint(gpu, drain, now); !checked) {
    arbiter_failed(gpu, device, checked.error());
  } else {
    arbiter_worked(gpu);
  }
}

CUstream per_thread_stream(CUstream stream) { return stream == nullptr ? CU_STREAM_PER_THREAD : stream; }

// A thread of this process inside a gated call, for the arbiter (ComputeGate::begin_launch): left
// again however the call ends, so an exception on the way out (caught at the C boundary) cannot
// leave the process looking busy for good.
class InsideCall {
 public:
  // From ComputeGate::begin_launch or begin_wait.
  [[gnu::always_inline]] explicit InsideCall(ActivityLane lane) : lane_(lane) {}
  [[gnu::always_inline]] ~InsideCall() { ComputeGate::end_launch(lane_); }
  InsideCall(const InsideCall&) = delete;
  InsideCall& operator=(const InsideCall&) = delete;

 private:
  ActivityLane lane_;
};

template <typename Launch>
CUresult gated(CUstream stream, Launch&& launch) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr) return kMissing;
  Tenancy& tenancy = Tenancy::get();
  if (tenancy.mode() != Tenancy::Mode::kEnforce) return launch();
  CUdevice device = 0;
  const auto gpu = current_gpu(*driver, tenancy, &device);
  if (!gpu) return launch();
  ComputeGate& gate = tenancy.gate();
  // Inside from here to the end: draining at a handover, waiting for the slice and a launch blocked
  // on a full GPU queue all mean "this process's work is on the GPU", never "idle".
  const InsideCall inside(gate.begin_launch(*gpu, t_lanes[*gpu]));
  if (!gate.holds(*gpu) || t_until_checkpoint[*gpu] <= 1) {
    before_launch_slow_path(*driver, tenancy, *gpu, device, stream);
  } else {
    --t_until_checkpoint[*gpu];
  }
  return launch();
}

// A wait for the GPU by the slice holder counts as "inside a launch", so it is not taken for idleness.
template <typename Wait>
CUresult busy_waiting(Wait&& wait) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr) return kMissing;
  Tenancy& tenancy = Tenancy::get();
  if (tenancy.mode() != Tenancy::Mode::kEnforce) return wait();
  CUdevice device = 0;
  const auto gpu = current_gpu(*driver, tenancy, &device);
  if (!gpu || !tenancy.gate().holds(*gpu)) return wait();
  const InsideCall inside(tenancy.gate().begin_wait(*gpu));
  const Parked parked(*gpu);
  return wait();
}

}  // namespace

// The body of a wrapper: the real entry point (kMissing when this driver lacks it), called inside
// `guard`, a function template taking the call as a lambda.
#define GPUSHARE_WRAPPED_CALL(name, guard, call_args)    \
  {                                                      \
    auto real = real_driver_or_empty().name;             \
    if (real == nullptr) return kMissing;                \
    return guard([&] { return real call_args; });       \
  }
#define GPUSHARE_GATED_LAUNCH(name, stream_expr, call_args) \
  GPUSHARE_WRAPPED_CALL(name, [&](auto&& call) { return gated(stream_expr, call); }, call_args)
// In a `_ptsz` entry point the null stream is the calling thread's default stream: the gate's own
// calls (capture query, event record) name it explicitly, since they go through legacy entries.
#define GPUSHARE_GATED_LAUNCH_PTSZ(name, stream_expr, call_args) \
  GPUSHARE_GATED_LAUNCH(name, per_thread_stream(stream_expr), call_args)

CUresult cuLaunchKernel GPUSHARE_LAUNCH_KERNEL_PARAMS
GPUSHARE_GATED_LAUNCH(cuLaunchKernel, hStream, GPUSHARE_LAUNCH_KERNEL_ARGS)
CUresult cuLaunchKernel_ptsz GPUSHARE_LAUNCH_KERNEL_PARAMS
GPUSHARE_GATED_LAUNCH_PTSZ(cuLaunchKernel_ptsz, hStream, GPUSHARE_LAUNCH_KERNEL_ARGS)
CUresult cuLaunchCooperativeKernel GPUSHARE_COOPERATIVE_PARAMS
GPUSHARE_GATED_LAUNCH(cuLaunchCooperativeKernel, hStream, GPUSHARE_COOPERATIVE_ARGS)
CUresult cuLaunchCooperativeKernel_ptsz GPUSHARE_COOPERATIVE_PARAMS
GPUSHARE_GATED_LAUNCH_PTSZ(cuLaunchCooperativeKernel_ptsz, hStream, GPUSHARE_COOPERATIVE_ARGS)

CUresult cuLaunchKernelEx(const CUlaunchConfig* config, CUfunction f, void** kernelParams, void** extra)
GPUSHARE_GATED_LAUNCH(cuLaunchKernelEx, config != nullptr ? config->hStream : nullptr, (config, f, kernelParams, extra))
CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig* config, CUfunction f, void** kernelParams, void** extra)
GPUSHARE_GATED_LAUNCH_PTSZ(cuLaunchKernelEx_ptsz, config != nullptr ? config->hStream : nullptr,
                      (config, f, kernelParams, extra))

// CUDA graphs: one launch of a whole graph, gated like a kernel.
CUresult cuGraphLaunch(CUgraphExec hGraphExec, CUstream hStream)
GPUSHARE_GATED_LAUNCH(cuGraphLaunch, hStream, (hGraphExec, hStream))
CUresult cuGraphLaunch_ptsz(CUgraphExec hGraphExec, CUstream hStream)
GPUSHARE_GATED_LAUNCH_PTSZ(cuGraphLaunch_ptsz, hStream, (hGraphExec, hStream))

CUresult cuCtxSynchronize(void) GPUSHARE_WRAPPED_CALL(cuCtxSynchronize, busy_waiting, ())
// CUDA 13's cudaDeviceSynchronize (torch.cuda.synchronize) comes here.
CUresult cuCtxSynchronize_v2(CUcontext ctx) GPUSHARE_WRAPPED_CALL(cuCtxSynchronize_v2, busy_waiting, (ctx))
CUresult cuStreamSynchronize(CUstream hStream) GPUSHARE_WRAPPED_CALL(cuStreamSynchronize, busy_waiting, (hStream))
CUresult cuStreamSynchronize_ptsz(CUstream hStream)
GPUSHARE_WRAPPED_CALL(cuStreamSynchronize_ptsz, busy_waiting, (hStream))
CUresult cuEventSynchronize(CUevent hEvent) GPUSHARE_WRAPPED_CALL(cuEventSynchronize, busy_waiting, (hEvent))

namespace {
// The in-flight bound's events die with their context: destroy them while it still lives (before
// the driver call that ends it), and let a later checkpoint create new ones in whatever context is
// current then. Otherwise a checkpoint would record into a stale handle, one the driver may by then
// have given to an event of the program's own. `ends`: whether the call ends the bound's context.
template <typename Ends>
void forget_events_in_ending_contexts(Ends&& ends) {
  Tenancy* tenancy = Tenancy::if_started();
  const RealDriver* driver = real_driver();
  if (tenancy == nullptr || driver == nullptr) return;
  for (std::uint32_t gpu = 0; gpu < layout::kMaxGpus; ++gpu) {
    Tenancy::InflightBound& bound = tenancy->inflight(gpu);
    const std::lock_guard lock(bound.mutex);
    if (bound.context != nullptr && ends(bound)) release_events(*driver, bound);
  }
}

// A driver call that may end a context: `ends` says which in-flight bounds lose their events.
template <typename Ends, typename End>
CUresult context_ending(Ends&& ends, End&& end) {
  forget_events_in_ending_contexts(ends);
  // Counted before and after: a thread that caches its context while the call runs looks again.
  g_contexts_ended.fetch_add(1, std::memory_order_relaxed);
  const CUresult result = end();
  g_contexts_ended.fetch_add(1, std::memory_order_relaxed);
  return result;
}

template <typename Begin>
CUresult capture_begun(Begin&& begin) {
  const CUresult result = begin();
  if (result == CUDA_SUCCESS) g_captures.fetch_add(1, std::memory_order_acq_rel);
  return result;
}
// A capture ends with its graph, or invalidated; other errors (not capturing, wrong thread) leave
// it going. Never below zero: a capture begun through an entry point not counted here.
template <typename End>
CUresult capture_ended(End&& end) {
  const CUresult result = end();
  if (result == CUDA_SUCCESS || result == CUDA_ERROR_STREAM_CAPTURE_INVALIDATED) {
    int captures = g_captures.load(std::memory_order_acquire);
    while (captures > 0 && !g_captures.compare_exchange_weak(captures, captures - 1, std::memory_order_acq_rel)) {
    }
  }
  return result;
}
}  // namespace

CUresult cuCtxDestroy_v2(CUcontext ctx)
GPUSHARE_WRAPPED_CALL(cuCtxDestroy_v2, [&](auto&& destroy) {
  return context_ending([ctx](const Tenancy::InflightBound& bound) { return bound.context == ctx; }, destroy);
}, (ctx))
// Reset ends the device's primary context; the last release does too (an earlier one does not, and
// then the events are only made again). A bound in another context of the device loses its events
// as well: it makes new ones at its next checkpoint.
CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev)
GPUSHARE_WRAPPED_CALL(cuDevicePrimaryCtxReset_v2, [&](auto&& reset) {
  return context_ending([dev](const Tenancy::InflightBound& bound) { return bound.device == dev; }, reset);
}, (dev))
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
GPUSHARE_WRAPPED_CALL(cuDevicePrimaryCtxRelease_v2, [&](auto&& release) {
  return context_ending([dev](const Tenancy::InflightBound& bound) { return bound.device == dev; }, release);
}, (dev))

namespace {
template <typename Open>
CUresult importing_memory(Open&& open) {
  const CUresult result = open();
  if (result == CUDA_SUCCESS) {
    g_imports_memory.store(true, std::memory_order_relaxed);
    // Started or not, never started here: a process that only imports and copies need not join.
    if (Tenancy* tenancy = Tenancy::if_started(); tenancy != nullptr && tenancy->mode() == Tenancy::Mode::kEnforce) {
      tenancy->gate().note_depends_on_other_processes();
    }
  }
  return result;
}
}  // namespace

CUresult cuIpcOpenMemHandle_v2(CUdeviceptr* pdptr, CUipcMemHandle handle, unsigned int Flags)
GPUSHARE_WRAPPED_CALL(cuIpcOpenMemHandle_v2, importing_memory, (pdptr, handle, Flags))
CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle* handle, void* osHandle,
                                        CUmemAllocationHandleType shHandleType)
GPUSHARE_WRAPPED_CALL(cuMemImportFromShareableHandle, importing_memory, (handle, osHandle, shHandleType))

CUresult cuStreamBeginCapture_v2(CUstream hStream, CUstreamCaptureMode mode)
GPUSHARE_WRAPPED_CALL(cuStreamBeginCapture_v2, capture_begun, (hStream, mode))
CUresult cuStreamBeginCapture_v2_ptsz(CUstream hStream, CUstreamCaptureMode mode)
GPUSHARE_WRAPPED_CALL(cuStreamBeginCapture_v2_ptsz, capture_begun, (hStream, mode))
CUresult cuStreamBeginCaptureToGraph(CUstream hStream, CUgraph hGraph, const CUgraphNode* dependencies,
                                     const CUgraphEdgeData* dependencyData, size_t numDependencies,
                                     CUstreamCaptureMode mode)
GPUSHARE_WRAPPED_CALL(cuStreamBeginCaptureToGraph, capture_begun,
                      (hStream, hGraph, dependencies, dependencyData, numDependencies, mode))
CUresult cuStreamBeginCaptureToGraph_ptsz(CUstream hStream, CUgraph hGraph, const CUgraphNode* dependencies,
                                          const CUgraphEdgeData* dependencyData, size_t numDependencies,
                                          CUstreamCaptureMode mode)
GPUSHARE_WRAPPED_CALL(cuStreamBeginCaptureToGraph_ptsz, capture_begun,
                      (hStream, hGraph, dependencies, dependencyData, numDependencies, mode))
CUresult cuStreamEndCapture(CUstream hStream, CUgraph* phGraph)
GPUSHARE_WRAPPED_CALL(cuStreamEndCapture, capture_ended, (hStream, phGraph))
CUresult cuStreamEndCapture_ptsz(CUstream hStream, CUgraph* phGraph)
GPUSHARE_WRAPPED_CALL(cuStreamEndCapture_ptsz, capture_ended, (hStream, phGraph))

}  // namespace gpushare::interpose::hooks
