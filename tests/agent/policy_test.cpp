// The policy file's parser: every key, every error with its line and key, and load_policy's
// refusal of a file or directory others may write.
#include "policy.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace gpushare::agent {
namespace {

Policy parse_ok(std::string_view text) {
  auto policy = parse_policy(text, "policy.toml");
  EXPECT_TRUE(policy.ok()) << policy.error().message;
  return policy.ok() ? std::move(policy).value() : Policy{};
}

std::string parse_error(std::string_view text) {
  auto policy = parse_policy(text, "policy.toml");
  EXPECT_FALSE(policy.ok());
  return policy.ok() ? std::string() : policy.error().message;
}

TEST(PolicyParse, EveryTenantKey) {
  Policy policy = parse_ok(R"(
[tenant.train]
uids = [1000, 1001]
gids = [300]
cgroups = ["/system.slice/train-*.scope", "/slurm/uid_*/job_42/*"]
memory = "8GiB"
memory_per_gpu = { 0 = "4GiB", 3 = "512MiB" }
share = 70
limit = 30
priority = "high"

[tenant.infer]
uids = [2000]
share = "20%"
limit = "none"
priority = "low"
memory = "unlimited"
)");
  ASSERT_EQ(policy.tenants.size(), 2u);
  const TenantRule& train = policy.tenants[0];
  EXPECT_EQ(train.name, "train");
  EXPECT_EQ(train.uids, (std::vector<std::uint32_t>{1000, 1001}));
  EXPECT_EQ(train.gids, (std::vector<std::uint32_t>{300}));
  EXPECT_EQ(train.cgroups, (std::vector<std::string>{"/system.slice/train-*.scope", "/slurm/uid_*/job_42/*"}));
  EXPECT_EQ(train.limits.memory_bytes, 8_GiB);
  EXPECT_EQ(train.limits.memory_for(0), 4_GiB);
  EXPECT_EQ(train.limits.memory_for(3), 512_MiB);
  EXPECT_EQ(train.limits.memory_for(1), 8_GiB);
  EXPECT_EQ(train.limits.compute.share_pct, 70u);
  EXPECT_EQ(train.limits.compute.limit_pct, 30u);
  EXPECT_EQ(train.limits.compute.priority, Priority::kHigh);
  const TenantRule& infer = policy.tenants[1];
  EXPECT_EQ(infer.name, "infer");
  EXPECT_EQ(infer.limits.compute.share_pct, 20u);
  EXPECT_EQ(infer.limits.compute.limit_pct, 0u);
  EXPECT_EQ(infer.limits.compute.priority, Priority::kLow);
  EXPECT_EQ(infer.limits.memory_bytes, kUnlimited);
  EXPECT_TRUE(policy.fallback.refuse);
}

TEST(PolicyParse, UnstatedLimitsAreTheDefaults) {
  Policy policy = parse_ok("[tenant.a]\nuids = [5]\n");
  ASSERT_EQ(policy.tenants.size(), 1u);
  EXPECT_EQ(policy.tenants[0].limits, TenantLimits{});
  EXPECT_EQ(policy.tenants[0].limits.compute.priority, Priority::kNormal);
  EXPECT_EQ(policy.tenants[0].limits.memory_bytes, kUnlimited);
}

TEST(PolicyParse, CapOfHundredOrZeroIsNoCap) {
  Policy policy = parse_ok("[tenant.a]\nuids = [1]\nlimit = 100\n[tenant.b]\nuids = [2]\nlimit = 0\n");
  EXPECT_EQ(policy.tenants[0].limits.compute.limit_pct, 0u);
  EXPECT_EQ(policy.tenants[1].limits.compute.limit_pct, 0u);
}

TEST(PolicyParse, DefaultRefusesUnlessTold) {
  EXPECT_TRUE(parse_ok("").fallback.refuse);
  EXPECT_TRUE(parse_ok("[default]\nrefuse = true\n").fallback.refuse);
  Policy policy = parse_ok(R"(
[default]
refuse = false
tenant = "shared"
memory = "2GiB"
memory_per_gpu = { 1 = "1GiB" }
share = 10
limit = 50
priority = "low"
)");
  EXPECT_FALSE(policy.fallback.refuse);
  EXPECT_EQ(policy.fallback.tenant, "shared");
  EXPECT_EQ(policy.fallback.limits.memory_bytes, 2_GiB);
  EXPECT_EQ(policy.fallback.limits.memory_for(1), 1_GiB);
  EXPECT_EQ(policy.fallback.limits.compute.share_pct, 10u);
  EXPECT_EQ(policy.fallback.limits.compute.limit_pct, 50u);
  EXPECT_EQ(policy.fallback.limits.compute.priority, Priority::kLow);
}

TEST(PolicyParse, PodCeilings) {
  EXPECT_FALSE(parse_ok("").pods.configured());
  Policy policy = parse_ok(R"(
[pods]
memory = "16GiB"
share = 50
priority = "normal"

[pods.namespace.ml-team]
memory = "40GiB"
limit = "80%"

[pods.namespace.sandbox]
refuse = true

[pods.namespace.free]
)");
  ASSERT_TRUE(policy.pods.configured());
  ASSERT_TRUE(policy.pods.others);
  const PodCeiling& others = *policy.pods.others;
  EXPECT_FALSE(others.refuse);
  EXPECT_EQ(others.memory_bytes, 16_GiB);
  EXPECT_EQ(others.share_pct, 50u);
  EXPECT_FALSE(others.limit_pct);  // not given: no ceiling on the cap
  EXPECT_EQ(others.priority, Priority::kNormal);
  // A namespace's table replaces [pods] whole: what it leaves out has no ceiling.
  const PodCeiling* ml = policy.pods.of("ml-team");
  ASSERT_NE(ml, nullptr);
  EXPECT_EQ(ml->memory_bytes, 40_GiB);
  EXPECT_EQ(ml->limit_pct, 80u);
  EXPECT_FALSE(ml->share_pct);
  EXPECT_FALSE(ml->priority);
  EXPECT_TRUE(policy.pods.of("sandbox")->refuse);
  EXPECT_EQ(*policy.pods.of("free"), PodCeiling{});
  EXPECT_EQ(policy.pods.of("elsewhere"), &others);
  // Namespace tables alone: [pods] exists, with no ceiling of its own.
  Policy only_namespaces = parse_ok("[pods.namespace.sandbox]\nrefuse = true\n");
  ASSERT_TRUE(only_namespaces.pods.others);
  EXPECT_EQ(*only_namespaces.pods.of("ml"), PodCeiling{});
  EXPECT_TRUE(only_namespaces.pods.of("sandbox")->refuse);
  // "unlimited" and "none" are said, and are no ceiling.
  Policy open = parse_ok("[pods]\nmemory = \"unlimited\"\nlimit = \"none\"\n");
  EXPECT_EQ(open.pods.others->memory_bytes, kUnlimited);
  EXPECT_EQ(open.pods.others->limit_pct, 0u);
}

TEST(PolicyParse, NamespaceNames) {
  EXPECT_TRUE(validate_namespace_name("kube-system").ok());
  EXPECT_TRUE(validate_namespace_name("a").ok());
  EXPECT_TRUE(validate_namespace_name(std::string(63, 'a')).ok());
  EXPECT_FALSE(validate_namespace_name(std::string(64, 'a')).ok());
  for (const char* bad : {"", "-a", "a-", "A", "a.b", "a_b", "*", "team*"})
    EXPECT_FALSE(validate_namespace_name(bad).ok()) << bad;
}

struct BadPolicy {
  const char* text;
  const char* expected;  // a part of the message: file, line and key
};

class PolicyErrors : public testing::TestWithParam<BadPolicy> {};

TEST_P(PolicyErrors, NameFileLineAndKey) {
  std::string message = parse_error(GetParam().text);
  EXPECT_NE(message.find(GetParam().expected), std::string::npos) << message;
}

INSTANTIATE_TEST_SUITE_P(
    EveryError, PolicyErrors,
    testing::Values(
        BadPolicy{"[tenant.a]\nuids = [1\n", "policy.toml:2"},  // TOML syntax
        BadPolicy{"[tenants.a]\nuids = [1]\n", "policy.toml:1: tenants: unknown table"},
        BadPolicy{"[tenant.a]\nuids = [1]\nmemroy = \"1GiB\"\n", "policy.toml:3: tenant.a.memroy: unknown key"},
        BadPolicy{"[tenant.a]\nuids = [1]\nmemory = \"8G\"\n", "policy.toml:3: tenant.a.memory: "},
        BadPolicy{"[tenant.a]\nuids = [1]\nmemory = 8\n", "policy.toml:3: tenant.a.memory: expected a size"},
        BadPolicy{"[tenant.a]\nuids = [1]\nmemory_per_gpu = { 64 = \"1GiB\" }\n",
                  "policy.toml:3: tenant.a.memory_per_gpu.64: GPU index"},
        BadPolicy{"[tenant.a]\nuids = [1]\nmemory_per_gpu = { 01 = \"1GiB\" }\n", "tenant.a.memory_per_gpu.01"},
        BadPolicy{"[tenant.a]\nuids = [1]\nmemory_per_gpu = { 0 = \"1 parsec\" }\n", "tenant.a.memory_per_gpu.0"},
        BadPolicy{"[tenant.a]\nuids = [1]\nmemory_per_gpu = \"1GiB\"\n", "policy.toml:3: tenant.a.memory_per_gpu"},
        BadPolicy{"[tenant.a]\nuids = [1]\nshare = 0\n", "policy.toml:3: tenant.a.share: invalid percentage"},
        BadPolicy{"[tenant.a]\nuids = [1]\nshare = 101\n", "policy.toml:3: tenant.a.share"},
        BadPolicy{"[tenant.a]\nuids = [1]\nshare = 1.5\n", "policy.toml:3: tenant.a.share"},
        BadPolicy{"[tenant.a]\nuids = [1]\nlimit = 101\n", "policy.toml:3: tenant.a.limit: invalid cap"},
        BadPolicy{"[tenant.a]\nuids = [1]\npriority = \"urgent\"\n", "policy.toml:3: tenant.a.priority"},
        BadPolicy{"[tenant.a]\nuids = [1]\npriority = 2\n", "policy.toml:3: tenant.a.priority"},
        BadPolicy{"[tenant.a]\nuids = [-1]\n", "policy.toml:2: tenant.a.uids: expected whole numbers"},
        BadPolicy{"[tenant.a]\nuids = [4294967295]\n", "policy.toml:2: tenant.a.uids"},
        BadPolicy{"[tenant.a]\nuids = 1\n", "policy.toml:2: tenant.a.uids: expected an array"},
        BadPolicy{"[tenant.a]\ngids = [\"wheel\"]\n", "policy.toml:2: tenant.a.gids"},
        BadPolicy{"[tenant.a]\ncgroups = [\"slurm/*\"]\n", "policy.toml:2: tenant.a.cgroups: cgroup pattern"},
        BadPolicy{"[tenant.a]\ncgroups = [\"/a/../b\"]\n", "policy.toml:2: tenant.a.cgroups"},
        BadPolicy{"[tenant.a]\ncgroups = [\"/a/b/\"]\n", "policy.toml:2: tenant.a.cgroups"},
        BadPolicy{"[tenant.a]\ncgroups = [\"/a//b\"]\n", "policy.toml:2: tenant.a.cgroups"},
        BadPolicy{"[tenant.a]\ncgroups = [\"/**/b\"]\n", "policy.toml:2: tenant.a.cgroups"},
        BadPolicy{"[tenant.a]\ncgroups = [1]\n", "policy.toml:2: tenant.a.cgroups"},
        BadPolicy{"[tenant.a]\nmemory = \"1GiB\"\n", "policy.toml:1: tenant.a: claims no process"},
        BadPolicy{"[tenant.\"a b\"]\nuids = [1]\n", "policy.toml:1: tenant.a b"},
        BadPolicy{"[tenant]\na = 1\n", "policy.toml:2: tenant.a: expected a table"},
        BadPolicy{"tenant = 1\n", "policy.toml:1: tenant: expected tables"},
        BadPolicy{"[tenant.a]\nuids = [1]\n[tenant.b]\nuids = [2, 1]\n",
                  "policy.toml:4: tenant.b.uids: 1 already claimed by tenant 'a'"},
        BadPolicy{"[tenant.a]\ngids = [7]\n[tenant.b]\ngids = [7]\n",
                  "policy.toml:4: tenant.b.gids: 7 already claimed"},
        BadPolicy{"[tenant.a]\ncgroups = [\"/x/*\"]\n\n[tenant.b]\ncgroups = [\"/x/*\"]\n",
                  "policy.toml:5: tenant.b.cgroups: '/x/*' already claimed by tenant 'a'"},
        BadPolicy{"[tenant.a]\nuids = [1, 1]\n", "policy.toml:2: tenant.a.uids: 1 listed twice"},
        BadPolicy{"[default]\nrefuse = \"no\"\n", "policy.toml:2: default.refuse: expected true or false"},
        BadPolicy{"[default]\nrefuse = false\n", "policy.toml:1: default.tenant: refuse = false needs"},
        BadPolicy{"[default]\nmemory = \"1GiB\"\n", "policy.toml:1: default: refuse = true takes no"},
        BadPolicy{"[default]\nrefuse = false\ntenant = \"\"\n", "policy.toml:3: default.tenant"},
        BadPolicy{"[default]\nrefuse = false\ntenant = \"x\"\nuids = [1]\n", "policy.toml:4: default.uids: unknown"},
        BadPolicy{"[default]\nrefuse = false\ntenant = \"a\"\n[tenant.a]\nuids = [1]\n", "default.tenant: 'a'"},
        BadPolicy{"default = true\n", "policy.toml:1: default: expected a table"},
        BadPolicy{"pods = 1\n", "policy.toml:1: pods: expected a table [pods]"},
        BadPolicy{"[pods]\nmemroy = \"1GiB\"\n", "policy.toml:2: pods.memroy: unknown key"},
        BadPolicy{"[pods]\nmemory = 8\n", "policy.toml:2: pods.memory: expected a size"},
        BadPolicy{"[pods]\nmemory_per_gpu = { 0 = \"1GiB\" }\n", "policy.toml:2: pods.memory_per_gpu: unknown key"},
        BadPolicy{"[pods]\nshare = 101\n", "policy.toml:2: pods.share"},
        BadPolicy{"[pods]\nlimit = 101\n", "policy.toml:2: pods.limit: invalid cap"},
        BadPolicy{"[pods]\npriority = \"urgent\"\n", "policy.toml:2: pods.priority"},
        BadPolicy{"[pods]\nrefuse = 1\n", "policy.toml:2: pods.refuse: expected true or false"},
        BadPolicy{"[pods]\nrefuse = true\nshare = 10\n", "policy.toml:1: pods: refuse = true takes no limits"},
        BadPolicy{"[pods]\nuids = [1]\n", "policy.toml:2: pods.uids: unknown key"},
        BadPolicy{"[pods]\nnamespace = 1\n", "policy.toml:2: pods.namespace: expected tables"},
        BadPolicy{"[pods.namespace]\nml = 1\n", "policy.toml:2: pods.namespace.ml: expected a table"},
        BadPolicy{"[pods.namespace.\"team*\"]\nshare = 10\n", "policy.toml:1: pods.namespace.team*: 'team*' is not"},
        BadPolicy{"[pods.namespace.ML]\nshare = 10\n", "policy.toml:1: pods.namespace.ML: "},
        BadPolicy{"\n[pods.namespace.ml]\nshare = \"lots\"\n", "policy.toml:3: pods.namespace.ml.share"},
        BadPolicy{"[pods.namespace.ml]\nnamespace = {}\n", "policy.toml:2: pods.namespace.ml.namespace: unknown"},
        BadPolicy{"[pods.namespace.ml]\nrefuse = true\nmemory = \"1GiB\"\n",
                  "policy.toml:1: pods.namespace.ml: refuse = true takes no limits"},
        BadPolicy{"[pod]\nshare = 1\n", "policy.toml:1: pod: unknown table"}));

// A scratch directory of this test, removed at the end.
class PolicyFile : public testing::Test {
 protected:
  void SetUp() override {
    char name[] = "/tmp/gpushare-policy-XXXXXX";
    ASSERT_NE(::mkdtemp(name), nullptr);
    directory_ = name;
  }
  void TearDown() override { std::filesystem::remove_all(directory_); }
  std::string write(const std::string& name, std::string_view text, mode_t mode) {
    std::string path = directory_ + "/" + name;
    std::ofstream(path) << text;
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    return path;
  }
  std::string directory_;
};

TEST_F(PolicyFile, LoadsAFileOnlyItsOwnerWrites) {
  std::string path = write("policy.toml", "[tenant.a]\nuids = [1]\nshare = 5\n", 0644);
  auto policy = load_policy(path);
  ASSERT_TRUE(policy.ok()) << policy.error().message;
  EXPECT_EQ(policy->source, path);
  EXPECT_EQ(policy->tenants.at(0).limits.compute.share_pct, 5u);
}

TEST_F(PolicyFile, ErrorsNameThePath) {
  std::string path = write("policy.toml", "[tenant.a]\nuids = [1]\nshare = 500\n", 0600);
  auto policy = load_policy(path);
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.error().message.rfind(path + ":3: tenant.a.share", 0), 0u) << policy.error().message;
  EXPECT_FALSE(load_policy(directory_ + "/missing.toml").ok());
}

TEST_F(PolicyFile, RefusesAFileOthersMayWrite) {
  std::string path = write("policy.toml", "[tenant.a]\nuids = [1]\n", 0646);
  auto policy = load_policy(path);
  ASSERT_FALSE(policy.ok());
  EXPECT_NE(policy.error().message.find("writable by others"), std::string::npos) << policy.error().message;
}

TEST_F(PolicyFile, RefusesADirectoryOthersMayWrite) {
  std::string path = write("policy.toml", "[tenant.a]\nuids = [1]\n", 0644);
  ASSERT_EQ(::chmod(directory_.c_str(), 0777), 0);
  auto policy = load_policy(path);
  ASSERT_FALSE(policy.ok());
  EXPECT_NE(policy.error().message.find(directory_ + ": writable by others"), std::string::npos)
      << policy.error().message;
}

TEST(PolicyPermissions, OwnerAndModeRules) {
  constexpr std::uint32_t agent = 500;
  EXPECT_TRUE(check_policy_permissions("f", 0, 0, 0644, false, agent).ok());
  EXPECT_TRUE(check_policy_permissions("f", agent, 100, 0600, false, agent).ok());
  EXPECT_TRUE(check_policy_permissions("f", 0, 0, 0664, false, agent).ok());         // group root
  EXPECT_FALSE(check_policy_permissions("f", 0, 100, 0664, false, agent).ok());      // another group
  EXPECT_FALSE(check_policy_permissions("f", 1000, 1000, 0644, false, agent).ok());  // a tenant's file
  EXPECT_FALSE(check_policy_permissions("f", 0, 0, 0666, false, agent).ok());
  EXPECT_TRUE(check_policy_permissions("d", 0, 0, 01777, true, agent).ok());  // /tmp
  EXPECT_FALSE(check_policy_permissions("d", 0, 0, 0777, true, agent).ok());
  EXPECT_FALSE(check_policy_permissions("f", 0, 0, 01666, false, agent).ok());  // sticky means nothing on files
}

// Every example of docs/agent-policy.md is a valid policy.
TEST(PolicyDoc, ExamplesParse) {
  std::ifstream doc(GPUSHARE_AGENT_POLICY_DOC);
  ASSERT_TRUE(doc) << GPUSHARE_AGENT_POLICY_DOC;
  std::string line, example;
  bool inside = false;
  int examples = 0;
  while (std::getline(doc, line)) {
    if (!inside && line == "```toml") {
      inside = true;
      example.clear();
    } else if (inside && line == "```") {
      inside = false;
      ++examples;
      auto policy = parse_policy(example, "docs/agent-policy.md example");
      EXPECT_TRUE(policy.ok()) << policy.error().message;
    } else if (inside) {
      example += line + "\n";
    }
  }
  EXPECT_GE(examples, 2);
}

}  // namespace
}  // namespace gpushare::agent
