// See trace_recorder.hpp. Lines are gathered in memory (under one mutex) and appended to the file by
// a flushing thread every second and at exit, whole lines only, so a process killed mid-write
// leaves at most a partial last line, which the reader skips.
#include "trace_recorder.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/random.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "core/platform.hpp"
#include "core/shared_state.hpp"
#include "core/trace_lines.hpp"
#include "cupti_library.hpp"
#include "driver.hpp"
#include "log.hpp"
#include "tenancy.hpp"

namespace gpushare::interpose::trace {
namespace detail {
std::atomic<bool> g_recording{false};
}
namespace {

constexpr std::size_t kBufferBytes = 1 << 20;                      // one CUPTI activity buffer
constexpr std::uint64_t kFileBound = (2ULL << 30) - (4ULL << 20);  // under the reader's 2 GiB
constexpr std::size_t kPendingBound = 256ULL << 20;                // lines waiting for the next flush

const char* event_name(GateEvent event) {
  switch (event) {
    case GateEvent::kWaitBegun:
      return "wait_begun";
    case GateEvent::kWaitEnded:
      return "wait_ended";
    case GateEvent::kGranted:
      return "granted";
    case GateEvent::kHandoverAsked:
      return "handover_asked";
    case GateEvent::kDrainBegun:
      return "drain_begun";
    case GateEvent::kDrainEnded:
      return "drain_ended";
  }
  return "unknown";
}

class Recorder final : public GateObserver {
 public:
  Recorder() {
    for (auto& ordinal : ordinal_of_gpu_) ordinal.store(-1, std::memory_order_relaxed);
  }

  // The shared-state GPU index and the trace's ordinal: remembered even before recording starts, so
  // that a device bound first is declared when it does.
  void bind(CUdevice ordinal, std::uint32_t gpu, std::string_view uuid, std::string_view name) {
    if (ordinal < 0 || ordinal >= kMaxDeviceOrdinals || gpu >= layout::kMaxGpus) return;
    ordinal_of_gpu_[gpu].store(ordinal, std::memory_order_relaxed);
    std::lock_guard lock(mutex_);
    Device& device = devices_[static_cast<std::size_t>(ordinal)];
    if (device.known) return;
    device = {true, false, std::string(uuid), std::string(name)};
    if (started_) declare_locked(ordinal);
  }

  void start(Tenancy& tenancy, const Settings& settings);
  void flush(bool at_exit);

  void gate_event(std::uint32_t gpu, GateEvent event, std::uint64_t at_ns) override {
    if (gpu >= layout::kMaxGpus) return;
    const int ordinal = ordinal_of_gpu_[gpu].load(std::memory_order_relaxed);
    if (ordinal < 0) return;
    append(trace_lines::gpushare_event(ordinal, from_monotonic(at_ns), event_name(event)));
  }
  void oom_refused(CUdevice ordinal, std::uint64_t bytes) {
    const std::uint64_t at = timestamp();
    std::lock_guard lock(mutex_);
    declare_locked(ordinal);
    append_locked(trace_lines::gpushare_event(ordinal, at, "oom_refused", static_cast<std::int64_t>(bytes)));
  }
  void range(std::uint64_t start, std::uint64_t end) {
    append(trace_lines::range(start, std::max(start, end), "request"));
  }

  // CUPTI's clock.
  std::uint64_t timestamp() const {
    std::uint64_t now = 0;
    return cupti_.cuptiGetTimestamp != nullptr && cupti_.cuptiGetTimestamp(&now) == cupti::kSuccess ? now : 0;
  }
  // A time of the monotonic clock on CUPTI's clock (the offset between them, read now).
  std::uint64_t from_monotonic(std::uint64_t at_ns) const {
    const std::uint64_t cupti_now = timestamp();
    const std::uint64_t monotonic_now = monotonic_now_ns();
    const std::uint64_t back = monotonic_now > at_ns ? monotonic_now - at_ns : 0;
    return cupti_now > back ? cupti_now - back : 0;
  }

  void buffer_completed(void* context, std::uint32_t stream, std::uint8_t* buffer, std::size_t valid);

 private:
  struct Device {
    bool known = false;     // uuid and name are set
    bool declared = false;  // its gpu line is written
    std::string uuid;
    std::string name;
  };

  void append(std::string line) {
    std::lock_guard lock(mutex_);
    append_locked(std::move(line));
  }
  void append_locked(std::string&& line) {
    if (pending_.size() + line.size() > kPendingBound) {
      ++lines_left_out_;
      return;
    }
    pending_ += line;
  }
  // Declares `ordinal` (its gpu line), asking the driver for its UUID if no bind told it.
  void declare_locked(CUdevice ordinal);
  void write_out(const std::string& lines);

  CuptiLibrary cupti_;
  int fd_ = -1;
  std::mutex mutex_;  // pending_, devices_, started_, lines_left_out_
  std::string pending_;
  bool started_ = false;
  std::uint64_t lines_left_out_ = 0;
  std::array<Device, kMaxDeviceOrdinals> devices_{};
  std::array<std::atomic<int>, layout::kMaxGpus> ordinal_of_gpu_{};
  std::mutex flush_mutex_;  // one flush at a time; written_ and stopped_
  std::uint64_t written_ = 0;
  bool stopped_ = false;
};

Recorder& recorder() {
  static Recorder* const instance = new Recorder();  // never destroyed: threads may flush at exit
  return *instance;
}

std::string format_uuid(const CUuuid& uuid) {
  const auto b = [&](int i) { return static_cast<unsigned>(static_cast<unsigned char>(uuid.bytes[i])); };
  return fmt::format(
      "GPU-{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}", b(0),
      b(1), b(2), b(3), b(4), b(5), b(6), b(7), b(8), b(9), b(10), b(11), b(12), b(13), b(14), b(15));
}

void Recorder::declare_locked(CUdevice ordinal) {
  Device& device = devices_[static_cast<std::size_t>(ordinal)];
  if (device.declared) return;
  if (!device.known) {
    // A device no gated call bound (its kernels went through ungated): ask the driver.
    const RealDriver* driver = real_driver_if_loaded();
    CUuuid uuid{};
    auto get_uuid = driver == nullptr                       ? nullptr
                    : driver->cuDeviceGetUuid_v2 != nullptr ? driver->cuDeviceGetUuid_v2
                                                            : driver->cuDeviceGetUuid;
    device.uuid = get_uuid != nullptr && get_uuid(&uuid, ordinal) == CUDA_SUCCESS
                      ? format_uuid(uuid)
                      : fmt::format("unknown-device-{}-of-pid-{}", ordinal, ::getpid());
    std::array<char, 256> name{};
    if (driver != nullptr && driver->cuDeviceGetName != nullptr &&
        driver->cuDeviceGetName(name.data(), static_cast<int>(name.size() - 1), ordinal) == CUDA_SUCCESS) {
      device.name = name.data();
    }
    device.known = true;
  }
  append_locked(trace_lines::gpu(ordinal, device.uuid, device.name));
  device.declared = true;
}

void Recorder::buffer_completed(void* context, std::uint32_t stream, std::uint8_t* buffer, std::size_t valid) {
  std::lock_guard lock(mutex_);
  cupti::Activity* record = nullptr;
  while (cupti_.cuptiActivityGetNextRecord(buffer, valid, &record) == cupti::kSuccess && record != nullptr) {
    using cupti::field;
    const auto device_of = [&](std::size_t offset) {
      return static_cast<CUdevice>(field<std::uint32_t>(record, offset));
    };
    auto interval = [&](std::size_t start, std::size_t end, CUdevice ordinal) {
      const auto from = field<std::uint64_t>(record, start), to = field<std::uint64_t>(record, end);
      // Incomplete records carry zero times; ordinals past the table are not ours to name.
      return from != 0 && to >= from && from < (1ULL << 62) && ordinal >= 0 && ordinal < kMaxDeviceOrdinals;
    };
    if (record->kind == cupti::kKindConcurrentKernel) {
      namespace k = cupti::kernel_field;
      const CUdevice ordinal = device_of(k::kDeviceId);
      if (!interval(k::kStart, k::kEnd, ordinal)) continue;
      declare_locked(ordinal);
      const char* name = field<const char*>(record, k::kName);
      append_locked(trace_lines::kernel(ordinal, field<std::uint64_t>(record, k::kStart),
                                        field<std::uint64_t>(record, k::kEnd), name != nullptr ? name : "unknown",
                                        field<std::uint32_t>(record, k::kStreamId),
                                        field<std::uint32_t>(record, k::kCorrelationId)));
    } else if (record->kind == cupti::kKindMemcpy) {
      namespace m = cupti::memcpy_field;
      const CUdevice ordinal = device_of(m::kDeviceId);
      if (!interval(m::kStart, m::kEnd, ordinal)) continue;
      declare_locked(ordinal);
      append_locked(trace_lines::memcpy(ordinal, field<std::uint64_t>(record, m::kStart),
                                        field<std::uint64_t>(record, m::kEnd), field<std::uint64_t>(record, m::kBytes),
                                        cupti::copy_kind_name(field<std::uint8_t>(record, m::kCopyKind))));
    } else if (record->kind == cupti::kKindMemset) {
      namespace s = cupti::memset_field;
      const CUdevice ordinal = device_of(s::kDeviceId);
      if (!interval(s::kStart, s::kEnd, ordinal)) continue;
      declare_locked(ordinal);
      append_locked(trace_lines::memset(ordinal, field<std::uint64_t>(record, s::kStart),
                                        field<std::uint64_t>(record, s::kEnd),
                                        field<std::uint64_t>(record, s::kBytes)));
    }
  }
  std::size_t dropped = 0;
  if (cupti_.cuptiActivityGetNumDroppedRecords(context, stream, &dropped) == cupti::kSuccess && dropped != 0) {
    append_locked(
        trace_lines::note(timestamp(), fmt::format("CUPTI dropped {} records (its buffers were full)", dropped)));
  }
}

// CUPTI's buffer callbacks: plain functions, called on CUPTI's threads or inside a flush.
void on_buffer_requested(std::uint8_t** buffer, std::size_t* size, std::size_t* max_records) {
  void* memory = nullptr;
  *buffer = ::posix_memalign(&memory, 8, kBufferBytes) == 0 ? static_cast<std::uint8_t*>(memory) : nullptr;
  *size = *buffer != nullptr ? kBufferBytes : 0;
  *max_records = 0;  // as many as fit
}

void on_buffer_completed(void* context, std::uint32_t stream, std::uint8_t* buffer, std::size_t /*size*/,
                         std::size_t valid) {
  if (buffer == nullptr) return;
  try {
    recorder().buffer_completed(context, stream, buffer, valid);
  } catch (...) {
    // Out of memory: the buffer's records are lost, the process goes on.
  }
  std::free(buffer);
}

void Recorder::write_out(const std::string& lines) {
  std::size_t done = 0;
  while (done < lines.size()) {
    const ssize_t n = ::write(fd_, lines.data() + done, lines.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // a full disk: what is lost is lost, the tenant goes on
    done += static_cast<std::size_t>(n);
  }
  written_ += done;
}

void Recorder::flush(bool at_exit) {
  std::lock_guard flushing(flush_mutex_);
  if (stopped_) return;
  // Outside mutex_: CUPTI calls buffer_completed, which takes it, from this thread.
  if (cupti_.cuptiActivityFlushAll != nullptr) cupti_.cuptiActivityFlushAll(cupti::kFlushForced);
  std::string lines;
  {
    std::lock_guard lock(mutex_);
    lines.swap(pending_);
    if (lines_left_out_ != 0) {
      lines += trace_lines::note(timestamp(), fmt::format("{} lines left out: more than {} MiB waited for one flush",
                                                          lines_left_out_, kPendingBound >> 20));
      lines_left_out_ = 0;
    }
  }
  if (written_ + lines.size() > kFileBound) {
    // The reader refuses files over 2 GiB: stop recording, say so, keep the tenant running.
    detail::g_recording.store(false, std::memory_order_relaxed);
    for (cupti::ActivityKind kind : {cupti::kKindConcurrentKernel, cupti::kKindMemcpy, cupti::kKindMemset}) {
      if (cupti_.cuptiActivityDisable != nullptr) cupti_.cuptiActivityDisable(kind);
    }
    write_out(trace_lines::note(timestamp(), "trace stopped: the file reached its 2 GiB bound"));
    stopped_ = true;
    return;
  }
  write_out(lines);
  (void)at_exit;
}

void flush_at_exit() { recorder().flush(true); }

// A random 8-hex-digit suffix: a reused pid never writes over an older file.
std::string random_suffix() {
  std::uint32_t value = 0;
  if (::getrandom(&value, sizeof value, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof value)) {
    value = static_cast<std::uint32_t>(monotonic_now_ns() ^ (static_cast<std::uint64_t>(::getpid()) << 20));
  }
  return fmt::format("{:08x}", value);
}

void Recorder::start(Tenancy& tenancy, const Settings& settings) {
  const std::string path = fmt::format("{}/{}-{}.gstrace", settings.trace_dir, ::getpid(), random_suffix());
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    log(LogLevel::kWarn, "trace: untraced: cannot create a trace file in '{}': {}", settings.trace_dir,
        std::strerror(errno));
    return;
  }
  std::array<char, 256> host{};
  if (::gethostname(host.data(), host.size() - 1) != 0) host[0] = '\0';
  write_out(trace_lines::process(::getpid(), tenancy.tenant_name(), host.data()));

  CuptiOpened opened = open_cupti(settings.cupti_library);
  std::string why_not = opened.why_not;
  if (opened.ok) {
    cupti_ = std::move(opened.library);
    if (const cupti::Result result = cupti_.cuptiActivityRegisterCallbacks(&on_buffer_requested, &on_buffer_completed);
        result != cupti::kSuccess) {
      why_not = "cuptiActivityRegisterCallbacks failed: " + cupti_.describe(result);
    } else if (const cupti::Result enabled = cupti_.cuptiActivityEnable(cupti::kKindConcurrentKernel);
               enabled != cupti::kSuccess) {
      why_not = enabled == cupti::kErrorInsufficientPrivileges
                    ? "CUPTI may not trace here (insufficient privileges: the driver's profiling restriction)"
                    : "cuptiActivityEnable(CONCURRENT_KERNEL) failed: " + cupti_.describe(enabled);
    }
  }
  if (!why_not.empty()) {
    if (cupti_.subscriber != nullptr && cupti_.cuptiUnsubscribe != nullptr) cupti_.cuptiUnsubscribe(cupti_.subscriber);
    cupti_ = CuptiLibrary{};
    log(LogLevel::kWarn, "trace: untraced: {}", why_not);
    write_out(trace_lines::note(0, "untraced: " + why_not));
    ::close(fd_);
    fd_ = -1;
    return;
  }
  // Copies and memsets are welcome; without them the kernels still tell the GPU's time.
  for (cupti::ActivityKind kind : {cupti::kKindMemcpy, cupti::kKindMemset}) (void)cupti_.cuptiActivityEnable(kind);
  {
    std::lock_guard lock(mutex_);
    started_ = true;
    for (CUdevice ordinal = 0; ordinal < kMaxDeviceOrdinals; ++ordinal) {
      if (devices_[static_cast<std::size_t>(ordinal)].known) declare_locked(ordinal);
    }
  }
  if (tenancy.mode() == Tenancy::Mode::kEnforce) tenancy.gate().observe(this);
  detail::g_recording.store(true, std::memory_order_relaxed);
  std::atexit(&flush_at_exit);
  std::thread([this] {
    for (;;) {
      timespec second{1, 0};
      while (::nanosleep(&second, &second) != 0 && errno == EINTR) {
      }
      flush(false);
    }
  }).detach();
  log(LogLevel::kInfo, "trace: recording into {} with {} (CUPTI API version {})", path, cupti_.path, cupti_.version);
}

// A forked child has no flushing thread and shares its parent's file: it records nothing (a child
// that execs starts afresh, with a file of its own).
void stop_in_child() { detail::g_recording.store(false, std::memory_order_relaxed); }

__attribute__((tls_model("initial-exec"))) thread_local std::uint64_t t_request_start = 0;

}  // namespace

void start_if_asked(Tenancy& tenancy) {
  const Settings& settings = process_settings().settings;
  if (settings.trace_dir.empty()) return;
  static std::atomic<bool> started{false};
  if (started.exchange(true, std::memory_order_acq_rel)) return;
  try {
    ::pthread_atfork(nullptr, nullptr, &stop_in_child);
    recorder().start(tenancy, settings);
  } catch (...) {
    log(LogLevel::kWarn, "trace: untraced: out of memory while starting");
  }
}

void gpu_bound(CUdevice ordinal, std::uint32_t gpu, std::string_view uuid, std::string_view name) {
  if (process_settings().settings.trace_dir.empty()) return;
  try {
    recorder().bind(ordinal, gpu, uuid, name);
  } catch (...) {
  }
}

void oom_refused(CUdevice ordinal, std::uint64_t bytes) {
  if (!recording() || ordinal < 0 || ordinal >= kMaxDeviceOrdinals) return;
  try {
    recorder().oom_refused(ordinal, bytes);
  } catch (...) {
  }
}

void launched() {
  if (t_request_start == 0) t_request_start = recorder().timestamp();
}

void synchronized() {
  if (t_request_start == 0) return;
  const std::uint64_t start = t_request_start;
  t_request_start = 0;
  try {
    recorder().range(start, recorder().timestamp());
  } catch (...) {
  }
}

}  // namespace gpushare::interpose::trace
