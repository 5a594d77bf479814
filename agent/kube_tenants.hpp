// Tenants on Kubernetes (gpushare agent --kubernetes; docs/agent-policy.md, "On Kubernetes"): a
// process whose cgroup names a pod (pod_cgroup.hpp) is that pod's tenant, "<namespace>/<name>" or
// "<namespace>/<gpushare.io/tenant>", with the limits its annotations ask for (kube::read_pod_request),
// the pod as the API server's watch (kube_pod_watch.hpp) last reported it, lowered to the policy's
// ceiling for the pod's namespace ([pods], [pods.namespace.NAME]). A process in no pod is left to
// the policy.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.hpp"
#include "core/shared_state.hpp"
#include "identity.hpp"
#include "kube_pod_cache.hpp"
#include "kube_pod_watch.hpp"
#include "pod_request.hpp"
#include "tenant_labels.hpp"
#include "tenant_sessions.hpp"

namespace gpushare::agent {

// The agent's Kubernetes flags, as given.
struct KubeFlags {
  std::optional<std::string> node;        // --node, else $NODE_NAME
  std::optional<std::string> api;         // --kube-api https://HOST:PORT, else the in-cluster service
  std::optional<std::string> token_file;  // --kube-token-file
  std::optional<std::string> ca_file;     // --kube-ca-file
  std::string kubelet_cgroup_root = "/";  // --kubelet-cgroup-root: where pods' cgroups start (pod_cgroup.hpp)
};

// The watch's configuration from the flags and, in a pod, $KUBERNETES_SERVICE_HOST / _PORT and
// $NODE_NAME; an Error naming what is missing.
Result<PodWatchConfig> pod_watch_config(const KubeFlags& flags);

// A pod's limits under its namespace's ceiling, and one note per limit the ceiling set.
struct CeiledLimits {
  TenantLimits limits;
  std::vector<std::string> notes;  // "memory 8 GiB (asked 1 TiB, the namespace's ceiling)"
};

// `asked` lowered to `ceiling`, limit by limit: the smaller memory (on every GPU) and share, the
// tighter cap, the lower priority; a limit the pod does not ask for (`asks_priority` false: no
// priority asked) is the ceiling's. `whose` names the ceiling in the notes.
CeiledLimits under_ceiling(const TenantLimits& asked, bool asks_priority, const PodCeiling& ceiling,
                           std::string_view whose);

struct PodAssignment {
  Assignment assignment;
  PodOrigin origin;
};

class KubeTenants {
 public:
  using Log = std::function<void(std::string_view)>;
  // `policy`: the agent's policy in force (nullopt: none), replaced in place on reload; its pod
  // ceilings apply to every assignment. Without them pods set their own limits (logged once here).
  // `first_list_wait`: how long, counted from now, an assignment may wait for the watch's first
  // list (the loop stalls at most that long, once, at startup). `kubelet_cgroup_root`: the
  // kubelet's --cgroup-root, where a pod's cgroup path must start (pod_cgroup.hpp).
  KubeTenants(PodCache& pods, SharedState& state, const std::optional<Policy>& policy, std::string labels_path,
              std::string kubelet_cgroup_root, Log log,
              std::chrono::milliseconds first_list_wait = std::chrono::seconds(3));

  // The tenant of a process in a pod; nullopt when its cgroup names no pod; an Error (the Refused
  // message) when the pod is not known, opted out, or its annotations are bad.
  std::optional<Result<PodAssignment>> assign(const PeerIdentity& identity);
  // Writes the tenant-labels file when the tenants of the joined processes' pods changed.
  void write_labels_if_changed(const TenantSessions& sessions);
  // The limits of pods whose gpushare annotations changed, to their live tenants; after a policy
  // reload that changed the pod ceilings, the new limits of every pod to its live tenant.
  void apply_changed_pods(TenantSessions& sessions);

 private:
  Result<PodAssignment> assign_pod(const std::string& uid, const std::string& container_id);
  const PodCeilings& ceilings() const;  // the policy's in force; none without a policy
  void warn_if_no_ceilings() const;

  PodCache& pods_;
  SharedState& state_;
  const std::optional<Policy>& policy_;
  PodCeilings ceilings_applied_;  // those the live pod tenants were last given
  const std::string labels_path_;
  const std::string kubelet_cgroup_root_;
  const Log log_;
  const std::chrono::steady_clock::time_point first_list_deadline_;
  std::optional<kube::TenantLabelMap> labels_written_;
};

// The labels of each tenant from its joined processes' pods: the namespace; the pod's name when
// all run in one pod (a group of replicas has none); the container when all run in one container.
kube::TenantLabelMap tenant_labels_of(const std::map<std::string, std::vector<PodOrigin>>& pods);

}  // namespace gpushare::agent
