// The tenant and limits of a process in a pod, in one process: the pod cache filled by hand, a
// fresh state, and the labels of joined tenants.
#include <gtest/gtest.h>

#include <thread>

#include "core/registry.hpp"
#include "core/tenant_name.hpp"
#include "fake_kube_api.hpp"
#include "kube_tenants.hpp"
#include "policy.hpp"
#include "protocol.hpp"
#include "test_support.hpp"

namespace gpushare::agent {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::make_pod;

const std::string kUid = "12345678-aaaa-4bbb-8ccc-1234567890ab";
const std::string kContainer(64, 'd');
constexpr std::uint64_t kGiB = 1ull << 30;

class KubeTenantsTest : public gpushare::testing::StateTest {
 protected:
  PeerIdentity in_pod(const std::string& cgroup) const { return PeerIdentity{1000, 1000, 4242, cgroup}; }
  KubeTenants tenants(std::chrono::milliseconds first_list_wait = 0ms) {
    return KubeTenants(
        cache_, *state_, policy_, ::testing::TempDir() + "unused-labels.json", "/",
        [this](std::string_view line) { logged_ += std::string(line) + "\n"; }, first_list_wait);
  }
  // The limits the pod of `cgroup_` gets (it must be assigned).
  PodAssignment assigned() {
    auto kube = tenants();
    auto result = kube.assign(in_pod(cgroup_));
    EXPECT_TRUE(result.has_value());
    if (!result || !result->ok()) {
      ADD_FAILURE() << (result ? result->error().message : "not in a pod");
      return {};
    }
    return std::move(result->value());
  }
  void use_policy(std::string_view text) {
    auto policy = parse_policy(text, "policy.toml");
    ASSERT_TRUE(policy.ok()) << policy.error().message;
    policy_ = std::move(policy).value();
  }
  void list(std::vector<json> pods) {
    std::vector<json> trimmed;
    for (const auto& pod : pods) trimmed.push_back(trim_pod(pod));
    cache_.replace_all(std::move(trimmed));
  }

  PodCache cache_{64};
  std::optional<Policy> policy_;
  std::string logged_;
  const std::string cgroup_ = "/kubepods/burstable/pod" + kUid + "/" + kContainer;
};

TEST_F(KubeTenantsTest, ThePodsTenantAndLimitsForItsContainer) {
  json pod = make_pod(kUid, "ml", "train-0", {{"gpushare.io/memory", "8Gi"}, {"gpushare.io/share", "30"}});
  pod["status"]["containerStatuses"] = {{{"name", "main"}, {"containerID", "cri-o://" + kContainer}}};
  list({pod});
  auto kube = tenants();
  auto assigned = kube.assign(in_pod(cgroup_));
  ASSERT_TRUE(assigned.has_value());
  ASSERT_TRUE(assigned->ok()) << assigned->error().message;
  EXPECT_EQ(assigned->value().assignment.tenant, "ml/train-0");
  EXPECT_EQ(assigned->value().assignment.limits.memory_bytes, 8 * kGiB);
  EXPECT_EQ(assigned->value().assignment.limits.compute.share_pct, 30u);
  EXPECT_EQ(assigned->value().origin.container, "main");
  EXPECT_EQ(assigned->value().origin.pod, "train-0");
  // A group's tenant.
  list({make_pod(kUid, "ml", "train-0", {{"gpushare.io/tenant", "trainers"}})});
  EXPECT_EQ(kube.assign(in_pod(cgroup_))->value().assignment.tenant, "ml/trainers");
}

TEST_F(KubeTenantsTest, RefusalsSayWhy) {
  list({make_pod(kUid, "ml", "bad", {{"gpushare.io/share", "300"}})});
  auto kube = tenants();
  auto bad = kube.assign(in_pod(cgroup_));
  ASSERT_TRUE(bad.has_value());
  ASSERT_FALSE(bad->ok());
  EXPECT_TRUE(gpushare::testing::Contains(bad->error().message, "pod ml/bad: annotation gpushare.io/share"));
  list({make_pod(kUid, "ml", "off", {{"gpushare.io/enabled", "false"}})});
  EXPECT_TRUE(gpushare::testing::Contains(kube.assign(in_pod(cgroup_))->error().message, "pod ml/off opted out"));
  list({});
  EXPECT_TRUE(gpushare::testing::Contains(kube.assign(in_pod(cgroup_))->error().message,
                                          "pod " + kUid + " not known to the API server watch"));
  auto two = kube.assign(in_pod("/kubepods/pod" + kUid + "/x/kubepods/pod" + kUid));
  ASSERT_TRUE(two.has_value());
  EXPECT_TRUE(gpushare::testing::Contains(two->error().message, "names two pods"));
  // Not in a pod, or not known where: the policy's to decide.
  EXPECT_FALSE(kube.assign(in_pod("/user.slice/user-1000.slice/session-1.scope")).has_value());
  EXPECT_FALSE(kube.assign(in_pod("")).has_value());
}

TEST_F(KubeTenantsTest, AFractionIsTakenOfEachGpuAsItIsAttached) {
  list({make_pod(kUid, "ml", "kai", {{"gpu-fraction", "0.5"}})});
  auto kube = tenants();
  auto assigned = kube.assign(in_pod(cgroup_));
  ASSERT_TRUE(assigned->ok()) << assigned->error().message;  // no GPU needs to be known yet
  const TenantLimits& limits = assigned->value().assignment.limits;
  EXPECT_EQ(limits.memory_bytes, kUnlimited);
  ASSERT_TRUE(limits.memory_fraction);
  EXPECT_EQ(limits.memory_on(0, 8 * kGiB), 4 * kGiB);
  EXPECT_EQ(limits.memory_on(1, 80 * kGiB), 40 * kGiB);
  TenantLimits lowered = limits;
  lowered.memory_bytes = 1 * kGiB;  // a lower size (the container's own variable) holds
  EXPECT_EQ(lowered.memory_on(0, 8 * kGiB), 1 * kGiB);
}

TEST_F(KubeTenantsTest, TheFirstListIsAwaitedOnlyUntilItsDeadline) {
  auto kube = tenants(10s);
  std::thread lister([&] { list({make_pod(kUid, "ml", "late")}); });
  auto assigned = kube.assign(in_pod(cgroup_));
  lister.join();
  ASSERT_TRUE(assigned->ok()) << assigned->error().message;
  EXPECT_EQ(assigned->value().assignment.tenant, "ml/late");

  PodCache never_listed(4);
  KubeTenants impatient(
      never_listed, *state_, policy_, "", "/", [](std::string_view) {}, 0ms);
  EXPECT_TRUE(gpushare::testing::Contains(impatient.assign(in_pod(cgroup_))->error().message, "not known"));
}

// Live sessions: a pod's annotations changed reach its tenant; a reloaded policy leaves it alone.
TEST_F(KubeTenantsTest, ChangedAnnotationsReachLiveSessionsAndThePolicyLeavesThem) {
  TenantSessions sessions(*state_);
  list({make_pod(kUid, "ml", "train", {{"gpushare.io/share", "30"}})});
  auto kube = tenants();
  const SocketPeer in_a_pod{PeerCredentials{4242, 1000, 1000}, {}, 1};
  const SocketPeer outside{PeerCredentials{4243, 1001, 1001}, {}, 2};
  auto assigned = kube.assign(in_pod(cgroup_));
  ASSERT_TRUE(assigned->ok()) << assigned->error().message;
  sessions.assigned(in_a_pod, assigned->value().assignment, assigned->value().origin);
  sessions.assigned(outside, Assignment{"plain", TenantLimits{}, "test"});
  for (const SocketPeer* peer : {&in_a_pod, &outside}) {
    std::vector<int> passed;
    auto joined = sessions.handle(*peer, Join{}, passed);
    ASSERT_TRUE(joined.ok()) << joined.error().message;
  }
  const auto pods = sessions.joined_pods();
  ASSERT_EQ(pods.size(), 1u);
  EXPECT_EQ(pods.at("ml/train").front().pod, "train");

  const auto share_of = [&](const std::string& tenant) {
    for (const auto& record : state_->state().tenants) {
      if (tenant_name_of(record) == tenant) return record.compute_policy.share_pct.load();
    }
    return 0u;
  };
  EXPECT_EQ(share_of("ml/train"), 30u);
  // MODIFIED: the new share reaches the live tenant.
  cache_.upsert(trim_pod(make_pod(kUid, "ml", "train", {{"gpushare.io/share", "60"}})));
  kube.apply_changed_pods(sessions);
  EXPECT_EQ(share_of("ml/train"), 60u);
  EXPECT_TRUE(gpushare::testing::Contains(logged_, "tenant ml/train: limits of the pod's changed annotations applied"));

  // A reloaded policy: the process outside pods takes it, the pod's keeps its pod's limits.
  auto policy = parse_policy("[default]\nrefuse = false\ntenant = \"plain\"\nshare = 20\n", "reloaded.toml");
  ASSERT_TRUE(policy.ok()) << policy.error().message;
  std::string reload_log;
  sessions.apply_policy(policy.value(), [&](std::string_view line) { reload_log += std::string(line) + "\n"; });
  EXPECT_EQ(share_of("plain"), 20u);
  EXPECT_EQ(share_of("ml/train"), 60u);
  EXPECT_EQ(reload_log.find("ml/train"), std::string::npos) << reload_log;
}

constexpr std::string_view kCeilings = R"(
[pods]
memory = "8GiB"
share = 50
limit = 60
priority = "normal"

[pods.namespace.ml]
memory = "40GiB"
priority = "low"

[pods.namespace.sandbox]
refuse = true
)";

TEST_F(KubeTenantsTest, TheCeilingLowersWhatAPodAsksAbove) {
  use_policy(kCeilings);
  list({make_pod(kUid, "web", "greedy",
                 {{"gpushare.io/memory", "1Ti"},
                  {"gpushare.io/share", "100"},
                  {"gpushare.io/limit", "none"},
                  {"gpushare.io/priority", "high"}})});
  const PodAssignment greedy = assigned();
  const TenantLimits& limits = greedy.assignment.limits;
  EXPECT_EQ(limits.memory_bytes, 8 * kGiB);
  EXPECT_EQ(limits.compute.share_pct, 50u);
  EXPECT_EQ(limits.compute.limit_pct, 60u);
  EXPECT_EQ(limits.compute.priority, Priority::kNormal);
  for (const char* note :
       {"memory 8 GiB (asked 1 TiB, the [pods] ceiling)", "share 50% (asked 100%, the [pods] ceiling)",
        "limit 60% (none asked, the [pods] ceiling)", "priority normal (asked high, the [pods] ceiling)"})
    EXPECT_TRUE(gpushare::testing::Contains(greedy.assignment.reason, note)) << greedy.assignment.reason;
}

TEST_F(KubeTenantsTest, WhatAPodAsksBelowTheCeilingIsKept) {
  use_policy(kCeilings);
  list({make_pod(kUid, "web", "modest",
                 {{"gpushare.io/memory", "2Gi"},
                  {"gpushare.io/share", "30"},
                  {"gpushare.io/limit", "40"},
                  {"gpushare.io/priority", "low"}})});
  const PodAssignment modest = assigned();
  const TenantLimits& limits = modest.assignment.limits;
  EXPECT_EQ(limits.memory_bytes, 2 * kGiB);
  EXPECT_EQ(limits.compute.share_pct, 30u);
  EXPECT_EQ(limits.compute.limit_pct, 40u);
  EXPECT_EQ(limits.compute.priority, Priority::kLow);
  EXPECT_FALSE(gpushare::testing::Contains(modest.assignment.reason, "ceiling")) << modest.assignment.reason;
}

TEST_F(KubeTenantsTest, APodThatAsksNothingGetsTheCeiling) {
  use_policy(kCeilings);
  list({make_pod(kUid, "web", "quiet")});
  const PodAssignment quiet = assigned();
  EXPECT_EQ(quiet.assignment.limits.memory_bytes, 8 * kGiB);
  EXPECT_EQ(quiet.assignment.limits.compute.share_pct, 50u);
  EXPECT_EQ(quiet.assignment.limits.compute.limit_pct, 60u);
  EXPECT_EQ(quiet.assignment.limits.compute.priority, Priority::kNormal);
  EXPECT_TRUE(gpushare::testing::Contains(quiet.assignment.reason, "memory 8 GiB (none asked, the [pods] ceiling)"))
      << quiet.assignment.reason;
  // A fraction of the GPU is lowered to the ceiling's size too.
  list({make_pod(kUid, "web", "kai", {{"gpu-fraction", "0.5"}})});
  const PodAssignment kai = assigned();
  EXPECT_EQ(kai.assignment.limits.memory_on(0, 80 * kGiB), 8 * kGiB);
  EXPECT_EQ(kai.assignment.limits.memory_on(0, 8 * kGiB), 4 * kGiB);
}

TEST_F(KubeTenantsTest, ANamespacesTableReplacesPods) {
  use_policy(kCeilings);
  // ml's table gives no share or limit: the pod's are its own.
  list({make_pod(kUid, "ml", "train", {{"gpushare.io/memory", "1Ti"}, {"gpushare.io/share", "100"}})});
  const PodAssignment train = assigned();
  EXPECT_EQ(train.assignment.limits.memory_bytes, 40 * kGiB);
  EXPECT_EQ(train.assignment.limits.compute.share_pct, 100u);
  EXPECT_EQ(train.assignment.limits.compute.limit_pct, 0u);
  EXPECT_EQ(train.assignment.limits.compute.priority, Priority::kLow);
  EXPECT_TRUE(
      gpushare::testing::Contains(train.assignment.reason, "memory 40 GiB (asked 1 TiB, the namespace's ceiling)"));
  EXPECT_TRUE(
      gpushare::testing::Contains(train.assignment.reason, "priority low (none asked, the namespace's ceiling)"));
  // "normal" asked above the namespace's "low" is lowered to it.
  list({make_pod(kUid, "ml", "train", {{"gpushare.io/priority", "normal"}})});
  EXPECT_EQ(assigned().assignment.limits.compute.priority, Priority::kLow);
}

TEST_F(KubeTenantsTest, ARefusedNamespacesPodsCannotJoin) {
  use_policy(kCeilings);
  list({make_pod(kUid, "sandbox", "try", {{"gpushare.io/share", "10"}})});
  auto kube = tenants();
  auto refused = kube.assign(in_pod(cgroup_));
  ASSERT_TRUE(refused.has_value());
  ASSERT_FALSE(refused->ok());
  EXPECT_TRUE(gpushare::testing::Contains(
      refused->error().message,
      "pod sandbox/try: the policy refuses pods of namespace sandbox ([pods.namespace.sandbox]"))
      << refused->error().message;
  use_policy("[pods]\nrefuse = true\n[pods.namespace.ml]\n");
  EXPECT_TRUE(gpushare::testing::Contains(kube.assign(in_pod(cgroup_))->error().message, "([pods] refuse = true)"));
  list({make_pod(kUid, "ml", "train")});
  EXPECT_TRUE(kube.assign(in_pod(cgroup_))->ok());
}

TEST_F(KubeTenantsTest, WithoutCeilingsPodsSetTheirOwnLimitsAndItIsSaid) {
  list({make_pod(kUid, "web", "greedy", {{"gpushare.io/memory", "1Ti"}, {"gpushare.io/share", "100"}})});
  EXPECT_EQ(assigned().assignment.limits.memory_bytes, 1024 * kGiB);
  EXPECT_TRUE(gpushare::testing::Contains(logged_, "warning: no --policy: pods set their own limits")) << logged_;
  logged_.clear();
  use_policy("[default]\nrefuse = true\n");
  EXPECT_EQ(assigned().assignment.limits.compute.share_pct, 100u);
  EXPECT_TRUE(gpushare::testing::Contains(logged_, "warning: policy.toml has no [pods] table: pods set their own"))
      << logged_;
  logged_.clear();
  use_policy("[pods]\nshare = 40\n");
  EXPECT_EQ(assigned().assignment.limits.compute.share_pct, 40u);
  EXPECT_EQ(logged_, "");
}

// A reloaded policy's new ceilings reach the live tenants of pods, and leave the others alone.
TEST_F(KubeTenantsTest, NewCeilingsReachLivePodTenants) {
  TenantSessions sessions(*state_);
  list({make_pod(kUid, "ml", "train", {{"gpushare.io/share", "80"}})});
  auto kube = tenants();
  const SocketPeer in_a_pod{PeerCredentials{4242, 1000, 1000}, {}, 1};
  const SocketPeer outside{PeerCredentials{4243, 1001, 1001}, {}, 2};
  auto assigned_now = kube.assign(in_pod(cgroup_));
  ASSERT_TRUE(assigned_now->ok()) << assigned_now->error().message;
  sessions.assigned(in_a_pod, assigned_now->value().assignment, assigned_now->value().origin);
  TenantLimits plain_limits;
  plain_limits.compute.share_pct = 70;
  sessions.assigned(outside, Assignment{"plain", plain_limits, "test"});
  for (const SocketPeer* peer : {&in_a_pod, &outside}) {
    std::vector<int> passed;
    auto joined = sessions.handle(*peer, Join{}, passed);
    ASSERT_TRUE(joined.ok()) << joined.error().message;
  }
  const auto share_of = [&](const std::string& tenant) {
    for (const auto& record : state_->state().tenants) {
      if (tenant_name_of(record) == tenant) return record.compute_policy.share_pct.load();
    }
    return 0u;
  };
  EXPECT_EQ(share_of("ml/train"), 80u);
  kube.apply_changed_pods(sessions);  // nothing changed: nothing logged
  EXPECT_FALSE(gpushare::testing::Contains(logged_, "applied"));

  use_policy("[pods]\nshare = 50\n");  // what AdminRequests::reload_policy does in place
  kube.apply_changed_pods(sessions);
  EXPECT_EQ(share_of("ml/train"), 50u);
  EXPECT_EQ(share_of("plain"), 70u);
  EXPECT_TRUE(gpushare::testing::Contains(logged_, "tenant ml/train: limits of the policy's new pod ceilings applied"))
      << logged_;
  // Ceilings lifted: the pod's own share again, with the warning.
  logged_.clear();
  use_policy("[default]\nrefuse = true\n");
  kube.apply_changed_pods(sessions);
  EXPECT_EQ(share_of("ml/train"), 80u);
  EXPECT_TRUE(gpushare::testing::Contains(logged_, "has no [pods] table")) << logged_;
}

TEST(TenantLabelsTest, OnePodOneContainerOrAGroup) {
  const auto labels = tenant_labels_of({
      {"ml/train", {{"u1", "ml", "train", "main"}, {"u1", "ml", "train", "main"}}},
      {"ml/two-containers", {{"u2", "ml", "two-containers", "a"}, {"u2", "ml", "two-containers", "b"}}},
      {"ml/group", {{"u3", "ml", "r-0", "main"}, {"u4", "ml", "r-1", "main"}}},
  });
  EXPECT_EQ(labels.at("ml/train"), (kube::TenantLabels{"ml", "train", "main"}));
  EXPECT_EQ(labels.at("ml/two-containers"), (kube::TenantLabels{"ml", "two-containers", ""}));
  EXPECT_EQ(labels.at("ml/group"), (kube::TenantLabels{"ml", "", ""}));
}

}  // namespace
}  // namespace gpushare::agent
