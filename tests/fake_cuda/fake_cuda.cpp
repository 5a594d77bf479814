// Fake CUDA driver (libcuda.so.1) for GPU-less CI.
//
// Implements the subset of the driver API that gpushare's interposer hooks or
// calls, with per-process bookkeeping of "physical" device memory so tests can
// observe exactly what reached the driver. Nothing is allocated for real:
// device pointers are fake addresses and must never be dereferenced.
// See README.md for the simulated behaviour and the FAKE_CUDA_* variables.

#include <cuda.h>

#include "fake_activity_record.hpp"
#include "fake_collective.hpp"
#include "fake_engine.hpp"

// cuda.h renames these to their newest variants; the real driver still exports
// the old entry points under their literal names, so the fake must too.
#undef cuGetProcAddress
#undef cuDeviceGetUuid
#undef cuEventElapsedTime

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

// Built with -fvisibility=hidden and a version script: only these are exported.
#define FAKE_EXPORT extern "C" __attribute__((visibility("default")))

// Entry points cuda.h does not declare in its default mode: the legacy names
// #undef'd above, cuCtxCreate_v2 (cuda.h 13 maps cuCtxCreate to _v4) and the
// per-thread-default-stream (_ptsz) variants.
FAKE_EXPORT CUresult cuGetProcAddress(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags);
FAKE_EXPORT CUresult cuDeviceGetUuid(CUuuid* uuid, CUdevice dev);
FAKE_EXPORT CUresult cuCtxCreate_v2(CUcontext* pctx, unsigned int flags, CUdevice dev);
FAKE_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr* dptr, size_t bytesize, CUstream hStream);
FAKE_EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr* dptr, size_t bytesize, CUmemoryPool pool,
                                                  CUstream hStream);
FAKE_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream);
FAKE_EXPORT CUresult cuEventElapsedTime(float* pMilliseconds, CUevent hStart, CUevent hEnd);
FAKE_EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                         unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY,
                                         unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream hStream,
                                         void** kernelParams, void** extra);
FAKE_EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig* config, CUfunction f, void** kernelParams,
                                           void** extra);
FAKE_EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                                    unsigned int gridDimZ, unsigned int blockDimX,
                                                    unsigned int blockDimY, unsigned int blockDimZ,
                                                    unsigned int sharedMemBytes, CUstream hStream,
                                                    void** kernelParams);
FAKE_EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec hGraphExec, CUstream hStream);
FAKE_EXPORT CUresult cuEventRecord_ptsz(CUevent hEvent, CUstream hStream);
FAKE_EXPORT CUresult cuEventRecordWithFlags_ptsz(CUevent hEvent, CUstream hStream, unsigned int flags);
FAKE_EXPORT CUresult cuStreamSynchronize_ptsz(CUstream hStream);
FAKE_EXPORT CUresult cuStreamQuery_ptsz(CUstream hStream);
FAKE_EXPORT CUresult cuStreamWaitEvent_ptsz(CUstream hStream, CUevent hEvent, unsigned int Flags);
FAKE_EXPORT CUresult cuStreamEndCapture_ptsz(CUstream hStream, CUgraph* phGraph);
FAKE_EXPORT CUresult cuStreamIsCapturing_ptsz(CUstream hStream, CUstreamCaptureStatus* captureStatus);
FAKE_EXPORT uint64_t fake_cuda_allocated_bytes(int physical_device);
FAKE_EXPORT uint64_t fake_cuda_alloc_calls(void);
FAKE_EXPORT uint64_t fake_cuda_kernel_ns(void);
FAKE_EXPORT uint64_t fake_cuda_launches(void);
FAKE_EXPORT uint64_t fake_cuda_max_queued_ns(void);
FAKE_EXPORT unsigned fake_cuda_graph_nodes(CUgraph graph);

// cuda.h only forward-declares the handle structs, so the fake defines them.
// Contexts are never freed: another thread may still have a destroyed one
// current, and must be able to read `alive` to get CONTEXT_IS_DESTROYED.
struct CUctx_st {
  int ordinal;    // the CUdevice it was created on
  int phys;       // the physical device it charges
  bool primary;   // primary contexts are refcounted and never destroyed
  bool alive;     // false after cuCtxDestroy
  unsigned refs;  // primary only: active while refs > 0
  // Engine times (fake_engine::now_ns). Work on the null and special streams
  // goes to the context's one default stream.
  uint64_t default_tail = 0;  // end of the default stream's last kernel
  uint64_t latest_tail = 0;   // latest tail of any of its streams: cuCtxSynchronize
  uint32_t activity_stream = 0;  // its default stream's number in kernel activity, 0 until first needed
};
struct CUstream_st {
  CUctx_st* ctx = nullptr;  // the context that was current at creation
  int priority = 0;         // recorded only
  uint64_t tail = 0;        // end of its last kernel, or the time it was made to wait for
  // Stream capture: the CUstreamCaptureMode it began with, -1 when not capturing.
  int capture = -1;
  bool capture_invalidated = false;
  unsigned capture_nodes = 0;  // launches and event records captured so far
  std::thread::id capture_thread;
  CUgraph_st* capture_graph = nullptr;  // cuStreamBeginCaptureToGraph: the graph it adds to
  uint32_t activity_stream = 0;  // its number in kernel activity, 0 until first needed
};
struct CUevent_st {
  CUctx_st* ctx = nullptr;  // the context that was current at creation
  unsigned flags = 0;       // CU_EVENT_*
  bool recorded = false;    // false until the first cuEventRecord
  uint64_t time = 0;        // when the work it was recorded after completes
  bool captured = false;  // last recorded in a capturing stream
};
struct CUgraph_st {
  unsigned nodes;
};

namespace {

constexpr int kMaxDevices = fake_engine::kDevices;
constexpr int kMaxCtxStack = 64;
constexpr uint64_t kDefaultMemory = 85017493504ULL;  // H100 80GB: 79.18 GiB
constexpr uint64_t kPitchAlign = 512;
constexpr uint64_t kGranularity = 2ULL << 20;
constexpr uint64_t kAddressBase = 0x7f0000000000ULL;

// ------------------------------------------------------------------ config --

struct Config {
  bool ok = true;
  int count = 1;
  int phys[kMaxDevices] = {};  // ordinal -> physical device
  uint64_t memory = kDefaultMemory;
  uint64_t ctx_memory = 0;
  uint64_t max_queue_ns = 20000 * 1000ULL;  // bound on the device's queued work
  uint64_t kernel_unit_ns = 1000;            // a kernel lasts gridDimX of these
  uint64_t collective_timeout_ns = 10'000'000'000ULL;  // a collective's peers must come within this
  uint64_t timeslice_ns = 2'000'000;  // the hardware's time slice between contexts
};

// Strict decimal parse: a typo in a test's environment must fail loudly, not
// silently fall back to a default.
bool parse_u64(const char* s, uint64_t* out) {
  if (s == nullptr || !std::isdigit(static_cast<unsigned char>(*s))) return false;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

Config load_config() {
  Config c;
  uint64_t v = 0;
  auto read = [&](const char* var, uint64_t max, auto&& store) {
    const char* s = std::getenv(var);
    if (s == nullptr) return;
    if (parse_u64(s, &v) && v <= max) return store();
    std::fprintf(stderr, "fake_cuda: invalid %s='%s'\n", var, s);
    c.ok = false;
  };
  read("FAKE_CUDA_DEVICE_MEMORY", UINT64_MAX, [&] { c.memory = v; });
  read("FAKE_CUDA_CONTEXT_MEMORY", UINT64_MAX, [&] { c.ctx_memory = v; });
  read("FAKE_CUDA_DEVICE_COUNT", kMaxDevices, [&] { c.count = static_cast<int>(v); });
  read("FAKE_CUDA_MAX_QUEUE_US", UINT64_MAX / 1000, [&] { c.max_queue_ns = v * 1000; });
  // Benchmarks set 1 (ns) so that kernels finish faster than they can be launched.
  read("FAKE_CUDA_KERNEL_UNIT_NS", 1'000'000, [&] { c.kernel_unit_ns = v; });
  read("FAKE_CUDA_COLLECTIVE_TIMEOUT_MS", UINT64_MAX / 1'000'000, [&] { c.collective_timeout_ns = v * 1'000'000; });
  read("FAKE_CUDA_TIMESLICE_US", UINT64_MAX / 1000, [&] { c.timeslice_ns = v * 1000; });
  for (int i = 0; i < kMaxDevices; ++i) c.phys[i] = i;
  // Imitates CUDA_VISIBLE_DEVICES: ordinal i is physical device ORDER[i].
  const char* order = std::getenv("FAKE_CUDA_DEVICE_ORDER");
  if (order == nullptr || *order == '\0') return c;
  bool seen[kMaxDevices] = {};
  c.count = 0;
  for (const char* p = order;; ++p) {
    char token[8] = {};
    size_t len = std::strcspn(p, ",");
    if (len >= sizeof(token) || c.count == kMaxDevices) break;
    std::memcpy(token, p, len);
    if (!parse_u64(token, &v) || v >= kMaxDevices || seen[v]) break;
    seen[v] = true;
    c.phys[c.count++] = static_cast<int>(v);
    p += len;
    if (*p == '\0') return c;
  }
  std::fprintf(stderr, "fake_cuda: invalid FAKE_CUDA_DEVICE_ORDER='%s'\n", order);
  c.ok = false;
  return c;
}

// Read lazily on first use (cuInit), never in a static constructor.
const Config& config() {
  static const Config c = load_config();
  return c;
}

// ------------------------------------------------------------------- state --

enum class Kind { Linear, Array, Mipmap, Vmm };

struct Alloc {
  Kind kind;
  int phys;               // charged physical device, -1 if nothing charged
  uint64_t bytes;
  CUctx_st* owner;        // context whose destruction frees it (null: pools, VMM)
  int maps = 0;           // VMM: live cuMemMap mappings
  bool released = false;  // VMM: cuMemRelease called; freed at the last unmap
};
struct Reservation { uint64_t size; };
struct Mapping { uint64_t size; CUmemGenericAllocationHandle handle; };

struct State {
  std::mutex mu;
  uint64_t used[kMaxDevices] = {};  // bytes charged per physical device
  uint64_t next_address = kAddressBase;
  // Keyed by device pointer, CUarray/CUmipmappedArray value or VMM handle; all
  // come from next_address, so keys of different kinds never collide.
  std::unordered_map<uint64_t, Alloc> allocs;
  std::map<uint64_t, Reservation> reservations;  // ordered for range lookups
  std::map<uint64_t, Mapping> mappings;
  std::unordered_set<CUctx_st*> contexts;  // every context ever created
  std::unordered_set<CUstream_st*> streams;
  std::unordered_set<CUevent_st*> events;
  CUctx_st* primary[kMaxDevices] = {};
};

// Leaked on purpose: other threads may call in while static destructors run.
State& state() {
  static State* s = new State;
  return *s;
}

struct Lock : std::lock_guard<std::mutex> {
  Lock() : std::lock_guard<std::mutex>(state().mu) {}
};

std::atomic<bool> g_initialized{false};
std::atomic<uint64_t> g_alloc_calls{0};
std::atomic<uint64_t> g_kernel_ns{0};
std::atomic<uint64_t> g_launches{0};
std::atomic<uint64_t> g_max_queued_ns{0};
uint32_t g_last_activity_stream = 0;  // under state().mu: numbers streams in kernel activity

// Per-thread context stack, as in the real driver. Plain arrays keep the TLS
// trivially destructible: a driver should not register TLS destructors.
thread_local CUctx_st* t_stack[kMaxCtxStack];
thread_local int t_depth = 0;

#define RETURN_IF_ERROR(expr)                                   \
  do {                                                          \
    if (CUresult r_ = (expr); r_ != CUDA_SUCCESS) return r_;    \
  } while (0)

// Every stateful entry point runs through here: it enforces cuInit and keeps
// exceptions (bad_alloc, std::system_error from the mutex) off the C ABI.
template <class F>
CUresult api(F&& body) {
  if (!g_initialized.load(std::memory_order_acquire)) return CUDA_ERROR_NOT_INITIALIZED;
  try {
    return body();
  } catch (...) {
    return CUDA_ERROR_UNKNOWN;
  }
}

// Allocation entry points also count the call, even when it then fails.
template <class F>
CUresult alloc_api(F&& body) {
  g_alloc_calls.fetch_add(1, std::memory_order_relaxed);
  return api(body);
}

uint64_t round_up(uint64_t v, uint64_t align) { return (v + align - 1) / align * align; }
bool valid_device(CUdevice dev) { return dev >= 0 && dev < config().count; }
CUresult check_out_and_device(const void* out, CUdevice dev) {
  return out == nullptr ? CUDA_ERROR_INVALID_VALUE : valid_device(dev) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

// The *_locked helpers below require state().mu.

// "Usable" contexts can receive work. Destroyed contexts and inactive primary
// contexts give CUDA_ERROR_CONTEXT_IS_DESTROYED, as documented for the driver.
CUresult check_usable(const CUctx_st* c) {
  return c->alive && (!c->primary || c->refs > 0) ? CUDA_SUCCESS : CUDA_ERROR_CONTEXT_IS_DESTROYED;
}

CUresult current_ctx_locked(CUctx_st** out) {
  CUctx_st* c = t_depth > 0 ? t_stack[t_depth - 1] : nullptr;
  if (c == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  RETURN_IF_ERROR(check_usable(c));
  *out = c;
  return CUDA_SUCCESS;
}

// The null stream and the two special handles mean the current context.
CUresult stream_ctx_locked(CUstream s, CUctx_st** out) {
  if (s == nullptr || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) return current_ctx_locked(out);
  if (state().streams.count(s) == 0) return CUDA_ERROR_INVALID_HANDLE;
  RETURN_IF_ERROR(check_usable(s->ctx));
  *out = s->ctx;
  return CUDA_SUCCESS;
}

// A context handle passed in by the caller (as opposed to the current one).
bool known_ctx_locked(CUctx_st* c) { return c != nullptr && state().contexts.count(c) != 0 && c->alive; }

// ------------------------------------------------------------------ engine --
// Kernels reserve time on the shared device timeline (fake_engine); streams,
// events and contexts only remember engine times, and waiting sleeps until one.

bool is_default_stream(CUstream s) { return s == nullptr || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD; }

// The stream's context and its tail: the context's default stream's for the
// null and special handles.
CUresult stream_tail_locked(CUstream s, CUctx_st** ctx, uint64_t** tail) {
  RETURN_IF_ERROR(stream_ctx_locked(s, ctx));
  *tail = is_default_stream(s) ? &(*ctx)->default_tail : &s->tail;
  return CUDA_SUCCESS;
}

// Raises the stream's tail (and its context's latest tail) to at least t.
void extend_tail_locked(CUctx_st* c, uint64_t* tail, uint64_t t) {
  *tail = std::max(*tail, t);
  c->latest_tail = std::max(c->latest_tail, t);
}

CUresult event_locked(CUevent e) {
  return e != nullptr && state().events.count(e) != 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

// ---------------------------------------------------------- stream capture --
// Work sent to a capturing stream is recorded into its graph instead of run. A
// thread's capture mode (cuThreadExchangeStreamCaptureMode) decides which
// synchronizations it may make while captures are going, as in the driver: not
// relaxed and with a capture of its own going, or global while another thread
// has a global capture going, a synchronization fails and invalidates those
// captures. In relaxed mode every synchronization is allowed.
thread_local CUstreamCaptureMode t_capture_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;

CUstream_st* capturing_locked(CUstream s) {
  if (is_default_stream(s) || state().streams.count(s) == 0 || s->capture < 0) return nullptr;
  return s;
}

CUresult unsafe_call_locked() {
  if (t_capture_mode == CU_STREAM_CAPTURE_MODE_RELAXED) return CUDA_SUCCESS;
  bool refused = false;
  for (CUstream s : state().streams) {
    if (s->capture < 0 || s->capture == CU_STREAM_CAPTURE_MODE_RELAXED) continue;
    const bool own = s->capture_thread == std::this_thread::get_id();
    const bool global = t_capture_mode == CU_STREAM_CAPTURE_MODE_GLOBAL && s->capture == CU_STREAM_CAPTURE_MODE_GLOBAL;
    if (own || global) {
      s->capture_invalidated = true;
      refused = true;
    }
  }
  return refused ? CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED : CUDA_SUCCESS;
}

// Synchronizing a context while one of its streams captures conflicts with the capture whatever
// the thread's mode (the driver refuses it and invalidates the capture); otherwise the mode rules.
CUresult context_synchronize_allowed_locked(CUctx_st* c) {
  bool refused = false;
  for (CUstream s : state().streams) {
    if (s->ctx == c && s->capture >= 0) {
      s->capture_invalidated = true;
      refused = true;
    }
  }
  return refused ? CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED : unsafe_call_locked();
}

// A launch or event record on a capturing stream: one more node, nothing runs.
CUresult capture_node_locked(CUstream_st* s) {
  if (s->capture_invalidated) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
  ++s->capture_nodes;
  return CUDA_SUCCESS;
}

// The stream's number in kernel activity, given on first use (fake_activity.hpp).
uint32_t activity_stream_locked(CUstream s, CUctx_st* c) {
  uint32_t& number = is_default_stream(s) ? c->activity_stream : s->activity_stream;
  if (number == 0) number = ++g_last_activity_stream;
  return number;
}

// Every launch entry point: a kernel of `duration_us` microseconds on `s` (a graph launch if
// `graph`), or one rank's part of a collective when `f` is a collective handle. The process lock
// is not held while the launch waits for room in the queue (or for its peers).
CUresult launch(CUstream s, uint64_t duration_us, CUfunction f = nullptr, bool graph = false) {
  uint64_t duration = 0;
  if (duration_us == 0 || __builtin_mul_overflow(duration_us, config().kernel_unit_ns, &duration))
    return CUDA_ERROR_INVALID_VALUE;
  CUctx_st* c = nullptr;
  uint64_t* tail = nullptr;
  uint64_t earliest = 0;
  uint32_t activity_stream = 0;
  const bool recording = fake_activity::recording();
  {
    Lock lock;
    RETURN_IF_ERROR(stream_tail_locked(s, &c, &tail));
    if (CUstream_st* capturing = capturing_locked(s)) return capture_node_locked(capturing);
    earliest = *tail;
    if (recording) activity_stream = activity_stream_locked(s, c);
  }
  uint64_t queued = 0;
  uint64_t end = 0;
  if (fake_collective::is_collective(f)) {
    const fake_collective::Timing timing{config().max_queue_ns, config().timeslice_ns, config().collective_timeout_ns};
    RETURN_IF_ERROR(fake_collective::launch(f, c->phys, earliest, duration, timing, &end, &queued));
  } else {
    end = fake_engine::launch(c->phys, earliest, duration, config().max_queue_ns, config().timeslice_ns, &queued);
  }
  g_kernel_ns.fetch_add(duration, std::memory_order_relaxed);
  g_launches.fetch_add(1, std::memory_order_relaxed);
  if (recording) fake_activity::record(end - duration, end, c->ordinal, activity_stream, graph);
  // How long this kernel waits behind work already on the device: the queue depth it found.
  uint64_t seen = g_max_queued_ns.load(std::memory_order_relaxed);
  while (queued > seen && !g_max_queued_ns.compare_exchange_weak(seen, queued, std::memory_order_relaxed)) {
  }
  Lock lock;
  // Contexts live forever, but the stream may have been destroyed meanwhile.
  if (!is_default_stream(s) && state().streams.count(s) == 0) tail = &c->latest_tail;
  extend_tail_locked(c, tail, end);
  return CUDA_SUCCESS;
}

CUresult stream_synchronize(CUstream s, bool query) {
  uint64_t until = 0;
  {
    Lock lock;
    CUctx_st* c = nullptr;
    uint64_t* tail = nullptr;
    RETURN_IF_ERROR(stream_tail_locked(s, &c, &tail));
    if (CUstream_st* capturing = capturing_locked(s)) {
      capturing->capture_invalidated = true;
      return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    RETURN_IF_ERROR(unsafe_call_locked());
    until = *tail;
  }
  if (query) return fake_engine::now_ns() < until ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS;
  fake_engine::sleep_until(until);
  return CUDA_SUCCESS;
}

CUresult stream_wait_event(CUstream s, CUevent e, unsigned flags) {
  if ((flags & ~unsigned{CU_EVENT_WAIT_EXTERNAL}) != 0) return CUDA_ERROR_INVALID_VALUE;
  Lock lock;
  RETURN_IF_ERROR(event_locked(e));
  CUctx_st* c = nullptr;
  uint64_t* tail = nullptr;
  RETURN_IF_ERROR(stream_tail_locked(s, &c, &tail));
  if (e->recorded) extend_tail_locked(c, tail, e->time);  // never recorded: nothing to wait for
  return CUDA_SUCCESS;
}

// The event completes when the work queued on the stream so far does.
CUresult event_record(CUevent e, CUstream s, unsigned flags) {
  if ((flags & ~unsigned{CU_EVENT_RECORD_EXTERNAL}) != 0) return CUDA_ERROR_INVALID_VALUE;
  Lock lock;
  RETURN_IF_ERROR(event_locked(e));
  CUctx_st* c = nullptr;
  uint64_t* tail = nullptr;
  RETURN_IF_ERROR(stream_tail_locked(s, &c, &tail));
  if (c != e->ctx) return CUDA_ERROR_INVALID_HANDLE;
  if (CUstream_st* capturing = capturing_locked(s)) {
    RETURN_IF_ERROR(capture_node_locked(capturing));
    e->captured = true;
    return CUDA_SUCCESS;
  }
  e->captured = false;
  e->recorded = true;
  e->time = std::max(fake_engine::now_ns(), *tail);
  return CUDA_SUCCESS;
}

// The time the event completes (0 if never recorded) through *until, for a
// query or a synchronization (both potentially unsafe during capture).
CUresult event_time(CUevent e, uint64_t* until) {
  Lock lock;
  RETURN_IF_ERROR(event_locked(e));
  if (e->captured) return CUDA_ERROR_CAPTURED_EVENT;
  RETURN_IF_ERROR(unsafe_call_locked());
  *until = e->recorded ? e->time : 0;
  return CUDA_SUCCESS;
}

CUresult create_stream(CUstream* out, unsigned flags, int priority) {
  if (out == nullptr || (flags & ~unsigned{CU_STREAM_NON_BLOCKING}) != 0) return CUDA_ERROR_INVALID_VALUE;
  Lock lock;
  CUctx_st* c = nullptr;
  RETURN_IF_ERROR(current_ctx_locked(&c));
  auto s = std::make_unique<CUstream_st>();
  s->ctx = c;
  s->priority = priority;
  state().streams.insert(s.get());
  *out = s.release();
  return CUDA_SUCCESS;
}

CUresult charge_locked(int phys, uint64_t bytes) {
  uint64_t& used = state().used[phys];
  if (bytes > config().memory - used) return CUDA_ERROR_OUT_OF_MEMORY;
  used += bytes;
  return CUDA_SUCCESS;
}

uint64_t take_address_locked(uint64_t span, uint64_t align) {
  State& st = state();
  uint64_t a = round_up(st.next_address, align);
  st.next_address = a + round_up(span == 0 ? 1 : span, kPitchAlign);
  return a;
}

// Charges `bytes` to `phys` (nothing if phys < 0) and records the allocation.
// Linear allocations advance the address counter by their size so pointers
// look like disjoint ranges; handles only take a 512-byte slot.
CUresult record_locked(Kind kind, int phys, uint64_t bytes, CUctx_st* owner, CUdeviceptr* out) {
  if (phys >= 0 && bytes > config().memory - state().used[phys]) return CUDA_ERROR_OUT_OF_MEMORY;
  uint64_t key = take_address_locked(kind == Kind::Linear ? bytes : kPitchAlign, kPitchAlign);
  state().allocs.emplace(key, Alloc{kind, phys, bytes, owner});  // may throw: nothing charged yet
  if (phys >= 0) state().used[phys] += bytes;
  *out = key;
  return CUDA_SUCCESS;
}

void drop_locked(std::unordered_map<uint64_t, Alloc>::iterator it) {
  if (it->second.phys >= 0) state().used[it->second.phys] -= it->second.bytes;
  state().allocs.erase(it);
}

// Destroying a context (or releasing a primary context's last reference)
// frees its own memory and the allocations it owns, like the driver does.
void release_context_locked(CUctx_st* c) {
  State& st = state();
  st.used[c->phys] -= config().ctx_memory;
  for (auto it = st.allocs.begin(); it != st.allocs.end();) {
    auto cur = it++;
    if (cur->second.owner == c) drop_locked(cur);
  }
}

// cuMemAlloc & co: charged to, and owned by, the current context.
CUresult alloc_in_current_ctx(Kind kind, uint64_t bytes, CUdeviceptr* out) {
  Lock lock;
  CUctx_st* c = nullptr;
  RETURN_IF_ERROR(current_ctx_locked(&c));
  return record_locked(kind, c->phys, bytes, c, out);
}

// Stream-ordered memory belongs to a pool, not to a context (owner null). It
// is charged to the stream's context's device, or, with an explicit pool
// (pools are not simulated), to the current context's device.
CUresult mem_alloc_async(CUdeviceptr* dptr, size_t bytes, CUstream s, bool from_pool = false,
                         CUmemoryPool pool = nullptr) {
  if (dptr == nullptr || bytes == 0 || (from_pool && pool == nullptr)) return CUDA_ERROR_INVALID_VALUE;
  Lock lock;
  CUctx_st* c = nullptr;
  RETURN_IF_ERROR(stream_ctx_locked(s, &c));
  if (from_pool) RETURN_IF_ERROR(current_ctx_locked(&c));
  return record_locked(Kind::Linear, c->phys, bytes, nullptr, dptr);
}

// cuMemFree (s == null: needs a current context) and cuMemFreeAsync.
CUresult mem_free(CUdeviceptr dptr, CUstream s) {
  Lock lock;
  CUctx_st* c = nullptr;
  RETURN_IF_ERROR(stream_ctx_locked(s, &c));
  if (dptr == 0) return CUDA_SUCCESS;
  auto it = state().allocs.find(dptr);
  if (it == state().allocs.end() || it->second.kind != Kind::Linear) return CUDA_ERROR_INVALID_VALUE;
  drop_locked(it);
  return CUDA_SUCCESS;
}

// Bytes per channel; 0 for formats the fake does not model (rejected).
uint64_t format_bytes(CUarray_format f) {
  switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT8: case CU_AD_FORMAT_SIGNED_INT8: return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16: case CU_AD_FORMAT_SIGNED_INT16: case CU_AD_FORMAT_HALF: return 2;
    case CU_AD_FORMAT_UNSIGNED_INT32: case CU_AD_FORMAT_SIGNED_INT32: case CU_AD_FORMAT_FLOAT: return 4;
    default: return 0;
  }
}

// Arrays (levels == 1) and mipmapped arrays: the sum of every level's
// W*H*D*channels*element, dimensions halving per level (min 1); H, D of 0 = 1.
CUresult create_array(Kind kind, const CUDA_ARRAY3D_DESCRIPTOR& d, unsigned levels, CUdeviceptr* out) {
  uint64_t elem = format_bytes(d.Format);
  if (levels == 0 || d.Width == 0 || elem == 0 || (d.NumChannels != 1 && d.NumChannels != 2 && d.NumChannels != 4))
    return CUDA_ERROR_INVALID_VALUE;
  uint64_t w = d.Width, h = d.Height ? d.Height : 1, z = d.Depth ? d.Depth : 1, total = 0;
  for (unsigned i = 0; i < levels; ++i) {
    uint64_t b = 0;
    if (__builtin_mul_overflow(w, h, &b) || __builtin_mul_overflow(b, z, &b) ||
        __builtin_mul_overflow(b, elem * d.NumChannels, &b) || __builtin_add_overflow(total, b, &total))
      return CUDA_ERROR_OUT_OF_MEMORY;
    w = w > 1 ? w / 2 : 1;
    h = h > 1 ? h / 2 : 1;
    z = z > 1 ? z / 2 : 1;
  }
  return alloc_in_current_ctx(kind, total, out);
}

CUresult destroy_handle(uint64_t key, Kind kind) {
  Lock lock;
  auto it = state().allocs.find(key);
  if (it == state().allocs.end() || it->second.kind != kind) return CUDA_ERROR_INVALID_HANDLE;
  drop_locked(it);
  return CUDA_SUCCESS;
}

// True if [ptr, ptr+size) lies inside a single cuMemAddressReserve range.
bool in_reservation_locked(uint64_t ptr, uint64_t size) {
  const auto& res = state().reservations;
  auto it = res.upper_bound(ptr);
  if (it == res.begin()) return false;
  --it;
  return ptr - it->first <= it->second.size && size <= it->second.size - (ptr - it->first);
}

struct ErrorText {
  CUresult code;
  const char* name;
  const char* text;
};
constexpr ErrorText kErrors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready"},
    {CUDA_ERROR_OPERATING_SYSTEM, "CUDA_ERROR_OPERATING_SYSTEM",
     "OS call failed or operation not supported on this OS"},
    {CUDA_ERROR_CONTEXT_IS_DESTROYED, "CUDA_ERROR_CONTEXT_IS_DESTROYED", "context is destroyed"},
    {CUDA_ERROR_NOT_PERMITTED, "CUDA_ERROR_NOT_PERMITTED", "operation not permitted"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

CUresult error_text(CUresult code, const char** out, bool name) {
  if (out == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *out = nullptr;
  for (const ErrorText& e : kErrors)
    if (e.code == code) *out = name ? e.name : e.text;
  return *out != nullptr ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

}  // namespace

// ================================================================ exports ==

FAKE_EXPORT CUresult cuInit(unsigned int flags) {
  if (flags != 0 || !config().ok) return CUDA_ERROR_INVALID_VALUE;
  if (config().count == 0) return CUDA_ERROR_NO_DEVICE;
  if (!fake_engine::open()) return CUDA_ERROR_OPERATING_SYSTEM;
  g_initialized.store(true, std::memory_order_release);
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDriverGetVersion(int* version) {
  if (version == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *version = 13000;
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuGetErrorString(CUresult error, const char** pStr) { return error_text(error, pStr, false); }
FAKE_EXPORT CUresult cuGetErrorName(CUresult error, const char** pStr) { return error_text(error, pStr, true); }

// ----------------------------------------------------------------- devices --

FAKE_EXPORT CUresult cuDeviceGet(CUdevice* device, int ordinal) {
  return api([&] {
    RETURN_IF_ERROR(check_out_and_device(device, ordinal));
    *device = ordinal;
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuDeviceGetCount(int* count) {
  return api([&] {
    if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *count = config().count;
    return CUDA_SUCCESS;
  });
}

// Kernels are named like NCCL's when they are collective parts (fake_collective.hpp), the way gpushare
// tells a collective from other work.
FAKE_EXPORT CUresult cuFuncGetName(const char** name, CUfunction hfunc) {
  if (name == nullptr || hfunc == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *name = fake_collective::is_collective(hfunc) ? "ncclDevKernel_AllReduce_Sum_f32_RING_LL" : "fake_kernel";
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetName(char* name, int len, CUdevice dev) {
  return api([&] {
    if (name == nullptr || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
    std::snprintf(name, static_cast<size_t>(len), "Fake GPU %d", config().phys[dev]);
    return CUDA_SUCCESS;
  });
}

// "FAKEGPU-" + big-endian physical index: stable under reordering.
FAKE_EXPORT CUresult cuDeviceGetUuid_v2(CUuuid* uuid, CUdevice dev) {
  return api([&] {
    RETURN_IF_ERROR(check_out_and_device(uuid, dev));
    std::memcpy(uuid->bytes, "FAKEGPU-", 8);
    uint64_t p = static_cast<uint64_t>(config().phys[dev]);
    for (int i = 0; i < 8; ++i) uuid->bytes[8 + i] = static_cast<char>((p >> (56 - 8 * i)) & 0xff);
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuDeviceGetUuid(CUuuid* uuid, CUdevice dev) { return cuDeviceGetUuid_v2(uuid, dev); }

FAKE_EXPORT CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice dev) {
  return api([&] {
    RETURN_IF_ERROR(check_out_and_device(bytes, dev));
    *bytes = config().memory;
    return CUDA_SUCCESS;
  });
}

// H100 SXM values for the attributes frameworks commonly query.
FAKE_EXPORT CUresult cuDeviceGetAttribute(int* pi, CUdevice_attribute attrib, CUdevice dev) {
  static constexpr struct {
    CUdevice_attribute attr;
    int value;
  } kAttributes[] = {
      {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 9}, {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 0},
      {CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 132}, {CU_DEVICE_ATTRIBUTE_WARP_SIZE, 32},
      {CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, 1024},
      {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, 49152},
      {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR, 233472},
      {CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY, 65536}, {CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK, 65536},
      {CU_DEVICE_ATTRIBUTE_CLOCK_RATE, 1980000}, {CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE, 2619000},
      {CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, 5120}, {CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, 52428800},
      {CU_DEVICE_ATTRIBUTE_INTEGRATED, 0}, {CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, 0},
      {CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, 0}, {CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY, 1},
      {CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING, 1}, {CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY, 1},
      {CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS, 1},
      {CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, 1},
      {CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED, 1},
      {CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED, 1}, {CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_SUPPORTED, 1},
      // Advertised so that fabric probes happen and meet cuMemCreate's 800.
      {CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED, 1},
  };
  return api([&] {
    RETURN_IF_ERROR(check_out_and_device(pi, dev));
    if (attrib == CU_DEVICE_ATTRIBUTE_PCI_BUS_ID) {  // distinct per physical device
      *pi = config().phys[dev] + 1;
      return CUDA_SUCCESS;
    }
    for (const auto& a : kAttributes) {
      if (a.attr != attrib) continue;
      *pi = a.value;
      return CUDA_SUCCESS;
    }
    return CUDA_ERROR_INVALID_VALUE;
  });
}

// ---------------------------------------------------------------- contexts --

FAKE_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext* pctx, CUdevice dev) {
  return api([&] {
    RETURN_IF_ERROR(check_out_and_device(pctx, dev));
    Lock lock;
    CUctx_st*& p = state().primary[dev];
    if (p == nullptr) {
      auto c = std::make_unique<CUctx_st>(CUctx_st{dev, config().phys[dev], true, true, 0});
      state().contexts.insert(c.get());
      p = c.release();
    }
    if (p->refs == 0) RETURN_IF_ERROR(charge_locked(p->phys, config().ctx_memory));  // activation
    ++p->refs;
    *pctx = p;
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
  return api([&] {
    if (!valid_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
    Lock lock;
    CUctx_st* p = state().primary[dev];
    if (p == nullptr || p->refs == 0) return CUDA_ERROR_INVALID_CONTEXT;
    if (--p->refs == 0) release_context_locked(p);
    return CUDA_SUCCESS;
  });
}

// Frees everything the primary context owns, as the driver does; the fake keeps it retained and
// active (its own memory charged again), so the next call in it starts afresh.
FAKE_EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev) {
  return api([&] {
    if (!valid_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
    Lock lock;
    CUctx_st* p = state().primary[dev];
    if (p == nullptr || p->refs == 0) return CUDA_SUCCESS;  // inactive: nothing to reset
    release_context_locked(p);
    p->default_tail = 0;
    p->latest_tail = 0;
    return charge_locked(p->phys, config().ctx_memory);
  });
}

// Creates a context and pushes it on the calling thread's stack.
FAKE_EXPORT CUresult cuCtxCreate_v2(CUcontext* pctx, unsigned int /*flags*/, CUdevice dev) {
  return api([&] {
    RETURN_IF_ERROR(check_out_and_device(pctx, dev));
    if (t_depth == kMaxCtxStack) return CUDA_ERROR_OUT_OF_MEMORY;
    Lock lock;
    auto c = std::make_unique<CUctx_st>(CUctx_st{dev, config().phys[dev], false, true, 0});
    state().contexts.insert(c.get());
    if (CUresult r = charge_locked(c->phys, config().ctx_memory); r != CUDA_SUCCESS) {
      state().contexts.erase(c.get());
      return r;
    }
    t_stack[t_depth++] = c.get();
    *pctx = c.release();
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx) {
  return api([&] {
    Lock lock;
    if (!known_ctx_locked(ctx) || ctx->primary) return CUDA_ERROR_INVALID_CONTEXT;
    release_context_locked(ctx);
    ctx->alive = false;
    // The driver pops a destroyed context off the calling thread's stack;
    // other threads learn of it through CUDA_ERROR_CONTEXT_IS_DESTROYED.
    int kept = 0;
    for (int i = 0; i < t_depth; ++i)
      if (t_stack[i] != ctx) t_stack[kept++] = t_stack[i];
    t_depth = kept;
    return CUDA_SUCCESS;
  });
}

// Replaces the top of the stack; null pops it (a no-op on an empty stack).
FAKE_EXPORT CUresult cuCtxSetCurrent(CUcontext ctx) {
  return api([&] {
    if (ctx == nullptr) {
      if (t_depth > 0) --t_depth;
      return CUDA_SUCCESS;
    }
    Lock lock;
    if (!known_ctx_locked(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
    if (t_depth == 0) t_depth = 1;
    t_stack[t_depth - 1] = ctx;
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuCtxGetCurrent(CUcontext* pctx) {
  return api([&] {
    if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *pctx = t_depth > 0 ? t_stack[t_depth - 1] : nullptr;
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx) {
  return api([&] {
    Lock lock;
    if (!known_ctx_locked(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
    if (t_depth == kMaxCtxStack) return CUDA_ERROR_OUT_OF_MEMORY;
    t_stack[t_depth++] = ctx;
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuCtxPopCurrent_v2(CUcontext* pctx) {
  return api([&] {
    if (t_depth == 0) return CUDA_ERROR_INVALID_CONTEXT;
    CUctx_st* c = t_stack[--t_depth];
    if (pctx != nullptr) *pctx = c;
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuCtxGetDevice(CUdevice* device) {
  return api([&] {
    if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
    Lock lock;
    CUctx_st* c = nullptr;
    RETURN_IF_ERROR(current_ctx_locked(&c));
    *device = c->ordinal;
    return CUDA_SUCCESS;
  });
}

// CUDA 12.5+: the device of `ctx`, or of the current context when null.
FAKE_EXPORT CUresult cuCtxGetDevice_v2(CUdevice* device, CUcontext ctx) {
  if (ctx == nullptr) return cuCtxGetDevice(device);
  return api([&] {
    if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
    Lock lock;
    if (!known_ctx_locked(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
    *device = ctx->ordinal;
    return CUDA_SUCCESS;
  });
}

// Sleeps until all work queued in the current context, on any stream, is done.
FAKE_EXPORT CUresult cuCtxSynchronize(void) {
  return api([&] {
    uint64_t until = 0;
    {
      Lock lock;
      CUctx_st* c = nullptr;
      RETURN_IF_ERROR(current_ctx_locked(&c));
      RETURN_IF_ERROR(context_synchronize_allowed_locked(c));
      until = c->latest_tail;
    }
    fake_engine::sleep_until(until);
    return CUDA_SUCCESS;
  });
}

// CUDA 12.5+: the same for `ctx`, or for the current context when null.
FAKE_EXPORT CUresult cuCtxSynchronize_v2(CUcontext ctx) {
  if (ctx == nullptr) return cuCtxSynchronize();
  return api([&] {
    uint64_t until = 0;
    {
      Lock lock;
      if (!known_ctx_locked(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
      RETURN_IF_ERROR(context_synchronize_allowed_locked(ctx));
      until = ctx->latest_tail;
    }
    fake_engine::sleep_until(until);
    return CUDA_SUCCESS;
  });
}

// ----------------------------------------------------------------- streams --

FAKE_EXPORT CUresult cuStreamCreate(CUstream* phStream, unsigned int Flags) {
  return api([&] { return create_stream(phStream, Flags, 0); });
}

FAKE_EXPORT CUresult cuStreamCreateWithPriority(CUstream* phStream, unsigned int flags, int priority) {
  return api([&] { return create_stream(phStream, flags, priority); });
}

FAKE_EXPORT CUresult cuStreamDestroy_v2(CUstream hStream) {
  return api([&] {
    Lock lock;
    if (state().streams.erase(hStream) == 0) return CUDA_ERROR_INVALID_HANDLE;
    delete hStream;
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuStreamGetCtx(CUstream hStream, CUcontext* pctx) {
  return api([&] {
    if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
    Lock lock;
    return stream_ctx_locked(hStream, pctx);
  });
}

// Defines `name` and its per-thread-default-stream export `name_ptsz`. Both
// behave the same: the null and special streams are the context's one
// default stream either way.
#define FAKE_EXPORT_AND_PTSZ(name, params, ...)   \
  FAKE_EXPORT CUresult name params __VA_ARGS__   \
  FAKE_EXPORT CUresult name##_ptsz params __VA_ARGS__

// Sleeps until the work queued on the stream so far is done.
FAKE_EXPORT_AND_PTSZ(cuStreamSynchronize, (CUstream hStream), {
  return api([&] { return stream_synchronize(hStream, false); });
})

FAKE_EXPORT_AND_PTSZ(cuStreamQuery, (CUstream hStream), {
  return api([&] { return stream_synchronize(hStream, true); });
})

FAKE_EXPORT_AND_PTSZ(cuStreamWaitEvent, (CUstream hStream, CUevent hEvent, unsigned int Flags), {
  return api([&] { return stream_wait_event(hStream, hEvent, Flags); });
})

namespace {

// Capture on created streams only (the default streams are refused), into a new graph or, with
// `graph`, into that one (cuStreamBeginCaptureToGraph).
CUresult begin_capture(CUstream hStream, CUstreamCaptureMode mode, CUgraph_st* graph) {
  if (mode < CU_STREAM_CAPTURE_MODE_GLOBAL || mode > CU_STREAM_CAPTURE_MODE_RELAXED) return CUDA_ERROR_INVALID_VALUE;
  Lock lock;
  if (is_default_stream(hStream)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  if (state().streams.count(hStream) == 0) return CUDA_ERROR_INVALID_HANDLE;
  if (hStream->capture >= 0) return CUDA_ERROR_ILLEGAL_STATE;
  hStream->capture = mode;
  hStream->capture_invalidated = false;
  hStream->capture_nodes = 0;
  hStream->capture_thread = std::this_thread::get_id();
  hStream->capture_graph = graph;
  return CUDA_SUCCESS;
}

}  // namespace

FAKE_EXPORT_AND_PTSZ(cuStreamBeginCapture_v2, (CUstream hStream, CUstreamCaptureMode mode), {
  return api([&] { return begin_capture(hStream, mode, nullptr); });
})

// Dependencies are not simulated: the captured nodes are added to `hGraph`.
FAKE_EXPORT_AND_PTSZ(cuStreamBeginCaptureToGraph,
                     (CUstream hStream, CUgraph hGraph, const CUgraphNode* dependencies,
                      const CUgraphEdgeData* /*dependencyData*/, size_t numDependencies, CUstreamCaptureMode mode),
                     {
  return api([&] {
    if (hGraph == nullptr || (numDependencies != 0 && dependencies == nullptr)) return CUDA_ERROR_INVALID_VALUE;
    return begin_capture(hStream, mode, hGraph);
  });
})

// Ends the capture: its graph, or CUDA_ERROR_STREAM_CAPTURE_INVALIDATED.
FAKE_EXPORT_AND_PTSZ(cuStreamEndCapture, (CUstream hStream, CUgraph* phGraph), {
  return api([&] {
    if (phGraph == nullptr) return CUDA_ERROR_INVALID_VALUE;
    Lock lock;
    CUstream_st* s = capturing_locked(hStream);
    if (s == nullptr) return CUDA_ERROR_ILLEGAL_STATE;
    s->capture = -1;
    *phGraph = nullptr;
    if (s->capture_invalidated) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    if (s->capture_graph != nullptr) {
      s->capture_graph->nodes += s->capture_nodes;
      *phGraph = s->capture_graph;
      s->capture_graph = nullptr;
      return CUDA_SUCCESS;
    }
    *phGraph = new CUgraph_st{s->capture_nodes};  // the fake never frees graphs
    return CUDA_SUCCESS;
  });
})

FAKE_EXPORT_AND_PTSZ(cuStreamIsCapturing, (CUstream hStream, CUstreamCaptureStatus* captureStatus), {
  return api([&] {
    if (captureStatus == nullptr) return CUDA_ERROR_INVALID_VALUE;
    Lock lock;
    CUctx_st* c = nullptr;
    RETURN_IF_ERROR(stream_ctx_locked(hStream, &c));
    const CUstream_st* s = capturing_locked(hStream);
    *captureStatus = s == nullptr           ? CU_STREAM_CAPTURE_STATUS_NONE
                     : s->capture_invalidated ? CU_STREAM_CAPTURE_STATUS_INVALIDATED
                                              : CU_STREAM_CAPTURE_STATUS_ACTIVE;
    return CUDA_SUCCESS;
  });
})

FAKE_EXPORT CUresult cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode* mode) {
  return api([&] {
    if (mode == nullptr || *mode < CU_STREAM_CAPTURE_MODE_GLOBAL || *mode > CU_STREAM_CAPTURE_MODE_RELAXED)
      return CUDA_ERROR_INVALID_VALUE;
    std::swap(*mode, t_capture_mode);
    return CUDA_SUCCESS;
  });
}

// ----------------------------------------------------------------- kernels --
// Any non-null CUfunction will do. A kernel lasts gridDimX microseconds; a
// graph launch lasts as many microseconds as the CUgraphExec handle's value.

FAKE_EXPORT_AND_PTSZ(cuLaunchKernel,
                     (CUfunction f, unsigned int gridDimX, unsigned int /*gridDimY*/, unsigned int /*gridDimZ*/,
                      unsigned int /*blockDimX*/, unsigned int /*blockDimY*/, unsigned int /*blockDimZ*/,
                      unsigned int /*sharedMemBytes*/, CUstream hStream, void** /*kernelParams*/, void** /*extra*/),
                     { return api([&] { return f ? launch(hStream, gridDimX, f) : CUDA_ERROR_INVALID_HANDLE; }); })

FAKE_EXPORT_AND_PTSZ(cuLaunchKernelEx,
                     (const CUlaunchConfig* config, CUfunction f, void** /*kernelParams*/, void** /*extra*/), {
  return api([&] {
    if (config == nullptr) return CUDA_ERROR_INVALID_VALUE;
    return f == nullptr ? CUDA_ERROR_INVALID_HANDLE : launch(config->hStream, config->gridDimX, f);
  });
})

FAKE_EXPORT_AND_PTSZ(cuLaunchCooperativeKernel,
                     (CUfunction f, unsigned int gridDimX, unsigned int /*gridDimY*/, unsigned int /*gridDimZ*/,
                      unsigned int /*blockDimX*/, unsigned int /*blockDimY*/, unsigned int /*blockDimZ*/,
                      unsigned int /*sharedMemBytes*/, CUstream hStream, void** /*kernelParams*/),
                     { return api([&] { return f ? launch(hStream, gridDimX, f) : CUDA_ERROR_INVALID_HANDLE; }); })

// A null graph is 0 us long: CUDA_ERROR_INVALID_VALUE.
FAKE_EXPORT_AND_PTSZ(cuGraphLaunch, (CUgraphExec hGraphExec, CUstream hStream), {
  return api([&] { return launch(hStream, reinterpret_cast<uint64_t>(hGraphExec), nullptr, true); });
})

// ------------------------------------------------------------------ events --

// Another process's allocation: the fake shares no memory between processes, so the handle's bytes
// are not read; the address given is never a real one (and is charged to no one: the memory is the
// exporter's).
FAKE_EXPORT CUresult cuIpcOpenMemHandle_v2(CUdeviceptr* pdptr, CUipcMemHandle /*handle*/, unsigned int /*flags*/) {
  return api([&] {
    if (pdptr == nullptr) return CUDA_ERROR_INVALID_VALUE;
    static std::atomic<CUdeviceptr> next{CUdeviceptr{0x7e00} << 32};
    *pdptr = next.fetch_add(CUdeviceptr{1} << 21);
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuEventCreate(CUevent* phEvent, unsigned int Flags) {
  return api([&] {
    constexpr unsigned kKnown = CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS;
    if (phEvent == nullptr || (Flags & ~kKnown) != 0 ||
        ((Flags & CU_EVENT_INTERPROCESS) && !(Flags & CU_EVENT_DISABLE_TIMING)))
      return CUDA_ERROR_INVALID_VALUE;
    Lock lock;
    CUctx_st* c = nullptr;
    RETURN_IF_ERROR(current_ctx_locked(&c));
    auto e = std::make_unique<CUevent_st>();
    e->ctx = c;
    e->flags = Flags;
    state().events.insert(e.get());
    *phEvent = e.release();
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuEventDestroy_v2(CUevent hEvent) {
  return api([&] {
    Lock lock;
    if (hEvent == nullptr || state().events.erase(hEvent) == 0) return CUDA_ERROR_INVALID_HANDLE;
    delete hEvent;
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT_AND_PTSZ(cuEventRecord, (CUevent hEvent, CUstream hStream), {
  return api([&] { return event_record(hEvent, hStream, 0); });
})
FAKE_EXPORT_AND_PTSZ(cuEventRecordWithFlags, (CUevent hEvent, CUstream hStream, unsigned int flags), {
  return api([&] { return event_record(hEvent, hStream, flags); });
})

// A never-recorded event counts as complete, as in the driver.
FAKE_EXPORT CUresult cuEventQuery(CUevent hEvent) {
  return api([&] {
    uint64_t until = 0;
    RETURN_IF_ERROR(event_time(hEvent, &until));
    return fake_engine::now_ns() < until ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuEventSynchronize(CUevent hEvent) {
  return api([&] {
    uint64_t until = 0;
    RETURN_IF_ERROR(event_time(hEvent, &until));
    fake_engine::sleep_until(until);
    return CUDA_SUCCESS;
  });
}

// Both events must be recorded, with timing, and complete.
FAKE_EXPORT CUresult cuEventElapsedTime_v2(float* pMilliseconds, CUevent hStart, CUevent hEnd) {
  return api([&] {
    if (pMilliseconds == nullptr) return CUDA_ERROR_INVALID_VALUE;
    Lock lock;
    RETURN_IF_ERROR(event_locked(hStart));
    RETURN_IF_ERROR(event_locked(hEnd));
    for (const CUevent_st* e : {hStart, hEnd})
      if (!e->recorded || (e->flags & CU_EVENT_DISABLE_TIMING)) return CUDA_ERROR_INVALID_HANDLE;
    if (fake_engine::now_ns() < std::max(hStart->time, hEnd->time)) return CUDA_ERROR_NOT_READY;
    auto ns = static_cast<int64_t>(hEnd->time - hStart->time);  // negative if recorded in reverse
    *pMilliseconds = static_cast<float>(static_cast<double>(ns) / 1e6);
    return CUDA_SUCCESS;
  });
}
FAKE_EXPORT CUresult cuEventElapsedTime(float* pMilliseconds, CUevent hStart, CUevent hEnd) {
  return cuEventElapsedTime_v2(pMilliseconds, hStart, hEnd);
}

// ------------------------------------------------------------------ memory --

FAKE_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytesize) {
  return alloc_api([&] {
    if (dptr == nullptr || bytesize == 0) return CUDA_ERROR_INVALID_VALUE;
    return alloc_in_current_ctx(Kind::Linear, bytesize, dptr);
  });
}

FAKE_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr* dptr, size_t* pPitch, size_t WidthInBytes, size_t Height,
                                        unsigned int ElementSizeBytes) {
  return alloc_api([&] {
    if (dptr == nullptr || pPitch == nullptr || WidthInBytes == 0 || Height == 0 ||
        (ElementSizeBytes != 4 && ElementSizeBytes != 8 && ElementSizeBytes != 16))
      return CUDA_ERROR_INVALID_VALUE;
    uint64_t pitch = round_up(WidthInBytes, kPitchAlign), bytes = 0;
    if (pitch < WidthInBytes || __builtin_mul_overflow(pitch, Height, &bytes)) return CUDA_ERROR_OUT_OF_MEMORY;
    RETURN_IF_ERROR(alloc_in_current_ctx(Kind::Linear, bytes, dptr));
    *pPitch = pitch;
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuMemAllocManaged(CUdeviceptr* dptr, size_t bytesize, unsigned int flags) {
  return alloc_api([&] {
    if (dptr == nullptr || bytesize == 0 || (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST))
      return CUDA_ERROR_INVALID_VALUE;
    return alloc_in_current_ctx(Kind::Linear, bytesize, dptr);
  });
}

FAKE_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr) {
  return api([&] { return mem_free(dptr, nullptr); });
}

FAKE_EXPORT CUresult cuMemAllocAsync(CUdeviceptr* dptr, size_t bytesize, CUstream hStream) {
  return alloc_api([&] { return mem_alloc_async(dptr, bytesize, hStream); });
}
FAKE_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr* dptr, size_t bytesize, CUstream hStream) {
  return alloc_api([&] { return mem_alloc_async(dptr, bytesize, hStream); });
}

FAKE_EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr* dptr, size_t bytesize, CUmemoryPool pool,
                                             CUstream hStream) {
  return alloc_api([&] { return mem_alloc_async(dptr, bytesize, hStream, true, pool); });
}
FAKE_EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr* dptr, size_t bytesize, CUmemoryPool pool,
                                                  CUstream hStream) {
  return alloc_api([&] { return mem_alloc_async(dptr, bytesize, hStream, true, pool); });
}

FAKE_EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream) {
  return api([&] { return mem_free(dptr, hStream); });
}
FAKE_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream) {
  return api([&] { return mem_free(dptr, hStream); });
}

FAKE_EXPORT CUresult cuMemGetInfo_v2(size_t* free, size_t* total) {
  return api([&] {
    if (free == nullptr || total == nullptr) return CUDA_ERROR_INVALID_VALUE;
    Lock lock;
    CUctx_st* c = nullptr;
    RETURN_IF_ERROR(current_ctx_locked(&c));
    *total = config().memory;
    *free = config().memory - state().used[c->phys];
    return CUDA_SUCCESS;
  });
}

// --------------------------------------------------------------------- VMM --

FAKE_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle* handle, size_t size, const CUmemAllocationProp* prop,
                                 unsigned long long flags) {
  return alloc_api([&] {
    if (handle == nullptr || prop == nullptr || flags != 0 || size == 0 || size % kGranularity != 0)
      return CUDA_ERROR_INVALID_VALUE;
    // What PyTorch sees when it probes fabric handles on a machine without
    // IMEX: the probe must fail cleanly.
    if (prop->requestedHandleTypes & CU_MEM_HANDLE_TYPE_FABRIC) return CUDA_ERROR_NOT_PERMITTED;
    int phys = -1;  // host (and other) locations consume no device memory
    if (prop->location.type == CU_MEM_LOCATION_TYPE_DEVICE) {
      if (!valid_device(prop->location.id)) return CUDA_ERROR_INVALID_DEVICE;
      phys = config().phys[prop->location.id];
    }
    Lock lock;
    return record_locked(Kind::Vmm, phys, size, nullptr, handle);
  });
}

// Another process's allocation, shared through a file descriptor (or fabric handle): the fake
// shares no memory between processes, so `osHandle` is not read; the handle maps one granule and
// is charged to no one (the memory is the exporter's).
FAKE_EXPORT CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle* handle, void* /*osHandle*/,
                                                    CUmemAllocationHandleType shHandleType) {
  return api([&] {
    if (handle == nullptr || shHandleType == CU_MEM_HANDLE_TYPE_NONE) return CUDA_ERROR_INVALID_VALUE;
    Lock lock;
    return record_locked(Kind::Vmm, -1, kGranularity, nullptr, handle);
  });
}

// As in the driver, a still-mapped handle's memory is freed at its last unmap.
FAKE_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
  return api([&] {
    Lock lock;
    auto it = state().allocs.find(handle);
    if (it == state().allocs.end() || it->second.kind != Kind::Vmm || it->second.released)
      return CUDA_ERROR_INVALID_VALUE;
    it->second.released = true;
    if (it->second.maps == 0) drop_locked(it);
    return CUDA_SUCCESS;
  });
}

// Virtual address space only; the `addr` hint is ignored.
FAKE_EXPORT CUresult cuMemAddressReserve(CUdeviceptr* ptr, size_t size, size_t alignment, CUdeviceptr /*addr*/,
                                         unsigned long long /*flags*/) {
  return api([&] {
    if (ptr == nullptr || size == 0 || size % kGranularity != 0 || (alignment & (alignment - 1)) != 0)
      return CUDA_ERROR_INVALID_VALUE;
    Lock lock;
    uint64_t a = take_address_locked(size, alignment > kGranularity ? alignment : kGranularity);
    state().reservations.emplace(a, Reservation{size});
    *ptr = a;
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size) {
  return api([&] {
    Lock lock;
    auto it = state().reservations.find(ptr);
    if (it == state().reservations.end() || it->second.size != size) return CUDA_ERROR_INVALID_VALUE;
    state().reservations.erase(it);
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                              unsigned long long flags) {
  return api([&] {
    if (size == 0 || flags != 0) return CUDA_ERROR_INVALID_VALUE;
    Lock lock;
    State& st = state();
    auto h = st.allocs.find(handle);
    if (h == st.allocs.end() || h->second.kind != Kind::Vmm || h->second.released || offset > h->second.bytes ||
        size > h->second.bytes - offset || !in_reservation_locked(ptr, size))
      return CUDA_ERROR_INVALID_VALUE;
    if (!st.mappings.emplace(ptr, Mapping{size, handle}).second) return CUDA_ERROR_INVALID_VALUE;
    ++h->second.maps;
    return CUDA_SUCCESS;
  });
}

// Unmaps every mapping that lies inside [ptr, ptr+size).
FAKE_EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) {
  return api([&] {
    Lock lock;
    State& st = state();
    bool any = false;
    for (auto it = st.mappings.lower_bound(ptr);
         it != st.mappings.end() && it->first - ptr < size && it->second.size <= size - (it->first - ptr);) {
      auto h = st.allocs.find(it->second.handle);
      if (h != st.allocs.end() && --h->second.maps == 0 && h->second.released) drop_locked(h);
      it = st.mappings.erase(it);
      any = true;
    }
    return any ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
  });
}

FAKE_EXPORT CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc* desc, size_t count) {
  return api([&] {
    if (desc == nullptr || count == 0 || size == 0) return CUDA_ERROR_INVALID_VALUE;
    Lock lock;
    return in_reservation_locked(ptr, size) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
  });
}

FAKE_EXPORT CUresult cuMemGetAllocationGranularity(size_t* granularity, const CUmemAllocationProp* prop,
                                                   CUmemAllocationGranularity_flags /*option*/) {
  return api([&] {
    if (granularity == nullptr || prop == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *granularity = kGranularity;
    return CUDA_SUCCESS;
  });
}

// ------------------------------------------------------------------ arrays --

FAKE_EXPORT CUresult cuArrayCreate_v2(CUarray* pHandle, const CUDA_ARRAY_DESCRIPTOR* desc) {
  return alloc_api([&] {
    if (pHandle == nullptr || desc == nullptr) return CUDA_ERROR_INVALID_VALUE;
    CUDA_ARRAY3D_DESCRIPTOR d{desc->Width, desc->Height, 0, desc->Format, desc->NumChannels, 0};
    CUdeviceptr key = 0;
    RETURN_IF_ERROR(create_array(Kind::Array, d, 1, &key));
    *pHandle = reinterpret_cast<CUarray>(key);
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuArray3DCreate_v2(CUarray* pHandle, const CUDA_ARRAY3D_DESCRIPTOR* desc) {
  return alloc_api([&] {
    if (pHandle == nullptr || desc == nullptr) return CUDA_ERROR_INVALID_VALUE;
    CUdeviceptr key = 0;
    RETURN_IF_ERROR(create_array(Kind::Array, *desc, 1, &key));
    *pHandle = reinterpret_cast<CUarray>(key);
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuArrayDestroy(CUarray hArray) {
  return api([&] { return destroy_handle(reinterpret_cast<uint64_t>(hArray), Kind::Array); });
}

FAKE_EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray* pHandle, const CUDA_ARRAY3D_DESCRIPTOR* desc,
                                            unsigned int numMipmapLevels) {
  return alloc_api([&] {
    if (pHandle == nullptr || desc == nullptr) return CUDA_ERROR_INVALID_VALUE;
    CUdeviceptr key = 0;
    RETURN_IF_ERROR(create_array(Kind::Mipmap, *desc, numMipmapLevels, &key));
    *pHandle = reinterpret_cast<CUmipmappedArray>(key);
    return CUDA_SUCCESS;
  });
}

FAKE_EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray hMipmappedArray) {
  return api([&] { return destroy_handle(reinterpret_cast<uint64_t>(hMipmappedArray), Kind::Mipmap); });
}

// ----------------------------------------------------------- entry points --

namespace {

struct Entry {
  const char* name;
  void* address;
};

// Every exported cu* function, by its exact symbol name. The library links
// with -Bsymbolic, so &fn here is this library's own definition: exactly
// what dlsym(handle of libcuda.so.1, name) returns, even when an LD_PRELOADed
// interposer exports the same name. (A dlsym call of our own would also go
// through the interposer's dlsym hook, hence the table.)
void* lookup_export(const char* name) {
#define FAKE_ENTRY(fn) {#fn, reinterpret_cast<void*>(&fn)}
  static const Entry kEntries[] = {
      FAKE_ENTRY(cuInit), FAKE_ENTRY(cuDriverGetVersion), FAKE_ENTRY(cuGetErrorString), FAKE_ENTRY(cuGetErrorName),
      FAKE_ENTRY(cuDeviceGet), FAKE_ENTRY(cuDeviceGetCount), FAKE_ENTRY(cuDeviceGetName), FAKE_ENTRY(cuFuncGetName),
      FAKE_ENTRY(cuDeviceGetUuid), FAKE_ENTRY(cuDeviceGetUuid_v2), FAKE_ENTRY(cuDeviceTotalMem_v2),
      FAKE_ENTRY(cuDeviceGetAttribute), FAKE_ENTRY(cuDevicePrimaryCtxRetain),
      FAKE_ENTRY(cuDevicePrimaryCtxRelease_v2), FAKE_ENTRY(cuCtxCreate_v2), FAKE_ENTRY(cuCtxDestroy_v2),
      FAKE_ENTRY(cuCtxSetCurrent), FAKE_ENTRY(cuCtxGetCurrent), FAKE_ENTRY(cuCtxPushCurrent_v2),
      FAKE_ENTRY(cuCtxPopCurrent_v2), FAKE_ENTRY(cuCtxGetDevice), FAKE_ENTRY(cuCtxGetDevice_v2),
      FAKE_ENTRY(cuCtxSynchronize), FAKE_ENTRY(cuStreamCreate), FAKE_ENTRY(cuStreamDestroy_v2),
      FAKE_ENTRY(cuStreamGetCtx), FAKE_ENTRY(cuStreamSynchronize), FAKE_ENTRY(cuMemAlloc_v2),
      FAKE_ENTRY(cuMemAllocPitch_v2), FAKE_ENTRY(cuMemAllocManaged), FAKE_ENTRY(cuMemFree_v2),
      FAKE_ENTRY(cuMemAllocAsync), FAKE_ENTRY(cuMemAllocAsync_ptsz), FAKE_ENTRY(cuMemAllocFromPoolAsync),
      FAKE_ENTRY(cuMemAllocFromPoolAsync_ptsz), FAKE_ENTRY(cuMemFreeAsync), FAKE_ENTRY(cuMemFreeAsync_ptsz),
      FAKE_ENTRY(cuMemGetInfo_v2), FAKE_ENTRY(cuMemCreate), FAKE_ENTRY(cuMemRelease),
      FAKE_ENTRY(cuMemAddressReserve), FAKE_ENTRY(cuMemAddressFree), FAKE_ENTRY(cuMemMap), FAKE_ENTRY(cuMemUnmap),
      FAKE_ENTRY(cuMemSetAccess), FAKE_ENTRY(cuMemGetAllocationGranularity), FAKE_ENTRY(cuArrayCreate_v2),
      FAKE_ENTRY(cuArray3DCreate_v2), FAKE_ENTRY(cuArrayDestroy), FAKE_ENTRY(cuMipmappedArrayCreate),
      FAKE_ENTRY(cuMipmappedArrayDestroy), FAKE_ENTRY(cuGetProcAddress), FAKE_ENTRY(cuGetProcAddress_v2),
      FAKE_ENTRY(cuStreamCreateWithPriority), FAKE_ENTRY(cuStreamSynchronize_ptsz), FAKE_ENTRY(cuStreamQuery),
      FAKE_ENTRY(cuStreamQuery_ptsz), FAKE_ENTRY(cuStreamWaitEvent), FAKE_ENTRY(cuStreamWaitEvent_ptsz),
      FAKE_ENTRY(cuLaunchKernel), FAKE_ENTRY(cuLaunchKernel_ptsz), FAKE_ENTRY(cuLaunchKernelEx),
      FAKE_ENTRY(cuLaunchKernelEx_ptsz), FAKE_ENTRY(cuLaunchCooperativeKernel),
      FAKE_ENTRY(cuLaunchCooperativeKernel_ptsz), FAKE_ENTRY(cuGraphLaunch), FAKE_ENTRY(cuGraphLaunch_ptsz),
      FAKE_ENTRY(cuEventCreate), FAKE_ENTRY(cuIpcOpenMemHandle_v2), FAKE_ENTRY(cuEventDestroy_v2), FAKE_ENTRY(cuEventRecord),
      FAKE_ENTRY(cuEventRecord_ptsz), FAKE_ENTRY(cuEventRecordWithFlags), FAKE_ENTRY(cuEventRecordWithFlags_ptsz),
      FAKE_ENTRY(cuEventQuery), FAKE_ENTRY(cuEventSynchronize), FAKE_ENTRY(cuEventElapsedTime),
      FAKE_ENTRY(cuEventElapsedTime_v2), FAKE_ENTRY(cuStreamBeginCapture_v2), FAKE_ENTRY(cuStreamEndCapture),
      FAKE_ENTRY(cuStreamEndCapture_ptsz), FAKE_ENTRY(cuStreamIsCapturing), FAKE_ENTRY(cuStreamIsCapturing_ptsz),
      FAKE_ENTRY(cuThreadExchangeStreamCaptureMode), FAKE_ENTRY(cuCtxSynchronize_v2),
      FAKE_ENTRY(cuDevicePrimaryCtxReset_v2), FAKE_ENTRY(cuMemImportFromShareableHandle),
      FAKE_ENTRY(cuStreamBeginCapture_v2_ptsz), FAKE_ENTRY(cuStreamBeginCaptureToGraph),
      FAKE_ENTRY(cuStreamBeginCaptureToGraph_ptsz),
  };
#undef FAKE_ENTRY
  for (const Entry& e : kEntries)
    if (std::strcmp(e.name, name) == 0) return e.address;
  return nullptr;
}

// Base names the driver resolves to a versioned export, from the CUDA
// version whose headers first mapped them there (below it: the exact name).
struct Renamed {
  const char* base;
  int min_version;
  const char* target;
};
constexpr Renamed kRenames[] = {
    {"cuMemAlloc", 3020, "cuMemAlloc_v2"}, {"cuMemFree", 3020, "cuMemFree_v2"},
    {"cuMemGetInfo", 3020, "cuMemGetInfo_v2"}, {"cuDeviceTotalMem", 3020, "cuDeviceTotalMem_v2"},
    {"cuMemAllocPitch", 3020, "cuMemAllocPitch_v2"}, {"cuArrayCreate", 3020, "cuArrayCreate_v2"},
    {"cuArray3DCreate", 3020, "cuArray3DCreate_v2"}, {"cuCtxCreate", 3020, "cuCtxCreate_v2"},
    {"cuCtxDestroy", 4000, "cuCtxDestroy_v2"}, {"cuCtxPushCurrent", 4000, "cuCtxPushCurrent_v2"},
    {"cuCtxPopCurrent", 4000, "cuCtxPopCurrent_v2"}, {"cuStreamDestroy", 4000, "cuStreamDestroy_v2"},
    {"cuDevicePrimaryCtxRelease", 11000, "cuDevicePrimaryCtxRelease_v2"},
    {"cuDeviceGetUuid", 11040, "cuDeviceGetUuid_v2"}, {"cuGetProcAddress", 12000, "cuGetProcAddress_v2"},
    {"cuEventDestroy", 4000, "cuEventDestroy_v2"}, {"cuEventElapsedTime", 12080, "cuEventElapsedTime_v2"},
    {"cuStreamBeginCapture", 10010, "cuStreamBeginCapture_v2"},
    {"cuDevicePrimaryCtxReset", 11000, "cuDevicePrimaryCtxReset_v2"},
};
// Functions with a per-thread-default-stream export.
constexpr const char* kPtsz[] = {
    "cuMemAllocAsync", "cuMemAllocFromPoolAsync", "cuMemFreeAsync", "cuLaunchKernel", "cuLaunchKernelEx",
    "cuLaunchCooperativeKernel", "cuGraphLaunch", "cuEventRecord", "cuEventRecordWithFlags", "cuStreamSynchronize",
    "cuStreamQuery", "cuStreamWaitEvent", "cuStreamEndCapture", "cuStreamIsCapturing", "cuStreamBeginCapture_v2",
    "cuStreamBeginCaptureToGraph",
};

CUresult get_proc_address(const char* symbol, void** pfn, int version, cuuint64_t flags,
                          CUdriverProcAddressQueryResult* status) {
  if (symbol == nullptr || *symbol == '\0' || pfn == nullptr) return CUDA_ERROR_INVALID_VALUE;
  char name[128];
  if (std::snprintf(name, sizeof(name), "%s", symbol) >= static_cast<int>(sizeof(name))) name[0] = '\0';
  for (const Renamed& r : kRenames)
    if (version >= r.min_version && std::strcmp(name, r.base) == 0) std::snprintf(name, sizeof(name), "%s", r.target);
  if (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)
    for (const char* p : kPtsz)
      if (std::strcmp(name, p) == 0) std::snprintf(name, sizeof(name), "%s_ptsz", p);
  *pfn = lookup_export(name);
  if (status != nullptr) *status = *pfn ? CU_GET_PROC_ADDRESS_SUCCESS : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  return *pfn ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

}  // namespace

// Usable before cuInit: that is how libcudart finds cuInit itself.
FAKE_EXPORT CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags,
                                         CUdriverProcAddressQueryResult* symbolStatus) {
  return get_proc_address(symbol, pfn, cudaVersion, flags, symbolStatus);
}

FAKE_EXPORT CUresult cuGetProcAddress(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags) {
  return get_proc_address(symbol, pfn, cudaVersion, flags, nullptr);
}

// -------------------------------------------------------------- test hooks --

FAKE_EXPORT uint64_t fake_cuda_allocated_bytes(int physical_device) {
  if (physical_device < 0 || physical_device >= kMaxDevices) return 0;
  try {
    Lock lock;
    return state().used[physical_device];
  } catch (...) {
    return 0;
  }
}

FAKE_EXPORT uint64_t fake_cuda_alloc_calls(void) { return g_alloc_calls.load(std::memory_order_relaxed); }

FAKE_EXPORT uint64_t fake_cuda_kernel_ns(void) { return g_kernel_ns.load(std::memory_order_relaxed); }
FAKE_EXPORT uint64_t fake_cuda_launches(void) { return g_launches.load(std::memory_order_relaxed); }
FAKE_EXPORT unsigned fake_cuda_graph_nodes(CUgraph graph) { return graph != nullptr ? graph->nodes : 0; }
FAKE_EXPORT uint64_t fake_cuda_max_queued_ns(void) { return g_max_queued_ns.load(std::memory_order_relaxed); }
