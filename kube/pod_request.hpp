// What a Kubernetes pod asks of gpushare, read from the pod object as the API server returns it (the
// same JSON in an admission review and in a watch event). One reader for the admission webhook, which
// refuses a pod whose gpushare.io/ annotations are wrong, and for the node agent, which turns a pod's
// request into its tenant and limits.
//
// gpushare's own annotations (docs/kubernetes-webhook.md has the table) are read strictly. Peers'
// requests are read leniently, since gpushare does not own them: KAI-Scheduler's `gpu-memory` (MiB)
// and `gpu-fraction` annotations and `GPU_PORTION` variable, and NVIDIA's NVIDIA_GPU_MEMORY_LIMIT /
// NVIDIA_GPU_MEMORY_REQUEST (whole MiB), as literal values of a container's `env`.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/result.hpp"
#include "policy.hpp"

namespace gpushare::kube {

inline constexpr std::string_view kAnnotationPrefix = "gpushare.io/";
// The namespace label that opts in every pod of the namespace (value "true").
inline constexpr std::string_view kNamespaceOptInLabel = "gpushare.io/enabled";

struct PodIdentity {
  std::string uid;
  std::string namespace_name;
  std::string name;
};

// metadata.uid, metadata.namespace and metadata.name, each required.
Result<PodIdentity> read_pod_identity(const nlohmann::json& pod);

struct PodRequest {
  bool opted_in = false;   // some gpushare.io/ annotation asks for gpushare (enabled: "false" does not)
  bool opted_out = false;  // gpushare.io/enabled: "false"
  std::string tenant_group;  // gpushare.io/tenant; empty when absent
  agent::TenantLimits limits;  // memory kUnlimited and the default compute policy when nothing asks
  // A fraction of the GPU's memory (KAI's gpu-fraction or GPU_PORTION), 0 < f <= 1, given only when no
  // size was asked for: the caller, who knows the GPU, turns it into bytes.
  std::optional<double> memory_fraction;
  // Where each limit came from, and peers' values that were skipped, for a log line.
  std::vector<std::string> sources;
};

// The request of `pod`. An unknown gpushare.io/ annotation or a bad value of one is an Error naming
// the annotation and saying why; a peer's value that cannot be read is skipped with a note in
// `sources`. `container`: the container whose environment to read; empty reads every container's,
// the first that sets a variable winning.
Result<PodRequest> read_pod_request(const nlohmann::json& pod, std::string_view container = {});

// The tenant of a pod: "<namespace>/<name>", or "<namespace>/<group>" when it names a group, made a
// valid tenant name (a long one is shortened and tagged with a hash, see normalize_tenant_name).
std::string tenant_of(const PodIdentity& pod, const PodRequest& request);

}  // namespace gpushare::kube
