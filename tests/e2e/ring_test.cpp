// Ring jobs on the fake driver's collective kernels, without gpushare: each rank (ring_workload) is
// a process on a GPU of its own, all on one engine file; a step is a compute kernel then the
// rank's part of the group's collective, which holds its GPU until every rank has launched it.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "process.hpp"
#include "scratch.hpp"

namespace gpushare::testing {
namespace {

struct Ring {
  unsigned world = 2;
  unsigned group = 1;
  double seconds = 2;
  unsigned compute_us = 150;
  unsigned collective_us = 50;
};

class RingJobs : public ScratchTest {
 protected:
  Env engine_env(Env more = {}) const {
    more.insert({{"FAKE_CUDA_ENGINE", path("engine")}, {"FAKE_CUDA_DEVICE_COUNT", "4"}});
    return fake_driver_env(GPUSHARE_TEST_FAKE_DIR, std::move(more));
  }

  std::unique_ptr<Process> start_rank(const Ring& ring, unsigned rank, Env env = {}) const {
    return std::make_unique<Process>(
        std::vector<std::string>{GPUSHARE_TEST_RING, std::to_string(rank), std::to_string(ring.world),
                                 std::to_string(ring.group), std::to_string(ring.seconds),
                                 std::to_string(ring.compute_us), std::to_string(ring.collective_us)},
        engine_env(std::move(env)));
  }

  // An ordinary tenant: gpu_workload's `args` on GPU `ordinal`, with the hardware's time slice
  // between contexts at 200 ms (a launch waits that long for a pending collective, at most).
  std::unique_ptr<Process> start_workload(unsigned ordinal, const std::vector<std::string>& args) const {
    std::vector<std::string> argv{GPUSHARE_TEST_WORKLOAD, "linked"};
    argv.insert(argv.end(), args.begin(), args.end());
    return std::make_unique<Process>(
        argv, engine_env({{"PROBE_DEVICE", std::to_string(ordinal)}, {"FAKE_CUDA_TIMESLICE_US", "200000"}}));
  }

  static std::vector<ProcessResult> wait_all(std::vector<std::unique_ptr<Process>>& ranks) {
    std::vector<ProcessResult> results;
    for (auto& rank : ranks) results.push_back(rank->wait(std::chrono::seconds(60)));
    return results;
  }

  // Runs every rank of `ring` at once; checks that all ran the same steps and returns rank 0's output.
  ProcessResult run_ring(const Ring& ring) const {
    std::vector<std::unique_ptr<Process>> ranks;
    for (unsigned r = 0; r < ring.world; ++r) ranks.push_back(start_rank(ring, r));
    const auto results = wait_all(ranks);
    for (unsigned r = 0; r < ring.world; ++r) {
      EXPECT_EQ(results[r].exit_code, 0) << "rank " << r << ": " << results[r].err;
      EXPECT_EQ(output_u64(results[r].out, "steps"), output_u64(results[0].out, "steps")) << "rank " << r;
    }
    return results[0];
  }

  // A ring alone: every step takes compute + collective, no more (the GPUs are free) and not much
  // less than that in throughput (the hosts keep a few steps queued).
  void expect_full_speed(const Ring& ring, double at_least) const {
    const ProcessResult r = run_ring(ring);
    const double steps = static_cast<double>(output_u64(r.out, "steps").value_or(0));
    const double wall_us = output_double(r.out, "wall_us").value_or(0);
    const double ideal = wall_us / (ring.compute_us + ring.collective_us);
    std::printf("%u ranks, %u+%u us steps: %.0f steps of %.0f ideal\n", ring.world, ring.compute_us,
                ring.collective_us, steps, ideal);
    EXPECT_LE(steps, ideal + 1) << r.out;
    EXPECT_GE(steps, at_least * ideal) << r.out;
  }
};

TEST_F(RingJobs, TwoRanksStepAtComputePlusCollective) {
  expect_full_speed({.world = 2, .group = 1, .seconds = 2, .compute_us = 150, .collective_us = 50}, 0.6);
  expect_full_speed({.world = 2, .group = 2, .seconds = 2, .compute_us = 3000, .collective_us = 1000}, 0.9);
}

TEST_F(RingJobs, FourRanksStepAtComputePlusCollective) {
  expect_full_speed({.world = 4, .group = 1, .seconds = 2, .compute_us = 150, .collective_us = 50}, 0.6);
}

// Rank 1 comes a second after rank 0 has launched its first part: rank 0's first step lasts that
// second (its part spins until the peer arrives), rank 1's is quick; then they step together.
TEST_F(RingJobs, ALateRankHoldsUpItsPeersFirstCollective) {
  const Ring ring{.world = 2, .group = 7, .seconds = 2, .compute_us = 150, .collective_us = 50};
  std::vector<std::unique_ptr<Process>> ranks;
  ranks.push_back(start_rank(ring, 0, {{"RING_STARTED_FILE", path("rank0.started")}}));
  ASSERT_TRUE(appears_within(path("rank0.started"), std::chrono::seconds(20)));
  std::this_thread::sleep_for(std::chrono::seconds(1));  // the scenario: a rank one second late
  ranks.push_back(start_rank(ring, 1));
  const auto results = wait_all(ranks);
  ASSERT_EQ(results[0].exit_code, 0) << results[0].err;
  ASSERT_EQ(results[1].exit_code, 0) << results[1].err;
  EXPECT_GE(output_double(results[0].out, "first_us").value(), 950'000) << results[0].out;
  EXPECT_LE(output_double(results[1].out, "first_us").value(), 300'000) << results[1].out;
  EXPECT_EQ(output_u64(results[0].out, "steps"), output_u64(results[1].out, "steps"));
  EXPECT_GT(output_u64(results[0].out, "steps").value(), 1000u);
}

// A peer that never comes: after FAKE_CUDA_COLLECTIVE_TIMEOUT_MS the waiting part fails with
// CUDA_ERROR_LAUNCH_TIMEOUT (702), like an NCCL timeout, and the GPU is free again: a tenant whose
// launches waited behind the collective (a time slice each) goes on at full speed.
TEST_F(RingJobs, ACollectiveWhosePeerNeverComesTimesOut) {
  const Ring ring{.world = 2, .group = 9, .seconds = 5, .compute_us = 150, .collective_us = 50};
  const auto begin = std::chrono::steady_clock::now();
  auto rank0 = start_rank(ring, 0, {{"FAKE_CUDA_COLLECTIVE_TIMEOUT_MS", "1000"}, {"RING_STARTED_FILE", path("started")}});
  ASSERT_TRUE(appears_within(path("started"), std::chrono::seconds(20)));
  auto other = start_workload(0, {"latency", "2", "100", "1000"});
  const ProcessResult failed = rank0->wait(std::chrono::seconds(30));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  EXPECT_EQ(failed.exit_code, 3) << failed.out;
  EXPECT_NE(failed.err.find("error=702"), std::string::npos) << failed.err;
  EXPECT_GE(seconds, 0.95);
  EXPECT_LE(seconds, 5.0);
  const ProcessResult freed = other->wait(std::chrono::seconds(30));
  EXPECT_EQ(freed.exit_code, 0) << freed.err;
  EXPECT_GE(output_double(freed.out, "max_us").value_or(0), 190'000) << "it never waited: " << freed.out;
  EXPECT_GE(output_u64(freed.out, "count").value_or(0), 300u) << freed.out;
}

// Kernels of another process on a ring's GPU queue behind the collective part: while rank 0's part
// waits a second for its peer, each launch of a latency probe on that GPU waits a time slice (the
// hardware switches contexts then); on GPU 2, free all along, a probe does not wait.
TEST_F(RingJobs, OrdinaryKernelsOnARingsGpuQueueBehindTheCollective) {
  const Ring ring{.world = 2, .group = 11, .seconds = 2, .compute_us = 150, .collective_us = 50};
  std::vector<std::unique_ptr<Process>> ranks;
  ranks.push_back(start_rank(ring, 0, {{"RING_STARTED_FILE", path("rank0.started")}}));
  ASSERT_TRUE(appears_within(path("rank0.started"), std::chrono::seconds(20)));
  auto behind = start_workload(0, {"latency", "1.5", "100", "1000"});
  auto beside = start_workload(2, {"latency", "1.5", "100", "1000"});
  std::this_thread::sleep_for(std::chrono::seconds(1));  // rank 1 a second late
  ranks.push_back(start_rank(ring, 1));
  const auto results = wait_all(ranks);
  ASSERT_EQ(results[0].exit_code, 0) << results[0].err;
  ASSERT_EQ(results[1].exit_code, 0) << results[1].err;
  const ProcessResult queued = behind->wait(std::chrono::seconds(30));
  const ProcessResult free = beside->wait(std::chrono::seconds(30));
  ASSERT_EQ(queued.exit_code, 0) << queued.err;
  ASSERT_EQ(free.exit_code, 0) << free.err;
  EXPECT_GE(output_double(queued.out, "max_us").value(), 190'000) << queued.out;
  EXPECT_LE(output_double(free.out, "max_us").value(), 100'000) << free.out;
}

}  // namespace
}  // namespace gpushare::testing
