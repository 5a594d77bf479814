// End-to-end: real processes, the real preload library, the fake driver as "libcuda.so.1", one
// real shared state file per test.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "process.hpp"
#include "scratch.hpp"

namespace gpushare::testing {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;

class EndToEnd : public ScratchTest {
 protected:
  // The environment of a tenant process: preloaded, real driver = the fake one.
  Env tenant_env(Env extra = {}) const {
    extra.insert({{"LD_PRELOAD", GPUSHARE_TEST_PRELOAD},
                  {"GPUSHARE_STATE", state_},
                  {"FAKE_CUDA_DEVICE_MEMORY", std::to_string(8 * kGiB)}});
    return fake_driver_env(GPUSHARE_TEST_FAKE_DIR, std::move(extra));
  }
  static std::vector<std::string> probe(const std::string& lookup, std::vector<std::string> args) {
    args.insert(args.begin(), {GPUSHARE_TEST_PROBE, lookup});
    return args;
  }
  static void wait_for_file(const std::string& file) {
    ASSERT_TRUE(appears_within(file, std::chrono::seconds(20))) << file;
  }
};

// --- The quota through each of the three ways programs reach the driver. ---

class LookupPath : public EndToEnd, public ::testing::WithParamInterface<const char*> {};

TEST_P(LookupPath, QuotaIsExactAndTheDeviceLooksAsBigAsTheQuota) {
  const ProcessResult r =
      run(probe(GetParam(), {"fill", std::to_string(kMiB)}), tenant_env({{"GPUSHARE_MEMORY_LIMIT", "64MiB"}}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(output_u64(r.out, "allocated"), 64 * kMiB);
  EXPECT_EQ(output_u64(r.out, "error"), 2u) << "CUDA_ERROR_OUT_OF_MEMORY";
  EXPECT_EQ(output_u64(r.out, "total", "meminfo"), 64 * kMiB);
  EXPECT_EQ(output_u64(r.out, "free", "meminfo"), 0u);
  EXPECT_EQ(output_u64(r.out, "device_total", "meminfo"), 64 * kMiB);
  EXPECT_EQ(output_u64(r.out, "free", "after_free"), 64 * kMiB);
  EXPECT_EQ(r.err, "");
}

TEST_P(LookupPath, ThreadsOfOneProcessNeverOvershoot) {
  const ProcessResult r =
      run(probe(GetParam(), {"threads", "6", std::to_string(kMiB)}), tenant_env({{"GPUSHARE_MEMORY_LIMIT", "100MiB"}}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(output_u64(r.out, "allocated"), 100 * kMiB);
}

TEST_P(LookupPath, VirtualMemoryCreatesCountButReservationsAndFailedProbesDoNot) {
  const ProcessResult r =
      run(probe(GetParam(), {"vmm", std::to_string(2 * kMiB)}), tenant_env({{"GPUSHARE_MEMORY_LIMIT", "64MiB"}}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(output_u64(r.out, "reserve_rc"), 0u);
  EXPECT_EQ(output_u64(r.out, "fabric_rc"), 800u) << "the fabric probe fails in the driver and is not counted";
  EXPECT_EQ(output_u64(r.out, "allocated"), 64 * kMiB);
  EXPECT_EQ(output_u64(r.out, "error"), 2u);
  EXPECT_EQ(output_u64(r.out, "free", "after_free"), 64 * kMiB);
}

TEST_P(LookupPath, StreamOrderedAllocationsCount) {
  const ProcessResult r =
      run(probe(GetParam(), {"async", std::to_string(kMiB)}), tenant_env({{"GPUSHARE_MEMORY_LIMIT", "32MiB"}}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(output_u64(r.out, "allocated"), 32 * kMiB);
  EXPECT_EQ(output_u64(r.out, "error"), 2u);
  EXPECT_EQ(output_u64(r.out, "free", "after_free"), 32 * kMiB);
}

INSTANTIATE_TEST_SUITE_P(AllPaths, LookupPath, ::testing::Values("linked", "procaddress", "dlsym"));

// --- Quotas shared across processes. ---

TEST_F(EndToEnd, ProcessesOfOneTenantShareOneQuota) {
  Env env = tenant_env({{"GPUSHARE_MEMORY_LIMIT", "64MiB"}, {"GPUSHARE_TENANT", "train"}});
  Process holder(probe("linked", {"hold", std::to_string(40 * kMiB), path("ready")}), env);
  wait_for_file(path("ready"));
  const ProcessResult r = run(probe("procaddress", {"fill", std::to_string(kMiB)}), env);
  EXPECT_EQ(output_u64(r.out, "allocated"), 24 * kMiB);
  // Another tenant has a quota of its own.
  env["GPUSHARE_TENANT"] = "serve";
  EXPECT_EQ(output_u64(run(probe("dlsym", {"fill", std::to_string(kMiB)}), env).out, "allocated"), 64 * kMiB);
}

TEST_F(EndToEnd, RacingProcessesNeverExceedTheQuotaByOneByte) {
  const Env env = tenant_env({{"GPUSHARE_MEMORY_LIMIT", "100MiB"}, {"GPUSHARE_TENANT", "race"}});
  std::vector<std::unique_ptr<Process>> racers;
  for (int i = 0; i < 4; ++i) {
    const std::string filled = path("filled-" + std::to_string(i));
    racers.push_back(
        std::make_unique<Process>(probe("linked", {"fill", std::to_string(kMiB), path("go"), filled}), env));
  }
  // Each racer keeps what it got until all have been refused, so the sum is what was granted at once.
  for (int i = 0; i < 4; ++i) wait_for_file(path("filled-" + std::to_string(i)));
  std::ofstream(path("go")) << "go\n";
  std::uint64_t total = 0;
  for (auto& racer : racers) {
    const ProcessResult r = racer->wait();
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto allocated = output_u64(r.out, "allocated");
    ASSERT_TRUE(allocated.has_value()) << r.out;
    total += *allocated;
  }
  EXPECT_EQ(total, 100 * kMiB);
}

TEST_F(EndToEnd, KillingAProcessReturnsItsBytes) {
  const Env env = tenant_env({{"GPUSHARE_MEMORY_LIMIT", "64MiB"}, {"GPUSHARE_TENANT", "crashy"}});
  {
    Process holder(probe("linked", {"hold", std::to_string(40 * kMiB), path("ready")}), env);
    wait_for_file(path("ready"));
    holder.kill(SIGKILL);
    EXPECT_EQ(holder.wait().exit_code, 128 + SIGKILL);
  }
  const auto started = std::chrono::steady_clock::now();
  const ProcessResult r = run(probe("linked", {"fill", std::to_string(kMiB)}), env);
  EXPECT_EQ(output_u64(r.out, "allocated"), 64 * kMiB);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(1));
}

TEST_F(EndToEnd, AForkedChildDoesNotKeepItsKilledParentsBytes) {
  const Env env = tenant_env({{"GPUSHARE_MEMORY_LIMIT", "64MiB"}, {"GPUSHARE_TENANT", "forky"}});
  pid_t child = 0;
  {
    Process parent(probe("linked", {"hold-with-child", std::to_string(40 * kMiB), path("ready")}), env);
    wait_for_file(path("ready"));
    parent.kill(SIGKILL);
    const ProcessResult r = parent.wait();
    const auto child_pid = output_u64(r.out, "child");
    ASSERT_TRUE(child_pid.has_value()) << r.out;
    child = static_cast<pid_t>(*child_pid);
  }
  ASSERT_GT(child, 0);
  ASSERT_EQ(::kill(child, 0), 0) << "the child must still be alive for this test to mean anything";
  EXPECT_EQ(output_u64(run(probe("linked", {"fill", std::to_string(kMiB)}), env).out, "allocated"), 64 * kMiB);
  ::kill(child, SIGKILL);
}

TEST_F(EndToEnd, QuotaSetChangesALiveTenant) {
  const Env env = tenant_env({{"GPUSHARE_MEMORY_LIMIT", "64MiB"}, {"GPUSHARE_TENANT", "live"}});
  Process holder(probe("linked", {"hold", std::to_string(40 * kMiB), path("ready")}), env);
  wait_for_file(path("ready"));
  // Lowered below current use: further allocations fail until use drops.
  ProcessResult set = run({GPUSHARE_TEST_TOOL, "quota", "set", "live", "--memory", "32MiB", "--state", state_}, {});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  ProcessResult r = run(probe("linked", {"fill", std::to_string(kMiB)}), env);
  EXPECT_EQ(output_u64(r.out, "allocated"), 0u);
  EXPECT_EQ(output_u64(r.out, "total", "meminfo"), 32 * kMiB);
  set = run({GPUSHARE_TEST_TOOL, "quota", "set", "live", "--memory", "128MiB", "--state", state_}, {});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  r = run(probe("linked", {"fill", std::to_string(kMiB)}), env);
  EXPECT_EQ(output_u64(r.out, "allocated"), 88 * kMiB);
  // Compute policy of a live tenant, shown by status.
  set = run({GPUSHARE_TEST_TOOL, "quota", "set", "live", "--share", "20", "--limit", "50", "--priority", "high",
             "--state", state_},
            {});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  const ProcessResult status = run({GPUSHARE_TEST_TOOL, "status", "--json", "--state", state_}, {});
  EXPECT_NE(status.out.find(R"("name":"live","live":true,"share_pct":20,"limit_pct":50,"priority":"high")"),
            std::string::npos)
      << status.out;
  EXPECT_EQ(run({GPUSHARE_TEST_TOOL, "quota", "set", "live", "--share", "200", "--state", state_}, {}).exit_code, 2);
  // Unknown tenant: a clear error, exit 1.
  set = run({GPUSHARE_TEST_TOOL, "quota", "set", "nobody", "--memory", "1GiB", "--state", state_}, {});
  EXPECT_EQ(set.exit_code, 1);
  EXPECT_NE(set.err.find("nobody"), std::string::npos) << set.err;
}

TEST_F(EndToEnd, QuotasFollowTheGpuNotTheIndex) {
  // Physical GPU 1 is ordinal 0 for the first process and ordinal 1 for the second.
  Env first = tenant_env({{"GPUSHARE_MEMORY_LIMIT", "64MiB"}, {"GPUSHARE_TENANT", "t"}, {"FAKE_CUDA_DEVICE_ORDER", "1,0"}});
  Process holder(probe("linked", {"hold", std::to_string(40 * kMiB), path("ready")}), first);
  wait_for_file(path("ready"));
  Env second = tenant_env({{"GPUSHARE_MEMORY_LIMIT", "64MiB"}, {"GPUSHARE_TENANT", "t"}, {"FAKE_CUDA_DEVICE_ORDER", "0,1"}});
  second["PROBE_DEVICE"] = "1";
  EXPECT_EQ(output_u64(run(probe("linked", {"fill", std::to_string(kMiB)}), second).out, "allocated"), 24 * kMiB);
  second["PROBE_DEVICE"] = "0";
  EXPECT_EQ(output_u64(run(probe("linked", {"fill", std::to_string(kMiB)}), second).out, "allocated"), 64 * kMiB);
}

TEST_F(EndToEnd, PerDeviceLimitsAndHamiAliases) {
  Env env = tenant_env({{"FAKE_CUDA_DEVICE_COUNT", "2"},
                        {"CUDA_DEVICE_MEMORY_LIMIT", "64m"},
                        {"CUDA_DEVICE_MEMORY_LIMIT_1", "16m"},
                        {"CUDA_DEVICE_MEMORY_SHARED_CACHE", "/tmp/vgpu/3f2a.cache"}});
  EXPECT_EQ(output_u64(run(probe("linked", {"fill", std::to_string(kMiB)}), env).out, "allocated"), 64 * kMiB);
  env["PROBE_DEVICE"] = "1";
  EXPECT_EQ(output_u64(run(probe("linked", {"fill", std::to_string(kMiB)}), env).out, "allocated"), 16 * kMiB);
  // gpushare's own variable wins over HAMi's.
  env["GPUSHARE_MEMORY_LIMIT_1"] = "8MiB";
  env["GPUSHARE_TENANT"] = "other";
  EXPECT_EQ(output_u64(run(probe("linked", {"fill", std::to_string(kMiB)}), env).out, "allocated"), 8 * kMiB);
}

TEST_F(EndToEnd, WithoutALimitTheCardIsTheLimit) {
  const ProcessResult r = run(probe("linked", {"fill", std::to_string(kGiB)}), tenant_env());
  EXPECT_EQ(output_u64(r.out, "allocated"), 8 * kGiB);
  EXPECT_EQ(output_u64(r.out, "error"), 2u);
  EXPECT_EQ(output_u64(r.out, "total", "meminfo"), 8 * kGiB);
}

TEST_F(EndToEnd, PitchedAllocationsAreChargedWhatTheDriverGave) {
  const ProcessResult r = run(probe("linked", {"pitch", "1000", "100"}), tenant_env({{"GPUSHARE_MEMORY_LIMIT", "1MiB"}}));
  ASSERT_EQ(output_u64(r.out, "pitch_rc"), 0u) << r.err;
  const auto pitch = output_u64(r.out, "pitch").value();
  EXPECT_EQ(output_u64(r.out, "free", "meminfo"), kMiB - pitch * 100);
}

TEST_F(EndToEnd, ContextChargeIsTakenOncePerProcess) {
  const ProcessResult r = run(probe("linked", {"fill", std::to_string(kMiB)}),
                              tenant_env({{"GPUSHARE_MEMORY_LIMIT", "64MiB"}, {"GPUSHARE_CONTEXT_MEMORY", "10MiB"}}));
  EXPECT_EQ(output_u64(r.out, "allocated"), 54 * kMiB);
  EXPECT_EQ(output_u64(r.out, "free", "after_free"), 54 * kMiB);
}

// --- Bad input and bad state. ---

TEST_F(EndToEnd, BadLimitFailsClosedWithOneClearLine) {
  ProcessResult r = run(probe("linked", {"fill", std::to_string(kMiB)}), tenant_env({{"GPUSHARE_MEMORY_LIMIT", "8XB"}}));
  EXPECT_EQ(output_u64(r.out, "allocated"), 0u);
  EXPECT_NE(r.err.find("GPUSHARE_MEMORY_LIMIT"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("8XB"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  r = run(probe("linked", {"fill", std::to_string(kGiB)}),
          tenant_env({{"GPUSHARE_MEMORY_LIMIT", "8XB"}, {"GPUSHARE_ON_ERROR", "open"}}));
  EXPECT_EQ(output_u64(r.out, "allocated"), 8 * kGiB);
}

TEST_F(EndToEnd, CorruptStateFileIsRefusedNotCrashedOn) {
  std::ofstream(state_) << std::string(4096, 'x');
  const ProcessResult r =
      run(probe("linked", {"fill", std::to_string(kMiB)}), tenant_env({{"GPUSHARE_MEMORY_LIMIT", "64MiB"}}));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(output_u64(r.out, "allocated"), 0u);
  EXPECT_NE(r.err.find(state_), std::string::npos) << r.err;
  const ProcessResult status = run({GPUSHARE_TEST_TOOL, "status", "--state", state_}, {});
  EXPECT_EQ(status.exit_code, 1);
  EXPECT_NE(status.err.find("not a gpushare state file"), std::string::npos) << status.err;
}

TEST_F(EndToEnd, InertInProcessesThatNeverUseCuda) {
  Env env = tenant_env({{"GPUSHARE_MEMORY_LIMIT", "64MiB"}});
  const ProcessResult r = run({"/bin/sh", "-c", "echo hello; ls / >/dev/null"}, env);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "hello\n");
  EXPECT_EQ(r.err, "");
  EXPECT_FALSE(fs::exists(state_)) << "no state is created by a process that never calls the driver";
}

// --- gpushare run. ---

TEST_F(EndToEnd, RunMakesOneTenantOfEveryChildProcess) {
  const std::string probe_path = GPUSHARE_TEST_PROBE;
  // The holder, then (once it holds its bytes: polled for 20 s at most) a second process that fills.
  const std::string ready = path("ready");
  const std::string script = probe_path + " linked hold " + std::to_string(40 * kMiB) + " " + ready +
                             " & for i in $(seq 2000); do [ -e " + ready + " ] && break; sleep 0.01; done; [ -e " +
                             ready + " ] || { echo 'the holder never became ready' >&2; kill $!; exit 1; }; " +
                             probe_path + " dlsym fill " + std::to_string(kMiB) + "; kill $!";
  const Env env = fake_driver_env(GPUSHARE_TEST_FAKE_DIR, {{"FAKE_CUDA_DEVICE_MEMORY", std::to_string(8 * kGiB)}});
  const ProcessResult r =
      run({GPUSHARE_TEST_TOOL, "run", "--memory", "64MiB", "--state", state_, "--", "/bin/sh", "-c", script}, env);
  EXPECT_EQ(output_u64(r.out, "allocated"), 24 * kMiB) << r.out << r.err;
  const ProcessResult status = run({GPUSHARE_TEST_TOOL, "status", "--json", "--state", state_}, {});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find(R"("name":"sh-)"), std::string::npos) << status.out;
}

TEST_F(EndToEnd, RunKeepsTheTenantTheEnvironmentNames) {
  // A pod spec or an outer wrapper names the tenant; `gpushare run` without --tenant keeps it.
  // HAMi's cache path names the tenant after the pod (HOSTNAME) and a hash of the path.
  for (const auto& [variable, name] : std::vector<std::pair<std::string, std::string>>{
           {"GPUSHARE_TENANT", "from-env"}, {"CUDA_DEVICE_MEMORY_SHARED_CACHE", "from-hami"}}) {
    const Env env = fake_driver_env(GPUSHARE_TEST_FAKE_DIR, {{variable, name}, {"HOSTNAME", "pod-a"}});
    const ProcessResult r = run({GPUSHARE_TEST_TOOL, "run", "--memory", "8MiB", "--state", state_, "--",
                                 GPUSHARE_TEST_PROBE, "linked", "fill", std::to_string(kMiB)},
                                env);
    EXPECT_EQ(output_u64(r.out, "allocated"), 8 * kMiB) << r.err;
    const ProcessResult status = run({GPUSHARE_TEST_TOOL, "status", "--json", "--state", state_}, {});
    const std::string expected = variable == "GPUSHARE_TENANT" ? name + R"(",)" : "pod-a-";
    EXPECT_NE(status.out.find(R"({"name":")" + expected), std::string::npos) << status.out;
  }
}

TEST_F(EndToEnd, RunRefusesBadInputWithoutRunningTheCommand) {
  for (const std::vector<std::string>& options :
       {std::vector<std::string>{"--memory", "8XB"}, {"--memory", "-1"}, {"--memory", ""},
        {"--memory", "99999999999TiB"}, {"--device-memory", "x=1GiB"}, {"--tenant", "has space"}, {"--tenant", ""},
        {"--log", "loud"}, {"--share", "0"}, {"--share", "101"}, {"--limit", "3.5"}, {"--priority", "urgent"},
        {"--slice-ms", "0"}}) {
    std::vector<std::string> argv{GPUSHARE_TEST_TOOL, "run"};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.insert(argv.end(), {"--", "/usr/bin/touch", path("ran")});
    const ProcessResult r = run(argv, {});
    EXPECT_EQ(r.exit_code, 2) << options[0] << " " << options[1];
    EXPECT_FALSE(r.err.empty());
    EXPECT_FALSE(fs::exists(path("ran"))) << options[0] << " " << options[1];
    fs::remove(path("ran"));
  }
}

}  // namespace
}  // namespace gpushare::testing
