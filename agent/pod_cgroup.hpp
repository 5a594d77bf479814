// Which Kubernetes pod (and container) a process runs in, read from its cgroup path alone: the
// kubelet names a pod's cgroup after the pod's UID and each container's after its runtime ID.
//
// Layouts recognized (docs/agent-policy.md, "On Kubernetes"), ROOT being the kubelet's
// --cgroup-root ("/" by default; --kubelet-cgroup-root tells the agent another one):
//   cgroupfs driver: ROOT/kubepods[/burstable|/besteffort]/pod<uid>/<64 hex container id>
//   systemd driver:  ROOT/kubepods[-qos].slice/kubepods[-qos]-pod<uid, '-' as '_'>.slice/
//                    <cri-containerd|docker|crio>-<64 hex>.scope
//   (under a root ending in R.slice, the slices are named R-kubepods.slice, R-kubepods-qos.slice, ...)
// The path must start with that chain, so that a cgroup a user made elsewhere (a delegated
// systemd user@.service subtree, a Slurm job) cannot pose as a pod by its names. Seen from inside
// a cgroup namespace (the agent in its own container), the path starts with "/.." components
// that hide the cgroups above the agent's and the ones both share: then any tail of the chain
// (also none) may follow them, the hidden part being the kubelet's cgroups above the agent's own.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace gpushare::agent {

struct PodCgroup {
  std::string pod_uid;       // "0f1e2d3c-...", as the API server writes metadata.uid
  std::string container_id;  // 64 hex digits; "" when the path ends at the pod or names no container
};

// Longest cgroup path read: the kernel's PATH_MAX.
inline constexpr std::size_t kMaxCgroupPathBytes = 4096;

// The pod of a cgroup path; nullopt when the path names none (a process outside Kubernetes, a
// cgroup outside the kubelet's chain, a static pod's non-UUID UID); an Error when it is malformed
// or names two pods (a kubepods tree below the pod's own cgroup).
Result<std::optional<PodCgroup>> pod_of_cgroup(std::string_view path, std::string_view kubelet_cgroup_root = "/");

// Whether `root` can be a kubelet's cgroup root: an absolute path without "." or "..".
Status check_kubelet_cgroup_root(std::string_view root);

// Whether `text` is a pod UID as the API server writes it: 8-4-4-4-12 lowercase hex digits.
bool is_pod_uid(std::string_view text);

}  // namespace gpushare::agent
