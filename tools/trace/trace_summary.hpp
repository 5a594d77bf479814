// `gpushare trace summary`: per GPU and tenant, GPU busy time from kernel timestamps (overlaps
// counted once), shares of the GPU's busy time, wall spans, idle gaps at handovers and request
// latency percentiles. Built from a TraceModel loaded with kernel intervals.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "trace_model.hpp"

namespace gpushare::trace {

struct RequestLatencies {
  std::size_t count = 0;
  std::int64_t p50 = 0, p90 = 0, p99 = 0, max = 0;  // nanoseconds
};

struct TenantSummary {
  std::string tenant;
  std::size_t kernels = 0;
  std::int64_t busy_ns = 0;
  double share_percent = 0;  // of the GPU's busy time
  std::int64_t wall_ns = 0;  // first to last record on this GPU
  std::optional<RequestLatencies> requests;
};

// Time when no kernel of anyone ran while some process waited for the GPU.
struct IdleGaps {
  std::int64_t total_ns = 0;
  std::size_t count = 0;
  std::int64_t longest_ns = 0;
};

struct GpuSummary {
  int id = 0;
  std::string uuid;
  std::string name;
  std::int64_t busy_ns = 0;
  std::int64_t wall_ns = 0;
  IdleGaps idle_at_handovers;
  std::vector<TenantSummary> tenants;  // by name
};

std::vector<GpuSummary> summarize(const TraceModel& model);
std::string render_summary(const std::vector<GpuSummary>& gpus);
std::string summary_to_json(const std::vector<GpuSummary>& gpus);

}  // namespace gpushare::trace
