// The exposition text of hand-built reports: exact samples, escaping, and the rules of the format.
#include "prometheus.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "exposition.hpp"
#include "core/compute_policy.hpp"
#include "core/size.hpp"

namespace {

using gpushare::GpuReport;
using gpushare::ProcessReport;
using gpushare::Report;
using gpushare::TenantOnGpu;
using gpushare::TenantReport;
using gpushare::exporter::escape_label_value;
using gpushare::exporter::render_prometheus;
using gpushare::exporter::render_prometheus_without_state;
using gpushare::testing::parse_exposition;

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;

TenantOnGpu use_of(std::string tenant) {
  TenantOnGpu use;
  use.tenant = std::move(tenant);
  return use;
}

TenantReport tenant_named(std::string name, std::vector<bool> processes_alive) {
  TenantReport tenant;
  tenant.name = std::move(name);
  tenant.compute = gpushare::default_compute_policy();  // as the report shows a tenant that stated none
  std::uint32_t slot = 0;
  for (const bool alive : processes_alive) {
    tenant.processes.push_back(ProcessReport{slot, 1000 + slot, 0, alive});
    ++slot;
  }
  return tenant;
}

// One GPU; "train" with a quota, a share, a cap and the time slice; "serve" with no limits at all.
Report two_tenants() {
  Report report;
  GpuReport gpu;
  for (std::uint8_t i = 0; i < 16; ++i) gpu.uuid[i] = i;
  gpu.name = "NVIDIA H100 80GB HBM3";
  gpu.memory_total_bytes = 80 * kGiB;
  gpu.slice_holder = "train";

  TenantOnGpu train = use_of("train");
  train.live = true;
  train.memory_used_bytes = 40 * kMiB;
  train.memory_limit_bytes = 64 * kMiB;
  train.memory_peak_bytes = 48 * kMiB;
  train.oom_refusals = 2;
  train.gpu_ns = 1'500'000'000;
  train.launches = 1234;
  train.wait_ns = 250'000'000;
  train.holds_slice = true;
  gpu.tenants.push_back(train);

  TenantOnGpu serve = use_of("serve");
  serve.live = true;
  serve.memory_used_bytes = kGiB;
  serve.memory_limit_bytes = gpushare::kUnlimited;
  serve.memory_peak_bytes = kGiB;
  gpu.tenants.push_back(serve);
  report.gpus.push_back(gpu);

  TenantReport train_policy = tenant_named("train", {true, false});
  train_policy.compute.share_pct = 30;
  train_policy.compute.limit_pct = 50;
  train_policy.compute.priority = gpushare::Priority::kHigh;
  report.tenants.push_back(train_policy);
  report.tenants.push_back(tenant_named("serve", {true, true}));
  return report;
}

// Every line but the HELP lines, whose wording may improve without changing a metric.
std::string without_help(const std::string& text) {
  std::istringstream lines(text);
  std::string line, out;
  while (std::getline(lines, line)) {
    if (line.rfind("# HELP ", 0) != 0) out += line + "\n";
  }
  return out;
}

void replace_all(std::string& text, std::string_view from, std::string_view to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
}

TEST(RenderPrometheus, ExactSamplesOfAKnownReport) {
  // $GPU stands for the GPU's label, $VERSION for the release.
  std::string expected = R"(# TYPE gpushare_exporter_build_info gauge
gpushare_exporter_build_info{version="$VERSION"} 1
# TYPE gpushare_up gauge
gpushare_up 1
# TYPE gpushare_gpu_info gauge
gpushare_gpu_info{$GPU,name="NVIDIA H100 80GB HBM3"} 1
# TYPE gpushare_gpu_memory_total_bytes gauge
gpushare_gpu_memory_total_bytes{$GPU} 85899345920
# TYPE gpushare_tenant_memory_used_bytes gauge
gpushare_tenant_memory_used_bytes{$GPU,tenant="train"} 41943040
gpushare_tenant_memory_used_bytes{$GPU,tenant="serve"} 1073741824
# TYPE gpushare_tenant_memory_limit_bytes gauge
gpushare_tenant_memory_limit_bytes{$GPU,tenant="train"} 67108864
# TYPE gpushare_tenant_memory_peak_bytes gauge
gpushare_tenant_memory_peak_bytes{$GPU,tenant="train"} 50331648
gpushare_tenant_memory_peak_bytes{$GPU,tenant="serve"} 1073741824
# TYPE gpushare_tenant_oom_refusals_total counter
gpushare_tenant_oom_refusals_total{$GPU,tenant="train"} 2
gpushare_tenant_oom_refusals_total{$GPU,tenant="serve"} 0
# TYPE gpushare_tenant_gpu_seconds_total counter
gpushare_tenant_gpu_seconds_total{$GPU,tenant="train"} 1.5
gpushare_tenant_gpu_seconds_total{$GPU,tenant="serve"} 0
# TYPE gpushare_tenant_launches_total counter
gpushare_tenant_launches_total{$GPU,tenant="train"} 1234
gpushare_tenant_launches_total{$GPU,tenant="serve"} 0
# TYPE gpushare_tenant_wait_seconds_total counter
gpushare_tenant_wait_seconds_total{$GPU,tenant="train"} 0.25
gpushare_tenant_wait_seconds_total{$GPU,tenant="serve"} 0
# TYPE gpushare_tenant_holds_slice gauge
gpushare_tenant_holds_slice{$GPU,tenant="train"} 1
gpushare_tenant_holds_slice{$GPU,tenant="serve"} 0
# TYPE gpushare_tenant_live_processes gauge
gpushare_tenant_live_processes{tenant="train"} 1
gpushare_tenant_live_processes{tenant="serve"} 2
# TYPE gpushare_tenant_dead_processes gauge
gpushare_tenant_dead_processes{tenant="train"} 1
gpushare_tenant_dead_processes{tenant="serve"} 0
# TYPE gpushare_tenant_compute_share_ratio gauge
gpushare_tenant_compute_share_ratio{tenant="train"} 0.3
# TYPE gpushare_tenant_compute_limit_ratio gauge
gpushare_tenant_compute_limit_ratio{tenant="train"} 0.5
# TYPE gpushare_tenant_info gauge
gpushare_tenant_info{tenant="train",priority="high"} 1
gpushare_tenant_info{tenant="serve",priority="normal"} 1
# TYPE gpushare_unaccounted_memory_bytes gauge
)";
  replace_all(expected, "$GPU", R"(gpu_uuid="GPU-00010203-0405-0607-0809-0a0b0c0d0e0f")");
  replace_all(expected, "$VERSION", GPUSHARE_VERSION);
  EXPECT_EQ(without_help(render_prometheus(two_tenants())), expected);
}

TEST(RenderPrometheus, EveryFamilyHasHelpAndTypeAndItsSamplesTogether) {
  const auto exposition = parse_exposition(render_prometheus(two_tenants()));
  ASSERT_FALSE(exposition.samples.empty());
  for (const std::string& family : exposition.type_order) {
    EXPECT_EQ(exposition.helped.count(family), 1u) << family;
    EXPECT_EQ(family.rfind("gpushare_", 0), 0u) << family;
    const std::string& type = exposition.types.at(family);
    EXPECT_TRUE(type == "gauge" || type == "counter") << family;
    const bool total = family.size() > 6 && family.ends_with("_total");
    EXPECT_EQ(type == "counter", total) << family << ": counters and only counters end in _total";
  }
  // A sample's family is the TYPE line above it: each family's samples form one block.
  for (const auto& sample : exposition.samples) EXPECT_EQ(sample.name, sample.family);
}

TEST(RenderPrometheus, LimitsThatDoNotExistHaveNoSample) {
  const auto exposition = parse_exposition(render_prometheus(two_tenants()));
  EXPECT_EQ(exposition.value("gpushare_tenant_memory_limit_bytes", {{"tenant", "serve"}}), std::nullopt);
  EXPECT_EQ(exposition.value("gpushare_tenant_compute_share_ratio", {{"tenant", "serve"}}), std::nullopt);
  EXPECT_EQ(exposition.value("gpushare_tenant_compute_limit_ratio", {{"tenant", "serve"}}), std::nullopt);
  EXPECT_EQ(exposition.value("gpushare_tenant_memory_limit_bytes", {{"tenant", "train"}}), "67108864");
}

TEST(RenderPrometheus, LabelValuesAreEscaped) {
  EXPECT_EQ(escape_label_value(R"(a"b\c)"), R"(a\"b\\c)");
  EXPECT_EQ(escape_label_value("two\nlines"), R"(two\nlines)");
  EXPECT_EQ(escape_label_value("naïve"), "naïve") << "UTF-8 passes as it is";

  const std::string odd = "we\"ird\\name\nhere";
  Report report = two_tenants();
  report.gpus[0].name = "GPU \"quoted\"";
  report.gpus[0].tenants[0].tenant = odd;
  report.tenants[0].name = odd;
  const std::string text = render_prometheus(report);
  EXPECT_NE(text.find(R"(tenant="we\"ird\\name\nhere")"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(name="GPU \"quoted\"")"), std::string::npos) << text;
  // And it reads back as the same names.
  const auto exposition = parse_exposition(text);
  EXPECT_EQ(exposition.value("gpushare_tenant_launches_total", {{"tenant", odd}}), "1234");
  EXPECT_EQ(exposition.value("gpushare_tenant_live_processes", {{"tenant", odd}}), "1");
  EXPECT_EQ(exposition.value("gpushare_gpu_info", {{"name", "GPU \"quoted\""}}), "1");
}

TEST(RenderPrometheus, AnEmptyStateStillDeclaresEveryFamily) {
  const auto empty = parse_exposition(render_prometheus(Report{}));
  const auto full = parse_exposition(render_prometheus(two_tenants()));
  EXPECT_EQ(empty.type_order, full.type_order);
  EXPECT_EQ(empty.value("gpushare_up"), "1");
  EXPECT_EQ(empty.samples.size(), 2u) << "build info and up";
}

TEST(RenderPrometheus, WithoutStateUpIsZeroAndTheReasonIsOneComment) {
  const std::string text = render_prometheus_without_state("no shared state at /x\nsecond line");
  const auto exposition = parse_exposition(text);
  EXPECT_EQ(exposition.value("gpushare_up"), "0");
  EXPECT_EQ(exposition.value("gpushare_exporter_build_info", {{"version", GPUSHARE_VERSION}}), "1");
  ASSERT_EQ(exposition.comments.size(), 1u) << text;
  EXPECT_EQ(exposition.comments[0], "# no shared state at /x second line");
  for (const std::string& family : exposition.type_order) EXPECT_EQ(exposition.helped.count(family), 1u);
}

// The escape watch's findings: one sample per finding whose size is known, labelled with its pid,
// cgroup and GPU (a process NVML cannot size is in the status only).
TEST(RenderPrometheus, UnaccountedMemoryHasOneSamplePerFindingOfKnownSize) {
  Report report = two_tenants();
  gpushare::UnaccountedReport escaped;
  escaped.pid = 4242;
  escaped.gpu_uuid = "GPU-46414b45-4750-552d-0000-000000000000";
  escaped.used_bytes = 3 * kGiB;
  escaped.unaccounted_bytes = 3 * kGiB;
  escaped.cgroup = "/system.slice/escaped.scope";
  report.unaccounted.push_back(escaped);
  gpushare::UnaccountedReport over = escaped;
  over.pid = 77;
  over.cgroup = "";
  over.known_to_agent = true;
  over.accounted_bytes = 2 * kGiB;
  over.unaccounted_bytes = 512 * kMiB;
  report.unaccounted.push_back(over);
  gpushare::UnaccountedReport unsized = escaped;
  unsized.pid = 99;
  unsized.used_bytes.reset();
  unsized.unaccounted_bytes.reset();
  report.unaccounted.push_back(unsized);

  const std::string text = render_prometheus(report);
  EXPECT_NE(text.find("gpushare_unaccounted_memory_bytes{pid=\"4242\",cgroup=\"/system.slice/escaped.scope\","
                      "gpu_uuid=\"GPU-46414b45-4750-552d-0000-000000000000\"} 3221225472\n"),
            std::string::npos)
      << text;
  const auto exposition = parse_exposition(text);
  EXPECT_EQ(exposition.types.at("gpushare_unaccounted_memory_bytes"), "gauge");
  EXPECT_EQ(exposition.helped.count("gpushare_unaccounted_memory_bytes"), 1u);
  EXPECT_EQ(exposition.value("gpushare_unaccounted_memory_bytes", {{"pid", "77"}, {"cgroup", ""}}), "536870912");
  EXPECT_EQ(exposition.value("gpushare_unaccounted_memory_bytes", {{"pid", "99"}}), std::nullopt);
}

// docs/metrics.md has one table row per family, with the type the page declares.
TEST(RenderPrometheus, TheMetricsPageListsEveryFamilyWithItsType) {
  std::ifstream page(GPUSHARE_METRICS_DOC);
  ASSERT_TRUE(page) << GPUSHARE_METRICS_DOC;
  std::map<std::string, std::string> documented;
  std::string line;
  while (std::getline(page, line)) {
    if (line.rfind("| `gpushare_", 0) != 0) continue;
    const std::size_t name_end = line.find('`', 3);
    const std::size_t type_start = line.find("| ", name_end) + 2;
    documented[line.substr(3, name_end - 3)] = line.substr(type_start, line.find(' ', type_start) - type_start);
  }
  const auto exposition = parse_exposition(render_prometheus(two_tenants()));
  EXPECT_EQ(documented, exposition.types);
}

}  // namespace
