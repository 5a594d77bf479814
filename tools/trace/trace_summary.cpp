// The figures of `gpushare trace summary` and their two renderings.
#include "trace_summary.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace gpushare::trace {

std::vector<GpuSummary> summarize(const TraceModel& model) {
  std::vector<GpuSummary> summaries;
  for (const GpuTrace* gpu : model.ordered_gpus()) {
    GpuSummary summary;
    summary.id = gpu->id;
    summary.uuid = gpu->uuid;
    summary.name = gpu->name;
    std::vector<Interval> gpu_busy;
    const auto first_of_gpu = model.activity.lower_bound({gpu->uuid, std::string()});
    for (auto it = first_of_gpu; it != model.activity.end() && it->first.first == gpu->uuid; ++it) {
      const TenantActivity& activity = it->second;
      const std::vector<Interval> busy = union_of(activity.kernels);
      gpu_busy = union_of_sorted(gpu_busy, busy);
      TenantSummary tenant;
      tenant.tenant = it->first.second;
      tenant.kernels = activity.kernel_count;
      tenant.busy_ns = total_length(busy);
      tenant.wall_ns = activity.last >= activity.first ? activity.last - activity.first : 0;
      if (!activity.requests.empty()) {
        std::vector<std::int64_t> latencies;
        latencies.reserve(activity.requests.size());
        for (const Interval& range : activity.requests) latencies.push_back(range.end - range.start);
        std::sort(latencies.begin(), latencies.end());
        tenant.requests = RequestLatencies{.count = latencies.size(),
                                           .p50 = percentile(latencies, 50),
                                           .p90 = percentile(latencies, 90),
                                           .p99 = percentile(latencies, 99),
                                           .max = latencies.back()};
      }
      summary.tenants.push_back(std::move(tenant));
    }
    summary.busy_ns = total_length(gpu_busy);
    for (TenantSummary& tenant : summary.tenants) {
      tenant.share_percent =
          summary.busy_ns > 0 ? 100.0 * static_cast<double>(tenant.busy_ns) / static_cast<double>(summary.busy_ns) : 0;
    }
    summary.wall_ns = gpu->last >= gpu->first ? gpu->last - gpu->first : 0;
    for (const Interval& gap : uncovered_parts(union_of(gpu->waits), gpu_busy)) {
      summary.idle_at_handovers.total_ns += gap.end - gap.start;
      ++summary.idle_at_handovers.count;
      summary.idle_at_handovers.longest_ns = std::max(summary.idle_at_handovers.longest_ns, gap.end - gap.start);
    }
    summaries.push_back(std::move(summary));
  }
  return summaries;
}

namespace {

// Nanoseconds in the unit a person reads best: ns, µs, ms or s.
std::string readable_duration(std::int64_t ns) {
  if (ns < 1'000) return fmt::format("{}ns", ns);
  if (ns < 1'000'000) return fmt::format("{:.1f}us", static_cast<double>(ns) / 1e3);
  if (ns < 1'000'000'000) return fmt::format("{:.1f}ms", static_cast<double>(ns) / 1e6);
  return fmt::format("{:.3f}s", static_cast<double>(ns) / 1e9);
}

}  // namespace

std::string render_summary(const std::vector<GpuSummary>& gpus) {
  std::string out;
  for (const GpuSummary& gpu : gpus) {
    out += fmt::format("GPU {} {}{}{}: busy {} of {} wall; idle at handovers {} in {} gaps (longest {})\n", gpu.id,
                       gpu.uuid, gpu.name.empty() ? "" : " ", gpu.name, readable_duration(gpu.busy_ns),
                       readable_duration(gpu.wall_ns), readable_duration(gpu.idle_at_handovers.total_ns),
                       gpu.idle_at_handovers.count, readable_duration(gpu.idle_at_handovers.longest_ns));
    out += fmt::format("  {:<20} {:>8} {:>10} {:>6} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}\n", "TENANT", "KERNELS",
                       "BUSY", "SHARE", "WALL", "REQUESTS", "P50", "P90", "P99", "MAX");
    for (const TenantSummary& tenant : gpu.tenants) {
      const RequestLatencies* requests = tenant.requests ? &*tenant.requests : nullptr;
      const auto latency = [&](std::int64_t RequestLatencies::*field) {
        return requests != nullptr ? readable_duration(requests->*field) : std::string("-");
      };
      out += fmt::format("  {:<20} {:>8} {:>10} {:>5.1f}% {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}\n", tenant.tenant,
                         tenant.kernels, readable_duration(tenant.busy_ns), tenant.share_percent,
                         readable_duration(tenant.wall_ns),
                         requests != nullptr ? fmt::format("{}", requests->count) : std::string("-"),
                         latency(&RequestLatencies::p50), latency(&RequestLatencies::p90),
                         latency(&RequestLatencies::p99), latency(&RequestLatencies::max));
    }
  }
  return out;
}

std::string summary_to_json(const std::vector<GpuSummary>& gpus) {
  nlohmann::json out{{"gpus", nlohmann::json::array()}};
  for (const GpuSummary& gpu : gpus) {
    nlohmann::json tenants = nlohmann::json::array();
    for (const TenantSummary& tenant : gpu.tenants) {
      nlohmann::json entry{{"tenant", tenant.tenant},   {"kernels", tenant.kernels},
                           {"busy_ns", tenant.busy_ns}, {"share_percent", tenant.share_percent},
                           {"wall_ns", tenant.wall_ns}, {"requests", nullptr}};
      if (tenant.requests) {
        entry["requests"] = {{"count", tenant.requests->count}, {"p50_ns", tenant.requests->p50},
                             {"p90_ns", tenant.requests->p90},  {"p99_ns", tenant.requests->p99},
                             {"max_ns", tenant.requests->max}};
      }
      tenants.push_back(std::move(entry));
    }
    out["gpus"].push_back({{"id", gpu.id},
                           {"uuid", gpu.uuid},
                           {"name", gpu.name},
                           {"busy_ns", gpu.busy_ns},
                           {"wall_ns", gpu.wall_ns},
                           {"idle_at_handovers",
                            {{"total_ns", gpu.idle_at_handovers.total_ns},
                             {"count", gpu.idle_at_handovers.count},
                             {"longest_ns", gpu.idle_at_handovers.longest_ns}}},
                           {"tenants", std::move(tenants)}});
  }
  return out.dump(2) + "\n";
}

}  // namespace gpushare::trace
