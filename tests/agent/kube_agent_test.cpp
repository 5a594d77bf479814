// The real `gpushare agent --kubernetes` against the fake API server (fake_kube_api.hpp): tenants
// on the fake driver, moved first into a cgroup whose path names a pod (cgroup v2, made by the
// test as root), join that pod's tenant with the limits of its annotations; the tenant-labels file
// follows the joined tenants; a changed annotation reaches the live tenant; an unknown or opted-out
// pod is refused with the reason.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "agent_tenants.hpp"
#include "fake_kube_api.hpp"
#include "status_json.hpp"

namespace gpushare::agent {
namespace {

using namespace std::chrono_literals;
using gpushare::testing::output_u64;
using gpushare::testing::output_value;
using gpushare::testing::ProcessResult;
using nlohmann::json;
using testing::FakeKubeApi;
using testing::make_pod;

// Pod UIDs of this test process: tests run in parallel make cgroups of their own.
std::string pod_uid(unsigned kind) {
  return fmt::format("7a1b2c3d-000{}-4000-8000-{:012x}", kind, static_cast<unsigned>(::getpid()));
}
const std::string kUid = pod_uid(1);
const std::string kUnknownUid = pod_uid(2);
const std::string kOptedOutUid = pod_uid(3);
const std::string kFractionUid = pod_uid(4);
const std::string kContainer = std::string(60, '0') + "c0de";

// Where cgroup v2 is mounted, if it is: /proc/PID/cgroup's "0::" line is relative to it.
std::string cgroup2_mount() {
  std::ifstream mounts("/proc/self/mounts");
  std::string device, where, type, rest;
  while (mounts >> device >> where >> type && std::getline(mounts, rest)) {
    if (type == "cgroup2") return where;
  }
  return {};
}

class KubeAgent : public testing::AgentWithTenants {
 protected:
  static void SetUpTestSuite() { certificates_ = new testing::ThrowawayCertificates(); }
  static void TearDownTestSuite() {
    delete certificates_;
    certificates_ = nullptr;
  }

  void SetUp() override {
    AgentWithTenants::SetUp();
    if (IsSkipped()) return;
    if (!certificates_->made()) GTEST_SKIP() << "the openssl command cannot make certificates here";
    mount_ = cgroup2_mount();
    if (mount_.empty()) GTEST_SKIP() << "needs cgroup v2";
    // Under a root of this process's own, as a kubelet's --cgroup-root (the agent is told it).
    root_ = fmt::format("/gpushare-test-{}", ::getpid());
    pod_cgroup_ = root_ + "/kubepods/burstable/pod" + kUid + "/" + kContainer;
    for (const std::string& dir :
         {root_, root_ + "/kubepods", root_ + "/kubepods/burstable", root_ + "/kubepods/burstable/pod" + kUid,
          pod_cgroup_, root_ + "/kubepods/pod" + kUnknownUid, root_ + "/kubepods/pod" + kOptedOutUid,
          root_ + "/kubepods/pod" + kFractionUid}) {
      if (::mkdir((mount_ + dir).c_str(), 0755) != 0) GTEST_SKIP() << "cannot make the cgroup " << mount_ + dir;
      made_.insert(made_.begin(), mount_ + dir);
    }
    // The agent reads paths relative to its cgroup namespace's root: the mount's, or this test cannot run.
    const auto seen = gpushare::testing::run(in_cgroup(pod_cgroup_, {"cat", "/proc/self/cgroup"}), {});
    if (seen.out.find("0::" + pod_cgroup_ + "\n") == std::string::npos) {
      GTEST_SKIP() << "a process moved into " << pod_cgroup_ << " sees " << seen.out << seen.err;
    }
    std::ofstream(policy_) << "[default]\nrefuse = true\n";
    std::ofstream(token_) << "pod-watch-token\n";
    server_ = std::make_unique<FakeKubeApi>(*certificates_, "node-a", "pod-watch-token");
    json pod = make_pod(kUid, "team-a", "train", {{"gpushare.io/memory", "64Mi"}});
    pod["status"]["containerStatuses"] = {{{"name", "main"}, {"containerID", "containerd://" + kContainer}}};
    server_->set_pods({pod, make_pod(kOptedOutUid, "team-b", "quiet", {{"gpushare.io/enabled", "false"}}),
                       make_pod(kFractionUid, "team-c", "kai", {{"gpu-fraction", "0.25"}})},
                      "5");
    ASSERT_TRUE(server_->start());
    start_agent({"--kubernetes", "--node", "node-a", "--kube-api", server_->url(), "--kube-token-file", token_,
                 "--kube-ca-file", certificates_->path("ca.crt"), "--tenant-labels", labels_, "--kubelet-cgroup-root",
                 root_});
    ASSERT_TRUE(agent_logged("listed 3 pods of node node-a", 20s)) << agent_log();
  }
  void TearDown() override {
    agent_.reset();
    server_.reset();
    for (const auto& dir : made_) ::rmdir(dir.c_str());  // their processes are gone
  }

  // `argv` run inside `cgroup` (under the v2 mount): the shell moves itself there, then execs.
  std::vector<std::string> in_cgroup(const std::string& cgroup, std::vector<std::string> argv) const {
    std::vector<std::string> command{"sh", "-c", "echo $$ > \"$0/cgroup.procs\" && exec \"$@\"", mount_ + cgroup};
    command.insert(command.end(), argv.begin(), argv.end());
    return command;
  }
  json labels() const {
    std::ifstream file(labels_);
    std::stringstream text;
    text << file.rdbuf();
    return json::parse(text.str(), nullptr, false);
  }
  // Polls the labels file (the agent replaces it whole) until `shows` holds.
  bool labels_become(const std::function<bool(const json&)>& shows) const {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!shows(labels())) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(10ms);
    }
    return true;
  }

  static testing::ThrowawayCertificates* certificates_;
  std::unique_ptr<FakeKubeApi> server_;
  std::string mount_, root_, pod_cgroup_;  // cgroups relative to the v2 mount
  std::vector<std::string> made_;
  std::string token_ = directory_.path() + "/token";
  std::string labels_ = directory_.path() + "/tenant-labels.json";
};

testing::ThrowawayCertificates* KubeAgent::certificates_ = nullptr;

TEST_F(KubeAgent, APodsProcessJoinsItsTenantWithItsAnnotationsLimits) {
  auto tenant = std::make_unique<gpushare::testing::Process>(
      in_cgroup(pod_cgroup_, probe({"fill", std::to_string(testing::kMiB), drop("go"), drop("filled")})), tenant_env());
  ASSERT_TRUE(wait_for_entry(drop_, "filled", 20s)) << agent_log();
  EXPECT_TRUE(labels_become([](const json& file) {
    return file.is_object() && file["tenants"].contains("team-a/train") &&
           file["tenants"]["team-a/train"] == json{{"namespace", "team-a"}, {"pod", "train"}, {"container", "main"}};
  })) << labels().dump();
  EXPECT_TRUE(agent_logged("tenant team-a/train (pod team-a/train container main", 1s)) << agent_log();

  // A changed annotation reaches the live tenant's quota.
  json changed = make_pod(kUid, "team-a", "train", {{"gpushare.io/memory", "128Mi"}}, "6");
  changed["status"]["containerStatuses"] = {{{"name", "main"}, {"containerID", "containerd://" + kContainer}}};
  server_->send_event("MODIFIED", changed);
  ASSERT_TRUE(agent_logged("tenant team-a/train: limits of the pod's changed annotations applied", 20s)) << agent_log();
  std::string why;
  const auto status = gpushare::testing::read_status(state_, &why);
  ASSERT_TRUE(status) << why;
  const json* use = gpushare::testing::tenant_on_gpu(*status, "team-a/train");
  ASSERT_NE(use, nullptr) << status->dump();
  EXPECT_EQ(use->at("memory_limit_bytes"), 128 * testing::kMiB) << use->dump();

  std::ofstream(drop("go")) << "go\n";
  const ProcessResult done = tenant->wait();
  ASSERT_EQ(done.exit_code, 0) << done.err;
  EXPECT_EQ(output_u64(done.out, "allocated"), 64 * testing::kMiB) << done.out;
  EXPECT_TRUE(labels_become([](const json& file) { return file.is_object() && file["tenants"].empty(); }))
      << labels().dump();
}

TEST_F(KubeAgent, UnknownAndOptedOutPodsAndProcessesOutsidePodsAreRefused) {
  const auto hello = [&](const std::string& cgroup) {
    std::vector<std::string> argv{GPUSHARE_TEST_AGENT_PROBE, socket_};
    return gpushare::testing::run(cgroup.empty() ? argv : in_cgroup(cgroup, argv), {}).out;
  };
  const std::string unknown = hello(root_ + "/kubepods/pod" + kUnknownUid);
  EXPECT_EQ(output_value(unknown, "accepted", "welcome"), "0") << unknown;
  EXPECT_NE(unknown.find("pod " + kUnknownUid + " not known to the API server watch"), std::string::npos) << unknown;
  const std::string opted_out = hello(root_ + "/kubepods/pod" + kOptedOutUid);
  EXPECT_EQ(output_value(opted_out, "accepted", "welcome"), "0") << opted_out;
  EXPECT_NE(opted_out.find("pod team-b/quiet opted out"), std::string::npos) << opted_out;
  // Outside pods the policy decides: this one refuses everyone.
  const std::string outside = hello("");
  EXPECT_EQ(output_value(outside, "accepted", "welcome"), "0") << outside;
  EXPECT_NE(outside.find("matches no rule"), std::string::npos) << outside;
  // The pod's own process is welcome, by the tenant its annotations' pod names.
  const std::string member = hello(pod_cgroup_);
  EXPECT_EQ(output_value(member, "tenant", "welcome"), "team-a/train") << member;
}

TEST_F(KubeAgent, KaisFractionIsThatPartOfTheGpusMemory) {
  // No process has attached a GPU yet: the fraction becomes bytes when this one attaches its GPU.
  const ProcessResult filled = gpushare::testing::run(
      in_cgroup(root_ + "/kubepods/pod" + kFractionUid, probe({"fill", std::to_string(64 * testing::kMiB)})),
      tenant_env());
  ASSERT_EQ(filled.exit_code, 0) << filled.err << agent_log();
  EXPECT_EQ(output_u64(filled.out, "allocated"), 2 * testing::kGiB) << filled.out;  // 0.25 of the fake 8 GiB card
  EXPECT_TRUE(agent_logged("tenant team-c/kai", 1s)) << agent_log();
}

}  // namespace
}  // namespace gpushare::agent
