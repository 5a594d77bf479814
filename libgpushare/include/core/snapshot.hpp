// A consistent-enough copy of every live tenant, its ledgers and its processes, for display
// (report.hpp), the NVML shadow and tests. Each counter is read atomically; no lock is taken, so
// looking never slows a tenant down.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/compute_policy.hpp"
#include "core/registry.hpp"
#include "core/shared_state.hpp"

namespace gpushare {

struct LedgerSnapshot {
  std::uint32_t gpu = 0;
  GpuUuid uuid{};
  std::string gpu_name;
  std::uint64_t physical_bytes = 0;
  std::uint64_t limit_bytes = 0;
  std::uint64_t used_bytes = 0;
  std::uint64_t peak_bytes = 0;
  std::uint64_t oom_refusals = 0;
  std::uint64_t gpu_ns = 0;      // GPU time charged
  std::uint64_t launches = 0;
  std::uint64_t wait_ns = 0;
  std::uint64_t peer_wait_ns = 0;  // of wait_ns: while the tenant held another GPU
};
struct ProcessSnapshot {
  std::uint32_t slot = 0;
  std::uint64_t pid = 0;  // in the owner's PID namespace
  std::uint64_t started_unix_ns = 0;
  bool alive = false;
  std::array<std::uint64_t, layout::kMaxGpus> held_bytes{};
};
struct TenantSnapshot {
  std::uint32_t index = 0;
  std::string name;
  std::optional<std::uint64_t> override_limit_bytes;
  ComputePolicyValues compute;
  std::vector<LedgerSnapshot> gpus;  // the GPUs this tenant has used
  std::vector<ProcessSnapshot> processes;
};
std::vector<TenantSnapshot> snapshot_tenants(SharedState& state);

}  // namespace gpushare
