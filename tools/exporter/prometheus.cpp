#include "prometheus.hpp"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "core/size.hpp"

namespace gpushare::exporter {
namespace {

struct Family {
  std::string_view name;
  std::string_view type;  // gauge or counter
  std::string_view help;  // no backslash or line feed, which HELP text would have to escape
};

using Label = std::pair<std::string_view, std::string_view>;

// The text of one scrape. The format wants every sample of a family together, right after the
// family's HELP and TYPE lines, so callers write one family whole before beginning the next.
class Exposition {
 public:
  void begin(const Family& family) {
    family_ = family.name;
    text_ += fmt::format("# HELP {0} {1}\n# TYPE {0} {2}\n", family.name, family.help, family.type);
  }
  void sample(std::initializer_list<Label> labels, std::string_view value) {
    sample(std::span<const Label>(labels.begin(), labels.size()), value);
  }
  void sample(std::span<const Label> labels, std::string_view value) {
    text_ += family_;
    if (!labels.empty()) {
      char separator = '{';
      for (const auto& [name, label_value] : labels) {
        text_ += fmt::format("{}{}=\"{}\"", separator, name, escape_label_value(label_value));
        separator = ',';
      }
      text_ += '}';
    }
    text_ += fmt::format(" {}\n", value);
  }
  void comment(std::string_view text) { text_ += render_comment(text); }
  std::string take() { return std::move(text_); }

 private:
  std::string text_;
  std::string_view family_;
};

std::string integer(std::uint64_t value) { return std::to_string(value); }
// Shortest text that reads back as the same double: 0.3, not 0.300000.
std::string number(double value) { return fmt::format("{}", value); }
std::string seconds(std::uint64_t ns) { return number(static_cast<double>(ns) / 1e9); }
// Percentages of the state are ratios here, as Prometheus conventions want; 0 means "not set".
std::optional<std::string> ratio_if_set(std::uint32_t percent) {
  if (percent == 0) return std::nullopt;
  return number(percent / 100.0);
}

constexpr Family kBuildInfo{"gpushare_exporter_build_info", "gauge",
                            "Always 1; the version label is the gpushare release serving these metrics."};
constexpr Family kUp{"gpushare_up", "gauge",
                     "1 when this scrape could read the shared state, 0 when there is none yet or it cannot be "
                     "opened."};
constexpr Family kGpuInfo{"gpushare_gpu_info", "gauge", "Always 1; one sample per GPU in the shared state."};
constexpr Family kGpuMemoryTotal{"gpushare_gpu_memory_total_bytes", "gauge", "Physical memory of the GPU in bytes."};

// A figure of one tenant on one GPU; no value, no sample.
struct TenantOnGpuMetric {
  Family family;
  std::optional<std::string> (*value)(const TenantOnGpu&);
};

const TenantOnGpuMetric kTenantOnGpuMetrics[] = {
    {{"gpushare_tenant_memory_used_bytes", "gauge",
      "Device memory the tenant's processes hold on the GPU, in bytes (what counts against its quota)."},
     [](const TenantOnGpu& use) -> std::optional<std::string> { return integer(use.memory_used_bytes); }},
    {{"gpushare_tenant_memory_limit_bytes", "gauge",
      "The tenant's memory quota on the GPU in bytes; no sample when it has no quota."},
     [](const TenantOnGpu& use) -> std::optional<std::string> {
       if (use.memory_limit_bytes == kUnlimited) return std::nullopt;
       return integer(use.memory_limit_bytes);
     }},
    {{"gpushare_tenant_memory_peak_bytes", "gauge",
      "Most device memory the tenant has held on the GPU at once, in bytes."},
     [](const TenantOnGpu& use) -> std::optional<std::string> { return integer(use.memory_peak_bytes); }},
    {{"gpushare_tenant_oom_refusals_total", "counter",
      "Allocations refused because they would have exceeded the tenant's quota."},
     [](const TenantOnGpu& use) -> std::optional<std::string> { return integer(use.oom_refusals); }},
    {{"gpushare_tenant_gpu_seconds_total", "counter",
      "GPU time charged to the tenant (time slices it held), in seconds."},
     [](const TenantOnGpu& use) -> std::optional<std::string> { return seconds(use.gpu_ns); }},
    {{"gpushare_tenant_launches_total", "counter", "Kernel and graph launches by the tenant's processes."},
     [](const TenantOnGpu& use) -> std::optional<std::string> { return integer(use.launches); }},
    {{"gpushare_tenant_wait_seconds_total", "counter",
      "Time the tenant's processes spent waiting for a time slice, in seconds."},
     [](const TenantOnGpu& use) -> std::optional<std::string> { return seconds(use.wait_ns); }},
    {{"gpushare_tenant_peer_wait_seconds_total", "counter",
      "Of the tenant's wait for a time slice on the GPU, the time it already held another GPU, in seconds: "
      "for a job across GPUs (a gang), time its ranks there likely spun in collectives waiting for this one."},
     [](const TenantOnGpu& use) -> std::optional<std::string> { return seconds(use.peer_wait_ns); }},
    {{"gpushare_tenant_holds_slice", "gauge", "1 while the tenant holds the GPU's time slice, else 0."},
     [](const TenantOnGpu& use) -> std::optional<std::string> { return integer(use.holds_slice ? 1 : 0); }},
};

std::uint64_t processes(const TenantReport& tenant, bool alive) {
  return static_cast<std::uint64_t>(std::count_if(tenant.processes.begin(), tenant.processes.end(),
                                                  [alive](const ProcessReport& p) { return p.alive == alive; }));
}

// A figure of a tenant as a whole: its processes and its compute policy apply on every GPU.
struct TenantMetric {
  Family family;
  std::optional<std::string> (*value)(const TenantReport&);
};

const TenantMetric kTenantMetrics[] = {
    {{"gpushare_tenant_live_processes", "gauge", "Processes of the tenant that are alive."},
     [](const TenantReport& tenant) -> std::optional<std::string> { return integer(processes(tenant, true)); }},
    {{"gpushare_tenant_dead_processes", "gauge",
      "Processes of the tenant that died without leaving; their bytes still count in memory_used until the "
      "next sweep (a process joining, an allocation about to be refused, gpushare status)."},
     [](const TenantReport& tenant) -> std::optional<std::string> { return integer(processes(tenant, false)); }},
    {{"gpushare_tenant_compute_share_ratio", "gauge",
      "The tenant's weight of GPU time while others want the GPU, 0-1; no sample when none was given (an "
      "equal part of what the given shares leave)."},
     [](const TenantReport& tenant) { return ratio_if_set(tenant.compute.share_pct); }},
    {{"gpushare_tenant_compute_limit_ratio", "gauge",
      "The tenant's hard cap on GPU time as a fraction of wall time, 0-1; no sample when it has no cap."},
     [](const TenantReport& tenant) { return ratio_if_set(tenant.compute.limit_pct); }},
};

constexpr Family kTenantInfo{"gpushare_tenant_info", "gauge",
                             "Always 1; the priority label is the tenant's scheduling class (high, normal or low)."};

constexpr Family kUnaccountedMemory{
    "gpushare_unaccounted_memory_bytes", "gauge",
    "Device memory a GPU process uses that the ledger does not account (isolation mode: the agent's escape watch, "
    "through NVML): all its memory when it is not connected to the agent, else what exceeds its ledger and the "
    "context allowance. One sample per finding whose size NVML can tell."};

// The labels of one of `tenant`'s samples: `before` (its GPU), the tenant, where it runs as far as
// known, then `after`. Views only: they point at what the arguments point at.
std::vector<Label> tenant_labels(std::initializer_list<Label> before, std::string_view tenant,
                                 const PodLabelsByTenant& pods, std::initializer_list<Label> after = {}) {
  std::vector<Label> labels(before);
  labels.emplace_back("tenant", tenant);
  if (const auto found = pods.find(tenant); found != pods.end()) {
    const PodLabels& pod = found->second;
    for (const Label& known :
         {Label{"namespace", pod.namespace_name}, Label{"pod", pod.pod}, Label{"container", pod.container}}) {
      if (!known.second.empty()) labels.push_back(known);
    }
  }
  labels.insert(labels.end(), after);
  return labels;
}

void write_exporter_metrics(Exposition& text, bool up) {
  text.begin(kBuildInfo);
  text.sample({{"version", GPUSHARE_VERSION}}, "1");
  text.begin(kUp);
  text.sample({}, up ? "1" : "0");
}

}  // namespace

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string render_comment(std::string_view text) {
  std::string line(text);
  std::replace(line.begin(), line.end(), '\n', ' ');
  return fmt::format("# {}\n", line);
}

std::string render_prometheus(const Report& report, const PodLabelsByTenant& pods) {
  Exposition text;
  write_exporter_metrics(text, true);

  std::vector<std::string> uuids;
  for (const GpuReport& gpu : report.gpus) uuids.push_back(format_gpu_uuid(gpu.uuid));

  text.begin(kGpuInfo);
  for (std::size_t g = 0; g < report.gpus.size(); ++g) {
    text.sample({{"gpu_uuid", uuids[g]}, {"name", report.gpus[g].name}}, "1");
  }
  text.begin(kGpuMemoryTotal);
  for (std::size_t g = 0; g < report.gpus.size(); ++g) {
    text.sample({{"gpu_uuid", uuids[g]}}, integer(report.gpus[g].memory_total_bytes));
  }

  for (const TenantOnGpuMetric& metric : kTenantOnGpuMetrics) {
    text.begin(metric.family);
    for (std::size_t g = 0; g < report.gpus.size(); ++g) {
      for (const TenantOnGpu& use : report.gpus[g].tenants) {
        if (auto value = metric.value(use)) {
          text.sample(tenant_labels({{"gpu_uuid", uuids[g]}}, use.tenant, pods), *value);
        }
      }
    }
  }

  for (const TenantMetric& metric : kTenantMetrics) {
    text.begin(metric.family);
    for (const TenantReport& tenant : report.tenants) {
      if (auto value = metric.value(tenant)) text.sample(tenant_labels({}, tenant.name, pods), *value);
    }
  }
  text.begin(kTenantInfo);
  for (const TenantReport& tenant : report.tenants) {
    text.sample(tenant_labels({}, tenant.name, pods, {{"priority", priority_name(tenant.compute.priority)}}), "1");
  }
  text.begin(kUnaccountedMemory);
  for (const UnaccountedReport& finding : report.unaccounted) {
    if (!finding.unaccounted_bytes) continue;
    const std::string pid = integer(finding.pid);
    text.sample({{"pid", pid}, {"cgroup", finding.cgroup}, {"gpu_uuid", finding.gpu_uuid}},
                integer(*finding.unaccounted_bytes));
  }
  return text.take();
}

std::string render_prometheus_without_state(std::string_view why) {
  Exposition text;
  text.comment(why);
  write_exporter_metrics(text, false);
  return text.take();
}

}  // namespace gpushare::exporter
