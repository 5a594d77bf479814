// Launch hooks: a process submits work to a GPU only while it holds that GPU's time slice.
//
// Hot path (holding the slice): the current context (cuCtxGetCurrent, its GPU cached per thread),
// one load of the schedule's holder word, a plain store into this thread's lane of the process's
// activity on the way in and out (ComputeGate::begin_launch), a thread-local countdown. No lock,
// no system call, and no locked instruction for the first five launching threads of a process on
// a GPU. At each checkpoint (InflightBound decides when) the slow path bounds the work in flight
// and checks whether the slice is over. The decisions are the core's; this file adapts the driver.
#include <array>
#include <atomic>
#include <optional>
#include <thread>

#include "capture_hooks.hpp"
#include "collective_kinds.hpp"
#include "core/handover_drain.hpp"
#include "core/inflight_bound.hpp"
#include "core/ungated_pause.hpp"
#include "driver.hpp"
#include "hooks.hpp"
#include "log.hpp"
#include "tenancy.hpp"
#include "trace_recorder.hpp"

namespace gpushare::interpose::hooks {
namespace {

// The in-flight bound's settings, read once.
const InflightPacing& inflight_pacing() {
  static const InflightPacing pacing = [] {
    const Settings& settings = process_settings().settings;
    return InflightPacing::from_settings(settings.inflight_launches, settings.inflight_ms,
                                         default_settings().inflight_launches);
  }();
  return pacing;
}

// The in-flight bound's events are the driver's, in the current context.
class DriverEvents final : public InflightEvents {
 public:
  explicit DriverEvents(const RealDriver& driver) : driver_(driver) {}
  // Whether this driver has what the bound uses.
  bool usable() const {
    return driver_.cuEventCreate != nullptr && driver_.cuEventRecord != nullptr &&
           driver_.cuEventSynchronize != nullptr;
  }
  bool create(EventHandle* event) override {
    if (driver_.cuEventCreate == nullptr) return false;
    CUevent made = nullptr;
    if (driver_.cuEventCreate(&made, CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS) return false;
    *event = made;
    return true;
  }
  bool record(EventHandle event, StreamHandle stream) override {
    return driver_.cuEventRecord != nullptr &&
           driver_.cuEventRecord(static_cast<CUevent>(event), static_cast<CUstream>(stream)) == CUDA_SUCCESS;
  }
  void wait(EventHandle event) override {
    if (driver_.cuEventSynchronize != nullptr) driver_.cuEventSynchronize(static_cast<CUevent>(event));
  }
  void destroy(EventHandle event) override {
    if (driver_.cuEventDestroy_v2 != nullptr) driver_.cuEventDestroy_v2(static_cast<CUevent>(event));
  }
  std::uint64_t now_ns() override { return monotonic_now_ns(); }

 private:
  const RealDriver& driver_;
};

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

// What handing over means for this process: wait until all it submitted to the GPU has run, after
// the launches of its threads that had passed their slice check (wait_for_launching_threads).
// cuCtxSynchronize covers every stream of the current context, including ones the program may
// have destroyed since (a stream list could dangle). But while a stream of the process is
// capturing a graph, the driver refuses to synchronize its context and invalidates the capture:
// then the drain waits for the newest event of the in-flight bound instead (work queued on other
// streams may still be running when the next holder starts).
void drain(std::uint32_t gpu) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr) return;
  Tenancy& tenancy = Tenancy::get();
  ComputeGate& gate = tenancy.gate();
  // A thread's entry may still be on its way out of its core's store buffer: the process's threads
  // are fenced first, or, where that cannot be done, watched for kStoreVisibleNs.
  const std::uint64_t watch_ns = gate.fence_own_threads() ? 0 : kStoreVisibleNs;
  const LaunchingThreads threads{
      .inside = [&] { return gate.threads_inside(gpu); },
      .parked = [gpu] { return static_cast<std::uint64_t>(g_parked[gpu].load(std::memory_order_seq_cst)); },
      .now_ns = monotonic_now_ns,
      .yield = [] { std::this_thread::yield(); }};
  wait_for_launching_threads(threads, watch_ns);
  if (g_captures.load(std::memory_order_acquire) <= 0) {
    if (driver->cuCtxSynchronize != nullptr) driver->cuCtxSynchronize();
    return;
  }
  DriverEvents events(*driver);
  tenancy.inflight(gpu).wait_for_newest(events);
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
// Launches until the next checkpoint, per GPU: the in-flight bound's interval. Decided at each
// checkpoint, so the hot path reads no clock.
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

// After the arbiter of a GPU failed, launches on that GPU go ungated for a while (UngatedPause).
std::array<UngatedPause, layout::kMaxGpus> g_ungated{};

void arbiter_failed(std::uint32_t gpu, CUdevice device, const Error& error) {
  (void)g_ungated[gpu].failed(monotonic_now_ns());
  log_repeated(Repeated::kArbiter, LogLevel::kError, "device {}: time-slice arbiter unusable ({}); launching ungated",
               device, error.message);
}

// A launch that does not hold the slice, or whose thread is due a checkpoint. Unless it is being
// captured into a graph: then it needs no slice, and an event recorded on its stream would end up
// in the program's graph. Without a capture going on in the process (the common case) there is
// nothing to ask the driver.
void before_launch_slow_path(const RealDriver& driver, Tenancy& tenancy, std::uint32_t gpu, CUdevice device,
                             CUstream stream) {
  if (g_ungated[gpu].ungated(monotonic_now_ns())) return;
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
    g_ungated[gpu].worked();
  }
  if (t_until_checkpoint[gpu] > 1) {
    --t_until_checkpoint[gpu];
    return;
  }
  std::uint64_t now = monotonic_now_ns();
  const InflightPacing& pacing = inflight_pacing();
  const unsigned most = pacing.most_launches(gate.higher_class_recently(gpu, now));
  DriverEvents events(driver);
  t_until_checkpoint[gpu] =
      events.usable()
          ? tenancy.inflight(gpu).checkpoint(pacing, events, {t_last.context, device, stream}, most, granted_now, &now)
          : most;
  if (auto checked = gate.checkpoint(gpu, drain, now); !checked) return arbiter_failed(gpu, device, checked.error());
  g_ungated[gpu].worked();
}

// The slow path of a launch that is a collective if `collective` (counted already: note_collective).
// A gang's rank asked to hand over goes on to its gang's stop count (gang.hpp); else a collective is
// withdrawn while the launch waits for its turn and counted again after it, so that no stop count
// includes a part this rank has not launched. Counted again, it may find itself asked meanwhile.
void before_launch(const RealDriver& driver, Tenancy& tenancy, std::uint32_t gpu, CUdevice device, CUstream stream,
                   bool collective) {
  ComputeGate& gate = tenancy.gate();
  for (int pass = 0;; ++pass) {
    if (gate.goes_on_to_gang_stop(gpu, collective, monotonic_now_ns())) return;
    if (!collective) return before_launch_slow_path(driver, tenancy, gpu, device, stream);
    gate.withdraw_collective(gpu);
    before_launch_slow_path(driver, tenancy, gpu, device, stream);
    gate.note_collective(gpu);
    if (gate.holds(gpu) || pass == 2) return;
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

// `function`: the kernel launched (null for a graph), to count collectives (launches_a_collective).
template <typename Launch>
CUresult gated(CUstream stream, CUfunction function, Launch&& launch) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr) return kMissing;
  Tenancy& tenancy = Tenancy::get();
  if (trace::recording()) [[unlikely]]
    trace::launched();
  if (tenancy.mode() != Tenancy::Mode::kEnforce) return launch();
  CUdevice device = 0;
  const auto gpu = current_gpu(*driver, tenancy, &device);
  if (!gpu) return launch();
  ComputeGate& gate = tenancy.gate();
  // Inside from here to the end: draining at a handover, waiting for the slice and a launch blocked
  // on a full GPU queue all mean "this process's work is on the GPU", never "idle".
  const InsideCall inside(gate.begin_launch(*gpu, t_lanes[*gpu]));
  // Counted before the gate is looked at (before_launch). One being captured into a graph is not:
  // it runs when the graph does.
  const bool collective = g_captures.load(std::memory_order_relaxed) <= 0 && launches_a_collective(*driver, function);
  if (collective) gate.note_collective(*gpu);
  if (!gate.holds(*gpu) || t_until_checkpoint[*gpu] <= 1) {
    before_launch(*driver, tenancy, *gpu, device, stream, collective);
  } else {
    --t_until_checkpoint[*gpu];
  }
  return launch();
}

// A wait for the GPU by the slice holder counts as "inside a launch", so it is not taken for idleness.
template <typename Wait>
CUresult counted_wait(Wait&& wait) {
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

// A synchronize: counted, and in trace mode the end of the thread's request.
template <typename Wait>
CUresult busy_waiting(Wait&& wait) {
  const CUresult result = counted_wait(wait);
  if (trace::recording()) [[unlikely]]
    trace::synchronized();
  return result;
}

}  // namespace

#define GPUSHARE_GATED_LAUNCH(name, stream_expr, function_expr, call_args) \
  GPUSHARE_WRAPPED_CALL(                                                   \
      name, [&](auto&& call) { return gated(stream_expr, function_expr, call); }, call_args)
// In a `_ptsz` entry point the null stream is the calling thread's default stream: the gate's own
// calls (capture query, event record) name it explicitly, since they go through legacy entries.
#define GPUSHARE_GATED_LAUNCH_PTSZ(name, stream_expr, function_expr, call_args) \
  GPUSHARE_GATED_LAUNCH(name, per_thread_stream(stream_expr), function_expr, call_args)

CUresult cuLaunchKernel GPUSHARE_LAUNCH_KERNEL_PARAMS GPUSHARE_GATED_LAUNCH(
    cuLaunchKernel, hStream, f, GPUSHARE_LAUNCH_KERNEL_ARGS) CUresult cuLaunchKernel_ptsz GPUSHARE_LAUNCH_KERNEL_PARAMS
    GPUSHARE_GATED_LAUNCH_PTSZ(cuLaunchKernel_ptsz, hStream, f, GPUSHARE_LAUNCH_KERNEL_ARGS) CUresult
    cuLaunchCooperativeKernel GPUSHARE_COOPERATIVE_PARAMS
    GPUSHARE_GATED_LAUNCH(cuLaunchCooperativeKernel, hStream, f,
                          GPUSHARE_COOPERATIVE_ARGS) CUresult cuLaunchCooperativeKernel_ptsz GPUSHARE_COOPERATIVE_PARAMS
    GPUSHARE_GATED_LAUNCH_PTSZ(cuLaunchCooperativeKernel_ptsz, hStream, f, GPUSHARE_COOPERATIVE_ARGS)

        CUresult cuLaunchKernelEx(const CUlaunchConfig* config, CUfunction f, void** kernelParams, void** extra)
            GPUSHARE_GATED_LAUNCH(cuLaunchKernelEx, config != nullptr ? config->hStream : nullptr, f,
                                  (config, f, kernelParams, extra)) CUresult
    cuLaunchKernelEx_ptsz(const CUlaunchConfig* config, CUfunction f, void** kernelParams, void** extra)
        GPUSHARE_GATED_LAUNCH_PTSZ(cuLaunchKernelEx_ptsz, config != nullptr ? config->hStream : nullptr, f,
                                   (config, f, kernelParams, extra))

    // CUDA graphs: one launch of a whole graph, gated like a kernel.
    CUresult cuGraphLaunch(CUgraphExec hGraphExec, CUstream hStream)
        GPUSHARE_GATED_LAUNCH(cuGraphLaunch, hStream, nullptr, (hGraphExec, hStream)) CUresult
    cuGraphLaunch_ptsz(CUgraphExec hGraphExec, CUstream hStream)
        GPUSHARE_GATED_LAUNCH_PTSZ(cuGraphLaunch_ptsz, hStream, nullptr, (hGraphExec, hStream))

            CUresult cuCtxSynchronize(void) GPUSHARE_WRAPPED_CALL(cuCtxSynchronize, busy_waiting, ())
    // CUDA 13's cudaDeviceSynchronize (torch.cuda.synchronize) comes here.
    CUresult cuCtxSynchronize_v2(CUcontext ctx) GPUSHARE_WRAPPED_CALL(cuCtxSynchronize_v2, busy_waiting, (ctx)) CUresult
    cuStreamSynchronize(CUstream hStream) GPUSHARE_WRAPPED_CALL(cuStreamSynchronize, busy_waiting, (hStream)) CUresult
    cuStreamSynchronize_ptsz(CUstream hStream)
        GPUSHARE_WRAPPED_CALL(cuStreamSynchronize_ptsz, busy_waiting, (hStream)) CUresult
    cuEventSynchronize(CUevent hEvent) GPUSHARE_WRAPPED_CALL(cuEventSynchronize, busy_waiting, (hEvent))

        namespace {
  // The in-flight bound's events die with their context: destroy them while it still lives (before
  // the driver call that ends it), and let a later checkpoint create new ones in whatever context is
  // current then. Otherwise a checkpoint would record into a stale handle, one the driver may by then
  // have given to an event of the program's own. `ends`: whether the call ends the bound's context.
  template <typename Forget>
  void forget_events_in_ending_contexts(Forget && forget) {
    Tenancy* tenancy = Tenancy::if_started();
    const RealDriver* driver = real_driver();
    if (tenancy == nullptr || driver == nullptr) return;
    DriverEvents events(*driver);
    for (std::uint32_t gpu = 0; gpu < layout::kMaxGpus; ++gpu) forget(tenancy->inflight(gpu), events);
  }

  // A driver call that may end a context: `forget` takes the events of the ending contexts from an
  // in-flight bound.
  template <typename Forget, typename End>
  CUresult context_ending(Forget && forget, End && end) {
    forget_events_in_ending_contexts(forget);
    // Counted before and after: a thread that caches its context while the call runs looks again.
    g_contexts_ended.fetch_add(1, std::memory_order_relaxed);
    const CUresult result = end();
    g_contexts_ended.fetch_add(1, std::memory_order_relaxed);
    return result;
  }

}  // namespace

CUresult cuCtxDestroy_v2(CUcontext ctx) GPUSHARE_WRAPPED_CALL(
    cuCtxDestroy_v2,
    [&](auto&& destroy) {
      return context_ending([ctx](InflightBound& bound, DriverEvents& events) { bound.forget_context(events, ctx); },
                            destroy);
    },
    (ctx))
    // Reset ends the device's primary context; the last release does too (an earlier one does not, and
    // then the events are only made again). A bound in another context of the device loses its events
    // as well: it makes new ones at its next checkpoint.
    CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev) GPUSHARE_WRAPPED_CALL(
        cuDevicePrimaryCtxReset_v2,
        [&](auto&& reset) {
          return context_ending([dev](InflightBound& bound, DriverEvents& events) { bound.forget_device(events, dev); },
                                reset);
        },
        (dev)) CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
        GPUSHARE_WRAPPED_CALL(
            cuDevicePrimaryCtxRelease_v2,
            [&](auto&& release) {
              return context_ending(
                  [dev](InflightBound& bound, DriverEvents& events) { bound.forget_device(events, dev); }, release);
            },
            (dev))

}  // namespace gpushare::interpose::hooks
