// The escape watch in the real agent: run as root with the fake NVML (tests/nvml) listing a real
// process that never connected, the agent publishes it as unaccounted for `gpushare status`, and
// under `--enforce kill` ends it once the grace has passed; under report it leaves it running.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <memory>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>

#include "agent_tenants.hpp"

namespace gpushare::agent {
namespace {

using namespace std::chrono_literals;
using gpushare::testing::ProcessResult;

using testing::kGiB;
constexpr const char* kDevice0 = "GPU-46414b45-4750-552d-0000-000000000000";  // the fake NVML's device 0

// Whether `pid`, a child of this test, has not exited (it is not reaped here).
bool still_running(pid_t pid) {
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0;
}

class EscapeAgent : public testing::AgentWithTenants {
 protected:
  void SetUp() override {
    AgentWithTenants::SetUp();
    if (IsSkipped()) return;
    std::ofstream(policy_) << "[default]\nrefuse = true\n";  // no tenant joins in these tests
    escaped_ = std::make_unique<Process>(std::vector<std::string>{"sleep", "60"}, Env{});
    escaped_pid_ = escaped_->pid();
  }

  // The agent with the fake NVML listing the escaped process with 3 GiB on device 0.
  void start_watching_agent(std::vector<std::string> options) {
    options.insert(options.begin(), {"--nvml-interval", "0.1"});
    start_agent(options, Env{{"LD_LIBRARY_PATH", GPUSHARE_TEST_FAKE_NVML_DIR},
                             {"FAKE_NVML_PROCESSES", std::to_string(escaped_pid_) + ":0:" + std::to_string(3 * kGiB)}});
  }

  // `gpushare status --json` until `wanted` holds for it, or `patience` runs out (the last one then).
  nlohmann::json status_until(const std::function<bool(const nlohmann::json&)>& wanted,
                              std::chrono::milliseconds patience) const {
    const auto deadline = std::chrono::steady_clock::now() + patience;
    nlohmann::json status;
    do {
      const ProcessResult r = gpushare::testing::run({GPUSHARE_TEST_TOOL, "status", "--json", "--state", state_}, Env{});
      if (r.exit_code == 0) {
        status = nlohmann::json::parse(r.out, nullptr, false);
        if (!status.is_discarded() && wanted(status)) return status;
      }
      std::this_thread::sleep_for(50ms);
    } while (std::chrono::steady_clock::now() < deadline);
    return status;
  }

  // The finding for the escaped process in a status, if it is there.
  std::optional<nlohmann::json> finding_in(const nlohmann::json& status) const {
    if (!status.is_object() || !status.contains("unaccounted")) return std::nullopt;
    for (const auto& finding : status["unaccounted"]) {
      if (finding.value("pid", 0) == escaped_pid_) return finding;
    }
    return std::nullopt;
  }

  std::unique_ptr<Process> escaped_;
  pid_t escaped_pid_ = 0;  // kept: the Process forgets it once waited for
};

TEST_F(EscapeAgent, StatusShowsAProcessThatNeverConnected) {
  start_watching_agent({});
  const auto status = status_until([&](const nlohmann::json& s) { return finding_in(s).has_value(); }, 10s);
  const auto finding = finding_in(status);
  ASSERT_TRUE(finding.has_value()) << status.dump() << "\n" << agent_log();
  EXPECT_EQ((*finding)["gpu_uuid"], kDevice0);
  EXPECT_EQ((*finding)["used_bytes"], 3 * kGiB);
  EXPECT_EQ((*finding)["accounted_bytes"], 0u);
  EXPECT_EQ((*finding)["unaccounted_bytes"], 3 * kGiB);
  EXPECT_EQ((*finding)["known_to_agent"], false);
  EXPECT_EQ((*finding)["kill_sent"], false);
  EXPECT_GT((*finding)["first_seen_unix_ns"].get<std::uint64_t>(), 0u);
  EXPECT_TRUE(agent_logged("not connected to the agent, uses 3", 5s)) << agent_log();

  const ProcessResult text = gpushare::testing::run({GPUSHARE_TEST_TOOL, "status", "--state", state_}, Env{});
  EXPECT_NE(text.out.find("UNACCOUNTED GPU PROCESSES"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(std::to_string(escaped_pid_)), std::string::npos) << text.out;
}

TEST_F(EscapeAgent, KillModeEndsItAfterTheGrace) {
  start_watching_agent({"--enforce", "kill", "--enforce-grace", "1"});
  const ProcessResult ended = escaped_->wait(20s);
  EXPECT_EQ(ended.exit_code, 128 + SIGKILL);
  EXPECT_TRUE(agent_logged("killed (SIGKILL)", 5s)) << agent_log();
  // Once gone, it is forgotten: the table no longer lists it.
  const auto status = status_until(
      [&](const nlohmann::json& s) { return s.contains("unaccounted") && !finding_in(s).has_value(); }, 10s);
  EXPECT_FALSE(finding_in(status).has_value()) << status.dump();
}

TEST_F(EscapeAgent, ReportModeLeavesItRunning) {
  start_watching_agent({"--enforce", "report", "--enforce-grace", "1"});
  // Until the finding has stood three times the grace: a kill mode would have ended it by then.
  const auto status = status_until(
      [&](const nlohmann::json& s) {
        const auto finding = finding_in(s);
        return finding && s["time_unix_ns"].get<std::uint64_t>() >
                              (*finding)["first_seen_unix_ns"].get<std::uint64_t>() + 3'000'000'000ull;
      },
      20s);
  const auto finding = finding_in(status);
  ASSERT_TRUE(finding.has_value()) << status.dump() << "\n" << agent_log();
  EXPECT_EQ((*finding)["kill_sent"], false);
  EXPECT_TRUE(still_running(escaped_pid_));
  EXPECT_EQ(agent_log().find("SIGKILL"), std::string::npos) << agent_log();
}

TEST_F(EscapeAgent, WithoutNvmlTheAgentServesAndSaysSo) {
  start_agent({}, Env{{"LD_LIBRARY_PATH", directory_.path()}});
  if (agent_logged("escape watch every", 1s)) GTEST_SKIP() << "this host has a real NVML";
  EXPECT_TRUE(agent_logged("escape watch off: NVML cannot be loaded", 5s)) << agent_log();
  const ProcessResult status = gpushare::testing::run({GPUSHARE_TEST_TOOL, "status", "--json", "--state", state_}, Env{});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(nlohmann::json::parse(status.out)["unaccounted"], nlohmann::json::array());
}

}  // namespace
}  // namespace gpushare::agent
