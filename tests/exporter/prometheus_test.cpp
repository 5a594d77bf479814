// The exposition text of hand-built reports: exact samples, escaping, and the rules of the format.
#include "prometheus.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "exposition.hpp"
#include "sample_report.hpp"

namespace {

using gpushare::Report;
using gpushare::exporter::escape_label_value;
using gpushare::exporter::PodLabelsByTenant;
using gpushare::exporter::render_comment;
using gpushare::exporter::render_prometheus;
using gpushare::exporter::render_prometheus_without_state;
using gpushare::testing::parse_exposition;
using gpushare::testing::two_tenants;

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;

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
# TYPE gpushare_tenant_peer_wait_seconds_total counter
gpushare_tenant_peer_wait_seconds_total{$GPU,tenant="train"} 0.1
gpushare_tenant_peer_wait_seconds_total{$GPU,tenant="serve"} 0
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

// "train" is a pod with a known container; "serve" a pod whose container is not known; a tenant
// absent from the file ("batch") keeps only its own labels.
PodLabelsByTenant pods_of_two_tenants() {
  return {{"train", {"team-a", "train-0", "trainer"}}, {"serve", {"team-b", "serve-7d9f", ""}}};
}

TEST(RenderPrometheus, TenantSamplesCarryTheirPodsLabelsAfterTheTenant) {
  const std::string text = render_prometheus(two_tenants(), pods_of_two_tenants());
  const std::string gpu = R"(gpu_uuid="GPU-00010203-0405-0607-0809-0a0b0c0d0e0f")";
  EXPECT_NE(text.find("gpushare_tenant_memory_used_bytes{" + gpu +
                      R"(,tenant="train",namespace="team-a",pod="train-0",container="trainer"} 41943040)" + "\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(gpushare_tenant_live_processes{tenant="serve",namespace="team-b",pod="serve-7d9f"} 2)"
                      "\n"),
            std::string::npos)
      << "an unknown container is left out, not written as \"\"\n"
      << text;
  EXPECT_NE(text.find(R"(gpushare_tenant_info{tenant="train",namespace="team-a",pod="train-0",container="trainer",)"
                      R"(priority="high"} 1)"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("container=\"\""), std::string::npos) << text;

  // Every sample with a tenant label has the pod's labels; the GPU's and the exporter's do not.
  const auto exposition = parse_exposition(text);
  for (const auto& sample : exposition.samples) {
    const auto tenant = sample.labels.find("tenant");
    if (tenant == sample.labels.end()) {
      EXPECT_EQ(sample.labels.count("namespace"), 0u) << sample.name;
      continue;
    }
    EXPECT_EQ(sample.labels.at("namespace"), tenant->second == "train" ? "team-a" : "team-b") << sample.name;
    EXPECT_EQ(sample.labels.count("container"), tenant->second == "train" ? 1u : 0u) << sample.name;
  }
  // Only labels are added: the same samples, values and families as without the file.
  const auto plain = parse_exposition(render_prometheus(two_tenants()));
  EXPECT_EQ(exposition.type_order, plain.type_order);
  ASSERT_EQ(exposition.samples.size(), plain.samples.size());
  for (std::size_t i = 0; i < plain.samples.size(); ++i) {
    EXPECT_EQ(exposition.samples[i].name, plain.samples[i].name);
    EXPECT_EQ(exposition.samples[i].value, plain.samples[i].value);
  }
}

TEST(RenderPrometheus, ATenantMissingFromTheLabelsOrWithNothingKnownHasNoPodLabels) {
  PodLabelsByTenant pods{{"train", {"", "", ""}}, {"someone-else", {"team-c", "other", "c"}}};
  const auto exposition = parse_exposition(render_prometheus(two_tenants(), pods));
  for (const auto& sample : exposition.samples) {
    EXPECT_EQ(sample.labels.count("namespace"), 0u) << sample.name;
    EXPECT_EQ(sample.labels.count("pod"), 0u) << sample.name;
    EXPECT_EQ(sample.labels.count("container"), 0u) << sample.name;
  }
  EXPECT_EQ(without_help(render_prometheus(two_tenants(), pods)), without_help(render_prometheus(two_tenants())));
}

TEST(RenderPrometheus, PodLabelValuesAreEscaped) {
  const std::string odd = "we\"ird\\pod\nname";
  PodLabelsByTenant pods{{"train", {"ns\\x", odd, "c\"1"}}};
  const std::string text = render_prometheus(two_tenants(), pods);
  EXPECT_NE(text.find(R"(namespace="ns\\x",pod="we\"ird\\pod\nname",container="c\"1")"), std::string::npos) << text;
  const auto exposition = parse_exposition(text);
  EXPECT_EQ(exposition.value("gpushare_tenant_launches_total", {{"pod", odd}, {"namespace", "ns\\x"}}), "1234");
  EXPECT_EQ(exposition.value("gpushare_tenant_info", {{"container", "c\"1"}}), "1");
}

TEST(RenderPrometheus, ACommentIsOneLine) {
  EXPECT_EQ(render_comment("tenant labels at /x not used:\nbad JSON"), "# tenant labels at /x not used: bad JSON\n");
  const std::string text = render_comment("why") + render_prometheus(two_tenants());
  const auto exposition = parse_exposition(text);
  ASSERT_EQ(exposition.comments.size(), 1u);
  EXPECT_EQ(exposition.comments[0], "# why");
  EXPECT_EQ(exposition.value("gpushare_up"), "1");
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
