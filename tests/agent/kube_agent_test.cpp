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

const std::string kUid = "7a1b2c3d-0000-4000-8000-00000000abcd";
const std::string kUnknownUid = "7a1b2c3d-0000-4000-8000-00000000ffff";
const std::string kOptedOutUid = "7a1b2c3d-0000-4000-8000-00000000eeee";
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

std::string own_cgroup2() {
  std::ifstream file("/proc/self/cgroup");
  for (std::string line; std::getline(file, line);) {
    if (line.rfind("0::", 0) == 0) return line.substr(3);
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
    const std::string mount = cgroup2_mount();
    // Paths are read relative to the namespace's root: the test must sit at it.
    if (mount.empty() || own_cgroup2() != "/") GTEST_SKIP() << "needs cgroup v2 with this process at its root";
    pod_cgroup_ = mount + "/kubepods/burstable/pod" + kUid + "/" + kContainer;
    for (const std::string& dir :
         {mount + "/kubepods", mount + "/kubepods/burstable", mount + "/kubepods/burstable/pod" + kUid, pod_cgroup_,
          mount + "/kubepods/pod" + kUnknownUid, mount + "/kubepods/pod" + kOptedOutUid}) {
      if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) GTEST_SKIP() << "cannot make the cgroup " << dir;
      made_.insert(made_.begin(), dir);
    }
    mount_ = mount;
    std::ofstream(policy_) << "[default]\nrefuse = true\n";
    std::ofstream(token_) << "pod-watch-token\n";
    server_ = std::make_unique<FakeKubeApi>(*certificates_, "node-a", "pod-watch-token");
    json pod = make_pod(kUid, "team-a", "train", {{"gpushare.io/memory", "64Mi"}});
    pod["status"]["containerStatuses"] = {{{"name", "main"}, {"containerID", "containerd://" + kContainer}}};
    server_->set_pods({pod, make_pod(kOptedOutUid, "team-b", "quiet", {{"gpushare.io/enabled", "false"}})}, "5");
    ASSERT_TRUE(server_->start());
    start_agent({"--kubernetes", "--node", "node-a", "--kube-api", server_->url(), "--kube-token-file", token_,
                 "--kube-ca-file", certificates_->path("ca.crt"), "--tenant-labels", labels_});
    ASSERT_TRUE(agent_logged("listed 2 pods of node node-a", 20s)) << agent_log();
  }
  void TearDown() override {
    agent_.reset();
    server_.reset();
    for (const auto& dir : made_) ::rmdir(dir.c_str());  // once their processes are gone
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
  std::string mount_, pod_cgroup_;
  std::vector<std::string> made_;
  std::string token_ = directory_.path() + "/token";
  std::string labels_ = directory_.path() + "/tenant-labels.json";
};

testing::ThrowawayCertificates* KubeAgent::certificates_ = nullptr;

TEST_F(KubeAgent, APodsProcessJoinsItsTenantWithItsAnnotationsLimits) {
  const std::string relative = pod_cgroup_.substr(mount_.size());
  auto tenant = std::make_unique<gpushare::testing::Process>(
      in_cgroup(relative, probe({"fill", std::to_string(testing::kMiB), drop("go"), drop("filled")})), tenant_env());
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
  const std::string unknown = hello("/kubepods/pod" + kUnknownUid);
  EXPECT_EQ(output_value(unknown, "accepted", "welcome"), "0") << unknown;
  EXPECT_NE(unknown.find("pod " + kUnknownUid + " not known to the API server watch"), std::string::npos) << unknown;
  const std::string opted_out = hello("/kubepods/pod" + kOptedOutUid);
  EXPECT_EQ(output_value(opted_out, "accepted", "welcome"), "0") << opted_out;
  EXPECT_NE(opted_out.find("pod team-b/quiet opted out"), std::string::npos) << opted_out;
  // Outside pods the policy decides: this one refuses everyone.
  const std::string outside = hello("");
  EXPECT_EQ(output_value(outside, "accepted", "welcome"), "0") << outside;
  EXPECT_NE(outside.find("matches no rule"), std::string::npos) << outside;
  // The pod's own process is welcome, by the tenant its annotations' pod names.
  const std::string member = hello(pod_cgroup_.substr(mount_.size()));
  EXPECT_EQ(output_value(member, "tenant", "welcome"), "team-a/train") << member;
}

}  // namespace
}  // namespace gpushare::agent
