// What `gpushare status`, `gpushare top` and the Prometheus exporter show: one read of the shared
// state, organised per GPU (its JSON form: core/report_json.hpp).
//
// Building a report only reads the state (and probes liveness locks, which it releases at once):
// it never takes the ledger or schedule mutexes, so watching never slows a running tenant.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/compute_policy.hpp"
#include "core/snapshot.hpp"
#include "core/shared_state.hpp"

namespace gpushare {

struct ProcessUse {
  std::uint32_t slot = 0;  // identifies the process (PIDs repeat across containers)
  std::uint64_t pid = 0;   // in the process's own PID namespace
  bool alive = false;
  std::uint64_t held_bytes = 0;
};

// One tenant on one GPU.
struct TenantOnGpu {
  std::string tenant;
  bool live = false;  // has at least one live process
  std::uint64_t memory_used_bytes = 0;
  std::uint64_t memory_limit_bytes = 0;  // kUnlimited when there is no quota
  std::uint64_t memory_peak_bytes = 0;
  std::uint64_t oom_refusals = 0;
  // GPU time charged so far, the current slice included up to the holder's last observed launch.
  std::uint64_t gpu_ns = 0;
  std::uint64_t launches = 0;
  std::uint64_t wait_ns = 0;  // time its processes spent waiting for a slice
  // Of wait_ns: waited while the tenant held another GPU (a gang's ranks spinning for this one).
  std::uint64_t peer_wait_ns = 0;
  bool holds_slice = false;
  std::vector<ProcessUse> processes;  // the tenant's processes with bytes on this GPU
  // A gang (core/gang.hpp) when the report was taken: the state-file GPU indices the tenant holds
  // or waits for, ascending, when they are two or more; empty otherwise.
  std::vector<std::uint32_t> gang_gpus;
  // The gang's anchor, its lowest GPU (where it is scheduled like any tenant); none when no gang.
  std::optional<std::uint32_t> anchor;
};

struct GpuReport {
  std::uint32_t index = 0;  // in the state file (not a CUDA ordinal: those differ per container)
  GpuUuid uuid{};
  std::string name;
  std::uint64_t memory_total_bytes = 0;
  std::optional<std::string> slice_holder;  // tenant holding the time slice, if any
  std::vector<TenantOnGpu> tenants;
};

struct ProcessReport {
  std::uint32_t slot = 0;
  std::uint64_t pid = 0;
  std::uint64_t started_unix_ns = 0;
  bool alive = false;  // false: died without leaving; its bytes go back at the next sweep
};

struct TenantReport {
  std::string name;
  bool live = false;
  ComputePolicyValues compute;
  std::optional<std::uint64_t> memory_limit_override_bytes;  // set by `gpushare quota set` (kUnlimited: none)
  std::vector<ProcessReport> processes;
};

// A GPU process the agent's escape watch found unaccounted (docs/escaped-processes.md): not
// connected to the agent, or using more than its ledger plus the context allowance.
struct UnaccountedReport {
  std::uint64_t pid = 0;  // in the agent's (the root) PID namespace
  std::string gpu_uuid;   // as NVML names the GPU
  std::optional<std::uint64_t> used_bytes;         // nullopt: NVML cannot tell
  std::uint64_t accounted_bytes = 0;
  std::optional<std::uint64_t> unaccounted_bytes;  // nullopt: unknown
  bool known_to_agent = false;
  bool kill_sent = false;
  std::uint64_t first_seen_unix_ns = 0;
  std::string cgroup;  // "" when unknown
};

struct Report {
  std::string state_path;
  std::uint64_t time_unix_ns = 0;
  std::uint64_t monotonic_ns = 0;  // when it was taken, for rates between two reports
  std::vector<GpuReport> gpus;
  std::vector<TenantReport> tenants;
  std::vector<UnaccountedReport> unaccounted;  // the agent's last round; empty without an agent
  std::uint32_t unaccounted_omitted = 0;       // findings of that round the table had no room for
};

Report build_report(SharedState& state);

}  // namespace gpushare
