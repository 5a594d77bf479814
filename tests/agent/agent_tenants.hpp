// The fixture of the end-to-end tests of isolation mode: the real agent, as root, on a socket and a
// state in a fresh directory, its log in agent.log; tenants on the fake driver through the real
// preload library, run as other Unix users (setpriv), with a folder they may write (drop) for their
// ready files. Each test suite writes its own policy before start_agent.
#pragma once

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "agent_program.hpp"
#include "process.hpp"
#include "server_harness.hpp"

namespace gpushare::agent::testing {

inline constexpr std::uint64_t kMiB = 1ull << 20;
inline constexpr std::uint64_t kGiB = 1ull << 30;

class AgentWithTenants : public ::testing::Test {
 protected:
  using Env = gpushare::testing::Env;
  using Process = gpushare::testing::Process;

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to run the agent";
    std::filesystem::create_directory(drop_);
    ::chmod(drop_.c_str(), 0777);
  }
  // For suites that run tenants as other users (as_user).
  static bool setpriv_missing() { return ::access("/usr/bin/setpriv", X_OK) != 0; }

  // `gpushare agent` with this fixture's socket, state and policy (written before) and `more`
  // options, in `env`, once its socket is in place.
  void start_agent(const std::vector<std::string>& more = {}, const Env& env = {}) {
    std::filesystem::remove(socket_);
    std::vector<std::string> argv{"sh", "-c", "exec \"$@\" 2>>\"$0\"", log_, GPUSHARE_TEST_TOOL, "agent",
                                  "--socket", socket_, "--state", state_, "--policy", policy_};
    argv.insert(argv.end(), more.begin(), more.end());
    agent_ = std::make_unique<Process>(argv, env);
    ASSERT_TRUE(wait_for_entry(directory_.path(), "agent.sock", std::chrono::seconds(10)))
        << "the agent's socket never appeared\n" << agent_log();
  }
  std::string agent_log() const {
    std::ifstream file(log_);
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  }
  // Waits up to `patience` for the agent's log to hold `text`.
  bool agent_logged(const std::string& text, std::chrono::milliseconds patience) const {
    const auto deadline = std::chrono::steady_clock::now() + patience;
    do {
      if (agent_log().find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } while (std::chrono::steady_clock::now() < deadline);
    return false;
  }

  // A tenant's environment: preloaded, the fake driver, the agent named; `extra` on top.
  Env tenant_env(Env extra = {}) const {
    extra.insert({{"LD_PRELOAD", GPUSHARE_TEST_PRELOAD},
                  {"GPUSHARE_AGENT", socket_},
                  {"FAKE_CUDA_DEVICE_MEMORY", std::to_string(8 * kGiB)}});
    return gpushare::testing::fake_driver_env(GPUSHARE_TEST_FAKE_DIR, std::move(extra));
  }
  // `argv` as user (and group) `uid`, without root's groups unless `groups` says otherwise.
  static std::vector<std::string> as_user(int uid, std::vector<std::string> argv,
                                          const std::string& groups = "--clear-groups") {
    std::vector<std::string> command{"setpriv", "--reuid=" + std::to_string(uid), "--regid=" + std::to_string(uid),
                                     groups};
    command.insert(command.end(), argv.begin(), argv.end());
    return command;
  }
  // The allocation probe (alloc_probe, linked) with `args`.
  static std::vector<std::string> probe(std::vector<std::string> args) {
    args.insert(args.begin(), {GPUSHARE_TEST_PROBE, "linked"});
    return args;
  }
  std::string drop(const std::string& name) const { return drop_ + "/" + name; }

  TemporaryDirectory directory_;
  std::string socket_ = directory_.path() + "/agent.sock";
  std::string state_ = directory_.path() + "/gpushare.state";
  std::string policy_ = directory_.path() + "/policy.toml";
  std::string drop_ = directory_.path() + "/drop";
  std::string log_ = directory_.path() + "/agent.log";
  std::unique_ptr<Process> agent_;
};

}  // namespace gpushare::agent::testing
