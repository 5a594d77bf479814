// A GPU workload for the time-slicing tests: it launches kernels on the fake driver's simulated
// engine and reports, as key=value words on one line, how much GPU time it got or how long its
// kernels took to come back.
//
//   gpu_workload LOOKUP MODE ARGS   LOOKUP = linked | procaddress
//   MODES
//     saturate SECONDS KERNEL_US        launch KERNEL_US kernels back to back on one stream for
//                                       SECONDS, then synchronize; prints
//                                       kernel_us=<launched> launches=<n> wall_us=<first launch to end>
//                                       max_queued_us=<the deepest queue a launch found, -1 if unknown>
//     saturate-ex | saturate-graph | saturate-coop SECONDS KERNEL_US
//                                       the same through cuLaunchKernelEx, cuGraphLaunch (the fake's
//                                       graph lasts as many us as its handle's value) or
//                                       cuLaunchCooperativeKernel
//     bursts SECONDS KERNEL_US          like saturate, but waits for every 10 kernels (a training step;
//                                       WORKLOAD_BURST kernels if set)
//     capture SECONDS KERNEL_US         stream captures (global mode) of 40 launches, interleaved
//                                       with launches that run; prints captures= failed= wrong_nodes=
//     capture-only SECONDS KERNEL_US    20 kernels that run, then the same captures and nothing
//                                       else (a warm-up phase)
//     latency SECONDS KERNEL_US INTERVAL_US
//                                       launch one kernel, synchronize, sleep INTERVAL_US, repeat;
//                                       prints count=<n> p50_us= p99_us= max_us= (launch to sync return)
//   Environment: PROBE_DEVICE (ordinal, default 0); WORKLOAD_THREADS (saturate, bursts: launching
//   threads, each on a stream of its own; default 1); WORKLOAD_FIRST_CONTEXT (saturate, bursts: first
//   launch 10 kernels in a context made with cuCtxCreate, destroy it unless the value is "keep",
//   then go on in the primary one);
//   WORKLOAD_IPC (saturate, bursts: first map an allocation of "another process" with
//   cuIpcOpenMemHandle, as NCCL and custom all-reduce kernels do). Any launch or sync
//   error: error=<code> on stderr, exit status 3.
//   For the torture run (scripts/torture.sh), in saturate and bursts: WORKLOAD_STOP_FILE (also
//   stop, as when SECONDS are over, once this file exists: looked for before each launch, so a
//   process stuck in the gate never sees it); WORKLOAD_READY_FILE (created once the first launch
//   has returned); WORKLOAD_GAPS_US (print "gap_us=<n> end_unix_us=<wall clock>" on stdout, as it
//   happens, for each wait longer than this between two launches of a thread returning: a stretch
//   with no progress).
//
// procaddress resolves everything through cuGetProcAddress_v2 by base name, with the per-thread
// default stream flag for launches and synchronization, as libcudart built that way does.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <cuda.h>
#include <dlfcn.h>
#include <unistd.h>

#include "driver_api.hpp"

const char* const driver_api::kProgramName = "gpu_workload";

// cuda.h 13 maps cuCtxCreate to cuCtxCreate_v4 and no longer declares _v2, which every driver
// (and the fake) still exports.
extern "C" CUresult cuCtxCreate_v2(CUcontext* pctx, unsigned int flags, CUdevice dev);

namespace {

using driver_api::die;
using driver_api::resolve;

struct Api : driver_api::ContextApi {
  decltype(&::cuStreamCreate) stream_create;
  decltype(&::cuStreamDestroy_v2) stream_destroy;
  decltype(&::cuStreamSynchronize) stream_synchronize;
  decltype(&::cuLaunchKernel) launch_kernel;
  decltype(&::cuLaunchKernelEx) launch_kernel_ex;
  decltype(&::cuLaunchCooperativeKernel) launch_cooperative_kernel;
  decltype(&::cuGraphLaunch) graph_launch;
};

void check(CUresult result) {
  if (result == CUDA_SUCCESS) return;
  std::fprintf(stderr, "error=%d\n", static_cast<int>(result));
  std::exit(3);
}

Api linked_api() {
  return Api{driver_api::linked_context_api(),
             &::cuStreamCreate,
             &::cuStreamDestroy_v2,
             &::cuStreamSynchronize,
             &::cuLaunchKernel,
             &::cuLaunchKernelEx,
             &::cuLaunchCooperativeKernel,
             &::cuGraphLaunch};
}

Api procaddress_api() {
  const driver_api::ProcAddress get;
  constexpr cuuint64_t kPtds = CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
  Api api{};
  static_cast<driver_api::ContextApi&>(api) = driver_api::procaddress_context_api(get);
  resolve(api.stream_create, get("cuStreamCreate", 2000), "cuStreamCreate");
  resolve(api.stream_destroy, get("cuStreamDestroy", 4000), "cuStreamDestroy");
  resolve(api.stream_synchronize, get("cuStreamSynchronize", 2000, kPtds), "cuStreamSynchronize");
  resolve(api.launch_kernel, get("cuLaunchKernel", 4000, kPtds), "cuLaunchKernel");
  resolve(api.launch_kernel_ex, get("cuLaunchKernelEx", 11060, kPtds), "cuLaunchKernelEx");
  resolve(api.launch_cooperative_kernel, get("cuLaunchCooperativeKernel", 9000, kPtds), "cuLaunchCooperativeKernel");
  resolve(api.graph_launch, get("cuGraphLaunch", 10000, kPtds), "cuGraphLaunch");
  return api;
}

using Clock = std::chrono::steady_clock;

int64_t micros(Clock::duration d) { return std::chrono::duration_cast<std::chrono::microseconds>(d).count(); }

// The fake driver accepts any non-null function handle.
char g_kernel_image;
CUfunction kernel() { return reinterpret_cast<CUfunction>(&g_kernel_image); }

// One kernel of `us` microseconds on `stream`, through the entry point `mode` names.
std::function<CUresult(CUstream)> launcher(const Api& api, const std::string& mode, unsigned us) {
  if (mode == "saturate" || mode == "latency" || mode == "bursts" || mode == "capture" || mode == "capture-only")
    return [&api, us](CUstream s) { return api.launch_kernel(kernel(), us, 1, 1, 1, 1, 1, 0, s, nullptr, nullptr); };
  if (mode == "saturate-coop")
    return [&api, us](CUstream s) { return api.launch_cooperative_kernel(kernel(), us, 1, 1, 1, 1, 1, 0, s, nullptr); };
  if (mode == "saturate-graph")
    return [&api, us](CUstream s) { return api.graph_launch(reinterpret_cast<CUgraphExec>(uintptr_t{us}), s); };
  if (mode == "saturate-ex")
    return [&api, us](CUstream s) {
      CUlaunchConfig config{};
      config.gridDimX = us;
      config.gridDimY = config.gridDimZ = 1;
      config.blockDimX = config.blockDimY = config.blockDimZ = 1;
      config.hStream = s;
      return api.launch_kernel_ex(&config, kernel(), nullptr, nullptr);
    };
  die("unknown mode");
}

unsigned number(const char* text) { return static_cast<unsigned>(std::strtoul(text, nullptr, 0)); }

// A test hook of the fake driver, or null.
template <typename Fn>
Fn fake_hook(const char* name) {
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  return driver != nullptr ? reinterpret_cast<Fn>(dlsym(driver, name)) : nullptr;
}

// The fake driver's record of the deepest queue this process's launches found.
long long max_queued_us() {
  auto* hook = fake_hook<uint64_t (*)()>("fake_cuda_max_queued_ns");
  return hook != nullptr ? static_cast<long long>(hook() / 1000) : -1;
}

// Nearest-rank percentile of sorted values.

int64_t percentile(const std::vector<int64_t>& sorted, unsigned p) {
  size_t rank = (sorted.size() * p + 99) / 100;
  return sorted[rank == 0 ? 0 : rank - 1];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) die("usage: gpu_workload linked|procaddress MODE SECONDS KERNEL_US [INTERVAL_US]");
  const std::string lookup = argv[1];
  const std::string mode = argv[2];
  if (lookup != "linked" && lookup != "procaddress") die("unknown lookup");
  const Api api = lookup == "linked" ? linked_api() : procaddress_api();
  const driver_api::PrimaryContext context = driver_api::primary_context(api);
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  const auto duration = std::chrono::duration<double>(std::strtod(argv[3], nullptr));
  const unsigned kernel_us = number(argv[4]);
  const auto launch = launcher(api, mode, kernel_us);
  CUstream stream = nullptr;
  check(api.stream_create(&stream, 0));

  if (mode == "capture" || mode == "capture-only") {
    // CUDA graph capture as PyTorch does it (global mode), of kCaptured launches on a stream of its
    // own, each followed by a launch on `stream` that really runs (so the gate, its checkpoints and
    // handovers work while the capture is going). Every capture must end with its graph, holding
    // exactly the captured launches.
    constexpr unsigned kCaptured = 40;
    auto* nodes_of = fake_hook<unsigned (*)(CUgraph)>("fake_cuda_graph_nodes");
    if (nodes_of == nullptr) die("capture needs the fake driver");
    CUstream captured = nullptr;
    check(api.stream_create(&captured, CU_STREAM_NON_BLOCKING));
    if (mode == "capture-only") {
      // A warm-up begins with real work (loading, a profiling run): it holds the GPU when its
      // captures start.
      for (int i = 0; i < 20; ++i) check(launch(stream));
    }
    unsigned captures = 0, failed = 0, wrong = 0;
    const auto begin = Clock::now();
    while (Clock::now() - begin < duration) {
      check(cuStreamBeginCapture(captured, CU_STREAM_CAPTURE_MODE_GLOBAL));
      bool ok = true;
      for (unsigned i = 0; i < kCaptured; ++i) {
        ok = launch(captured) == CUDA_SUCCESS && ok;
        if (mode == "capture") check(launch(stream));
      }
      CUgraph graph = nullptr;
      ok = cuStreamEndCapture(captured, &graph) == CUDA_SUCCESS && ok;
      ++captures;
      if (!ok) ++failed;
      else if (nodes_of(graph) != kCaptured) ++wrong;
      check(api.stream_synchronize(stream));
    }
    std::printf("captures=%u failed=%u wrong_nodes=%u\n", captures, failed, wrong);
    check(api.stream_destroy(captured));
  } else if (mode == "latency") {
    if (argc < 6) die("latency needs INTERVAL_US");
    const auto interval = std::chrono::microseconds(number(argv[5]));
    std::vector<int64_t> latencies;
    const auto begin = Clock::now();
    while (Clock::now() - begin < duration) {
      const auto start = Clock::now();
      check(launch(stream));
      check(api.stream_synchronize(stream));
      latencies.push_back(micros(Clock::now() - start));
      std::this_thread::sleep_for(interval);
    }
    if (latencies.empty()) die("no sample");
    std::sort(latencies.begin(), latencies.end());
    std::printf("count=%zu p50_us=%lld p99_us=%lld max_us=%lld\n", latencies.size(),
                static_cast<long long>(percentile(latencies, 50)), static_cast<long long>(percentile(latencies, 99)),
                static_cast<long long>(latencies.back()));
  } else {
    if (std::getenv("WORKLOAD_FIRST_CONTEXT") != nullptr) {
      // A context of its own first (a library's, pycuda's), used and destroyed: the gate's events,
      // made in it, must not outlive it.
      CUcontext own = nullptr;
      check(cuCtxCreate_v2(&own, 0, context.device));
      for (int i = 0; i < 10; ++i) check(api.launch_kernel(kernel(), kernel_us, 1, 1, 1, 1, 1, 0, nullptr, nullptr, nullptr));
      check(cuCtxSynchronize());
      if (std::string(std::getenv("WORKLOAD_FIRST_CONTEXT")) != "keep") check(cuCtxDestroy_v2(own));
      check(api.ctx_set_current(context.context));
    }
    if (std::getenv("WORKLOAD_IPC") != nullptr) {
      CUdeviceptr shared = 0;
      check(cuIpcOpenMemHandle(&shared, CUipcMemHandle{}, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
    }
    // bursts: ten kernels, then wait for them, like a training step ending in loss.item().
    const char* burst_size = std::getenv("WORKLOAD_BURST");
    const uint64_t burst = mode != "bursts" ? 0 : burst_size != nullptr ? number(burst_size) : 10;
    const char* stop_file = std::getenv("WORKLOAD_STOP_FILE");
    const char* ready_file = std::getenv("WORKLOAD_READY_FILE");
    const char* gaps_text = std::getenv("WORKLOAD_GAPS_US");
    const auto gap_threshold = std::chrono::microseconds(gaps_text != nullptr ? number(gaps_text) : 0);
    std::atomic<bool> ready_made{false};
    const auto begin = Clock::now();
    // One launching thread, or WORKLOAD_THREADS, each on a stream of its own.
    auto run = [&](CUstream s) {
      uint64_t n = 0;
      auto last_return = Clock::now();
      while (Clock::now() - begin < duration && (stop_file == nullptr || access(stop_file, F_OK) != 0)) {
        check(launch(s));
        ++n;
        if (burst != 0 && n % burst == 0) check(api.stream_synchronize(s));
        const auto returned = Clock::now();
        if (gaps_text != nullptr && returned - last_return > gap_threshold) {
          const auto wall = std::chrono::system_clock::now().time_since_epoch();
          std::printf("gap_us=%lld end_unix_us=%lld\n", static_cast<long long>(micros(returned - last_return)),
                      static_cast<long long>(std::chrono::duration_cast<std::chrono::microseconds>(wall).count()));
        }
        last_return = returned;
        if (ready_file != nullptr && !ready_made.exchange(true)) {
          std::FILE* ready = std::fopen(ready_file, "w");
          if (ready == nullptr) die("cannot create WORKLOAD_READY_FILE");
          std::fclose(ready);
        }
      }
      check(api.stream_synchronize(s));
      return n;
    };
    const unsigned threads = std::getenv("WORKLOAD_THREADS") ? number(std::getenv("WORKLOAD_THREADS")) : 1;
    std::vector<std::thread> others;
    std::atomic<uint64_t> launches{0};
    for (unsigned t = 1; t < threads; ++t) {
      others.emplace_back([&] {
        check(api.ctx_set_current(context.context));
        CUstream own = nullptr;
        check(api.stream_create(&own, 0));
        launches += run(own);
        check(api.stream_destroy(own));
      });
    }
    launches += run(stream);
    for (auto& thread : others) thread.join();
    std::printf("kernel_us=%llu launches=%llu wall_us=%lld max_queued_us=%lld\n",
                static_cast<unsigned long long>(launches.load() * kernel_us), static_cast<unsigned long long>(launches.load()),
                static_cast<long long>(micros(Clock::now() - begin)), max_queued_us());
  }
  check(api.stream_destroy(stream));
  return 0;
}
