// Isolation mode end to end: the real agent as root owns the state; tenants are real processes on
// the fake driver, through the real preload library, run as another Unix user (setpriv). They get
// the limits the policy gives their uid, whatever their environment says, cannot write the state,
// and their bytes go back the moment they die.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <thread>

#include "agent_tenants.hpp"
#include "connection.hpp"

namespace gpushare::agent {
namespace {

using namespace std::chrono_literals;
using gpushare::testing::output_u64;
using gpushare::testing::ProcessResult;

using testing::kGiB;
using testing::kMiB;

class Isolation : public testing::AgentWithTenants {
 protected:
  void SetUp() override {
    AgentWithTenants::SetUp();
    if (IsSkipped()) return;
    if (setpriv_missing()) GTEST_SKIP() << "needs setpriv (util-linux)";
    std::ofstream(policy_) << "[tenant.night]\nuids = [65534]\nmemory = \"64MiB\"\nshare = 30\n\n"
                              "[tenant.racers]\nuids = [65533]\nmemory = \"100MiB\"\nshare = 70\n\n"
                              "[tenant.fuzz]\nuids = [0]\nmemory = \"1GiB\"\n\n"
                              "[tenant.capped]\nuids = [65531]\nlimit = 30\n\n"
                              "[default]\nrefuse = true\n";
    start_agent();
  }
};

TEST_F(Isolation, TheStateIsTheAgentsAndTenantsCannotWriteIt) {
  struct stat info {};
  ASSERT_EQ(::stat(state_.c_str(), &info), 0);
  EXPECT_EQ(info.st_uid, 0u);
  EXPECT_EQ(info.st_mode & 0777, 0644u);
  // A tenant that joined is running; it still cannot open the file for writing.
  Process holder(as_user(65534, probe({"hold", std::to_string(8 * kMiB), drop("ready")})), tenant_env());
  ASSERT_TRUE(wait_for_entry(drop_, "ready", 20s));
  const ProcessResult write =
      gpushare::testing::run(as_user(65534, {"sh", "-c", "printf x >> \"$0\"", state_}), Env{});
  EXPECT_NE(write.exit_code, 0) << "a tenant's user could write the state";
  const ProcessResult truncate = gpushare::testing::run(as_user(65534, {"truncate", "-s", "0", state_}), Env{});
  EXPECT_NE(truncate.exit_code, 0);
  // Reading is enough for status.
  const ProcessResult status =
      gpushare::testing::run(as_user(65534, {GPUSHARE_TEST_TOOL, "status", "--state", state_}), Env{});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("night"), std::string::npos) << status.out;
}

TEST_F(Isolation, ThePolicysQuotaIsExactAndTheEnvironmentCannotRaiseIt) {
  const ProcessResult raised = gpushare::testing::run(as_user(65534, probe({"fill", std::to_string(kMiB)})),
                                                      tenant_env({{"GPUSHARE_MEMORY_LIMIT", "1GiB"},
                                                                  {"CUDA_DEVICE_MEMORY_LIMIT", "2g"},
                                                                  {"GPUSHARE_TENANT", "racers"}}));
  ASSERT_EQ(raised.exit_code, 0) << raised.err;
  EXPECT_EQ(output_u64(raised.out, "allocated"), 64 * kMiB) << raised.out;
  EXPECT_EQ(output_u64(raised.out, "total", "meminfo"), 64 * kMiB);
  EXPECT_EQ(output_u64(raised.out, "free", "after_free"), 64 * kMiB);

  // A lower limit of its own is taken.
  const ProcessResult lowered = gpushare::testing::run(as_user(65534, probe({"fill", std::to_string(kMiB)})),
                                                       tenant_env({{"GPUSHARE_MEMORY_LIMIT", "32MiB"}}));
  ASSERT_EQ(lowered.exit_code, 0) << lowered.err;
  EXPECT_EQ(output_u64(lowered.out, "allocated"), 32 * kMiB) << lowered.out;

  // `gpushare run` leaves the state to the agent: its options too only lower.
  std::vector<std::string> run{GPUSHARE_TEST_TOOL, "run", "--memory", "16MiB", "--"};
  for (const auto& arg : probe({"fill", std::to_string(kMiB)})) run.push_back(arg);
  Env run_env = tenant_env();
  run_env.erase("LD_PRELOAD");  // run sets it
  const ProcessResult through_run = gpushare::testing::run(as_user(65534, run), run_env);
  ASSERT_EQ(through_run.exit_code, 0) << through_run.err;
  EXPECT_EQ(output_u64(through_run.out, "allocated"), 16 * kMiB) << through_run.out;
}

TEST_F(Isolation, RacingProcessesNeverExceedTheQuotaByOneByte) {
  std::vector<std::unique_ptr<Process>> racers;
  for (int i = 0; i < 4; ++i) {
    const std::string filled = drop("filled-" + std::to_string(i));
    racers.push_back(std::make_unique<Process>(
        as_user(65533, probe({"fill", std::to_string(kMiB), drop("go"), filled})), tenant_env()));
  }
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(wait_for_entry(drop_, "filled-" + std::to_string(i), 20s));
  }
  std::ofstream(drop("go")) << "go\n";
  std::uint64_t total = 0;
  for (auto& racer : racers) {
    const ProcessResult r = racer->wait();
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto allocated = output_u64(r.out, "allocated");
    ASSERT_TRUE(allocated.has_value()) << r.out;
    total += *allocated;
  }
  EXPECT_EQ(total, 100 * kMiB) << "leases taken back before any refusal, never a byte over";
}

TEST_F(Isolation, KillingATenantReturnsItsBytesAtOnce) {
  {
    Process holder(as_user(65534, probe({"hold", std::to_string(40 * kMiB), drop("ready")})), tenant_env());
    ASSERT_TRUE(wait_for_entry(drop_, "ready", 20s));
    holder.kill(SIGKILL);
    EXPECT_EQ(holder.wait().exit_code, 128 + SIGKILL);
  }
  const ProcessResult r = gpushare::testing::run(as_user(65534, probe({"fill", std::to_string(kMiB)})), tenant_env());
  EXPECT_EQ(output_u64(r.out, "allocated"), 64 * kMiB) << r.out << r.err;
}

// The agent decides the slices with the daemonless arbiter: the policy's 30/70 holds while both
// saturate the GPU, and neither tenant writes the schedule.
TEST_F(Isolation, TheAgentsSlicesKeepThePolicysShares) {
  const std::string engine = drop("engine");
  std::ofstream{engine};
  ::chmod(engine.c_str(), 0666);
  const Env env = tenant_env({{"FAKE_CUDA_ENGINE", engine}});
  const std::vector<std::string> workload{GPUSHARE_TEST_WORKLOAD, "linked", "saturate", "4", "1000"};
  Process thirty(as_user(65534, workload), env);
  Process seventy(as_user(65533, workload), env);
  const ProcessResult a = thirty.wait(60s);
  const ProcessResult b = seventy.wait(60s);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const double a_us = gpushare::testing::output_double(a.out, "kernel_us").value_or(0);
  const double b_us = gpushare::testing::output_double(b.out, "kernel_us").value_or(0);
  ASSERT_GT(a_us + b_us, 0) << a.out << b.out;
  std::printf("share night %.3f racers %.3f\n", a_us / (a_us + b_us), b_us / (a_us + b_us));
  EXPECT_NEAR(a_us / (a_us + b_us), 0.30, 0.03) << a.out << b.out;
}

// kill -9 of the agent: the tenant keeps running, a new process cannot join (its allocations are
// refused: GPUSHARE_ON_ERROR=closed), and a restarted agent takes the tenant back within 2 s with
// its bytes, and enforces its quota again.
TEST_F(Isolation, TenantsOutliveTheAgentAndARestartedOneTakesThemBack) {
  Process holder(as_user(65534, probe({"hold", std::to_string(40 * kMiB), drop("ready")})), tenant_env());
  ASSERT_TRUE(wait_for_entry(drop_, "ready", 20s));
  agent_->kill(SIGKILL);
  agent_->wait();
  const ProcessResult orphan = gpushare::testing::run(as_user(65534, probe({"fill", std::to_string(kMiB)})), tenant_env());
  EXPECT_EQ(output_u64(orphan.out, "allocated"), 0u) << orphan.out << orphan.err;

  const auto restarted = std::chrono::steady_clock::now();
  start_agent();
  ASSERT_TRUE(agent_logged("rejoined slot", 2s)) << "the holder did not rejoin within 2 s";
  EXPECT_LT(std::chrono::steady_clock::now() - restarted, 2500ms);
  const ProcessResult beside = gpushare::testing::run(as_user(65534, probe({"fill", std::to_string(kMiB)})), tenant_env());
  EXPECT_EQ(output_u64(beside.out, "allocated"), 24 * kMiB) << beside.out << beside.err;

  holder.kill(SIGKILL);
  holder.wait();
  const ProcessResult after = gpushare::testing::run(as_user(65534, probe({"fill", std::to_string(kMiB)})), tenant_env());
  EXPECT_EQ(output_u64(after.out, "allocated"), 64 * kMiB) << after.out << after.err;
}

// A joined client that sends tenant messages with random fields (GPU records it never attached,
// slices it does not hold, huge leases, rejoins of others' slots) and random bytes: the agent
// answers or cuts it off, and keeps serving a real tenant exactly.
TEST_F(Isolation, ATenantSendingNonsenseLeavesTheAgentServingOthers) {
  std::mt19937_64 random(20261203);
  for (int client = 0; client < 20; ++client) {
    auto connection = AgentConnection::connect(socket_);
    ASSERT_TRUE(connection) << connection.error().message;
    ASSERT_TRUE(connection->send(Hello{ClientKind::kTenant, kProtocolVersion}, 2s));
    ASSERT_TRUE(connection->receive(2s));
    if (client % 2 == 0) {
      ASSERT_TRUE(connection->send(Join{}, 2s));
      (void)connection->receive(2s);
    }
    for (int i = 0; i < 200; ++i) {
      const auto gpu = static_cast<std::uint32_t>(random() % kMaxGpuRecords);
      const std::vector<Message> nonsense{Lease{gpu, random()}, LeaseTrim{gpu}, SliceWanted{gpu},
                                          SliceDone{gpu, static_cast<std::uint32_t>(random())}, SliceRenew{gpu},
                                          Rejoin{static_cast<std::uint32_t>(random() % 600), 0}, Join{}};
      if (!connection->send(nonsense[random() % nonsense.size()], 2s)) break;
    }
    if (client % 5 == 4) {
      const std::string garbage = "GPSA" + std::string(64, static_cast<char>(random()));
      ::send(connection->fd(), garbage.data(), garbage.size(), MSG_NOSIGNAL);
    }
  }
  const ProcessResult r = gpushare::testing::run(as_user(65534, probe({"fill", std::to_string(kMiB)})), tenant_env());
  EXPECT_EQ(output_u64(r.out, "allocated"), 64 * kMiB) << r.out << r.err;
}

// The policy's hard cap holds on an idle GPU: the agent ends the capped holder's slices and grants
// it again only as its budget comes back.
TEST_F(Isolation, ThePolicysCapHoldsOnAnIdleGpu) {
  const std::string engine = drop("engine");
  std::ofstream{engine};
  ::chmod(engine.c_str(), 0666);
  const ProcessResult r = gpushare::testing::run(
      as_user(65531, {GPUSHARE_TEST_WORKLOAD, "linked", "saturate", "3", "1000"}),
      tenant_env({{"FAKE_CUDA_ENGINE", engine}, {"GPUSHARE_COMPUTE_LIMIT", "90"}}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const double kernel = gpushare::testing::output_double(r.out, "kernel_us").value_or(0);
  const double wall = gpushare::testing::output_double(r.out, "wall_us").value_or(1);
  std::printf("capped at 30: %.3f of wall time\n", kernel / wall);
  EXPECT_NEAR(kernel / wall, 0.30, 0.03) << r.out << "(its own 90 % cannot raise the policy's 30)";
}

// NVML inside a tenant (the shadow first on the library path, a fake NVML behind it): a process
// that has used CUDA sees its policy's quota as the card's total, whatever its own variables ask.
TEST_F(Isolation, NvmlInsideATenantShowsThePolicysQuota) {
  const std::string forwarder = drop("forwarder");
  std::filesystem::create_directory(forwarder);
  std::filesystem::create_symlink(GPUSHARE_TEST_FAKE_NVML, forwarder + "/" + GPUSHARE_TEST_FORWARDER_NAME);
  // The shadow reads the agent's state at GPUSHARE_STATE, or /run/gpushare/gpushare.state.
  Env env = tenant_env({{"GPUSHARE_MEMORY_LIMIT", "1GiB"}, {"GPUSHARE_STATE", state_}});
  env["LD_LIBRARY_PATH"] = std::filesystem::path(GPUSHARE_TEST_SHADOW).parent_path().string() + ":" + forwarder +
                           ":" + env["LD_LIBRARY_PATH"];
  const ProcessResult r =
      gpushare::testing::run(as_user(65534, probe({"nvml", std::to_string(8 * kMiB)})), env);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(output_u64(r.out, "alloc_rc"), 0u) << r.out;
  EXPECT_EQ(output_u64(r.out, "rc", "nvml"), 0u) << r.out;
  EXPECT_EQ(output_u64(r.out, "total", "nvml"), 64 * kMiB) << r.out;
  EXPECT_GE(output_u64(r.out, "used", "nvml").value_or(0), 8 * kMiB) << r.out;
}

TEST_F(Isolation, AProcessNoRuleMatchesIsRefused) {
  const ProcessResult r =
      gpushare::testing::run(as_user(65532, probe({"fill", std::to_string(kMiB)})), tenant_env());
  EXPECT_EQ(output_u64(r.out, "allocated"), 0u) << r.out;
  EXPECT_NE(r.err.find("refuses this process"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace gpushare::agent
