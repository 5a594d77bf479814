// GPU processes that escaped the interposer (escape_watch.hpp).
#include "escape_watch.hpp"

#include <dlfcn.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "core/size.hpp"
#include "identity.hpp"
#include "nvml_types.hpp"

// The pidfd system calls by number: glibc wraps them only from 2.36. The numbers are the same on
// every architecture (the syscall table was unified before they were added).
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

namespace gpushare::agent {

namespace {

// Room for this many processes per GPU in the first call; grown on kErrorInsufficientSize up to
// kMostProcesses (far above what a GPU runs: a figure above it is not believed).
constexpr unsigned int kFirstRoom = 16;
constexpr unsigned int kMostProcesses = 1u << 16;
constexpr int kListingAttempts = 8;

using InitFn = nvml::Return (*)();
using GetCountFn = nvml::Return (*)(unsigned int*);
using GetHandleFn = nvml::Return (*)(unsigned int, nvml::Device*);
using ErrorStringFn = const char* (*)(nvml::Return);

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0u)); }

bool pidfd_kill(int pidfd) { return ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0u) == 0; }

// Whether the process held by `pidfd` has exited: a pidfd polls readable from then on.
bool pidfd_exited(int pidfd) {
  pollfd entry{pidfd, POLLIN, 0};
  return ::poll(&entry, 1, 0) > 0 && (entry.revents & (POLLIN | POLLHUP)) != 0;
}

void close_pidfd(int& pidfd) {
  if (pidfd >= 0) ::close(pidfd);
  pidfd = -1;
}

std::string describe_size(const std::optional<std::uint64_t>& bytes) {
  return bytes ? format_size(*bytes) : std::string("an amount NVML cannot tell");
}

std::string describe_process(const TrackedEscape& state) {
  const Unaccounted& f = state.finding;
  std::string who =
      state.cgroup.empty() ? fmt::format("pid {}", f.pid) : fmt::format("pid {} (cgroup {})", f.pid, state.cgroup);
  if (!f.known_to_agent) {
    return fmt::format("{} on {}: not connected to the agent, uses {}", who, f.gpu_uuid, describe_size(f.used_bytes));
  }
  return fmt::format("{} on {}: uses {}, {} beyond its ledger ({}) and the context allowance", who, f.gpu_uuid,
                     describe_size(f.used_bytes), describe_size(f.unaccounted_bytes), format_size(f.accounted_bytes));
}

std::string describe_grace(std::chrono::nanoseconds grace) {
  return fmt::format("{:g} s", std::chrono::duration<double>(grace).count());
}

std::string describe_status(ErrorStringFn error_string, nvml::Return status) {
  const char* text = error_string != nullptr ? error_string(status) : nullptr;
  return text != nullptr ? fmt::format("NVML error {} ({})", static_cast<int>(status), text)
                         : fmt::format("NVML error {}", static_cast<int>(status));
}

}  // namespace

// ---- NVML ------------------------------------------------------------------------------------

struct NvmlProcesses::Functions {
  InitFn shutdown = nullptr;
  GetCountFn get_count = nullptr;
  GetHandleFn get_handle = nullptr;
  nvml::GetUuidFn get_uuid = nullptr;
  nvml::GetComputeRunningProcessesFn list_v3 = nullptr;    // preferred
  nvml::GetComputeRunningProcessesV1Fn list_v1 = nullptr;  // drivers before the _v3 name
  ErrorStringFn error_string = nullptr;                    // optional, for messages

  [[nodiscard]] std::string status_text(nvml::Return status) const { return describe_status(error_string, status); }
};

namespace {

template <typename Fn>
bool find_function(void* library, const char* name, Fn& out) {
  out = reinterpret_cast<Fn>(::dlsym(library, name));
  return out != nullptr;
}

// One GPU's process records, the room grown until the list fits. NVML's count is checked against
// the room it was given before any record is read.
template <typename Record, typename ListFn>
Result<std::vector<Record>> read_records(ListFn list, nvml::Device device, ErrorStringFn error_string) {
  std::vector<Record> records(kFirstRoom);
  for (int attempt = 0; attempt < kListingAttempts; ++attempt) {
    auto count = static_cast<unsigned int>(records.size());
    const nvml::Return status = list(device, &count, records.data());
    if (status == nvml::kSuccess) {
      if (count > records.size())
        return Error{fmt::format("NVML reported {} processes in room for {}", count, records.size())};
      records.resize(count);
      return records;
    }
    if (status != nvml::kErrorInsufficientSize) return Error{describe_status(error_string, status)};
    // Processes may start between two calls: some room beyond what NVML asked for.
    const std::size_t wanted = std::max<std::size_t>(records.size() * 2, std::size_t{count} + kFirstRoom);
    if (wanted > kMostProcesses) return Error{fmt::format("NVML asks room for {} processes", count)};
    records.resize(wanted);
  }
  return Error{"the process list kept outgrowing its room"};
}

template <typename Record>
void append_processes(const std::vector<Record>& records, const std::string& uuid, std::vector<GpuProcess>& out) {
  for (const Record& record : records) {
    GpuProcess process{static_cast<pid_t>(record.pid), uuid, std::nullopt};
    if (record.used_gpu_memory != nvml::kValueNotAvailable) process.used_bytes = record.used_gpu_memory;
    out.push_back(std::move(process));
  }
}

}  // namespace

NvmlProcesses::NvmlProcesses(void* library, std::unique_ptr<Functions> functions)
    : library_(library), functions_(std::move(functions)) {}

NvmlProcesses::NvmlProcesses(NvmlProcesses&& other) noexcept
    : library_(std::exchange(other.library_, nullptr)), functions_(std::move(other.functions_)) {}

NvmlProcesses& NvmlProcesses::operator=(NvmlProcesses&& other) noexcept {
  if (this != &other) {
    release();
    library_ = std::exchange(other.library_, nullptr);
    functions_ = std::move(other.functions_);
  }
  return *this;
}

NvmlProcesses::~NvmlProcesses() { release(); }

void NvmlProcesses::release() {
  if (functions_ != nullptr && functions_->shutdown != nullptr) functions_->shutdown();
  functions_.reset();
  if (library_ != nullptr) ::dlclose(std::exchange(library_, nullptr));
}

Result<NvmlProcesses> NvmlProcesses::open(const std::string& library) {
  void* handle = ::dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = ::dlerror();
    return Error{fmt::format("NVML cannot be loaded ({}): is the NVIDIA driver installed? {}", library,
                             why != nullptr ? why : "")};
  }
  auto functions = std::make_unique<Functions>();
  InitFn init = nullptr;
  const char* missing = nullptr;
  auto need = [&](const char* name, auto& function) {
    if (missing == nullptr && !find_function(handle, name, function)) missing = name;
  };
  need("nvmlInit_v2", init);
  need("nvmlShutdown", functions->shutdown);
  need("nvmlDeviceGetCount_v2", functions->get_count);
  need("nvmlDeviceGetHandleByIndex_v2", functions->get_handle);
  need("nvmlDeviceGetUUID", functions->get_uuid);
  if (missing == nullptr && !find_function(handle, "nvmlDeviceGetComputeRunningProcesses_v3", functions->list_v3) &&
      !find_function(handle, "nvmlDeviceGetComputeRunningProcesses", functions->list_v1)) {
    missing = "nvmlDeviceGetComputeRunningProcesses(_v3)";
  }
  if (missing != nullptr) {
    ::dlclose(handle);
    return Error{fmt::format("{} lacks {}: the driver is too old", library, missing)};
  }
  find_function(handle, "nvmlErrorString", functions->error_string);
  if (const nvml::Return status = init(); status != nvml::kSuccess) {
    std::string message = fmt::format("nvmlInit_v2 failed: {}", functions->status_text(status));
    ::dlclose(handle);
    return Error{std::move(message)};
  }
  return NvmlProcesses(handle, std::move(functions));
}

const char* NvmlProcesses::listing_function() const {
  return functions_ != nullptr && functions_->list_v3 != nullptr ? "nvmlDeviceGetComputeRunningProcesses_v3"
                                                                 : "nvmlDeviceGetComputeRunningProcesses";
}

Result<std::vector<GpuProcess>> NvmlProcesses::list() {
  if (functions_ == nullptr) return Error{"NVML is not open"};
  const Functions& fns = *functions_;
  unsigned int device_count = 0;
  if (const nvml::Return status = fns.get_count(&device_count); status != nvml::kSuccess) {
    return Error{fmt::format("nvmlDeviceGetCount_v2: {}", fns.status_text(status))};
  }
  std::vector<GpuProcess> processes;
  for (unsigned int index = 0; index < device_count; ++index) {
    nvml::Device device = nullptr;
    if (const nvml::Return status = fns.get_handle(index, &device); status != nvml::kSuccess) {
      return Error{fmt::format("GPU {}: nvmlDeviceGetHandleByIndex_v2: {}", index, fns.status_text(status))};
    }
    char uuid[nvml::kUuidBufferSize] = {};
    if (const nvml::Return status = fns.get_uuid(device, uuid, sizeof uuid); status != nvml::kSuccess) {
      return Error{fmt::format("GPU {}: nvmlDeviceGetUUID: {}", index, fns.status_text(status))};
    }
    uuid[sizeof uuid - 1] = '\0';
    const std::string gpu_uuid(uuid);
    if (fns.list_v3 != nullptr) {
      auto records = read_records<nvml::ProcessInfo>(fns.list_v3, device, fns.error_string);
      if (!records)
        return Error{fmt::format("GPU {} ({}): {}: {}", index, gpu_uuid, listing_function(), records.error().message)};
      append_processes(*records, gpu_uuid, processes);
    } else {
      auto records = read_records<nvml::ProcessInfoV1>(fns.list_v1, device, fns.error_string);
      if (!records)
        return Error{fmt::format("GPU {} ({}): {}: {}", index, gpu_uuid, listing_function(), records.error().message)};
      append_processes(*records, gpu_uuid, processes);
    }
  }
  return processes;
}

// ---- The comparison --------------------------------------------------------------------------

std::vector<Unaccounted> find_unaccounted(const std::vector<GpuProcess>& seen, const Accounted& accounted,
                                          std::uint64_t context_allowance_bytes) {
  // One use per (GPU, pid); nullopt once any of its entries is unknown.
  std::map<std::pair<std::string, pid_t>, std::optional<std::uint64_t>> uses;
  for (const GpuProcess& process : seen) {
    auto [it, inserted] = uses.try_emplace({process.gpu_uuid, process.pid}, process.used_bytes);
    if (inserted) continue;
    if (!it->second || !process.used_bytes) {
      it->second.reset();
    } else {
      it->second = *it->second + std::min(*process.used_bytes, UINT64_MAX - *it->second);
    }
  }
  std::vector<Unaccounted> findings;
  for (const auto& [key, used] : uses) {
    const auto& [gpu_uuid, pid] = key;
    Unaccounted finding{pid, gpu_uuid, used, 0, used, false};
    if (auto process = accounted.find(pid); process != accounted.end()) {
      finding.known_to_agent = true;
      if (auto gpu = process->second.find(gpu_uuid); gpu != process->second.end())
        finding.accounted_bytes = gpu->second;
      if (!used) continue;
      const std::uint64_t allowed =
          finding.accounted_bytes + std::min(context_allowance_bytes, UINT64_MAX - finding.accounted_bytes);
      if (*used <= allowed) continue;
      finding.unaccounted_bytes = *used - allowed;
    }
    findings.push_back(std::move(finding));
  }
  return findings;
}

std::string cgroup_for_report(pid_t pid) {
  auto cgroup = read_cgroup(pid);
  return cgroup ? std::move(cgroup).value() : std::string();
}

// ---- Enforcement -----------------------------------------------------------------------------

EscapeEnforcer::~EscapeEnforcer() {
  for (auto& [key, entry] : entries_) close_pidfd(entry.pidfd);
}

std::vector<EscapeEvent> EscapeEnforcer::round(const std::vector<Unaccounted>& findings,
                                               std::chrono::steady_clock::time_point now) {
  std::vector<EscapeEvent> events;
  // Entries whose process exited, or whose finding is gone, are forgotten first, so a new process
  // reusing a pid gets an entry of its own below.
  std::map<Key, const Unaccounted*> current;
  for (const Unaccounted& finding : findings) current[{finding.gpu_uuid, finding.pid}] = &finding;
  for (auto it = entries_.begin(); it != entries_.end();) {
    Entry& entry = it->second;
    const TrackedEscape& state = entry.state;
    const bool exited = entry.pidfd >= 0 && pidfd_exited(entry.pidfd);
    if (exited || current.count(it->first) == 0) {
      events.push_back({exited ? EscapeEvent::Kind::kGone : EscapeEvent::Kind::kResolved, state.finding.pid,
                        state.finding.gpu_uuid,
                        fmt::format("pid {} on {}: {}", state.finding.pid, state.finding.gpu_uuid,
                                    exited ? "its process exited" : "no longer unaccounted")});
      close_pidfd(entry.pidfd);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [key, finding] : current) {
    auto it = entries_.find(key);
    if (it == entries_.end()) {
      const int pidfd = pidfd_open(finding->pid);
      if (pidfd < 0 && errno == ESRCH) {
        events.push_back(
            {EscapeEvent::Kind::kGone, finding->pid, finding->gpu_uuid,
             fmt::format("pid {} on {}: listed by NVML, already exited", finding->pid, finding->gpu_uuid)});
        continue;
      }
      const int open_errno = errno;
      Entry entry{{*finding, cgroup_for_report(finding->pid), now, false}, pidfd, 1};
      // Read after the pidfd is held: still alive then, the cgroup is that process's.
      if (pidfd >= 0 && pidfd_exited(pidfd)) entry.state.cgroup.clear();
      std::string line = describe_process(entry.state);
      if (pidfd < 0) {
        line +=
            fmt::format("; it cannot be followed (pidfd_open: {}) and will not be killed", std::strerror(open_errno));
        events.push_back({EscapeEvent::Kind::kUntrackable, finding->pid, finding->gpu_uuid, std::move(line)});
      } else {
        line += config_.enforce == EnforcementConfig::Enforce::kKill
                    ? fmt::format("; it will be killed if this still holds in {}", describe_grace(config_.grace))
                    : std::string("; report only");
        events.push_back({EscapeEvent::Kind::kFound, finding->pid, finding->gpu_uuid, std::move(line)});
      }
      entries_.emplace(key, std::move(entry));
      continue;
    }
    Entry& entry = it->second;
    entry.state.finding = *finding;
    ++entry.rounds_seen;
    if (entry.pidfd < 0) {
      // Followed from the round its pidfd opens: only a process held from then on may be killed.
      entry.pidfd = pidfd_open(finding->pid);
      if (entry.pidfd >= 0) {
        entry.state.first_seen = now;
        entry.rounds_seen = 1;
      }
      continue;
    }
    if (config_.enforce == EnforcementConfig::Enforce::kKill && !entry.state.kill_sent && entry.rounds_seen >= 2 &&
        now - entry.state.first_seen >= config_.grace) {
      events.push_back(enforce(entry, now));
    }
  }
  return events;
}

EscapeEvent EscapeEnforcer::enforce(Entry& entry, std::chrono::steady_clock::time_point now) {
  const Unaccounted& finding = entry.state.finding;
  const std::string held_for = describe_grace(now - entry.state.first_seen);
  if (pidfd_kill(entry.pidfd)) {
    entry.state.kill_sent = true;
    return {EscapeEvent::Kind::kKilled, finding.pid, finding.gpu_uuid,
            fmt::format("{}; unaccounted for {}: killed (SIGKILL)", describe_process(entry.state), held_for)};
  }
  const int kill_errno = errno;
  return {EscapeEvent::Kind::kKillFailed, finding.pid, finding.gpu_uuid,
          fmt::format("{}; unaccounted for {}: SIGKILL failed: {}", describe_process(entry.state), held_for,
                      std::strerror(kill_errno))};
}

std::vector<TrackedEscape> EscapeEnforcer::tracked() const {
  std::vector<TrackedEscape> out;
  out.reserve(entries_.size());
  for (const auto& [key, entry] : entries_) out.push_back(entry.state);
  return out;
}

}  // namespace gpushare::agent
