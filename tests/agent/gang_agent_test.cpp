// Gang slices (core/gang.hpp) under the real agent: ring jobs of the fake driver's collectives
// (ring_workload, one process per rank) whose ranks run as one Unix user, so one policy tenant.
// Tenants map the state read-only and cannot read each other's collective counts: the agent asks a
// gang to hand over and publishes its stop count, the ranks wait for it. Same bounds as the
// daemonless tests (tests/e2e/gang_slices_test.cpp).
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "agent_tenants.hpp"

namespace gpushare::agent {
namespace {

using namespace std::chrono_literals;
using gpushare::testing::output_double;
using gpushare::testing::output_u64;
using gpushare::testing::ProcessResult;

constexpr double kSeconds = 3;
constexpr unsigned kComputeUs = 750, kCollectiveUs = 250;  // 1 ms steps

// One uid per job, so that a job's two ranks are one tenant; a third for a one-GPU tenant.
constexpr int kFirstJobUid = 65521, kSecondJobUid = 65522, kSingleUid = 65523;

class GangUnderAgent : public testing::AgentWithTenants {
 protected:
  void SetUp() override {
    AgentWithTenants::SetUp();
    if (IsSkipped()) return;
    if (setpriv_missing()) GTEST_SKIP() << "needs setpriv (util-linux)";
    std::ofstream(policy_) << "[tenant.first]\nuids = [" << kFirstJobUid << "]\nshare = 50\n\n"
                           << "[tenant.second]\nuids = [" << kSecondJobUid << "]\nshare = 50\n\n"
                           << "[tenant.single]\nuids = [" << kSingleUid << "]\nshare = 50\n\n"
                           << "[default]\nrefuse = true\n";
    start_agent();
    // The ranks of every user share the engine; rank 0 writes its stop file beside it (drop_).
    std::ofstream{engine_};
    ::chmod(engine_.c_str(), 0666);
  }

  Env engine_env(unsigned ordinal) const {
    return tenant_env({{"FAKE_CUDA_ENGINE", engine_},
                       {"FAKE_CUDA_DEVICE_COUNT", "2"},
                       {"PROBE_DEVICE", std::to_string(ordinal)}});
  }
  // Starts the two ranks of job `group` as user `uid` on GPUs 0 and 1.
  void start_job(int uid, unsigned group, std::vector<std::unique_ptr<Process>>& ranks) const {
    for (unsigned rank = 0; rank < 2; ++rank) {
      ranks.push_back(std::make_unique<Process>(
          as_user(uid, {GPUSHARE_TEST_RING, std::to_string(rank), "2", std::to_string(group), std::to_string(kSeconds),
                        std::to_string(kComputeUs), std::to_string(kCollectiveUs)}),
          engine_env(rank)));
    }
  }
  // Waits for every rank; the steps rank 0 of each job printed, by job in start order.
  static std::vector<double> steps_of(std::vector<std::unique_ptr<Process>>& ranks) {
    std::vector<double> steps;
    for (std::size_t i = 0; i < ranks.size(); ++i) {
      const ProcessResult result = ranks[i]->wait(60s);
      EXPECT_EQ(result.exit_code, 0) << "rank " << i % 2 << ": " << result.err;
      if (i % 2 == 0) steps.push_back(static_cast<double>(output_u64(result.out, "steps").value_or(0)));
    }
    return steps;
  }
  double solo_steps(unsigned group) const {
    std::vector<std::unique_ptr<Process>> ranks;
    start_job(kFirstJobUid, group, ranks);
    return steps_of(ranks).at(0);
  }

  std::string engine_ = drop("engine");
};

// Two 2-rank jobs of two tenants at 50/50 on the same two GPUs: each keeps a fair part of what one
// alone does under the agent, and together most of it.
TEST_F(GangUnderAgent, TwoRingJobsShareTwoGpusWithoutSpinning) {
  const double solo = solo_steps(1);
  ASSERT_GT(solo, 0);
  std::vector<std::unique_ptr<Process>> ranks;
  start_job(kFirstJobUid, 2, ranks);
  start_job(kSecondJobUid, 3, ranks);
  const std::vector<double> steps = steps_of(ranks);
  std::printf("agent: solo %.0f steps; jobs %.0f and %.0f (%.1f %% of solo together)\n", solo, steps[0], steps[1],
              100 * (steps[0] + steps[1]) / solo);
  EXPECT_GE(steps[0] + steps[1], 0.6 * solo) << agent_log();
  EXPECT_GE(steps[0], 0.2 * solo);
  EXPECT_GE(steps[1], 0.2 * solo);
}

// A one-GPU tenant at share 50 on a job's GPU 0 (its anchor) keeps its half of that GPU.
TEST_F(GangUnderAgent, AOneGpuTenantKeepsItsShareBesideAGang) {
  std::vector<std::unique_ptr<Process>> ranks;
  start_job(kFirstJobUid, 4, ranks);
  Process single(
      as_user(kSingleUid, {GPUSHARE_TEST_WORKLOAD, "linked", "saturate", std::to_string(kSeconds), "1000"}),
      engine_env(0));
  const ProcessResult alone = single.wait(60s);
  const std::vector<double> steps = steps_of(ranks);
  ASSERT_EQ(alone.exit_code, 0) << alone.err;
  const double share =
      output_double(alone.out, "kernel_us").value_or(0) / output_double(alone.out, "wall_us").value_or(1);
  std::printf("agent: one-GPU tenant %.1f %% of GPU 0; the job beside it %.0f steps\n", 100 * share, steps.at(0));
  EXPECT_NEAR(share, 0.5, 0.08) << alone.out;
  EXPECT_GT(steps.at(0), 0);
}

}  // namespace
}  // namespace gpushare::agent
