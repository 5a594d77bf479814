// GPU processes that escaped the interposer: ones that run without the preload library (no
// LD_PRELOAD, a static binary, raw ioctls) and so never reach the ledger. No process can be stopped
// from inside itself, so the agent looks from outside: every few seconds it lists the processes
// NVML sees on each GPU, compares their memory with what the ledger accounts for the processes
// connected to it, and reports (and under `--enforce kill`, ends) the difference.
//
//   NvmlProcesses::list()  -> what the driver says each process holds on each GPU
//   find_unaccounted()     -> pure: the processes the agent does not know, or that use more than
//                             their ledger plus a CUDA context's allowance (the ledger never sees
//                             the context)
//   EscapeEnforcer::round() -> remembers since when each finding stands, kills after the grace
//                             through a pidfd held since the finding was first seen
//
// PIDs are the agent's: NVML reports them in the root PID namespace, so the agent must run there.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/result.hpp"

namespace gpushare::agent {

// What a CUDA context costs on top of a process's allocations (code, stacks, printf and malloc
// heaps): the ledger never sees it. The agent's --context-allowance, per process and GPU.
inline constexpr std::uint64_t kDefaultContextAllowanceBytes = std::uint64_t{1} << 30;

struct GpuProcess {
  pid_t pid = 0;
  std::string gpu_uuid;                     // "GPU-…", as nvidia-smi names the card
  std::optional<std::uint64_t> used_bytes;  // nullopt: NVML cannot tell (NVML_VALUE_NOT_AVAILABLE)
};

// The processes NVML lists on every GPU, read through libnvidia-ml.so.1 loaded at run time (the
// agent must start on a host without it, and never links it). Not thread-safe; movable.
class NvmlProcesses {
 public:
  // Loads `library` (a name dlopen searches for, or a path) and initializes NVML; an Error saying
  // which when the library, a function or the initialization is missing.
  static Result<NvmlProcesses> open(const std::string& library = "libnvidia-ml.so.1");

  NvmlProcesses(NvmlProcesses&& other) noexcept;
  NvmlProcesses& operator=(NvmlProcesses&& other) noexcept;
  NvmlProcesses(const NvmlProcesses&) = delete;
  NvmlProcesses& operator=(const NvmlProcesses&) = delete;
  ~NvmlProcesses();  // nvmlShutdown, then the library is closed

  // Every compute process on every GPU, one entry per process and GPU. An Error naming the GPU and
  // NVML's status when any GPU cannot be read: a partial list would hide escapes.
  Result<std::vector<GpuProcess>> list();

  // Which listing function was found: "nvmlDeviceGetComputeRunningProcesses_v3" or the old name.
  [[nodiscard]] const char* listing_function() const;

 private:
  struct Functions;
  NvmlProcesses(void* library, std::unique_ptr<Functions> functions);
  void release();

  void* library_ = nullptr;
  std::unique_ptr<Functions> functions_;
};

// The ledger's word on the processes connected to the agent: pid -> GPU UUID -> accounted bytes.
// A pid present with no entry for a GPU accounts nothing there.
using Accounted = std::map<pid_t, std::map<std::string, std::uint64_t, std::less<>>>;

struct Unaccounted {
  pid_t pid = 0;
  std::string gpu_uuid;
  std::optional<std::uint64_t> used_bytes;  // NVML's figure; nullopt when it cannot tell
  std::uint64_t accounted_bytes = 0;        // the ledger's (0 for a process the agent does not know)
  // Unknown process: all it uses; known one: what it uses beyond its ledger and the allowance.
  // nullopt when the use is unknown (only for a process the agent does not know).
  std::optional<std::uint64_t> unaccounted_bytes;
  bool known_to_agent = false;

  friend bool operator==(const Unaccounted&, const Unaccounted&) = default;
};

// Pure. Every process in `seen` that `accounted` does not know, whatever its use (an unknown use
// included), and every known one whose use exceeds its ledger on that GPU plus
// `context_allowance_bytes` (a known process whose use NVML cannot tell is not reported: nothing
// shows it over). Entries of one pid on one GPU are added up first. Sorted by GPU, then pid.
std::vector<Unaccounted> find_unaccounted(const std::vector<GpuProcess>& seen, const Accounted& accounted,
                                          std::uint64_t context_allowance_bytes);

// The cgroup of `pid` for a report line or a metric label: read_cgroup's path (identity.hpp), or
// "" when it cannot be read (the process is gone, or /proc hides it).
std::string cgroup_for_report(pid_t pid);

struct EnforcementConfig {
  enum class Enforce { kReport, kKill };
  Enforce enforce = Enforce::kReport;
  // How long a finding must stand before its process is killed (kKill only).
  std::chrono::nanoseconds grace = std::chrono::seconds(30);
};

// What a round did, one per finding that changed, with the line to log.
struct EscapeEvent {
  enum class Kind {
    kFound,        // first seen (the line says when it will be killed, under kKill)
    kKilled,       // SIGKILL sent through the pidfd
    kKillFailed,   // the signal could not be sent (the line says why); tried again next round
    kGone,         // its process exited: forgotten
    kResolved,     // no longer unaccounted, its process still running: forgotten
    kUntrackable,  // no pidfd could be opened: reported each round, never killed
  };
  Kind kind;
  pid_t pid;
  std::string gpu_uuid;
  std::string log_line;
};

// A finding the enforcer follows, for the status report and the metric
// gpushare_unaccounted_memory_bytes{pid,cgroup,gpu_uuid}.
struct TrackedEscape {
  Unaccounted finding;  // as of the latest round
  std::string cgroup;   // read when first seen; "" when unknown
  std::chrono::steady_clock::time_point first_seen;
  bool kill_sent = false;
};

// Follows findings from round to round, keyed by (pid, GPU). Each process is held through a pidfd
// opened when it is first seen, so a later process reusing the pid is never the one signalled: when
// the held process exits its entry goes, and a new finding for the pid opens a new entry. A kill
// happens, at the earliest, in the second round listing the finding, once `grace` has passed since
// the first: the listing that condemns the process was then taken while its pidfd was held and it
// was alive, so it described that very process. The clock is the caller's (`now`).
class EscapeEnforcer {
 public:
  explicit EscapeEnforcer(EnforcementConfig config) : config_(config) {}
  EscapeEnforcer(const EscapeEnforcer&) = delete;
  EscapeEnforcer& operator=(const EscapeEnforcer&) = delete;
  ~EscapeEnforcer();  // closes the pidfds; kills nothing

  // One round with this round's findings (find_unaccounted's result, fresh from NVML).
  std::vector<EscapeEvent> round(const std::vector<Unaccounted>& findings, std::chrono::steady_clock::time_point now);

  // The findings followed now, by GPU then pid.
  [[nodiscard]] std::vector<TrackedEscape> tracked() const;

 private:
  struct Entry {
    TrackedEscape state;
    int pidfd = -1;  // -1: untrackable
    int rounds_seen = 0;
  };
  using Key = std::pair<std::string, pid_t>;  // (GPU UUID, pid)

  EscapeEvent enforce(Entry& entry, std::chrono::steady_clock::time_point now);

  EnforcementConfig config_;
  std::map<Key, Entry> entries_;
};

}  // namespace gpushare::agent
