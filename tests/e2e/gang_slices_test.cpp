// Gang slices (core/gang.hpp) with real processes: ring jobs of the fake driver's collectives
// (ring_workload, one process per rank, a job's ranks in one tenant) under `gpushare run`. Bounds are
// honest for a busy 2-core machine, well under what bench/gang_bench.sh shows (docs/performance.md):
// before gang slices two such jobs kept about 5 % of one alone at 1 ms steps.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "process.hpp"
#include "scratch.hpp"
#include "status_json.hpp"

namespace gpushare::testing {
namespace {

constexpr double kSeconds = 3;
constexpr unsigned kComputeUs = 750, kCollectiveUs = 250;  // 1 ms steps

class GangSlices : public ScratchTest {
 protected:
  Env engine_env(Env more = {}) const {
    more.insert({{"FAKE_CUDA_ENGINE", path("engine")}, {"FAKE_CUDA_DEVICE_COUNT", "2"}});
    return fake_driver_env(GPUSHARE_TEST_FAKE_DIR, std::move(more));
  }
  // `argv` under `gpushare run --tenant TENANT --share 50` on GPU `ordinal`.
  std::unique_ptr<Process> start_tenant(const std::string& tenant, unsigned ordinal,
                                        const std::vector<std::string>& argv) const {
    std::vector<std::string> command{GPUSHARE_TEST_TOOL, "run",         "--tenant", tenant, "--share", "50",
                                     "--state",          path("state"), "--"};
    command.insert(command.end(), argv.begin(), argv.end());
    return std::make_unique<Process>(command, engine_env({{"PROBE_DEVICE", std::to_string(ordinal)}}));
  }
  // Starts the two ranks of job `group` (tenant "job<group>") on GPUs 0 and 1.
  void start_job(unsigned group, std::vector<std::unique_ptr<Process>>& ranks) const {
    for (unsigned rank = 0; rank < 2; ++rank) {
      ranks.push_back(
          start_tenant("job" + std::to_string(group), rank,
                       {GPUSHARE_TEST_RING, std::to_string(rank), "2", std::to_string(group), std::to_string(kSeconds),
                        std::to_string(kComputeUs), std::to_string(kCollectiveUs)}));
    }
  }
  // Waits for every process; the steps rank 0 of each job printed, by job in start order.
  static std::vector<double> steps_of(std::vector<std::unique_ptr<Process>>& processes, unsigned jobs) {
    std::vector<double> steps;
    for (std::size_t i = 0; i < processes.size(); ++i) {
      const ProcessResult result = processes[i]->wait(std::chrono::seconds(60));
      EXPECT_EQ(result.exit_code, 0) << result.err;
      if (i % 2 == 0 && steps.size() < jobs)
        steps.push_back(static_cast<double>(output_u64(result.out, "steps").value_or(0)));
    }
    return steps;
  }
  double solo_steps() const {
    std::vector<std::unique_ptr<Process>> ranks;
    start_job(1, ranks);
    return steps_of(ranks, 1).at(0);
  }
};

// Two 2-rank jobs on the same two GPUs at 50/50: each keeps a fair part of what one alone does, and
// together nearly all of it (before gang slices, each rank held one GPU while its peer waited for
// the other's slice, and both spun until the handover grace).
TEST_F(GangSlices, TwoRingJobsShareTwoGpusWithoutSpinning) {
  const double solo = solo_steps();
  ASSERT_GT(solo, 0);
  std::vector<std::unique_ptr<Process>> ranks;
  start_job(2, ranks);
  start_job(3, ranks);
  // While they run, the report shows each job's tenant as a gang on both GPUs.
  EXPECT_TRUE(status_shows(path("state"), "job2 as a gang on two GPUs", [](const Json& status) {
    const Json* use = tenant_on_gpu(status, "job2");
    return use != nullptr && use->at("gang_gpus").size() == 2 && use->at("peer_wait_seconds").is_number();
  }));
  const std::vector<double> steps = steps_of(ranks, 2);
  std::printf("solo %.0f steps; jobs %.0f and %.0f (%.1f %% of solo together)\n", solo, steps[0], steps[1],
              100 * (steps[0] + steps[1]) / solo);
  EXPECT_GE(steps[0] + steps[1], 0.6 * solo);
  EXPECT_GE(steps[0], 0.2 * solo);
  EXPECT_GE(steps[1], 0.2 * solo);
}

// A one-GPU tenant at share 50 on one of a job's GPUs keeps its half of that GPU: the gang's
// follower there is no better than any tenant.
TEST_F(GangSlices, AOneGpuTenantKeepsItsShareBesideAGang) {
  std::vector<std::unique_ptr<Process>> processes;
  start_job(4, processes);
  processes.push_back(
      start_tenant("single", 1, {GPUSHARE_TEST_WORKLOAD, "linked", "saturate", std::to_string(kSeconds), "1000"}));
  const ProcessResult single = processes.back()->wait(std::chrono::seconds(60));
  processes.pop_back();
  (void)steps_of(processes, 1);
  ASSERT_EQ(single.exit_code, 0) << single.err;
  const double share =
      output_double(single.out, "kernel_us").value_or(0) / output_double(single.out, "wall_us").value_or(1);
  std::printf("one-GPU tenant: %.1f %% of GPU 1\n", 100 * share);
  EXPECT_NEAR(share, 0.5, 0.08) << single.out;
}

}  // namespace
}  // namespace gpushare::testing
