// Fake CUPTI (libcupti.so) for GPU-less CI: the Activity API subset of interpose/cupti_api.hpp,
// delivering the fake driver's kernels (fake_activity.hpp) as CUPTI kernel records. It does not
// link the fake libcuda: it finds the driver's hooks in the process when it needs them, so a
// process without the fake driver gets no records. See README.md, "Fake CUPTI".

#include <dlfcn.h>
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <type_traits>
#include <vector>

#include "../../interpose/cupti_api.hpp"
#include "fake_activity.hpp"

namespace cupti = gpushare::cupti;

// Built with -fvisibility=hidden and a version script: only the cupti* entry points are exported.
#define FAKE_EXPORT extern "C" __attribute__((visibility("default")))

// cupti::SubscriberHandle points at the one instance.
struct gpushare::cupti::Subscriber {};

namespace {

// CUptiResult values the fake returns besides those cupti_api.hpp names.
constexpr cupti::Result kErrorInvalidParameter = 1;
constexpr cupti::Result kErrorInvalidKind = 21;
constexpr cupti::Result kErrorUnknown = 999;

constexpr std::uint32_t kDefaultVersion = 130001;  // CUDA 13.0's CUPTI
constexpr std::uint32_t kNoRecordLimit = 0;        // BufferRequested's max_records: fill the buffer

using RecordActivity = void (*)(int on);
using TakeActivity = std::size_t (*)(FakeKernelActivity* out, std::size_t max, std::uint64_t completed_by_ns);
using ActivityDropped = std::uint64_t (*)();

struct DriverHooks {
  RecordActivity record = nullptr;
  TakeActivity take = nullptr;
  ActivityDropped dropped = nullptr;
  bool found() const { return record != nullptr && take != nullptr && dropped != nullptr; }
};

struct State {
  std::mutex mu;
  cupti::Subscriber subscriber;
  bool subscribed = false;
  cupti::BufferRequested requested = nullptr;
  cupti::BufferCompleted completed = nullptr;
  bool kernels_enabled = false;
  DriverHooks hooks;
  std::uint64_t driver_dropped_seen = 0;  // the driver's drop count already reported
  std::uint64_t dropped = 0;              // records lost since the last GetNumDroppedRecords
};

// Leaked on purpose: a flush at exit may run while static destructors do.
State& state() {
  static State* s = new State;
  return *s;
}

// Keeps exceptions (std::system_error from the mutex, bad_alloc) off the C ABI.
template <class F>
cupti::Result api(F&& body) noexcept {
  try {
    return body();
  } catch (...) {
    return kErrorUnknown;
  }
}

std::uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
}

// The fake driver's hooks: global symbols if it was loaded that way (linked, or dlopened with
// RTLD_GLOBAL), else through its handle if it was dlopened RTLD_LOCAL. The handle is kept once the
// hooks are found: they are called for the rest of the process.
DriverHooks find_driver_hooks() {
  DriverHooks hooks;
  void* scope = RTLD_DEFAULT;
  if (dlsym(scope, "fake_cuda_take_activity") == nullptr) {
    scope = dlopen("libcuda.so.1", RTLD_NOLOAD | RTLD_LAZY);
    if (scope == nullptr) return hooks;
  }
  hooks.record = reinterpret_cast<RecordActivity>(dlsym(scope, "fake_cuda_record_activity"));
  hooks.take = reinterpret_cast<TakeActivity>(dlsym(scope, "fake_cuda_take_activity"));
  hooks.dropped = reinterpret_cast<ActivityDropped>(dlsym(scope, "fake_cuda_activity_dropped"));
  if (!hooks.found() && scope != RTLD_DEFAULT) dlclose(scope);  // another libcuda: looked up again later
  return hooks;
}

// The driver's hooks once it is loaded, with kernel recording switched to what Enable/Disable
// asked. Requires state().mu.
const DriverHooks& hooks_locked() {
  State& s = state();
  if (!s.hooks.found()) {
    s.hooks = find_driver_hooks();
    if (s.hooks.found() && s.kernels_enabled) s.hooks.record(1);
  }
  return s.hooks;
}

cupti::Result set_kind(cupti::ActivityKind kind, bool on) {
  switch (kind) {
    case cupti::kKindConcurrentKernel: {
      std::lock_guard lock(state().mu);
      state().kernels_enabled = on;
      if (const DriverHooks& hooks = hooks_locked(); hooks.found()) hooks.record(on ? 1 : 0);
      return cupti::kSuccess;
    }
    case cupti::kKindMemcpy:
    case cupti::kKindMemset:
      return cupti::kSuccess;  // the fake driver makes no copies or memsets
    default:
      return kErrorInvalidKind;
  }
}

// One kernel record in CUpti_ActivityKernel4 layout; fields the fake does not know stay zero.
void write_kernel_record(unsigned char* at, const FakeKernelActivity& kernel) {
  namespace field = cupti::kernel_field;
  std::memset(at, 0, field::kLeastSize);
  const auto put = [at](std::size_t offset, auto value) { std::memcpy(at + offset, &value, sizeof value); };
  put(0, cupti::ActivityKind{cupti::kKindConcurrentKernel});
  put(field::kStart, kernel.start_ns);
  put(field::kEnd, kernel.end_ns);
  put(field::kDeviceId, static_cast<std::uint32_t>(kernel.device));
  put(field::kContextId, std::uint32_t{1});
  put(field::kStreamId, kernel.stream);
  put(field::kCorrelationId, kernel.correlation);
  const char* name = kernel.graph != 0 ? "fake_graph" : "fake_kernel";
  put(field::kName, name);
}

std::size_t record_size(cupti::ActivityKind kind) {
  switch (kind) {
    case cupti::kKindConcurrentKernel:
      return cupti::kernel_field::kLeastSize;
    case cupti::kKindMemcpy:
      return cupti::memcpy_field::kLeastSize;
    case cupti::kKindMemset:
      return cupti::memset_field::kLeastSize;
    default:
      return 0;
  }
}

// Delivers every kernel completed by now: taken from the driver in batches, each written into
// buffers the client gives (as many records as one holds) and handed back through the completed
// callback. The callbacks run without the lock held, as the client may call CUPTI from them.
cupti::Result flush_all() {
  constexpr std::size_t kBatch = 4096;
  constexpr std::size_t kRecord = cupti::kernel_field::kLeastSize;
  State& s = state();
  TakeActivity take = nullptr;
  cupti::BufferRequested requested = nullptr;
  cupti::BufferCompleted completed = nullptr;
  {
    std::lock_guard lock(s.mu);
    const DriverHooks& hooks = hooks_locked();
    if (!hooks.found()) return cupti::kSuccess;  // no fake driver in the process: nothing ran
    const std::uint64_t driver_dropped = hooks.dropped();
    s.dropped += driver_dropped - s.driver_dropped_seen;
    s.driver_dropped_seen = driver_dropped;
    take = hooks.take;
    requested = s.requested;
    completed = s.completed;
  }
  if (requested == nullptr || completed == nullptr) return cupti::kSuccess;  // kept for a later flush
  const std::uint64_t now = monotonic_ns();
  std::vector<FakeKernelActivity> batch(kBatch);
  std::size_t next = 0, count = 0;  // batch[next, count) still to deliver
  for (;;) {
    if (next == count) {
      next = 0;
      count = take(batch.data(), batch.size(), now);
      if (count == 0) return cupti::kSuccess;
    }
    std::uint8_t* buffer = nullptr;
    std::size_t size = 0;
    std::size_t max_records = kNoRecordLimit;
    requested(&buffer, &size, &max_records);
    std::size_t fits = buffer != nullptr ? size / kRecord : 0;
    if (max_records != kNoRecordLimit && max_records < fits) fits = max_records;
    if (fits == 0) {  // no room given: what has completed is lost, as CUPTI drops records
      std::size_t lost = count - next;
      while (std::size_t more = take(batch.data(), batch.size(), now)) lost += more;
      if (buffer != nullptr) completed(nullptr, 0, buffer, size, 0);
      std::lock_guard lock(s.mu);
      s.dropped += lost;
      return cupti::kSuccess;
    }
    std::size_t written = 0;
    for (; written < fits && next < count; ++written, ++next)
      write_kernel_record(buffer + written * kRecord, batch[next]);
    completed(nullptr, 0, buffer, size, written * kRecord);
  }
}

const char* result_name(cupti::Result result) {
  switch (result) {
    case cupti::kSuccess:
      return "CUPTI_SUCCESS";
    case kErrorInvalidParameter:
      return "CUPTI_ERROR_INVALID_PARAMETER";
    case cupti::kErrorMaxLimitReached:
      return "CUPTI_ERROR_MAX_LIMIT_REACHED";
    case kErrorInvalidKind:
      return "CUPTI_ERROR_INVALID_KIND";
    case cupti::kErrorInsufficientPrivileges:
      return "CUPTI_ERROR_INSUFFICIENT_PRIVILEGES";
    case cupti::kErrorMultipleSubscribers:
      return "CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED";
    case kErrorUnknown:
      return "CUPTI_ERROR_UNKNOWN";
    default:
      return nullptr;
  }
}

}  // namespace

// FAKE_CUPTI_VERSION (a decimal) stands in for an older or newer CUPTI.
FAKE_EXPORT cupti::Result cuptiGetVersion(std::uint32_t* version) {
  if (version == nullptr) return kErrorInvalidParameter;
  *version = kDefaultVersion;
  if (const char* text = std::getenv("FAKE_CUPTI_VERSION"); text != nullptr && *text != '\0') {
    char* end = nullptr;
    const unsigned long value = std::strtoul(text, &end, 10);
    if (*end != '\0' || value > UINT32_MAX) {
      std::fprintf(stderr, "fake libcupti: FAKE_CUPTI_VERSION=%s is not a version number\n", text);
      return kErrorInvalidParameter;
    }
    *version = static_cast<std::uint32_t>(value);
  }
  return cupti::kSuccess;
}

FAKE_EXPORT cupti::Result cuptiGetResultString(cupti::Result result, const char** text) {
  if (text == nullptr) return kErrorInvalidParameter;
  const char* name = result_name(result);
  *text = name != nullptr ? name : "CUPTI_ERROR_UNKNOWN";
  return name != nullptr ? cupti::kSuccess : kErrorInvalidParameter;
}

// One subscriber at a time; FAKE_CUPTI_HELD=1 acts as if a profiler already were one.
FAKE_EXPORT cupti::Result cuptiSubscribe(cupti::SubscriberHandle* subscriber, cupti::CallbackFunc /*callback*/,
                                         void* /*userdata*/) {
  return api([&] {
    if (subscriber == nullptr) return kErrorInvalidParameter;
    const char* held = std::getenv("FAKE_CUPTI_HELD");
    if (held != nullptr && std::strcmp(held, "1") == 0) return cupti::kErrorMultipleSubscribers;
    std::lock_guard lock(state().mu);
    if (state().subscribed) return cupti::kErrorMultipleSubscribers;
    state().subscribed = true;
    *subscriber = &state().subscriber;
    return cupti::kSuccess;
  });
}

FAKE_EXPORT cupti::Result cuptiUnsubscribe(cupti::SubscriberHandle subscriber) {
  return api([&] {
    std::lock_guard lock(state().mu);
    if (!state().subscribed || subscriber != &state().subscriber) return kErrorInvalidParameter;
    state().subscribed = false;
    return cupti::kSuccess;
  });
}

FAKE_EXPORT cupti::Result cuptiActivityRegisterCallbacks(cupti::BufferRequested requested,
                                                         cupti::BufferCompleted completed) {
  return api([&] {
    if (requested == nullptr || completed == nullptr) return kErrorInvalidParameter;
    std::lock_guard lock(state().mu);
    state().requested = requested;
    state().completed = completed;
    return cupti::kSuccess;
  });
}

FAKE_EXPORT cupti::Result cuptiActivityEnable(cupti::ActivityKind kind) {
  return api([&] { return set_kind(kind, true); });
}

FAKE_EXPORT cupti::Result cuptiActivityDisable(cupti::ActivityKind kind) {
  return api([&] { return set_kind(kind, false); });
}

// Completed kernels are delivered whether or not the flush is forced: the fake has no partly
// filled buffers of its own.
FAKE_EXPORT cupti::Result cuptiActivityFlushAll(std::uint32_t /*flag*/) { return api(flush_all); }

// `*record` null: the buffer's first record; else the one after it. MAX_LIMIT_REACHED at the end.
FAKE_EXPORT cupti::Result cuptiActivityGetNextRecord(std::uint8_t* buffer, std::size_t valid_size,
                                                     cupti::Activity** record) {
  if (buffer == nullptr || record == nullptr) return kErrorInvalidParameter;
  std::size_t offset = 0;
  if (*record != nullptr) {
    const auto* current = reinterpret_cast<std::uint8_t*>(*record);
    if (current < buffer || current >= buffer + valid_size) return kErrorInvalidParameter;
    const std::size_t size = record_size(cupti::field<cupti::ActivityKind>(*record, 0));
    if (size == 0) return kErrorInvalidKind;
    offset = static_cast<std::size_t>(current - buffer) + size;
  }
  if (valid_size < sizeof(cupti::ActivityKind) || offset > valid_size - sizeof(cupti::ActivityKind))
    return cupti::kErrorMaxLimitReached;
  auto* next = reinterpret_cast<cupti::Activity*>(buffer + offset);
  const std::size_t size = record_size(cupti::field<cupti::ActivityKind>(next, 0));
  if (size == 0) return kErrorInvalidKind;
  if (size > valid_size - offset) return cupti::kErrorMaxLimitReached;
  *record = next;
  return cupti::kSuccess;
}

// Records lost since the last call (queue full in the driver, or no buffer given), for any context
// and stream: the fake does not tell them apart.
FAKE_EXPORT cupti::Result cuptiActivityGetNumDroppedRecords(void* /*context*/, std::uint32_t /*stream_id*/,
                                                            std::size_t* dropped) {
  return api([&] {
    if (dropped == nullptr) return kErrorInvalidParameter;
    State& s = state();
    std::lock_guard lock(s.mu);
    if (const DriverHooks& hooks = hooks_locked(); hooks.found()) {
      const std::uint64_t driver_dropped = hooks.dropped();
      s.dropped += driver_dropped - s.driver_dropped_seen;
      s.driver_dropped_seen = driver_dropped;
    }
    *dropped = static_cast<std::size_t>(s.dropped);
    s.dropped = 0;
    return cupti::kSuccess;
  });
}

// The engine's clock: CLOCK_MONOTONIC, the same in every process of the machine.
FAKE_EXPORT cupti::Result cuptiGetTimestamp(std::uint64_t* timestamp) {
  if (timestamp == nullptr) return kErrorInvalidParameter;
  *timestamp = monotonic_ns();
  return cupti::kSuccess;
}

// Every entry point has the signature cupti_api.hpp declares.
#define GPUSHARE_FAKE_CUPTI_SIGNATURE(name, type) \
  static_assert(std::is_same_v<std::add_pointer_t<type>, decltype(&name)>, #name);
GPUSHARE_CUPTI_FUNCTIONS(GPUSHARE_FAKE_CUPTI_SIGNATURE)
#undef GPUSHARE_FAKE_CUPTI_SIGNATURE
