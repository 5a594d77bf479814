// Which Kubernetes pod (and container) a process runs in, read from its cgroup path alone: the
// kubelet names a pod's cgroup after the pod's UID and each container's after its runtime ID.
//
// Layouts recognized (docs/agent-policy.md, "On Kubernetes"):
//   cgroupfs driver: .../kubepods[/burstable|/besteffort]/pod<uid>/<64 hex container id>
//   systemd driver:  .../kubepods[-qos].slice/kubepods[-qos]-pod<uid, '-' as '_'>.slice/
//                    <cri-containerd|docker|crio>-<64 hex>.scope
// A kubelet --cgroup-root may put anything before the kubepods part. Seen from inside a cgroup
// namespace (the agent in its own container), the path starts with "/.." components that hide
// the kubepods part: then the pod's component may follow them directly.
//
// The pod component must sit where the kubelet puts it, below a kubepods component, so that a
// cgroup a user made elsewhere (a delegated systemd subtree) cannot pose as a pod by its name.
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
// static pod's non-UUID UID); an Error when it is malformed or names two pods.
Result<std::optional<PodCgroup>> pod_of_cgroup(std::string_view path);

// Whether `text` is a pod UID as the API server writes it: 8-4-4-4-12 lowercase hex digits.
bool is_pod_uid(std::string_view text);

}  // namespace gpushare::agent
