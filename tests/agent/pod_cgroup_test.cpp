// The pod and container named by a cgroup path, in each layout the kubelet makes, and paths that
// must not pass for a pod's.
#include <gtest/gtest.h>

#include <string>

#include "pod_cgroup.hpp"

namespace gpushare::agent {
namespace {

const std::string kUid = "0f1e2d3c-4b5a-4987-8a6b-5c4d3e2f1a0b";
const std::string kUnderscored = "0f1e2d3c_4b5a_4987_8a6b_5c4d3e2f1a0b";
const std::string kContainer(64, 'c');
const std::string kOtherUid = "11111111-2222-4333-8444-555555555555";

PodCgroup expect_pod(const std::string& path, const std::string& kubelet_root = "/") {
  auto pod = pod_of_cgroup(path, kubelet_root);
  EXPECT_TRUE(pod.ok()) << path << ": " << (pod.ok() ? "" : pod.error().message);
  if (!pod.ok() || !pod.value()) {
    ADD_FAILURE() << path << " names no pod";
    return {};
  }
  return *pod.value();
}

void expect_no_pod(const std::string& path, const std::string& kubelet_root = "/") {
  auto pod = pod_of_cgroup(path, kubelet_root);
  ASSERT_TRUE(pod.ok()) << path << ": " << pod.error().message;
  EXPECT_FALSE(pod.value().has_value()) << path << " named pod " << pod.value()->pod_uid;
}

void expect_refused(const std::string& path, const std::string& why) {
  auto pod = pod_of_cgroup(path);
  ASSERT_FALSE(pod.ok()) << path;
  EXPECT_NE(pod.error().message.find(why), std::string::npos) << pod.error().message;
}

TEST(PodCgroupTest, CgroupfsLayoutOfEachQosClass) {
  for (const std::string prefix : {"/kubepods/burstable", "/kubepods/besteffort", "/kubepods"}) {
    const PodCgroup pod = expect_pod(prefix + "/pod" + kUid + "/" + kContainer);
    EXPECT_EQ(pod.pod_uid, kUid) << prefix;
    EXPECT_EQ(pod.container_id, kContainer) << prefix;
  }
}

TEST(PodCgroupTest, SystemdLayoutOfEachRuntime) {
  const std::string slices =
      "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + kUnderscored + ".slice";
  for (const std::string runtime : {"cri-containerd-", "docker-", "crio-"}) {
    const PodCgroup pod = expect_pod(slices + "/" + runtime + kContainer + ".scope");
    EXPECT_EQ(pod.pod_uid, kUid) << runtime;
    EXPECT_EQ(pod.container_id, kContainer) << runtime;
  }
  EXPECT_EQ(expect_pod("/kubepods.slice/kubepods-pod" + kUnderscored + ".slice/cri-containerd-" + kContainer + ".scope")
                .pod_uid,
            kUid);
}

TEST(PodCgroupTest, KubeletCgroupRoot) {
  // kind's and other kubelets' --cgroup-root before the kubepods part, as the agent is told it.
  const std::string kind = "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
                           "kubelet-kubepods-besteffort-pod" +
                           kUnderscored + ".slice/cri-containerd-" + kContainer + ".scope";
  EXPECT_EQ(expect_pod(kind, "/kubelet.slice").pod_uid, kUid);
  EXPECT_EQ(expect_pod("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + kUnderscored + ".slice",
                       "/kubelet.slice")
                .pod_uid,
            kUid);
  EXPECT_EQ(expect_pod("/gpushare/nodes/kubepods/burstable/pod" + kUid + "/" + kContainer, "/gpushare/nodes")
                .container_id,
            kContainer);
  // Without being told the root, or told another, such paths name no pod.
  expect_no_pod(kind);
  expect_no_pod(kind, "/other.slice");
  expect_no_pod("/gpushare/nodes/kubepods/burstable/pod" + kUid, "/gpushare");
  // With a root, paths at "/" are not the kubelet's either.
  expect_no_pod("/kubepods/burstable/pod" + kUid + "/" + kContainer, "/kubelet");
  // The systemd slice of the pod must be its parent's: no other owner's name.
  expect_no_pod("/kubelet.slice/kubelet-kubepods.slice/kubepods-pod" + kUnderscored + ".slice", "/kubelet.slice");
  expect_no_pod("/kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod" + kUnderscored + ".slice");
  for (const std::string bad : {"", "kubelet", "/kubelet/", "/a//b", "/a/../b"}) {
    EXPECT_FALSE(check_kubelet_cgroup_root(bad).ok()) << bad;
    EXPECT_FALSE(pod_of_cgroup("/kubepods/pod" + kUid, bad).ok()) << bad;
  }
  EXPECT_TRUE(check_kubelet_cgroup_root("/").ok());
  EXPECT_TRUE(check_kubelet_cgroup_root("/kubelet.slice").ok());
}

TEST(PodCgroupTest, PodWithoutContainerAndUnknownContainerComponents) {
  EXPECT_EQ(expect_pod("/kubepods/pod" + kUid).container_id, "");
  // crio's conmon runs in the pod but is no container; a short id is none either.
  const std::string slice = "/kubepods.slice/kubepods-pod" + kUnderscored + ".slice";
  EXPECT_EQ(expect_pod(slice + "/crio-conmon-" + kContainer + ".scope").container_id, "");
  EXPECT_EQ(expect_pod("/kubepods/pod" + kUid + "/abc123").container_id, "");
  // A process in a cgroup its container made below its own is still in that container.
  EXPECT_EQ(expect_pod("/kubepods/pod" + kUid + "/" + kContainer + "/worker").container_id, kContainer);
}

TEST(PodCgroupTest, PathsSeenFromInsideACgroupNamespace) {
  EXPECT_EQ(expect_pod("/../../pod" + kUid + "/" + kContainer).pod_uid, kUid);
  EXPECT_EQ(expect_pod("/../../../burstable/pod" + kUid + "/" + kContainer).container_id, kContainer);
  EXPECT_EQ(
      expect_pod("/../../kubepods-burstable-pod" + kUnderscored + ".slice/crio-" + kContainer + ".scope").container_id,
      kContainer);
  // The kubelet's chain from its start, when the namespace's root is above kubepods.
  EXPECT_EQ(expect_pod("/../../kubepods/burstable/pod" + kUid + "/" + kContainer).container_id, kContainer);
  EXPECT_EQ(expect_pod("/../kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + kUnderscored + ".slice",
                       "/kubelet.slice")
                .pod_uid,
            kUid);
  // Behind "..", what the chain does not lead names no pod: a user's subtree shown from there.
  expect_no_pod("/../../user.slice/user-1000.slice/user@1000.service/kubepods/burstable/pod" + kUid + "/" +
                kContainer);
  expect_no_pod("/../../user.slice/user-1000.slice/user@1000.service/kubepods.slice/kubepods-pod" + kUnderscored +
                ".slice/cri-containerd-" + kContainer + ".scope");
  expect_no_pod("/../../extra/pod" + kUid);
  // ".." only leads such a path.
  expect_refused("/kubepods/../pod" + kUid, "malformed");
}

TEST(PodCgroupTest, PathsOutsideKubernetes) {
  expect_no_pod("/");
  expect_no_pod("/user.slice/user-1000.slice/session-3.scope");
  expect_no_pod("/system.slice/podman-1234.scope");
  expect_no_pod("/slurm/uid_1000/job_42/step_0");
  // A cgroup a user made, named like a pod but not below kubepods, is no pod.
  expect_no_pod("/user.slice/user-1000.slice/pod" + kUid + "/" + kContainer);
  expect_no_pod("/kubepods/burstable/extra/pod" + kUid);
}

// A host user's delegated cgroup subtree (systemd user@UID.service, where the user may mkdir) or
// a Slurm job's must not pose as a pod of the node whose UID it read from /proc/PID/cgroup
// (world-readable): the kubelet made none of these cgroups, so none names a pod.
TEST(PodCgroupTest, UserDelegatedSubtreePosingAsAPodNamesNone) {
  const std::string user = "/user.slice/user-1000.slice/user@1000.service";
  expect_no_pod(user + "/kubepods/burstable/pod" + kUid + "/" + kContainer);
  expect_no_pod(user + "/kubepods/pod" + kUid + "/" + kContainer);
  expect_no_pod(user + "/x-kubepods.slice/kubepods-pod" + kUnderscored + ".slice/cri-containerd-" + kContainer +
                ".scope");
  expect_no_pod(user + "/kubepods.slice/kubepods-pod" + kUnderscored + ".slice/cri-containerd-" + kContainer +
                ".scope");
  expect_no_pod("/system.slice/slurmstepd.scope/job_42/step_0/kubepods/pod" + kUid + "/" + kContainer);
  // Nor when the user's subtree copies a kubelet root the agent was told.
  expect_no_pod(user + "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + kUnderscored + ".slice",
                "/kubelet.slice");
}

TEST(PodCgroupTest, HostilePaths) {
  // A UID that is no UUID: upper case, wrong groups, a systemd one written with '-'.
  expect_no_pod("/kubepods/pod" + std::string("0F1E2D3C-4B5A-4987-8A6B-5C4D3E2F1A0B"));
  expect_no_pod("/kubepods/podnot-a-uuid/" + kContainer);
  expect_no_pod("/kubepods/pod" + kUid + "0");
  expect_no_pod("/kubepods.slice/kubepods-pod" + kUid + ".slice");
  // Two pods: a container making a kubepods tree below its own cgroup.
  expect_refused("/kubepods/pod" + kUid + "/" + kContainer + "/kubepods/pod" + kOtherUid, "two pods");
  expect_refused("/kubepods.slice/kubepods-pod" + kUnderscored + ".slice/kubepods.slice/kubepods-pod" +
                     std::string("11111111_2222_4333_8444_555555555555") + ".slice",
                 "two pods");
  expect_refused("/kubepods/pod" + kUid + "/" + std::string(5000, 'x'), "bytes");
  expect_refused("/kubepods//pod" + kUid, "malformed");
  expect_refused("/kubepods/pod" + kUid + "/", "malformed");
  expect_refused("kubepods/pod" + kUid, "not absolute");
}

TEST(PodCgroupTest, PodUids) {
  EXPECT_TRUE(is_pod_uid(kUid));
  EXPECT_FALSE(is_pod_uid(""));
  EXPECT_FALSE(is_pod_uid(kUnderscored));
  EXPECT_FALSE(is_pod_uid(kUid.substr(1)));
  EXPECT_FALSE(is_pod_uid("0f1e2d3c4b5a49878a6b5c4d3e2f1a0b"));
}

}  // namespace
}  // namespace gpushare::agent
