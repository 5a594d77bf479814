// Administration in isolation mode, end to end: the real agent as root, `gpushare quota set` and
// `gpushare agent reload` through its socket, tenants on the fake driver as another Unix user.
// Only root and the --admin-group may change a tenant (anyone else: exit 4, nothing changes), and a
// policy reload reaches live tenants, while a faulty policy is refused and the old one stays.
#include <gtest/gtest.h>

#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "agent_tenants.hpp"
#include "status_json.hpp"

namespace gpushare::agent {
namespace {

using namespace std::chrono_literals;
using gpushare::testing::Json;
using gpushare::testing::output_u64;
using gpushare::testing::ProcessResult;

using testing::kGiB;
using testing::kMiB;
constexpr std::uint64_t kHeldBytes = 8 * kMiB;

class Administration : public testing::AgentWithTenants {
 protected:
  void SetUp() override {
    AgentWithTenants::SetUp();
    if (IsSkipped()) return;
    if (setpriv_missing()) GTEST_SKIP() << "needs setpriv (util-linux)";
    write_policy("64MiB");
    std::vector<std::string> more;
    if (const group* users = ::getgrnam("users")) {
      admin_gid_ = users->gr_gid;
      more = {"--admin-group", "users"};
    }
    start_agent(more);
  }

  void write_policy(const std::string& night_memory) const {
    std::ofstream(policy_) << "[tenant.night]\nuids = [65534]\nmemory = \"" << night_memory << "\"\n\n"
                           << "[default]\nrefuse = true\n";
  }
  std::vector<std::string> tool(std::vector<std::string> args) const {
    args.insert(args.begin(), GPUSHARE_TEST_TOOL);
    return args;
  }
  Env tool_env() const { return Env{{"GPUSHARE_AGENT", socket_}}; }
  // A live process of tenant night holding kHeldBytes, once the agent has its limit on a GPU.
  std::unique_ptr<Process> start_holder() {
    auto holder = std::make_unique<Process>(
        as_user(65534, {GPUSHARE_TEST_PROBE, "linked", "hold", std::to_string(kHeldBytes), drop_ + "/ready"}),
        tenant_env());
    EXPECT_TRUE(wait_for_entry(drop_, "ready", 20s)) << "the tenant never held its memory";
    EXPECT_TRUE(shows_limit(64 * kMiB));
    return holder;
  }
  // Tenant night's memory limit on its GPU, as `gpushare status --json` reads the state.
  ::testing::AssertionResult shows_limit(std::uint64_t bytes) const {
    return gpushare::testing::status_shows(state_, "night's limit of " + std::to_string(bytes), [&](const Json& s) {
      const Json* use = gpushare::testing::tenant_on_gpu(s, "night");
      return use != nullptr && use->at("memory_limit_bytes") == bytes;
    });
  }
  std::optional<std::uint64_t> limit_now() const {
    const auto status = gpushare::testing::read_status(state_);
    const Json* use = status ? gpushare::testing::tenant_on_gpu(*status, "night") : nullptr;
    if (use == nullptr || !use->at("memory_limit_bytes").is_number()) return std::nullopt;
    return use->at("memory_limit_bytes").get<std::uint64_t>();
  }
  // What a new process of tenant night can allocate beside the holder.
  std::optional<std::uint64_t> fill() const {
    const ProcessResult r = gpushare::testing::run(
        as_user(65534, {GPUSHARE_TEST_PROBE, "linked", "fill", std::to_string(kMiB)}), tenant_env());
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return output_u64(r.out, "allocated");
  }

  std::optional<gid_t> admin_gid_;
};

TEST_F(Administration, AnotherUserIsDeniedAndNothingChanges) {
  auto holder = start_holder();
  const ProcessResult denied =
      gpushare::testing::run(as_user(65534, tool({"quota", "set", "night", "--memory", "1GiB"})), tool_env());
  EXPECT_EQ(denied.exit_code, 4) << denied.out << denied.err;
  EXPECT_NE(denied.err.find("permission denied"), std::string::npos) << denied.err;
  const ProcessResult reload = gpushare::testing::run(as_user(65534, tool({"agent", "reload"})), tool_env());
  EXPECT_EQ(reload.exit_code, 4) << reload.out << reload.err;
  EXPECT_EQ(limit_now(), 64 * kMiB);
  EXPECT_EQ(fill(), 64 * kMiB - kHeldBytes);
}

TEST_F(Administration, RootChangesALiveTenantsLimit) {
  auto holder = start_holder();
  const ProcessResult set = gpushare::testing::run(tool({"quota", "set", "night", "--memory", "32MiB"}), tool_env());
  ASSERT_EQ(set.exit_code, 0) << set.out << set.err;
  EXPECT_NE(set.out.find("memory limit 32 MiB"), std::string::npos) << set.out;
  EXPECT_EQ(limit_now(), 32 * kMiB);
  EXPECT_EQ(fill(), 32 * kMiB - kHeldBytes);
  const ProcessResult unknown = gpushare::testing::run(tool({"quota", "set", "day", "--share", "50"}), tool_env());
  EXPECT_EQ(unknown.exit_code, 1) << unknown.out << unknown.err;
  EXPECT_NE(unknown.err.find("no tenant named 'day'"), std::string::npos) << unknown.err;
}

TEST_F(Administration, AMemberOfTheAdminGroupMayChangeATenant) {
  if (!admin_gid_) GTEST_SKIP() << "no group 'users' to name as --admin-group";
  auto holder = start_holder();
  const ProcessResult set = gpushare::testing::run(
      as_user(65533, tool({"quota", "set", "night", "--memory", "16MiB"}), "--groups=" + std::to_string(*admin_gid_)),
      tool_env());
  ASSERT_EQ(set.exit_code, 0) << set.out << set.err;
  EXPECT_EQ(limit_now(), 16 * kMiB);
}

TEST_F(Administration, AnUnreachableAgentIsAClearFailure) {
  const ProcessResult set = gpushare::testing::run(tool({"quota", "set", "night", "--memory", "1GiB"}),
                                                   Env{{"GPUSHARE_AGENT", directory_.path() + "/none.sock"}});
  EXPECT_EQ(set.exit_code, 1) << set.out << set.err;
  EXPECT_NE(set.err.find("cannot reach the gpushare agent"), std::string::npos) << set.err;
}

TEST_F(Administration, APolicyReloadReachesLiveTenantsAndAFaultyOneIsRefused) {
  auto holder = start_holder();
  // By request: the live tenant's limit becomes the new policy's.
  write_policy("48MiB");
  const ProcessResult reload = gpushare::testing::run(tool({"agent", "reload"}), tool_env());
  ASSERT_EQ(reload.exit_code, 0) << reload.out << reload.err;
  EXPECT_EQ(limit_now(), 48 * kMiB);
  EXPECT_EQ(fill(), 48 * kMiB - kHeldBytes);

  // By SIGHUP.
  write_policy("24MiB");
  agent_->kill(SIGHUP);
  EXPECT_TRUE(shows_limit(24 * kMiB));
  EXPECT_EQ(fill(), 24 * kMiB - kHeldBytes);

  // A faulty file: refused with its file:line, the policy in force stays.
  std::ofstream(policy_) << "[tenant.night]\nuids = [65534]\nmemroy = \"1GiB\"\n";
  const ProcessResult faulty = gpushare::testing::run(tool({"agent", "reload"}), tool_env());
  EXPECT_EQ(faulty.exit_code, 1) << faulty.out << faulty.err;
  EXPECT_NE(faulty.err.find("policy.toml:3"), std::string::npos) << faulty.err;
  EXPECT_NE(faulty.err.find("the old policy stays"), std::string::npos) << faulty.err;
  EXPECT_EQ(limit_now(), 24 * kMiB);
  EXPECT_EQ(fill(), 24 * kMiB - kHeldBytes);

  EXPECT_TRUE(agent_logged("policy.toml:3", 5s)) << "the agent logs the faulty line";
  agent_->kill(SIGTERM);
  EXPECT_EQ(agent_->wait(10s).exit_code, 0);
}

}  // namespace
}  // namespace gpushare::agent
