// What people read: `gpushare status` and `gpushare top` frames rendered from hand-made reports.
#include "views.hpp"

#include <gtest/gtest.h>

#include <sstream>

#include "core/size.hpp"
#include "test_support.hpp"

namespace gpushare::tools {
namespace {

using testing::Contains;

// A GPU with a long name and a tenant whose sizes take the widest form ("1023.59 MiB").
Report wide_report(std::uint64_t taken_at_ns, std::uint64_t gpu_ns) {
  Report report;
  report.state_path = "/dev/shm/gpushare.state";
  report.monotonic_ns = taken_at_ns;
  GpuReport gpu;
  gpu.name = "NVIDIA H100 80GB HBM3 with a needlessly long product name";
  gpu.memory_total_bytes = 80_GiB;
  gpu.slice_holder = "training-job-with-a-long-name";
  TenantOnGpu use;
  use.tenant = "training-job-with-a-long-name";
  use.live = true;
  use.memory_used_bytes = 1023_MiB + 620'000;
  use.memory_limit_bytes = 1000_GiB + 512_MiB;
  use.gpu_ns = gpu_ns;
  use.processes.push_back({3, 1, true, use.memory_used_bytes});
  gpu.tenants.push_back(use);
  report.gpus.push_back(gpu);
  TenantReport tenant;
  tenant.name = use.tenant;
  tenant.live = true;
  tenant.compute.share_pct = 30;
  tenant.processes.push_back({3, 1, 0, true});
  report.tenants.push_back(tenant);
  return report;
}

TEST(TopView, EveryLineFitsTheTerminalWidth) {
  const Report before = wide_report(1'000'000'000, 0);
  const Report after = wide_report(2'000'000'000, 500'000'000);  // held the GPU half of the second since
  for (int width : {74, 80, 120}) {
    const std::string frame = render_top(after, &before, width, 1.0);
    std::istringstream lines(frame);
    for (std::string line; std::getline(lines, line);) {
      EXPECT_LE(line.size(), static_cast<std::size_t>(width)) << "width " << width << ": " << line;
    }
    EXPECT_TRUE(Contains(frame, "slice: training-job")) << frame;
    EXPECT_TRUE(Contains(frame, "1023.59 MiB")) << frame;
    EXPECT_TRUE(Contains(frame, " 50.0 ")) << frame;
  }
}

TEST(TopView, TheBarFillsToTheRateAndMarksTheShare) {
  const Report before = wide_report(1'000'000'000, 0);
  const Report after = wide_report(2'000'000'000, 500'000'000);
  const std::string frame = render_top(after, &before, 80, 1.0);
  // 80 columns: an 11-character bar, half filled, the 30% share marked at position 3.
  EXPECT_TRUE(Contains(frame, "[###|##.....]")) << frame;
}

TEST(StatusView, HeldBytesFollowTheSlotNotThePid) {
  Report report = wide_report(1'000'000'000, 0);
  // A second process of the tenant with the same PID (another container's PID 1), holding nothing.
  report.tenants[0].processes.push_back({7, 1, 0, true});
  const std::string text = render_status(report);
  EXPECT_TRUE(Contains(text, "pid 1        alive  GPU 0: 1023.59 MiB\n    pid 1        alive\n")) << text;
}

TEST(StatusView, UnaccountedProcessesHaveASectionOnlyWhenThereAreSome) {
  Report report = wide_report(1'000'000'000, 0);
  EXPECT_FALSE(Contains(render_status(report), "UNACCOUNTED")) << render_status(report);
  UnaccountedReport escaped;
  escaped.pid = 4242;
  escaped.gpu_uuid = "GPU-46414b45-4750-552d-0000-000000000000";
  escaped.used_bytes = 3_GiB;
  escaped.unaccounted_bytes = 3_GiB;
  escaped.cgroup = "/system.slice/escaped.scope";
  escaped.kill_sent = true;
  report.unaccounted.push_back(escaped);
  UnaccountedReport unknown;
  unknown.pid = 77;
  unknown.gpu_uuid = "GPU-x";
  report.unaccounted.push_back(unknown);
  const std::string text = render_status(report);
  EXPECT_TRUE(Contains(text, "\nUNACCOUNTED GPU PROCESSES")) << text;
  EXPECT_TRUE(Contains(text, "  4242     GPU-46414b45-4750-552d-0000-000000000000      3 GiB        0 B        3 GiB  "
                             "not connected to the agent, killed, cgroup /system.slice/escaped.scope\n"))
      << text;
  EXPECT_TRUE(Contains(text, "unknown")) << text;
}

// wide_report with its tenant a gang on GPUs 0 and 1 (anchored at 0), having spun 1.25 s for GPU 0.
Report gang_report(std::uint64_t taken_at_ns, std::uint64_t gpu_ns) {
  Report report = wide_report(taken_at_ns, gpu_ns);
  TenantOnGpu& use = report.gpus[0].tenants[0];
  use.gang_gpus = {0, 1};
  use.anchor = 0;
  use.wait_ns = 2'000'000'000;
  use.peer_wait_ns = 1'250'000'000;
  return report;
}

TEST(StatusView, TheHeaderAndTheRowNameAGangsGpusAndItsPeerWait) {
  const std::string text = render_status(gang_report(1'000'000'000, 0));
  EXPECT_TRUE(Contains(text, "time slice: training-job-with-a-long-name (gang on GPUs 0,1)\n")) << text;
  EXPECT_TRUE(Contains(text, "     2.000s  [gang on GPUs 0,1; peer wait 1.250s]\n")) << text;
}

TEST(StatusView, ATenantNoGangAndNeverWaitingForAPeerKeepsItsRow) {
  const std::string plain = render_status(wide_report(1'000'000'000, 0));
  EXPECT_TRUE(Contains(plain, "time slice: training-job-with-a-long-name\n")) << plain;
  EXPECT_FALSE(Contains(plain, "gang")) << plain;
  EXPECT_FALSE(Contains(plain, "peer wait")) << plain;
  Report earlier_gang = wide_report(1'000'000'000, 0);
  earlier_gang.gpus[0].tenants[0].peer_wait_ns = 500'000'000;
  const std::string text = render_status(earlier_gang);
  EXPECT_TRUE(Contains(text, "s  [peer wait 0.500s]\n")) << text;
  EXPECT_FALSE(Contains(text, "gang")) << text;
}

TEST(StatusView, ContiguousGpusOfAGangReadAsARange) {
  Report report = gang_report(1'000'000'000, 0);
  report.gpus[0].tenants[0].gang_gpus = {0, 1, 2, 3, 6, 8, 9};
  const std::string text = render_status(report);
  EXPECT_TRUE(Contains(text, "(gang on GPUs 0-3,6,8,9)")) << text;
}

TEST(TopView, AGangIsMarkedWithinTheTerminalWidth) {
  const Report before = gang_report(1'000'000'000, 0);
  const Report after = gang_report(2'000'000'000, 500'000'000);
  for (int width : {74, 80, 120}) {
    const std::string frame = render_top(after, &before, width, 1.0);
    std::istringstream lines(frame);
    for (std::string line; std::getline(lines, line);) {
      EXPECT_LE(line.size(), static_cast<std::size_t>(width)) << "width " << width << ": " << line;
    }
    EXPECT_TRUE(Contains(frame, "slice: training-job-with-a-long-name (gang on GPUs 0,1)")) << frame;
  }
  // 120 columns: a 24-character name column, room for the GPUs; 80: 11, the mark alone.
  const std::string wide = render_top(after, &before, 120, 1.0);
  EXPECT_TRUE(Contains(wide, "\ntraining-job~ [gang 0,1] ")) << wide;
  const std::string narrow = render_top(after, &before, 80, 1.0);
  EXPECT_TRUE(Contains(narrow, "\ntra~ [gang] ")) << narrow;
  Report short_name = gang_report(2'000'000'000, 500'000'000);
  short_name.gpus[0].tenants[0].tenant = "job";
  const std::string whole = render_top(short_name, &before, 120, 1.0);
  EXPECT_TRUE(Contains(whole, "\njob [gang 0,1]   ")) << whole;
}

}  // namespace
}  // namespace gpushare::tools
