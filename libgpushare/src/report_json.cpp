#include "core/report_json.hpp"

#include <cmath>

#include <nlohmann/json.hpp>

#include "core/size.hpp"

namespace gpushare {
namespace {

// Keys in insertion order: the documented order, which scripts that grep the output rely on.
using Json = nlohmann::ordered_json;

// A limit or percentage that may be absent: null in JSON.
Json bytes_or_null(std::uint64_t bytes) { return bytes == kUnlimited ? Json(nullptr) : Json(bytes); }
Json pct_or_null(std::uint32_t pct) { return pct == 0 ? Json(nullptr) : Json(pct); }
// Seconds with microsecond resolution, as the schema has always given them.
Json seconds(std::uint64_t ns) { return std::round(static_cast<double>(ns) / 1e3) / 1e6; }

Json process_on_gpu_json(const ProcessUse& process) {
  return {{"pid", process.pid}, {"alive", process.alive}, {"held_bytes", process.held_bytes}, {"slot", process.slot}};
}

Json tenant_on_gpu_json(const TenantOnGpu& use) {
  Json processes = Json::array();
  for (const ProcessUse& process : use.processes) processes.push_back(process_on_gpu_json(process));
  return {{"tenant", use.tenant},
          {"live", use.live},
          {"memory_used_bytes", use.memory_used_bytes},
          {"memory_limit_bytes", bytes_or_null(use.memory_limit_bytes)},
          {"memory_peak_bytes", use.memory_peak_bytes},
          {"oom_refusals", use.oom_refusals},
          {"gpu_seconds", seconds(use.gpu_ns)},
          {"launches", use.launches},
          {"wait_seconds", seconds(use.wait_ns)},
          {"holds_slice", use.holds_slice},
          {"processes", std::move(processes)},
          {"peer_wait_seconds", seconds(use.peer_wait_ns)},
          {"gang_gpus", Json(use.gang_gpus)}};
}

Json gpu_json(const GpuReport& gpu) {
  Json tenants = Json::array();
  for (const TenantOnGpu& use : gpu.tenants) tenants.push_back(tenant_on_gpu_json(use));
  return {{"index", gpu.index},
          {"uuid", format_gpu_uuid(gpu.uuid)},
          {"name", gpu.name},
          {"memory_total_bytes", gpu.memory_total_bytes},
          {"slice_holder", gpu.slice_holder ? Json(*gpu.slice_holder) : Json(nullptr)},
          {"tenants", std::move(tenants)}};
}

Json tenant_json(const TenantReport& tenant) {
  Json processes = Json::array();
  for (const ProcessReport& process : tenant.processes) {
    processes.push_back({{"slot", process.slot},
                         {"pid", process.pid},
                         {"alive", process.alive},
                         {"started_unix_ns", process.started_unix_ns}});
  }
  const auto& override_bytes = tenant.memory_limit_override_bytes;
  return {{"name", tenant.name},
          {"live", tenant.live},
          {"share_pct", pct_or_null(tenant.compute.share_pct)},
          {"limit_pct", pct_or_null(tenant.compute.limit_pct)},
          {"priority", std::string(priority_name(tenant.compute.priority))},
          {"memory_limit_override_bytes", override_bytes ? bytes_or_null(*override_bytes) : Json(nullptr)},
          {"processes", std::move(processes)},
          {"memory_limit_overridden", override_bytes.has_value()}};
}

Json optional_bytes(const std::optional<std::uint64_t>& bytes) { return bytes ? Json(*bytes) : Json(nullptr); }

Json unaccounted_json(const UnaccountedReport& finding) {
  return {{"pid", finding.pid},
          {"gpu_uuid", finding.gpu_uuid},
          {"cgroup", finding.cgroup.empty() ? Json(nullptr) : Json(finding.cgroup)},
          {"used_bytes", optional_bytes(finding.used_bytes)},
          {"accounted_bytes", finding.accounted_bytes},
          {"unaccounted_bytes", optional_bytes(finding.unaccounted_bytes)},
          {"known_to_agent", finding.known_to_agent},
          {"kill_sent", finding.kill_sent},
          {"first_seen_unix_ns", finding.first_seen_unix_ns}};
}

}  // namespace

std::string report_to_json(const Report& report) {
  Json gpus = Json::array();
  for (const GpuReport& gpu : report.gpus) gpus.push_back(gpu_json(gpu));
  Json tenants = Json::array();
  for (const TenantReport& tenant : report.tenants) tenants.push_back(tenant_json(tenant));
  Json unaccounted = Json::array();
  for (const UnaccountedReport& finding : report.unaccounted) unaccounted.push_back(unaccounted_json(finding));
  const Json json = {{"schema_version", kReportSchemaVersion},
                     {"state", report.state_path},
                     {"time_unix_ns", report.time_unix_ns},
                     {"gpus", std::move(gpus)},
                     {"tenants", std::move(tenants)},
                     {"unaccounted", std::move(unaccounted)},
                     {"unaccounted_omitted", report.unaccounted_omitted}};
  // Compact, and never throwing on text that is not UTF-8: such bytes become U+FFFD.
  return json.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace gpushare
