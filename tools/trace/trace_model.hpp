// A trace directory read once, in one streaming pass: who each file's process is, the GPUs (by
// UUID, since ordinals differ between processes), gpushare's events, waits, request ranges and
// notes, and, when asked, every kernel's interval per GPU and tenant (16 bytes each; the lines
// themselves are never kept). `gpushare trace merge` reads kernels in a second pass instead.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "trace_analysis.hpp"
#include "trace_format.hpp"

namespace gpushare::trace {

struct TraceFile {
  std::string tenant;
  std::int64_t pid = 0;
  std::map<int, std::string> uuid_of_gpu;  // the process's ordinal -> UUID
  std::string first_gpu_uuid;              // where its ranges and notes are shown
};

struct GpuTrace {
  std::string uuid;
  int id = 0;  // the ordinal its first process saw
  std::string name;
  std::int64_t first = std::numeric_limits<std::int64_t>::max();
  std::int64_t last = std::numeric_limits<std::int64_t>::min();
  std::vector<GpushareEvent> events;  // sorted by time once loaded
  std::vector<Interval> waits;        // wait_begun -> wait_ended, any process
};

// One tenant's activity on one GPU.
struct TenantActivity {
  std::int64_t first = std::numeric_limits<std::int64_t>::max();
  std::int64_t last = std::numeric_limits<std::int64_t>::min();
  std::size_t kernel_count = 0;
  std::vector<Interval> kernels;   // only when loaded with kernels
  std::vector<Interval> requests;  // range records
  std::vector<std::pair<std::int64_t, std::string>> notes;
};

using GpuTenant = std::pair<std::string, std::string>;  // (GPU UUID, tenant)

struct TraceModel {
  std::vector<std::filesystem::path> paths;
  std::vector<TraceFile> files;
  std::map<std::string, GpuTrace> gpus;  // by UUID
  std::map<GpuTenant, TenantActivity> activity;
  std::int64_t origin = 0;  // the earliest time in the trace

  // The GPUs in output order: by ordinal, then UUID.
  std::vector<const GpuTrace*> ordered_gpus() const;
  // Every tenant, sorted by name.
  std::vector<std::string> tenants() const;
};

enum class KernelIntervals { kSkip, kKeep };
Result<TraceModel> load_trace(const std::vector<std::filesystem::path>& paths, KernelIntervals kernels,
                              const NoteSink& note);

}  // namespace gpushare::trace
