// End-to-end: the shadow libnvidia-ml.so.1 in processes started by `gpushare run --nvml`, in front
// of a fake real NVML, while a tenant holds memory on the fake CUDA driver. The fake NVML's device
// 0 is the fake driver's physical GPU 0 (same UUID); it reports 8 GiB, of which 1 GiB used and
// 256 MiB reserved, unless a test says otherwise.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "nvml_types.hpp"
#include "process.hpp"
#include "scratch.hpp"

namespace gpushare::testing {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;
constexpr std::uint64_t kCardTotal = 8 * kGiB;
constexpr std::uint64_t kCardReserved = 256 * kMiB;
constexpr std::uint64_t kCardFree = kCardTotal - kGiB - kCardReserved;

struct Figures {
  std::uint64_t total, free, used;
};

// The probe's v1 and v2 answers both say `expected` (v2 with `reserved`), with the version intact.
void expect_figures(const ProcessResult& r, const Figures& expected, std::uint64_t reserved) {
  EXPECT_EQ(output_u64(r.out, "rc", "memory "), 0u) << r.out << r.err;
  EXPECT_EQ(output_u64(r.out, "total", "memory "), expected.total) << r.out;
  EXPECT_EQ(output_u64(r.out, "free", "memory "), expected.free) << r.out;
  EXPECT_EQ(output_u64(r.out, "used", "memory "), expected.used) << r.out;
  EXPECT_EQ(output_u64(r.out, "rc", "memory_v2 "), 0u) << r.out;
  EXPECT_EQ(output_u64(r.out, "version", "memory_v2 "), gpushare::nvml::kMemoryV2Version) << r.out;
  EXPECT_EQ(output_u64(r.out, "total", "memory_v2 "), expected.total) << r.out;
  EXPECT_EQ(output_u64(r.out, "reserved", "memory_v2 "), reserved) << r.out;
  EXPECT_EQ(output_u64(r.out, "free", "memory_v2 "), expected.free) << r.out;
  EXPECT_EQ(output_u64(r.out, "used", "memory_v2 "), expected.used) << r.out;
}

// What the fake card itself reports.
void expect_real_figures(const ProcessResult& r) {
  EXPECT_EQ(output_u64(r.out, "total", "memory "), kCardTotal) << r.out << r.err;
  EXPECT_EQ(output_u64(r.out, "free", "memory "), kCardFree) << r.out;
  EXPECT_EQ(output_u64(r.out, "reserved", "memory_v2 "), kCardReserved) << r.out;
  EXPECT_EQ(output_u64(r.out, "used", "memory_v2 "), kGiB) << r.out;
}

class ShadowNvml : public ScratchTest {
 protected:
  void SetUp() override {
    fs::create_directories(dir_ / "forwarder");
    // The documented way to use an NVML outside the standard places (here: the fake one).
    point_forwarder_at(GPUSHARE_TEST_FAKE_NVML);
  }

  void point_forwarder_at(const fs::path& target) {
    const fs::path link = dir_ / "forwarder" / GPUSHARE_TEST_FORWARDER_NAME;
    fs::remove(link);
    fs::create_symlink(target, link);
  }

  // A process of `tenant` holding `bytes` of the fake driver's GPU 0 under a quota of `limit`.
  std::unique_ptr<Process> hold(const std::string& tenant, const std::string& limit, std::uint64_t bytes) {
    const std::string ready = path("ready-" + tenant);
    auto holder = std::make_unique<Process>(
        std::vector<std::string>{GPUSHARE_TEST_ALLOC_PROBE, "linked", "hold", std::to_string(bytes), ready},
        fake_driver_env(GPUSHARE_TEST_FAKE_CUDA_DIR, {{"LD_PRELOAD", GPUSHARE_TEST_PRELOAD},
                                                      {"GPUSHARE_STATE", state_},
                                                      {"GPUSHARE_TENANT", tenant},
                                                      {"GPUSHARE_MEMORY_LIMIT", limit},
                                                      {"FAKE_CUDA_DEVICE_MEMORY", std::to_string(8 * kGiB)}}));
    EXPECT_TRUE(appears_within(ready, std::chrono::seconds(20))) << holder->wait().err;
    return holder;
  }

  // `gpushare run OPTIONS --state S -- PROBE ARGS`, with the forwarder link on LD_LIBRARY_PATH.
  ProcessResult run_probe(std::vector<std::string> options, std::vector<std::string> probe_args = {},
                          const Env& extra = {}, const char* probe = GPUSHARE_TEST_NVML_PROBE) const {
    std::vector<std::string> argv{GPUSHARE_TEST_TOOL, "run"};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.insert(argv.end(), {"--state", state_, "--", probe});
    argv.insert(argv.end(), probe_args.begin(), probe_args.end());
    Env env{{"LD_LIBRARY_PATH", (dir_ / "forwarder").string()}};
    for (const auto& [name, value] : extra) env[name] = value;
    return run(argv, env);
  }
};

TEST_F(ShadowNvml, ShowsTheTenantsQuotaAndUseAndForwardsEverythingElse) {
  auto holder = hold("train", "64MiB", 40 * kMiB);
  for (const char* probe : {GPUSHARE_TEST_NVML_PROBE, GPUSHARE_TEST_NVML_LINKED_PROBE}) {
    const ProcessResult r = run_probe({"--nvml", "--tenant", "train", "--memory", "64MiB"}, {}, {}, probe);
    ASSERT_EQ(r.exit_code, 0) << probe << "\n" << r.out << r.err;
    expect_figures(r, {64 * kMiB, 24 * kMiB, 40 * kMiB}, 0);
    EXPECT_EQ(output_value(r.out, "from", "memory "), fs::canonical(GPUSHARE_TEST_SHADOW).string()) << r.out;
    EXPECT_EQ(output_value(r.out, "from", "memory_v2 "), fs::canonical(GPUSHARE_TEST_SHADOW).string()) << r.out;
    // A function the shadow does not define comes from the real library.
    EXPECT_EQ(output_u64(r.out, "rc", "driver "), 0u) << r.out;
    EXPECT_EQ(output_value(r.out, "version", "driver "), "999.99-fake") << r.out;
    EXPECT_EQ(output_value(r.out, "from", "driver "), (dir_ / "forwarder" / GPUSHARE_TEST_FORWARDER_NAME).string());
    EXPECT_EQ(r.err, "");
  }
  // Every query reads the state afresh: a new limit shows at once.
  const ProcessResult set =
      run({GPUSHARE_TEST_TOOL, "quota", "set", "train", "--memory", "128MiB", "--state", state_}, {});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  expect_figures(run_probe({"--nvml", "--tenant", "train"}), {128 * kMiB, 88 * kMiB, 40 * kMiB}, 0);
}

TEST_F(ShadowNvml, FreeIsNeverMoreThanTheCardHasFree) {
  auto holder = hold("train", "64MiB", 40 * kMiB);
  const std::string card_used = std::to_string(kCardTotal - kCardReserved - 10 * kMiB);
  const ProcessResult r = run_probe({"--nvml", "--tenant", "train"}, {}, {{"FAKE_NVML_USED", card_used}});
  expect_figures(r, {64 * kMiB, 10 * kMiB, 40 * kMiB}, 0);
}

TEST_F(ShadowNvml, WithoutTheFlagTheRealFiguresComeBack) {
  auto holder = hold("train", "64MiB", 40 * kMiB);
  const ProcessResult r = run_probe({"--tenant", "train", "--memory", "64MiB"}, {},
                                    {{"LD_LIBRARY_PATH", fs::path(GPUSHARE_TEST_FAKE_NVML).parent_path().string()}});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  expect_real_figures(r);
  EXPECT_EQ(output_value(r.out, "from", "memory "), GPUSHARE_TEST_FAKE_NVML) << r.out;
}

TEST_F(ShadowNvml, ATenantNotYetOnTheGpuSeesTheLimitItsNextProcessWouldGet) {
  // No state file yet: nobody has used a GPU.
  ProcessResult r = run_probe({"--nvml", "--tenant", "fresh", "--memory", "1GiB"});
  expect_figures(r, {kGiB, kGiB, 0}, 0);
  // The tenant is live on GPU 0 only: GPU 1 gets the limit of its next process...
  auto holder = hold("train", "64MiB", 40 * kMiB);
  r = run_probe({"--nvml", "--tenant", "train", "--memory", "32MiB"}, {"1"});
  expect_figures(r, {32 * kMiB, 32 * kMiB, 0}, 0);
  // ... or the one `quota set` gave the live tenant.
  const ProcessResult set =
      run({GPUSHARE_TEST_TOOL, "quota", "set", "train", "--memory", "16MiB", "--state", state_}, {});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  r = run_probe({"--nvml", "--tenant", "train", "--memory", "32MiB"}, {"1"});
  expect_figures(r, {16 * kMiB, 16 * kMiB, 0}, 0);
  // A tenant whose processes are all gone starts afresh with its next process's limit.
  holder->kill(SIGKILL);
  holder->wait();
  r = run_probe({"--nvml", "--tenant", "train", "--memory", "32MiB"});
  expect_figures(r, {32 * kMiB, 32 * kMiB, 0}, 0);
}

TEST_F(ShadowNvml, WithoutAQuotaTheRealFiguresStand) {
  auto holder = hold("train", "64MiB", 40 * kMiB);
  struct Case {
    std::vector<std::string> options;
    Env env;
  };
  const std::vector<Case> cases{
      {{"--nvml", "--tenant", "other"}, {}},                            // a tenant with no limit anywhere
      {{"--nvml", "--tenant", "other", "--memory", "unlimited"}, {}},  // an explicit "no limit"
      {{"--nvml", "--tenant", "train"}, {{"FAKE_NVML_UUID", "MIG-0f7b6c1e-2b0d-5a8e-9d41-7c3e1b2a4d55"}}},
      {{"--nvml", "--tenant", "train"}, {{"FAKE_NVML_UUID", "GPU-not-a-uuid"}}},
  };
  for (const Case& c : cases) {
    const ProcessResult r = run_probe(c.options, {}, c.env);
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    expect_real_figures(r);
  }
}

TEST_F(ShadowNvml, AnUnusableStateShowsTheCardAsItIs) {
  std::ofstream(state_) << std::string(4096, 'x');
  // Started without `gpushare run`, which refuses such a state before running anything: the
  // environment `run --nvml` would set.
  const std::string shadow_dir = fs::path(GPUSHARE_TEST_SHADOW).parent_path().string();
  const ProcessResult r = run({GPUSHARE_TEST_NVML_PROBE},
                              {{"LD_LIBRARY_PATH", shadow_dir + ":" + (dir_ / "forwarder").string()},
                               {"GPUSHARE_STATE", state_},
                               {"GPUSHARE_TENANT", "train"},
                               {"GPUSHARE_MEMORY_LIMIT", "64MiB"}});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  expect_real_figures(r);
  EXPECT_EQ(r.err, "");
}

TEST_F(ShadowNvml, ErrorsOfTheRealLibraryPassThroughUntouched) {
  auto holder = hold("train", "64MiB", 40 * kMiB);
  ProcessResult r = run_probe({"--nvml", "--tenant", "train"}, {}, {{"FAKE_NVML_FAIL", "3"}});
  EXPECT_EQ(output_u64(r.out, "rc", "memory "), 3u) << r.out;
  EXPECT_EQ(output_u64(r.out, "rc", "memory_v2 "), 3u) << r.out;
  // A caller's wrong struct version is refused by the real library, and left as it was.
  r = run_probe({"--nvml", "--tenant", "train"}, {"0", "1"});
  EXPECT_EQ(output_u64(r.out, "rc", "memory_v2 "),
            static_cast<std::uint64_t>(gpushare::nvml::kErrorArgumentVersionMismatch));
  EXPECT_EQ(output_u64(r.out, "version", "memory_v2 "), 1u);
  EXPECT_EQ(output_u64(r.out, "total", "memory_v2 "), 0u);
}

TEST_F(ShadowNvml, NoRealNvmlIsACleanErrorNotACrash) {
  // A forwarder that is no library at all: NVML cannot be opened, as when it is not installed.
  std::ofstream(dir_ / "not-a-library.so.1") << "not a library\n";
  point_forwarder_at(dir_ / "not-a-library.so.1");
  ProcessResult r = run_probe({"--nvml", "--tenant", "train", "--memory", "64MiB"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("dlopen_error="), std::string::npos) << r.out;
  // A forwarder link to nowhere is skipped: the default forwarder and its standard places answer.
  point_forwarder_at(dir_ / "nowhere.so.1");
  r = run_probe({"--nvml", "--tenant", "train", "--memory", "64MiB"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  if (r.out.find("missing=nvmlInit_v2") == std::string::npos) {
    GTEST_SKIP() << "a real NVML is installed in one of the standard places";
  }
  EXPECT_NE(r.out.find("missing=nvmlSystemGetDriverVersion"), std::string::npos) << r.out;
  EXPECT_EQ(output_u64(r.out, "rc", "memory "), static_cast<std::uint64_t>(gpushare::nvml::kErrorLibraryNotFound));
  EXPECT_EQ(output_u64(r.out, "rc", "memory_v2 "), static_cast<std::uint64_t>(gpushare::nvml::kErrorLibraryNotFound));
}

}  // namespace
}  // namespace gpushare::testing
