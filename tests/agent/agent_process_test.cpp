// The real `gpushare agent` program, started through `gpushare`, reached by clients running as
// another Unix user (setpriv): the Welcome carries the uid the kernel reports, and an admin
// request is refused to that user, granted to root and to a member of --admin-group.
#include <gtest/gtest.h>

#include <grp.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "agent_program.hpp"
#include "process.hpp"
#include "server_harness.hpp"

namespace gpushare::agent {
namespace {

using namespace std::chrono_literals;
using gpushare::testing::output_value;
using gpushare::testing::Process;

class AgentProgram : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another user";
    if (::access("/usr/bin/setpriv", X_OK) != 0) GTEST_SKIP() << "needs setpriv (util-linux)";
  }

  // `gpushare agent` on a socket in a fresh directory, running once its socket is in place.
  std::unique_ptr<Process> start_agent(const std::vector<std::string>& more = {}) {
    std::vector<std::string> argv{GPUSHARE_TEST_TOOL, "agent", "--socket", socket_path_, "--state",
                                  directory_.path() + "/gpushare.state"};
    argv.insert(argv.end(), more.begin(), more.end());
    auto agent = std::make_unique<Process>(argv, gpushare::testing::Env{});
    if (!wait_for_entry(directory_.path(), "agent.sock", 10s)) ADD_FAILURE() << "the agent's socket never appeared";
    return agent;
  }
  // The probe as `user` (nullopt: as root), with an admin request.
  std::string probe(const std::vector<std::string>& as_user) {
    std::vector<std::string> argv = as_user;
    argv.insert(argv.end(), {GPUSHARE_TEST_AGENT_PROBE, socket_path_, "check"});
    auto result = gpushare::testing::run(argv, {});
    EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
    return result.out;
  }

  testing::TemporaryDirectory directory_;
  std::string socket_path_ = directory_.path() + "/agent.sock";
};

TEST_F(AgentProgram, AnotherUserIsKnownByTheKernelsWordAndRefusedAdministration) {
  auto agent = start_agent();
  const std::string nobody = probe(kAsNobody);
  EXPECT_EQ(output_value(nobody, "uid", "welcome"), "65534") << nobody;
  EXPECT_EQ(output_value(nobody, "gid", "welcome"), "65534") << nobody;
  // setpriv execs the probe: the pid the agent saw is the probe's own.
  EXPECT_EQ(output_value(nobody, "pid", "welcome"), output_value(nobody, "self_pid", "welcome")) << nobody;
  EXPECT_EQ(output_value(nobody, "result", "admin"), "error") << nobody;
  EXPECT_NE(nobody.find("permission denied"), std::string::npos) << nobody;

  const std::string root = probe({});
  EXPECT_EQ(output_value(root, "uid", "welcome"), "0") << root;
  EXPECT_EQ(output_value(root, "result", "admin"), "reply") << root;
  EXPECT_NE(root.find("admin access granted to uid 0"), std::string::npos) << root;

  agent->kill(SIGTERM);
  const auto stopped = agent->wait(10s);
  EXPECT_EQ(stopped.exit_code, 0) << stopped.err;
  EXPECT_NE(stopped.err.find("connected: pid"), std::string::npos) << stopped.err;
  EXPECT_FALSE(std::filesystem::exists(socket_path_)) << "the agent removes its socket when it stops";
}

TEST_F(AgentProgram, AMemberOfTheAdminGroupIsGrantedAdministration) {
  const group* users = ::getgrnam("users");
  if (users == nullptr) GTEST_SKIP() << "no group 'users' to name as --admin-group";
  const std::string gid = std::to_string(users->gr_gid);
  auto agent = start_agent({"--admin-group", "users"});
  // Only a supplementary group: the agent learns it from SO_PEERGROUPS.
  const std::string member = probe({"setpriv", "--reuid=65534", "--regid=65534", "--groups=" + gid});
  EXPECT_EQ(output_value(member, "uid", "welcome"), "65534") << member;
  EXPECT_EQ(output_value(member, "result", "admin"), "reply") << member;
  const std::string outsider = probe(kAsNobody);
  EXPECT_EQ(output_value(outsider, "result", "admin"), "error") << outsider;
}

// With a policy, the Welcome names the tenant the kernel's identity maps to; a peer no rule matches
// is refused (the default) and its connection closed.
TEST_F(AgentProgram, ThePolicyNamesTheTenantOfTheKernelsIdentity) {
  const std::string policy = directory_.path() + "/policy.toml";
  std::ofstream(policy) << "[tenant.night-team]\nuids = [65534]\nmemory = \"8GiB\"\n\n[default]\nrefuse = true\n";
  auto agent = start_agent({"--policy", policy});
  const std::string nobody = probe(kAsNobody);
  EXPECT_EQ(output_value(nobody, "accepted", "welcome"), "1") << nobody;
  EXPECT_EQ(output_value(nobody, "tenant", "welcome"), "night-team") << nobody;
  const std::string root = probe({});
  EXPECT_EQ(output_value(root, "accepted", "welcome"), "0") << root;
  EXPECT_NE(root.find("matches no rule"), std::string::npos) << root;
  EXPECT_NE(output_value(root, "result", "admin"), "reply") << "a refused peer is served nothing: " << root;
}

TEST_F(AgentProgram, AFaultyPolicyIsRefusedWithItsLine) {
  const std::string policy = directory_.path() + "/policy.toml";
  std::ofstream(policy) << "[tenant.a]\nuids = [1000]\nmemroy = \"8GiB\"\n";
  auto faulty = gpushare::testing::run({GPUSHARE_TEST_TOOL, "agent", "--socket", socket_path_, "--policy", policy}, {});
  EXPECT_EQ(faulty.exit_code, 2) << faulty.err;
  EXPECT_NE(faulty.err.find("policy.toml:3"), std::string::npos) << faulty.err;
  EXPECT_FALSE(std::filesystem::exists(socket_path_));
}

TEST_F(AgentProgram, BadOptionsAreRefusedBeforeListening) {
  auto unknown_group =
      gpushare::testing::run({GPUSHARE_TEST_TOOL, "agent", "--socket", socket_path_, "--admin-group", "no-such-grp"}, {});
  EXPECT_EQ(unknown_group.exit_code, 2) << unknown_group.err;
  auto missing_policy = gpushare::testing::run(
      {GPUSHARE_TEST_TOOL, "agent", "--socket", socket_path_, "--policy", directory_.path() + "/none.toml"}, {});
  EXPECT_EQ(missing_policy.exit_code, 2) << missing_policy.err;
  EXPECT_FALSE(std::filesystem::exists(socket_path_));
}

}  // namespace
}  // namespace gpushare::agent
