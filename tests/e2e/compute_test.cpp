// End-to-end time-slicing: real processes under the preload library, on the fake driver's
// simulated GPU (kernels of all processes run one at a time, for gridDimX microseconds each, with a
// 20 ms hardware queue). Shares are measured as each process's kernel time over the run.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "process.hpp"
#include "scratch.hpp"

namespace gpushare::testing {
namespace {

struct Tenant {
  std::string name;
  std::vector<std::string> options;  // gpushare run options
  std::vector<std::string> workload;  // gpu_workload arguments after LOOKUP
  std::string lookup = "linked";
};

class TimeSlicing : public ScratchTest {
 protected:
  std::unique_ptr<Process> start(const Tenant& tenant) const {
    std::vector<std::string> argv{GPUSHARE_TEST_TOOL, "run", "--tenant", tenant.name, "--state", state_};
    argv.insert(argv.end(), tenant.options.begin(), tenant.options.end());
    argv.insert(argv.end(), {"--", GPUSHARE_TEST_WORKLOAD, tenant.lookup});
    argv.insert(argv.end(), tenant.workload.begin(), tenant.workload.end());
    return std::make_unique<Process>(argv,
                                     fake_driver_env(GPUSHARE_TEST_FAKE_DIR, {{"FAKE_CUDA_ENGINE", path("engine")}}));
  }

  // Runs the tenants side by side; returns each one's share of the kernel time they got together.
  std::vector<double> shares(const std::vector<Tenant>& tenants) {
    std::vector<std::unique_ptr<Process>> processes;
    for (const auto& tenant : tenants) processes.push_back(start(tenant));
    std::vector<double> kernel;
    double total = 0;
    for (auto& process : processes) {
      const ProcessResult r = process->wait(std::chrono::seconds(60));
      EXPECT_EQ(r.exit_code, 0) << r.err;
      kernel.push_back(output_double(r.out, "kernel_us").value_or(0));
      total += kernel.back();
    }
    for (double& k : kernel) k = total > 0 ? k / total : 0;
    return kernel;
  }
};

TEST_F(TimeSlicing, ThirtySeventyWhileBothSaturate) {
  const auto got = shares({{"a", {"--share", "30"}, {"saturate", "5", "1000"}},
                           {"b", {"--share", "70"}, {"saturate", "5", "1000"}, "procaddress"}});
  EXPECT_NEAR(got[0], 0.30, 0.03);
  EXPECT_NEAR(got[1], 0.70, 0.03);
}

// A process that waits for its own work (a training step's synchronize) is busy, not idle: the
// GPU must not be handed to a waiter while its burst still runs.
TEST_F(TimeSlicing, ThirtySeventyWithBurstsAndSynchronizes) {
  const auto got = shares({{"a", {"--share", "30"}, {"bursts", "4", "1000"}},
                           {"b", {"--share", "70"}, {"bursts", "4", "1000"}, "procaddress"}});
  EXPECT_NEAR(got[0], 0.30, 0.03);
  EXPECT_NEAR(got[1], 0.70, 0.03);
}

TEST_F(TimeSlicing, FourTenantsTenTwentyThirtyForty) {
  const auto got = shares({{"a", {"--share", "10"}, {"saturate", "5", "1000"}},
                           {"b", {"--share", "20"}, {"saturate-ex", "5", "1000"}},
                           {"c", {"--share", "30"}, {"saturate-graph", "5", "1000"}, "procaddress"},
                           {"d", {"--share", "40"}, {"saturate-coop", "5", "1000"}}});
  EXPECT_NEAR(got[0], 0.10, 0.03);
  EXPECT_NEAR(got[1], 0.20, 0.03);
  EXPECT_NEAR(got[2], 0.30, 0.03);
  EXPECT_NEAR(got[3], 0.40, 0.03);
}

TEST_F(TimeSlicing, AHardCapHoldsOnAnIdleGpu) {
  const ProcessResult r = start({"capped", {"--limit", "30"}, {"saturate", "5", "1000"}})->wait();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NEAR(output_double(r.out, "kernel_us").value() / output_double(r.out, "wall_us").value(), 0.30, 0.03);
}

TEST_F(TimeSlicing, AShareAloneUsesTheWholeGpu) {
  const ProcessResult r = start({"alone", {"--share", "30"}, {"saturate", "3", "1000"}})->wait();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GE(output_double(r.out, "kernel_us").value() / output_double(r.out, "wall_us").value(), 0.95);
}

// A high tenant's short kernels beside a saturating low tenant. The bound: the low tenant's work
// already queued when the high one arrives. While a higher class is around, a lower one keeps at
// most ~4 launches in flight (here 4 x 100 us), so the wait is under ~0.5 ms plus the high kernel;
// 3 ms leaves room for a loaded CI machine. Without gpushare the fake GPU's 20 ms queue is the wait.
TEST_F(TimeSlicing, HighPriorityLatencyStaysBounded) {
  auto low = start({"low", {"--priority", "low"}, {"saturate", "4", "100"}});
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const ProcessResult high = start({"high", {"--priority", "high"}, {"latency", "3", "50", "5000"}})->wait();
  ASSERT_EQ(high.exit_code, 0) << high.err;
  EXPECT_GT(output_double(high.out, "count").value(), 100);
  EXPECT_LT(output_double(high.out, "p99_us").value(), 3'000) << high.out;
  EXPECT_EQ(low->wait().exit_code, 0);
}

TEST_F(TimeSlicing, KillingTheHolderReleasesTheGpuWithinASecond) {
  auto victim = start({"victim", {}, {"saturate", "30", "1000"}});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto survivor = start({"survivor", {}, {"saturate", "3", "1000"}});
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  victim->kill(SIGKILL);
  EXPECT_EQ(victim->wait().exit_code, 128 + SIGKILL);
  const ProcessResult r = survivor->wait();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Half of the first 0.5 s, then (after at most a second's hand-over) all of the rest.
  EXPECT_GE(output_double(r.out, "kernel_us").value() / output_double(r.out, "wall_us").value(), 0.45);
}

TEST_F(TimeSlicing, AWaitingProcessSleeps) {
  auto high = start({"busy", {"--priority", "high"}, {"saturate", "3", "1000"}});
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const ProcessResult waiting = start({"starved", {"--priority", "low"}, {"saturate", "2", "1000"}})->wait();
  ASSERT_EQ(waiting.exit_code, 0) << waiting.err;
  EXPECT_LT(waiting.cpu_seconds / 2.0, 0.05) << "cpu " << waiting.cpu_seconds << " s";
  EXPECT_EQ(high->wait().exit_code, 0);
}

}  // namespace
}  // namespace gpushare::testing
