// The report behind `gpushare status`, `top` and the exporter, and its JSON form.
#include "core/report.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/arbiter.hpp"
#include "core/platform.hpp"
#include "core/report_json.hpp"
#include "core/size.hpp"
#include "test_support.hpp"

namespace gpushare {
namespace {

using testing::Contains;
using testing::make_uuid;

class ReportTest : public testing::StateTest {};

TEST_F(ReportTest, OrganisesTenantsPerGpuWithTheirProcessesAndBytes) {
  auto train = TenantMembership::join(*state_, "train");
  ASSERT_TRUE(train.ok()) << train.error().message;
  auto gpu = (*train)->attach_gpu(make_uuid(7), 80_GiB, 8_GiB, "NVIDIA H100 80GB HBM3");
  ASSERT_TRUE(gpu.ok());
  ASSERT_EQ((*train)->try_reserve(gpu->gpu, 3_GiB).value(), Reservation::kGranted);
  auto idle = TenantMembership::join(*state_, "idle");
  ASSERT_TRUE(idle.ok());

  const Report report = build_report(*state_);
  ASSERT_EQ(report.gpus.size(), 1u);
  const GpuReport& card = report.gpus[0];
  EXPECT_EQ(card.name, "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(card.uuid, make_uuid(7));
  EXPECT_EQ(card.memory_total_bytes, 80_GiB);
  EXPECT_FALSE(card.slice_holder.has_value());
  ASSERT_EQ(card.tenants.size(), 1u);  // "idle" has not used this GPU
  const TenantOnGpu& use = card.tenants[0];
  EXPECT_EQ(use.tenant, "train");
  EXPECT_TRUE(use.live);
  EXPECT_EQ(use.memory_used_bytes, 3_GiB);
  EXPECT_EQ(use.memory_limit_bytes, 8_GiB);
  ASSERT_EQ(use.processes.size(), 1u);
  EXPECT_EQ(use.processes[0].held_bytes, 3_GiB);
  EXPECT_TRUE(use.processes[0].alive);
  ASSERT_EQ(report.tenants.size(), 2u);
  EXPECT_EQ(report.tenants[1].name, "idle");
  EXPECT_EQ(report.tenants[1].processes.size(), 1u);
}

TEST_F(ReportTest, JsonUsesNullForUnsetValuesAndEscapesNames) {
  auto tenant = TenantMembership::join(*state_, R"(a"quoted"\name)");
  ASSERT_TRUE(tenant.ok()) << tenant.error().message;
  ASSERT_TRUE((*tenant)->attach_gpu(make_uuid(1), 16_GiB, kUnlimited, "GPU\twith\ttabs\x01\n").ok());
  const std::string json = report_to_json(build_report(*state_));
  EXPECT_TRUE(Contains(json, R"("tenant":"a\"quoted\"\\name")"));
  EXPECT_TRUE(Contains(json, R"("name":"GPU\twith\ttabs\u0001\n")"));
  EXPECT_TRUE(Contains(json, R"("memory_limit_bytes":null)"));
  EXPECT_TRUE(Contains(json, R"("share_pct":null,"limit_pct":null,"priority":"normal")"));
  EXPECT_TRUE(Contains(json, R"("schema_version":1,)"));
  EXPECT_EQ(json.back(), '\n');
  EXPECT_EQ(std::count(json.begin(), json.end(), '\n'), 1) << "one line";
  const auto parsed = nlohmann::json::parse(json);
  EXPECT_EQ(parsed["tenants"][0]["name"], R"(a"quoted"\name)");
  EXPECT_EQ(parsed["gpus"][0]["name"], "GPU\twith\ttabs\x01\n");
}

// The keys of every object, in the order docs/operations.md lists them (scripts grep for runs of
// them), and the values' JSON types.
TEST_F(ReportTest, JsonKeepsTheDocumentedSchema) {
  auto tenant = TenantMembership::join(*state_, "train");
  ASSERT_TRUE(tenant.ok());
  auto gpu = (*tenant)->attach_gpu(make_uuid(4), 16_GiB, 8_GiB, "Card");
  ASSERT_TRUE(gpu.ok());
  ASSERT_EQ((*tenant)->try_reserve(gpu->gpu, 1_GiB).value(), Reservation::kGranted);
  const auto json = nlohmann::ordered_json::parse(report_to_json(build_report(*state_)));
  const auto keys = [](const nlohmann::ordered_json& object) {
    std::vector<std::string> names;
    for (const auto& item : object.items()) names.push_back(item.key());
    return names;
  };
  using Keys = std::vector<std::string>;
  EXPECT_EQ(keys(json),
            (Keys{"schema_version", "state", "time_unix_ns", "gpus", "tenants", "unaccounted", "unaccounted_omitted"}));
  EXPECT_EQ(json["unaccounted"], nlohmann::ordered_json::array()) << "no agent: no finding";
  EXPECT_EQ(json["state"], state_->path());
  ASSERT_EQ(json["gpus"].size(), 1u);
  const auto& card = json["gpus"][0];
  EXPECT_EQ(keys(card), (Keys{"index", "uuid", "name", "memory_total_bytes", "slice_holder", "tenants"}));
  EXPECT_TRUE(card["slice_holder"].is_null());
  ASSERT_EQ(card["tenants"].size(), 1u);
  const auto& use = card["tenants"][0];
  EXPECT_EQ(keys(use), (Keys{"tenant", "live", "memory_used_bytes", "memory_limit_bytes", "memory_peak_bytes",
                             "oom_refusals", "gpu_seconds", "launches", "wait_seconds", "holds_slice", "processes",
                             "peer_wait_seconds", "gang_gpus"}));
  EXPECT_EQ(use["memory_used_bytes"], 1_GiB);
  EXPECT_EQ(use["memory_limit_bytes"], 8_GiB);
  EXPECT_TRUE(use["gpu_seconds"].is_number_float());
  EXPECT_TRUE(use["wait_seconds"].is_number_float());
  EXPECT_TRUE(use["peer_wait_seconds"].is_number_float());
  EXPECT_EQ(use["gang_gpus"], nlohmann::ordered_json::array()) << "one GPU: no gang";
  ASSERT_EQ(use["processes"].size(), 1u);
  EXPECT_EQ(keys(use["processes"][0]), (Keys{"pid", "alive", "held_bytes", "slot"}));
  ASSERT_EQ(json["tenants"].size(), 1u);
  const auto& summary = json["tenants"][0];
  EXPECT_EQ(keys(summary), (Keys{"name", "live", "share_pct", "limit_pct", "priority", "memory_limit_override_bytes",
                                 "processes", "memory_limit_overridden"}));
  EXPECT_EQ(keys(summary["processes"][0]), (Keys{"slot", "pid", "alive", "started_unix_ns"}));
  EXPECT_EQ(summary["memory_limit_overridden"], false);
}

TEST(ReportJson, SecondsHaveMicrosecondResolution) {
  Report report;
  GpuReport gpu;
  TenantOnGpu use;
  use.gpu_ns = 1'234'567'891;
  use.wait_ns = 400;
  use.peer_wait_ns = 2'500'499;
  gpu.tenants.push_back(use);
  report.gpus.push_back(gpu);
  const auto json = nlohmann::json::parse(report_to_json(report));
  EXPECT_DOUBLE_EQ(json["gpus"][0]["tenants"][0]["gpu_seconds"].get<double>(), 1.234568);
  EXPECT_DOUBLE_EQ(json["gpus"][0]["tenants"][0]["wait_seconds"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(json["gpus"][0]["tenants"][0]["peer_wait_seconds"].get<double>(), 0.0025);
}

// The state path comes from the user and GPU names from the driver: neither need be UTF-8. Each
// invalid sequence becomes U+FFFD, so the output still parses and still names the rest.
TEST(ReportJson, TextThatIsNotUtf8BecomesTheReplacementCharacter) {
  Report report;
  report.state_path = "/tmp/caf\xe9-\xff/state";
  GpuReport gpu;
  gpu.name = "GPU \xc3";  // a sequence cut short
  report.gpus.push_back(gpu);
  const std::string text = report_to_json(report);
  const auto json = nlohmann::json::parse(text);  // throws on invalid UTF-8
  EXPECT_EQ(json["state"], "/tmp/caf\xef\xbf\xbd-\xef\xbf\xbd/state");
  EXPECT_EQ(json["gpus"][0]["name"], "GPU \xef\xbf\xbd");
}

TEST_F(ReportTest, TheSliceInProgressCountsUpToTheHoldersLastObservedLaunch) {
  auto tenant = TenantMembership::join(*state_, "holder");
  ASSERT_TRUE(tenant.ok());
  auto gpu = (*tenant)->attach_gpu(make_uuid(2), 16_GiB, kUnlimited);
  ASSERT_TRUE(gpu.ok());
  auto& state = state_->state();
  auto& schedule = state.schedules[gpu->gpu];
  const std::uint32_t slot = (*tenant)->slot_index();
  // Granted 50 ms ago; the arbiter last saw it launching 10 ms ago, inside its 5th launch.
  const std::uint64_t now = monotonic_now_ns();
  schedule.slice_start_ns.store(now - 50'000'000);
  schedule.observed_at_ns.store(now - 10'000'000);
  const std::uint64_t whole = layout::kCallBegun - layout::kCallEnded;
  schedule.activity_at_grant.store(3 * whole);
  schedule.observed_activity.store(7 * whole + layout::kCallBegun);
  state.slots[slot].compute[gpu->gpu].activity[0].store(9 * whole);
  schedule.holder_word.store(holder_token(slot));

  const Report report = build_report(*state_);
  ASSERT_EQ(report.gpus.size(), 1u);
  EXPECT_EQ(report.gpus[0].slice_holder, "holder");
  const TenantOnGpu& use = report.gpus[0].tenants.at(0);
  EXPECT_TRUE(use.holds_slice);
  // Never more than end_slice will charge: up to the observation, not up to now.
  EXPECT_EQ(use.gpu_ns, 40'000'000u);
  EXPECT_EQ(use.launches, 5u);  // begun since the grant, the one in progress included
  schedule.holder_word.store(0);
}

TEST_F(ReportTest, AChargeInProgressIsNotCountedTwice) {
  auto tenant = TenantMembership::join(*state_, "holder");
  ASSERT_TRUE(tenant.ok());
  auto gpu = (*tenant)->attach_gpu(make_uuid(3), 16_GiB, kUnlimited);
  ASSERT_TRUE(gpu.ok());
  auto& state = state_->state();
  auto& schedule = state.schedules[gpu->gpu];
  const std::uint64_t now = monotonic_now_ns();
  schedule.slice_start_ns.store(now - 20'000'000);
  schedule.observed_at_ns.store(now);
  schedule.holder_word.store(holder_token((*tenant)->slot_index()));
  // end_slice has added the slice to the counters but not yet released the holder word: a
  // reader must not add the slice in progress on top (it retries, then falls back to the counters).
  state.tenants[(*tenant)->tenant_index()].compute[gpu->gpu].gpu_ns.store(20'000'000);
  schedule.charge_seq.store(1);
  const Report report = build_report(*state_);
  EXPECT_EQ(report.gpus.at(0).tenants.at(0).gpu_ns, 20'000'000u);
  schedule.charge_seq.store(2);
  schedule.holder_word.store(0);
}

// A tenant holding one GPU while a process of it waits for another is a gang on both: each of its
// rows names both GPUs and the lowest as its anchor; a tenant on one GPU is no gang. Its peer wait
// comes from the ledger, and the JSON gives both.
TEST_F(ReportTest, AGangsRowsNameItsGpusAndItsPeerWait) {
  auto job = TenantMembership::join(*state_, "job");
  ASSERT_TRUE(job.ok());
  auto first = (*job)->attach_gpu(make_uuid(5), 16_GiB, kUnlimited, "Card");
  auto second = (*job)->attach_gpu(make_uuid(6), 16_GiB, kUnlimited, "Card");
  ASSERT_TRUE(first.ok() && second.ok());
  auto solo = TenantMembership::join(*state_, "solo");
  ASSERT_TRUE(solo.ok());
  ASSERT_TRUE((*solo)->attach_gpu(make_uuid(6), 16_GiB, kUnlimited, "Card").ok());
  auto& state = state_->state();
  const std::uint32_t slot = (*job)->slot_index();
  state.schedules[first->gpu].holder_word.store(holder_token(slot));
  state.slots[slot].compute[second->gpu].waiting_since_ns.store(monotonic_now_ns());
  state.tenants[(*job)->tenant_index()].compute[second->gpu].wait_ns.store(9'000'000);
  state.tenants[(*job)->tenant_index()].compute[second->gpu].peer_wait_ns.store(7'500'000);

  const Report report = build_report(*state_);
  const std::vector<std::uint32_t> both{first->gpu, second->gpu};
  ASSERT_EQ(report.gpus.size(), 2u);
  for (const GpuReport& gpu : report.gpus) {
    for (const TenantOnGpu& use : gpu.tenants) {
      if (use.tenant == "job") {
        EXPECT_EQ(use.gang_gpus, both) << "GPU " << gpu.index;
        EXPECT_EQ(use.anchor, std::min(first->gpu, second->gpu)) << "GPU " << gpu.index;
        EXPECT_EQ(use.peer_wait_ns, gpu.index == second->gpu ? 7'500'000u : 0u);
      } else {
        EXPECT_TRUE(use.gang_gpus.empty()) << use.tenant << " wants one GPU";
        EXPECT_FALSE(use.anchor.has_value());
      }
    }
  }
  const auto json = nlohmann::json::parse(report_to_json(report));
  for (const auto& gpu : json["gpus"]) {
    for (const auto& use : gpu["tenants"]) {
      const bool waited_here = use["tenant"] == "job" && gpu["index"] == second->gpu;
      EXPECT_DOUBLE_EQ(use["peer_wait_seconds"].get<double>(), waited_here ? 0.0075 : 0.0);
      EXPECT_EQ(use["gang_gpus"], use["tenant"] == "job" ? nlohmann::json(both) : nlohmann::json::array());
    }
  }

  // Neither holding nor waiting for two GPUs any more: no gang, the counter stays.
  state.slots[slot].compute[second->gpu].waiting_since_ns.store(0);
  const Report after = build_report(*state_);
  for (const GpuReport& gpu : after.gpus) {
    for (const TenantOnGpu& use : gpu.tenants) EXPECT_TRUE(use.gang_gpus.empty()) << use.tenant;
  }
  state.schedules[first->gpu].holder_word.store(0);
}

// Writes one entry of the escape watch's table as the agent would (agent/escape_rounds.cpp).
void write_finding(layout::UnaccountedProcess& entry, std::uint32_t pid, std::string_view gpu, std::uint64_t used,
                   std::uint64_t unaccounted, std::string_view cgroup) {
  entry.pid.store(pid);
  for (std::size_t i = 0; i < layout::kGpuUuidTextBytes; ++i) entry.gpu_uuid[i].store(i < gpu.size() ? gpu[i] : '\0');
  entry.used_bytes.store(used);
  entry.accounted_bytes.store(used - std::min(used, unaccounted));
  entry.unaccounted_bytes.store(unaccounted);
  entry.known_to_agent.store(used != unaccounted ? 1 : 0);
  entry.kill_sent.store(0);
  entry.first_seen_unix_ns.store(1'700'000'000'000'000'000ull);
  for (std::size_t i = 0; i < layout::kCgroupBytes; ++i) entry.cgroup[i].store(i < cgroup.size() ? cgroup[i] : '\0');
  entry.state.store(layout::kInUse);
}

TEST_F(ReportTest, UnaccountedProcessesComeFromTheAgentsTable) {
  auto& table = state_->state().unaccounted;
  write_finding(table.entries[3], 4242, "GPU-46414b45-4750-552d-0000-000000000000", 3_GiB, 3_GiB,
                "/system.slice/escaped.scope");
  write_finding(table.entries[9], 77, "MIG-5e1f", 5_GiB, 2_GiB, "");
  write_finding(table.entries[12], 99, "GPU-x", layout::kUnknownBytes, layout::kUnknownBytes, "/a");
  table.entries[12].known_to_agent.store(0);
  write_finding(table.entries[20], 55, "GPU-x", 1_GiB, 1_GiB, "/freed");
  table.entries[20].state.store(layout::kFree);
  table.omitted.store(2);

  const Report report = build_report(*state_);
  ASSERT_EQ(report.unaccounted.size(), 3u);
  const UnaccountedReport& escaped = report.unaccounted[0];
  EXPECT_EQ(escaped.pid, 4242u);
  EXPECT_EQ(escaped.gpu_uuid, "GPU-46414b45-4750-552d-0000-000000000000");
  EXPECT_EQ(escaped.used_bytes, 3_GiB);
  EXPECT_EQ(escaped.accounted_bytes, 0u);
  EXPECT_EQ(escaped.unaccounted_bytes, 3_GiB);
  EXPECT_FALSE(escaped.known_to_agent);
  EXPECT_EQ(escaped.cgroup, "/system.slice/escaped.scope");
  EXPECT_TRUE(report.unaccounted[1].known_to_agent);
  EXPECT_EQ(report.unaccounted[1].accounted_bytes, 3_GiB);
  EXPECT_FALSE(report.unaccounted[2].used_bytes.has_value());
  EXPECT_FALSE(report.unaccounted[2].unaccounted_bytes.has_value());
  EXPECT_EQ(report.unaccounted_omitted, 2u);

  const auto json = nlohmann::ordered_json::parse(report_to_json(report));
  ASSERT_EQ(json["unaccounted"].size(), 3u);
  std::vector<std::string> names;
  for (const auto& item : json["unaccounted"][0].items()) names.push_back(item.key());
  EXPECT_EQ(names, (std::vector<std::string>{"pid", "gpu_uuid", "cgroup", "used_bytes", "accounted_bytes",
                                             "unaccounted_bytes", "known_to_agent", "kill_sent",
                                             "first_seen_unix_ns"}));
  EXPECT_EQ(json["unaccounted"][0]["pid"], 4242);
  EXPECT_EQ(json["unaccounted"][0]["unaccounted_bytes"], 3_GiB);
  EXPECT_EQ(json["unaccounted"][0]["first_seen_unix_ns"], 1'700'000'000'000'000'000ull);
  EXPECT_TRUE(json["unaccounted"][1]["cgroup"].is_null());
  EXPECT_TRUE(json["unaccounted"][2]["used_bytes"].is_null());
  EXPECT_TRUE(json["unaccounted"][2]["unaccounted_bytes"].is_null());
  EXPECT_EQ(json["unaccounted_omitted"], 2);
}

// The table is untrusted: text without its NUL ends at the field's end; a table the writer left
// half written (an odd sequence word) is not shown rather than shown torn.
TEST_F(ReportTest, AnUnterminatedOrHalfWrittenTableIsReadSafely) {
  auto& table = state_->state().unaccounted;
  write_finding(table.entries[0], 1, "GPU-y", 1_GiB, 1_GiB, "");
  for (auto& c : table.entries[0].cgroup) c.store('c');
  for (auto& c : table.entries[0].gpu_uuid) c.store('g');
  Report report = build_report(*state_);
  ASSERT_EQ(report.unaccounted.size(), 1u);
  EXPECT_EQ(report.unaccounted[0].cgroup, std::string(layout::kCgroupBytes, 'c'));
  EXPECT_EQ(report.unaccounted[0].gpu_uuid, std::string(layout::kGpuUuidTextBytes, 'g'));

  table.seq.store(table.seq.load() | 1);
  report = build_report(*state_);
  EXPECT_TRUE(report.unaccounted.empty());
  table.seq.store(table.seq.load() + 1);
  EXPECT_EQ(build_report(*state_).unaccounted.size(), 1u);
}

}  // namespace
}  // namespace gpushare
