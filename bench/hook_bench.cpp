// Cost the preload library adds to the driver calls it wraps: each call made directly on a driver,
// and through libgpushare-preload.so's wrapper onto the same driver, in one run; the differences
// and ratios are printed at the end.
//   - cuMemAlloc_v2 + cuMemFree_v2 of 1 MiB (the memory ledger)
//   - cuMemGetInfo_v2 (the tenant's view)
//   - cuLaunchKernel of an empty kernel (the time-slice gate, holding the slice), back to back
//     (on a real GPU this loop runs at the GPU's own launch throughput, so waits for the GPU show),
//     and in batches of 16 onto an idle GPU with a synchronize between batches outside the timing
//     (the host-side cost alone)
//
// Environment:
//   GPUSHARE_BENCH_DRIVER   driver to call (default: the fake driver of this build tree;
//                           on a GPU machine: libcuda.so.1)
//   GPUSHARE_BENCH_PRELOAD  the preload library (default: the one of this build tree)
// The preload library reads its own settings from the environment as usual, in this process: with
// GPUSHARE_TRACE (and GPUSHARE_CUPTI) set, the launches are measured with trace mode on.
#include <dlfcn.h>
#include <unistd.h>

#include <benchmark/benchmark.h>
#include <cuda.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

namespace {

struct Calls {
  decltype(&::cuMemAlloc_v2) alloc = nullptr;
  decltype(&::cuMemFree_v2) free = nullptr;
  decltype(&::cuMemGetInfo_v2) get_info = nullptr;
  decltype(&::cuLaunchKernel) launch = nullptr;
};
// Waits for the GPU between timed batches; the driver's own, for both variants, so the timed part
// is all that differs.
decltype(&::cuCtxSynchronize) g_synchronize = nullptr;

// An empty kernel for real drivers; the fake driver accepts any non-null function.
constexpr const char* kEmptyKernelPtx = R"(.version 8.0
.target sm_90
.address_size 64
.visible .entry empty() { ret; }
)";
CUfunction g_kernel = reinterpret_cast<CUfunction>(1);

std::string env_or(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

void* open_or_die(const std::string& path) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    std::fprintf(stderr, "hook_bench: cannot open %s: %s\n", path.c_str(), dlerror());
    std::exit(2);
  }
  return handle;
}

template <typename Fn>
Fn symbol(void* handle, const char* name) {
  auto fn = reinterpret_cast<Fn>(dlsym(handle, name));
  if (fn == nullptr) {
    std::fprintf(stderr, "hook_bench: no %s\n", name);
    std::exit(2);
  }
  return fn;
}

Calls calls_from(void* handle) {
  return Calls{symbol<decltype(Calls::alloc)>(handle, "cuMemAlloc_v2"), symbol<decltype(Calls::free)>(handle, "cuMemFree_v2"),
               symbol<decltype(Calls::get_info)>(handle, "cuMemGetInfo_v2"),
               symbol<decltype(Calls::launch)>(handle, "cuLaunchKernel")};
}

Calls g_direct;
Calls g_hooked;

void alloc_free_pair(benchmark::State& state, const Calls& calls) {
  const auto bytes = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    CUdeviceptr pointer = 0;
    if (calls.alloc(&pointer, bytes) != CUDA_SUCCESS) {
      state.SkipWithError("allocation failed");
      break;
    }
    calls.free(pointer);
  }
}
void get_info(benchmark::State& state, const Calls& calls) {
  for (auto _ : state) {
    size_t free = 0, total = 0;
    calls.get_info(&free, &total);
    benchmark::DoNotOptimize(free);
  }
}

void launch(benchmark::State& state, const Calls& calls) {
  for (auto _ : state) {
    if (calls.launch(g_kernel, 1, 1, 1, 1, 1, 1, 0, nullptr, nullptr, nullptr) != CUDA_SUCCESS) {
      state.SkipWithError("launch failed");
      break;
    }
  }
}

// Batches of kLaunchBatch launches, each timed on its own, onto an idle GPU: never more than a batch
// in flight, so neither the driver's queue nor gpushare's in-flight bound ever waits, and the time
// is the host's. The table shows a batch (one clock read pair each, the same in both variants);
// the comparison below it, a launch.
constexpr int kLaunchBatch = 16;
void launch_batches(benchmark::State& state, const Calls& calls) {
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kLaunchBatch; ++i) {
      if (calls.launch(g_kernel, 1, 1, 1, 1, 1, 1, 0, nullptr, nullptr, nullptr) != CUDA_SUCCESS) {
        state.SkipWithError("launch failed");
        return;
      }
    }
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    state.SetIterationTime(took.count());
    g_synchronize();
  }
}

void BM_AllocFree_Direct(benchmark::State& state) { alloc_free_pair(state, g_direct); }
void BM_AllocFree_Hooked(benchmark::State& state) { alloc_free_pair(state, g_hooked); }
void BM_MemGetInfo_Direct(benchmark::State& state) { get_info(state, g_direct); }
void BM_MemGetInfo_Hooked(benchmark::State& state) { get_info(state, g_hooked); }
BENCHMARK(BM_AllocFree_Direct)->Arg(1 << 20);
BENCHMARK(BM_AllocFree_Hooked)->Arg(1 << 20);
BENCHMARK(BM_MemGetInfo_Direct);
BENCHMARK(BM_MemGetInfo_Hooked);
void BM_Launch_Direct(benchmark::State& state) { launch(state, g_direct); }
void BM_Launch_Hooked(benchmark::State& state) { launch(state, g_hooked); }
BENCHMARK(BM_Launch_Direct);
BENCHMARK(BM_Launch_Hooked);
void BM_LaunchBatch_Direct(benchmark::State& state) { launch_batches(state, g_direct); }
void BM_LaunchBatch_Hooked(benchmark::State& state) { launch_batches(state, g_hooked); }
BENCHMARK(BM_LaunchBatch_Direct)->UseManualTime();
BENCHMARK(BM_LaunchBatch_Hooked)->UseManualTime();

// What the launch gate's own driver call costs, to attribute the launch overhead.
decltype(&::cuCtxGetCurrent) g_ctx_get_current = nullptr;
void BM_CtxGetCurrent_Direct(benchmark::State& state) {
  for (auto _ : state) {
    CUcontext context = nullptr;
    g_ctx_get_current(&context);
    benchmark::DoNotOptimize(context);
  }
}
BENCHMARK(BM_CtxGetCurrent_Direct);

// Collects each run's time per iteration to print the comparison after the table.
class ComparingReporter : public benchmark::ConsoleReporter {
 public:
  // Colours only on a terminal: piped, the lines stay plain for grep (a reporter of our own does
  // not get the library's --benchmark_color handling).
  ComparingReporter() : ConsoleReporter(::isatty(STDOUT_FILENO) ? OO_Defaults : OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    // With --benchmark_repetitions the median is compared, else the single run.
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      const std::string name = run.run_name.function_name;
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name == "median") {
        ns_[name] = run.GetAdjustedRealTime();
        has_median_[name] = true;
      } else if (run.run_type == Run::RT_Iteration && !has_median_[name]) {
        ns_[name] = run.GetAdjustedRealTime();
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    compare("BM_AllocFree_Direct", "BM_AllocFree_Hooked", "cuMemAlloc_v2+cuMemFree_v2 (1 MiB)");
    compare("BM_MemGetInfo_Direct", "BM_MemGetInfo_Hooked", "cuMemGetInfo_v2");
    compare("BM_Launch_Direct", "BM_Launch_Hooked", "cuLaunchKernel (empty kernel)");
    compare("BM_LaunchBatch_Direct", "BM_LaunchBatch_Hooked", "cuLaunchKernel, batches of 16 (host)", kLaunchBatch);
  }

 private:
  // `calls`: calls per iteration; the figures are per call.
  void compare(const std::string& direct, const std::string& hooked, const char* what, int calls = 1) {
    if (!ns_.count(direct) || !ns_.count(hooked)) return;
    const double d = ns_[direct] / calls, h = ns_[hooked] / calls;
    std::printf("%-36s direct %10.1f ns  hooked %10.1f ns  added %8.1f ns  ratio %.3f\n", what, d, h, h - d, h / d);
  }
  std::map<std::string, double> ns_;
  std::map<std::string, bool> has_median_;
};

}  // namespace

int main(int argc, char** argv) {
  const std::string driver_path = env_or("GPUSHARE_BENCH_DRIVER", GPUSHARE_BENCH_FAKE_DRIVER);
  const std::string preload_path = env_or("GPUSHARE_BENCH_PRELOAD", GPUSHARE_BENCH_PRELOAD_LIBRARY);
  // The wrappers reach the same driver object (same path, so dlopen returns the same handle).
  setenv("GPUSHARE_REAL_LIBCUDA", driver_path.c_str(), 1);
  const std::string state = "/tmp/gpushare-bench-" + std::to_string(getpid()) + ".state";
  setenv("GPUSHARE_STATE", state.c_str(), 1);
  setenv("GPUSHARE_MEMORY_LIMIT", "64GiB", 0);
  // On the fake driver, kernels of 1 ns: they finish faster than they can be launched, so the
  // launch path is measured, not a full queue.
  setenv("FAKE_CUDA_KERNEL_UNIT_NS", "1", 0);

  void* driver = open_or_die(driver_path);
  void* preload = open_or_die(preload_path);
  auto init = symbol<decltype(&::cuInit)>(driver, "cuInit");
  auto device_get = symbol<decltype(&::cuDeviceGet)>(driver, "cuDeviceGet");
  auto retain = symbol<decltype(&::cuDevicePrimaryCtxRetain)>(driver, "cuDevicePrimaryCtxRetain");
  auto set_current = symbol<decltype(&::cuCtxSetCurrent)>(driver, "cuCtxSetCurrent");
  CUdevice device = 0;
  CUcontext context = nullptr;
  if (init(0) != CUDA_SUCCESS || device_get(&device, 0) != CUDA_SUCCESS || retain(&context, device) != CUDA_SUCCESS ||
      set_current(context) != CUDA_SUCCESS) {
    std::fprintf(stderr, "hook_bench: cannot create a context on %s\n", driver_path.c_str());
    return 2;
  }
  g_ctx_get_current = symbol<decltype(&::cuCtxGetCurrent)>(driver, "cuCtxGetCurrent");
  g_synchronize = symbol<decltype(&::cuCtxSynchronize)>(driver, "cuCtxSynchronize");
  g_direct = calls_from(driver);
  g_hooked = calls_from(preload);
  using LoadData = CUresult (*)(CUmodule*, const void*);
  using GetFunction = CUresult (*)(CUfunction*, CUmodule, const char*);
  auto load_data = reinterpret_cast<LoadData>(dlsym(driver, "cuModuleLoadData"));
  auto get_function = reinterpret_cast<GetFunction>(dlsym(driver, "cuModuleGetFunction"));
  CUmodule module = nullptr;
  if (load_data != nullptr && get_function != nullptr && load_data(&module, kEmptyKernelPtx) == CUDA_SUCCESS) {
    get_function(&g_kernel, module, "empty");
  }

  // A memory query and a launch through the wrappers before any timing: the library attaches to the GPU
  // (and trace mode, when asked, starts) here rather than inside the first timed loop.
  size_t free_bytes = 0, total_bytes = 0;
  g_hooked.get_info(&free_bytes, &total_bytes);
  if (g_hooked.launch(g_kernel, 1, 1, 1, 1, 1, 1, 0, nullptr, nullptr, nullptr) == CUDA_SUCCESS) g_synchronize();

  benchmark::Initialize(&argc, argv);
  ComparingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  unlink(state.c_str());
  return 0;
}
