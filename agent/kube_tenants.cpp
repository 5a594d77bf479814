// Tenants of processes in pods (kube_tenants.hpp).
#include "kube_tenants.hpp"

#include <algorithm>
#include <cstdlib>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/size.hpp"
#include "lower_only.hpp"
#include "pod_cgroup.hpp"

namespace gpushare::agent {
namespace {

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

std::string joined(const std::vector<std::string>& parts) {
  std::string text;
  for (const auto& part : parts) text += (text.empty() ? "" : "; ") + part;
  return text;
}

std::string memory_text(std::uint64_t bytes) { return bytes == kUnlimited ? "none" : format_size(bytes); }
std::string percent_text(std::uint32_t pct) { return pct == 0 ? "none" : fmt::format("{}%", pct); }

// "share 50% (asked 100%, the namespace's ceiling)", or "(none asked, ...)" where the pod asked none.
std::string ceiling_note(std::string_view what, const std::string& now, const std::string& asked, bool asked_none,
                         std::string_view whose) {
  return fmt::format("{} {} ({}, {})", what, now, asked_none ? "none asked" : "asked " + asked, whose);
}

// Whether the pod names a priority itself: the request cannot tell "normal" asked from none.
bool pod_asks_priority(const nlohmann::json& pod) {
  const auto metadata = pod.find("metadata");
  if (metadata == pod.end() || !metadata->is_object()) return false;
  const auto annotations = metadata->find("annotations");
  return annotations != metadata->end() && annotations->is_object() &&
         annotations->contains(fmt::format("{}priority", kube::kAnnotationPrefix));
}

}  // namespace

CeiledLimits under_ceiling(const TenantLimits& asked, bool asks_priority, const PodCeiling& ceiling,
                           std::string_view whose) {
  CeiledLimits out{asked, {}};
  TenantLimits& limits = out.limits;
  if (ceiling.memory_bytes) {
    const std::uint64_t most = *ceiling.memory_bytes;
    if (asked.memory_bytes > most) {
      limits.memory_bytes = most;
      out.notes.push_back(ceiling_note("memory", memory_text(most), memory_text(asked.memory_bytes),
                                       asked.memory_bytes == kUnlimited, whose));
    }
    for (auto& [ordinal, bytes] : limits.memory_per_gpu_bytes) {
      if (bytes <= most) continue;
      out.notes.push_back(
          ceiling_note(fmt::format("memory on GPU {}", ordinal), memory_text(most), memory_text(bytes), false, whose));
      bytes = most;
    }
  }
  ComputePolicyValues& compute = limits.compute;
  if (ceiling.share_pct && *ceiling.share_pct != 0 &&
      (compute.share_pct == 0 || compute.share_pct > *ceiling.share_pct)) {
    out.notes.push_back(ceiling_note("share", percent_text(*ceiling.share_pct), percent_text(compute.share_pct),
                                     compute.share_pct == 0, whose));
    compute.share_pct = *ceiling.share_pct;
  }
  if (ceiling.limit_pct && tighter_cap(compute.limit_pct, *ceiling.limit_pct) != compute.limit_pct) {
    out.notes.push_back(ceiling_note("limit", percent_text(*ceiling.limit_pct), percent_text(compute.limit_pct),
                                     compute.limit_pct == 0, whose));
    compute.limit_pct = *ceiling.limit_pct;
  }
  if (ceiling.priority && (!asks_priority || compute.priority > *ceiling.priority) &&
      compute.priority != *ceiling.priority) {
    out.notes.push_back(ceiling_note("priority", std::string(priority_name(*ceiling.priority)),
                                     std::string(priority_name(compute.priority)), !asks_priority, whose));
    compute.priority = *ceiling.priority;
  }
  return out;
}

Result<PodWatchConfig> pod_watch_config(const KubeFlags& flags) {
  PodWatchConfig config;
  config.node = flags.node.value_or(environment("NODE_NAME"));
  if (config.node.empty()) return Error{"--kubernetes needs the node's name: --node NAME or $NODE_NAME"};
  if (flags.api) {
    auto endpoint = parse_kube_api_url(*flags.api);
    if (!endpoint) return Error{fmt::format("--kube-api: {}", endpoint.error().message)};
    config.endpoint = std::move(endpoint).value();
  } else {
    const std::string host = environment("KUBERNETES_SERVICE_HOST");
    const std::string port = environment("KUBERNETES_SERVICE_PORT");
    if (host.empty()) return Error{"--kubernetes outside a pod needs --kube-api (no $KUBERNETES_SERVICE_HOST)"};
    // The variable holds a bare address, IPv6 ones included: bracket it for the URL's parser.
    const bool v6 = host.find(':') != std::string::npos;
    auto endpoint = parse_kube_api_url(
        fmt::format("https://{}{}{}:{}", v6 ? "[" : "", host, v6 ? "]" : "", port.empty() ? "443" : port));
    if (!endpoint) return Error{fmt::format("$KUBERNETES_SERVICE_HOST/_PORT: {}", endpoint.error().message)};
    config.endpoint = std::move(endpoint).value();
  }
  if (auto root = check_kubelet_cgroup_root(flags.kubelet_cgroup_root); !root) {
    return Error{fmt::format("--kubelet-cgroup-root: {}", root.error().message)};
  }
  if (flags.token_file) config.token_file = *flags.token_file;
  if (flags.ca_file) config.ca_file = *flags.ca_file;
  return config;
}

KubeTenants::KubeTenants(PodCache& pods, SharedState& state, const std::optional<Policy>& policy,
                         std::string labels_path, std::string kubelet_cgroup_root, Log log,
                         std::chrono::milliseconds first_list_wait)
    : pods_(pods),
      state_(state),
      policy_(policy),
      ceilings_applied_(ceilings()),
      labels_path_(std::move(labels_path)),
      kubelet_cgroup_root_(std::move(kubelet_cgroup_root)),
      log_(std::move(log)),
      first_list_deadline_(std::chrono::steady_clock::now() + first_list_wait) {
  warn_if_no_ceilings();
}

const PodCeilings& KubeTenants::ceilings() const {
  static const PodCeilings kNone;
  return policy_ ? policy_->pods : kNone;
}

void KubeTenants::warn_if_no_ceilings() const {
  if (ceilings_applied_.configured()) return;
  log_(
      fmt::format("warning: {}: pods set their own limits (memory, share, limit, priority), as high as they ask "
                  "(docs/agent-policy.md, \"Ceilings over pods\")",
                  policy_ ? policy_->source + " has no [pods] table" : std::string("no --policy")));
}

std::optional<Result<PodAssignment>> KubeTenants::assign(const PeerIdentity& identity) {
  if (identity.cgroup.empty()) return std::nullopt;
  auto pod = pod_of_cgroup(identity.cgroup, kubelet_cgroup_root_);
  if (!pod) return Result<PodAssignment>(Error{fmt::format("pid {}: {}", identity.pid, pod.error().message)});
  if (!pod.value()) return std::nullopt;
  return assign_pod(pod.value()->pod_uid, pod.value()->container_id);
}

Result<PodAssignment> KubeTenants::assign_pod(const std::string& uid, const std::string& container_id) {
  if (!pods_.listed()) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(first_list_deadline_ - std::chrono::steady_clock::now());
    if (left.count() > 0) pods_.wait_until([](const PodCache& cache) { return cache.listed(); }, left);
  }
  auto pod = pods_.find(uid);
  if (!pod) return Error{fmt::format("pod {} not known to the API server watch", uid)};
  auto identity = kube::read_pod_identity(*pod);
  if (!identity) return Error{fmt::format("pod {}: {}", uid, identity.error().message)};
  const std::string pod_name = fmt::format("{}/{}", identity->namespace_name, identity->name);
  const std::string container = container_name_of(*pod, container_id);
  auto request = kube::read_pod_request(*pod, container);
  if (!request) return Error{fmt::format("pod {}: {}", pod_name, request.error().message)};
  if (request->opted_out) return Error{fmt::format("pod {} opted out (gpushare.io/enabled: \"false\")", pod_name)};
  TenantLimits limits = request->limits;
  std::vector<std::string> sources = request->sources;
  limits.memory_fraction = request->memory_fraction;  // in bytes on each GPU as it is attached
  const PodCeilings& in_force = ceilings();
  if (const PodCeiling* ceiling = in_force.of(identity->namespace_name)) {
    const bool own = in_force.namespaces.count(identity->namespace_name) != 0;
    if (ceiling->refuse)
      return Error{fmt::format("pod {}: the policy refuses pods of namespace {} ([{}] refuse = true)", pod_name,
                               identity->namespace_name,
                               own ? "pods.namespace." + identity->namespace_name : std::string("pods"))};
    CeiledLimits ceiled = under_ceiling(limits, pod_asks_priority(*pod), *ceiling,
                                        own ? "the namespace's ceiling" : "the [pods] ceiling");
    limits = std::move(ceiled.limits);
    sources.insert(sources.end(), ceiled.notes.begin(), ceiled.notes.end());
  }
  PodAssignment assigned;
  assigned.assignment.tenant = kube::tenant_of(identity.value(), request.value());
  assigned.assignment.limits = std::move(limits);
  assigned.assignment.reason = fmt::format("pod {}{}{}{}", pod_name, container.empty() ? "" : " container " + container,
                                           sources.empty() ? "" : ": ", joined(sources));
  assigned.origin = PodOrigin{uid, identity->namespace_name, identity->name, container};
  return assigned;
}

void KubeTenants::write_labels_if_changed(const TenantSessions& sessions) {
  auto labels = tenant_labels_of(sessions.joined_pods());
  if (labels_written_ == labels) return;
  if (auto written = kube::write_tenant_labels(labels_path_, labels); !written) {
    log_(fmt::format("--tenant-labels: {}", written.error().message));
    return;  // tried again at the next change
  }
  labels_written_ = std::move(labels);
}

void KubeTenants::apply_changed_pods(TenantSessions& sessions) {
  const std::set<std::string> changed = pods_.take_changed_requests();
  const bool new_ceilings = ceilings() != ceilings_applied_;
  if (new_ceilings) {
    ceilings_applied_ = ceilings();
    warn_if_no_ceilings();
  }
  if (changed.empty() && !new_ceilings) return;
  sessions.reassign_live(
      [&](const PeerIdentity& identity, const std::optional<PodOrigin>& origin) -> std::optional<Result<Assignment>> {
        if (!origin || (!new_ceilings && changed.count(origin->uid) == 0)) return std::nullopt;
        // The container's ID again from the cgroup: the origin keeps its name only.
        auto pod = pod_of_cgroup(identity.cgroup, kubelet_cgroup_root_);
        const std::string container_id = pod && pod.value() ? pod.value()->container_id : "";
        auto assigned = assign_pod(origin->uid, container_id);
        if (!assigned) return Result<Assignment>(assigned.error());
        return Result<Assignment>(std::move(assigned->assignment));
      },
      new_ceilings ? "the policy's new pod ceilings" : "the pod's changed annotations", log_);
}

kube::TenantLabelMap tenant_labels_of(const std::map<std::string, std::vector<PodOrigin>>& pods) {
  kube::TenantLabelMap labels;
  for (const auto& [tenant, origins] : pods) {
    if (origins.empty()) continue;
    const PodOrigin& first = origins.front();
    const bool one_pod =
        std::all_of(origins.begin(), origins.end(), [&](const PodOrigin& o) { return o.uid == first.uid; });
    const bool one_container = one_pod && std::all_of(origins.begin(), origins.end(), [&](const PodOrigin& o) {
                                 return o.container == first.container;
                               });
    labels[tenant] =
        kube::TenantLabels{first.namespace_name, one_pod ? first.pod : "", one_container ? first.container : ""};
  }
  return labels;
}

}  // namespace gpushare::agent
