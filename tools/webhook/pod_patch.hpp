// What the webhook adds to an opted-in pod, as JSONPatch operations (RFC 6902) on the pod JSON:
//   - volumes `gpushare-lib` (hostPath HOST_DIR, type Directory) and `gpushare-run` (hostPath
//     SOCKET_DIR, type Directory);
//   - in every initContainer and container: both mounted read-only at the same paths, LD_PRELOAD
//     with gpushare's library first and GPUSHARE_AGENT naming the agent's socket;
// and nothing else. What is already exactly there is not added again, so a pod patched once gets
// no operation the second time (admission reinvocation). A pod whose own settings would be
// overwritten or would defeat the library is refused with a message for `kubectl apply` instead.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "core/result.hpp"

namespace gpushare::webhook {

inline constexpr const char* kLibVolumeName = "gpushare-lib";
inline constexpr const char* kRunVolumeName = "gpushare-run";

// The host folders (k8s.md: /usr/local/gpushare and /run/gpushare), mounted at the same paths.
struct InjectionPaths {
  std::string host_dir = "/usr/local/gpushare";
  std::string socket_dir = "/run/gpushare";

  // HOST_DIR/current/lib/gpushare/libgpushare-preload.so: `current` follows upgrades.
  std::string preload_library() const;
  // SOCKET_DIR/agent.sock
  std::string agent_socket() const;
};

// The operations (a JSON array, empty when the pod already has everything), or why the pod cannot
// be patched: a volume named gpushare-lib/-run or a mount at one of the two paths that is not
// gpushare's, a mount of gpushare-lib/-run without readOnly at any path (containers,
// initContainers, ephemeralContainers), another hostPath volume at, inside or above one of the two
// host folders, LD_PRELOAD set through valueFrom, or a pod whose spec is not a pod spec.
// GPUSHARE_* variables the pod already sets are left as they are (GPUSHARE_AGENT included).
Result<nlohmann::json> build_pod_patch(const nlohmann::json& pod, const InjectionPaths& paths);

}  // namespace gpushare::webhook
