// A pod and container from a cgroup path (pod_cgroup.hpp).
#include "pod_cgroup.hpp"

#include <algorithm>
#include <array>
#include <optional>
#include <vector>

#include <fmt/format.h>

namespace gpushare::agent {
namespace {

constexpr std::size_t kContainerIdDigits = 64;

bool is_lower_hex(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool has_prefix(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }
bool has_suffix(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

bool is_qos_class(std::string_view component) { return component == "burstable" || component == "besteffort"; }

// How a component names a pod, if it does.
enum class PodForm { kNone, kCgroupfs, kSystemd };

struct PodComponent {
  PodForm form = PodForm::kNone;
  std::string uid;
};

// The UID in "<owner>-pod<uid with '_' for '-'>.slice", a systemd pod slice; "" when none.
std::string systemd_pod_uid(std::string_view component, std::string_view owner) {
  constexpr std::string_view kSlice = ".slice";
  const std::string prefix = std::string(owner) + "-pod";
  if (component.size() < prefix.size() + kSlice.size() || !has_prefix(component, prefix) ||
      !has_suffix(component, kSlice)) {
    return {};
  }
  std::string uid(component.substr(prefix.size(), component.size() - prefix.size() - kSlice.size()));
  if (uid.find('-') != std::string::npos) return {};  // systemd escapes '-' as '_'
  std::replace(uid.begin(), uid.end(), '_', '-');
  return is_pod_uid(uid) ? uid : std::string();
}

// "pod<uid>" (cgroupfs) or "<anything>kubepods[-qos]-pod<uid with '_'>.slice" (systemd), wherever
// it sits: what a kubepods tree below a pod's cgroup would be read as.
PodComponent read_pod_component(std::string_view component) {
  if (has_prefix(component, "pod") && is_pod_uid(component.substr(3))) {
    return {PodForm::kCgroupfs, std::string(component.substr(3))};
  }
  const std::size_t marker = component.rfind("-pod");
  if (marker == std::string_view::npos) return {};
  const std::string_view owner = component.substr(0, marker);  // "kubepods-burstable", "kubelet-kubepods"
  if (!has_suffix(owner, "kubepods") && !has_suffix(owner, "kubepods-burstable") &&
      !has_suffix(owner, "kubepods-besteffort")) {
    return {};
  }
  std::string uid = systemd_pod_uid(component, owner);
  if (uid.empty()) return {};
  return {PodForm::kSystemd, std::move(uid)};
}

// Whether a pod component follows a kubepods component (after at most a QoS class).
bool below_a_kubepods_component(const std::vector<std::string_view>& before, PodForm form) {
  if (form == PodForm::kCgroupfs) {
    std::size_t end = before.size();
    if (end > 0 && is_qos_class(before[end - 1])) --end;
    return end > 0 && before[end - 1] == "kubepods";
  }
  if (before.empty()) return false;
  const std::string_view parent = before.back();
  return has_suffix(parent, ".slice") && parent.find("kubepods") != std::string_view::npos;
}

// The components the kubelet makes above a pod's cgroup in one layout and QoS class: its cgroup
// root's, kubepods, the class; and what the pod's component then looks like.
struct KubeletChain {
  std::vector<std::string> components;
  PodForm form = PodForm::kNone;
  std::string systemd_owner;  // the pod slice's name before "-pod<uid>.slice"
};

std::vector<KubeletChain> kubelet_chains(const std::vector<std::string_view>& root) {
  std::vector<KubeletChain> chains;
  const std::vector<std::string> base(root.begin(), root.end());
  for (const char* qos : {"", "burstable", "besteffort"}) {
    KubeletChain cgroupfs{base, PodForm::kCgroupfs, ""};
    cgroupfs.components.emplace_back("kubepods");
    if (*qos != '\0') cgroupfs.components.emplace_back(qos);
    chains.push_back(std::move(cgroupfs));
  }
  // systemd names each slice after its parent's: /kubelet.slice/kubelet-kubepods.slice/...
  if (!root.empty() && !has_suffix(root.back(), ".slice")) return chains;
  const std::string stem =
      root.empty() ? "kubepods" : std::string(root.back().substr(0, root.back().size() - 6)) + "-kubepods";
  for (const char* qos : {"", "burstable", "besteffort"}) {
    KubeletChain systemd{base, PodForm::kSystemd, stem};
    systemd.components.push_back(stem + ".slice");
    if (*qos != '\0') {
      systemd.systemd_owner = stem + "-" + qos;
      systemd.components.push_back(systemd.systemd_owner + ".slice");
    }
    chains.push_back(std::move(systemd));
  }
  return chains;
}

struct AnchoredPod {
  std::size_t at = 0;  // the pod's component
  PodForm form = PodForm::kNone;
  std::string uid;
};

// The pod whose component follows `chain`, from its component `start` on, at the path's start.
std::optional<AnchoredPod> anchored_pod(const std::vector<std::string_view>& components, const KubeletChain& chain,
                                        std::size_t start) {
  const std::size_t leading = chain.components.size() - start;
  if (components.size() <= leading) return std::nullopt;
  for (std::size_t i = 0; i < leading; ++i) {
    if (components[i] != chain.components[start + i]) return std::nullopt;
  }
  const std::string_view candidate = components[leading];
  std::string uid;
  if (chain.form == PodForm::kCgroupfs) {
    if (has_prefix(candidate, "pod") && is_pod_uid(candidate.substr(3))) uid = candidate.substr(3);
  } else {
    uid = systemd_pod_uid(candidate, chain.systemd_owner);
  }
  if (uid.empty()) return std::nullopt;
  return AnchoredPod{leading, chain.form, std::move(uid)};
}

// The components of the kubelet's cgroup root: an absolute path without "." or "..".
Result<std::vector<std::string_view>> root_components(std::string_view root) {
  if (root.empty() || root.front() != '/') return Error{fmt::format("kubelet cgroup root {} is not absolute", root)};
  std::vector<std::string_view> components;
  for (std::string_view rest = root.substr(1); !rest.empty();) {
    const std::size_t slash = rest.find('/');
    const std::string_view component = rest.substr(0, slash);
    if (component.empty() || component == "." || component == "..") {
      return Error{fmt::format("malformed kubelet cgroup root {}", root)};
    }
    components.push_back(component);
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
    if (rest.empty()) return Error{fmt::format("malformed kubelet cgroup root {}", root)};
  }
  return components;
}

// A container's component: the bare ID (cgroupfs) or "<runtime>-<ID>.scope" (systemd).
std::string read_container_component(std::string_view component, PodForm form) {
  if (form == PodForm::kSystemd) {
    constexpr std::array<std::string_view, 3> kRuntimes = {"cri-containerd-", "docker-", "crio-"};
    constexpr std::string_view kScope = ".scope";
    if (!has_suffix(component, kScope)) return {};
    component.remove_suffix(kScope.size());
    const auto runtime = std::find_if(kRuntimes.begin(), kRuntimes.end(),
                                      [&](std::string_view prefix) { return has_prefix(component, prefix); });
    if (runtime == kRuntimes.end()) return {};
    component.remove_prefix(runtime->size());
  }
  if (component.size() != kContainerIdDigits || !is_lower_hex(component)) return {};
  return std::string(component);
}

}  // namespace

bool is_pod_uid(std::string_view text) {
  constexpr std::array<std::size_t, 5> kGroups = {8, 4, 4, 4, 12};
  std::size_t at = 0;
  for (std::size_t group = 0; group < kGroups.size(); ++group) {
    if (group > 0) {
      if (at >= text.size() || text[at] != '-') return false;
      ++at;
    }
    if (text.size() < at + kGroups[group] || !is_lower_hex(text.substr(at, kGroups[group]))) return false;
    at += kGroups[group];
  }
  return at == text.size();
}

Result<std::optional<PodCgroup>> pod_of_cgroup(std::string_view path, std::string_view kubelet_cgroup_root) {
  if (path.size() > kMaxCgroupPathBytes) return Error{fmt::format("cgroup path of {} bytes", path.size())};
  if (path.empty() || path.front() != '/') return Error{"cgroup path is not absolute"};
  auto root = root_components(kubelet_cgroup_root);
  if (!root) return root.error();
  std::vector<std::string_view> components;
  std::size_t hidden = 0;  // leading ".." components: the path as a cgroup namespace shows it
  for (std::string_view rest = path.substr(1); !rest.empty();) {
    const std::size_t slash = rest.find('/');
    const std::string_view component = rest.substr(0, slash);
    if (component == ".." && components.empty()) {
      ++hidden;
    } else if (component.empty() || component == "." || component == "..") {
      return Error{fmt::format("malformed cgroup path {}", path)};
    } else {
      components.push_back(component);
    }
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
    if (rest.empty()) return Error{fmt::format("malformed cgroup path {}", path)};  // a trailing '/'
  }
  std::optional<AnchoredPod> pod;
  for (const KubeletChain& chain : kubelet_chains(root.value())) {
    // Behind a namespace, the chain's first components may be hidden in the "..": any suffix of
    // it may lead the visible path (those cgroups are the kubelet's, above the agent's own).
    const std::size_t first_start = hidden > 0 ? chain.components.size() : 0;
    for (std::size_t start = 0; start <= first_start && !pod; ++start) pod = anchored_pod(components, chain, start);
    if (pod) break;
  }
  if (!pod) return std::optional<PodCgroup>{};
  // A kubepods tree below the pod's own cgroup (a container making one) names a second pod.
  for (std::size_t i = pod->at + 1; i < components.size(); ++i) {
    const PodComponent found = read_pod_component(components[i]);
    if (found.form == PodForm::kNone) continue;
    const std::vector<std::string_view> before(components.begin(), components.begin() + static_cast<long>(i));
    if (below_a_kubepods_component(before, found.form)) {
      return Error{fmt::format("cgroup path {} names two pods", path)};
    }
  }
  PodCgroup named{std::move(pod->uid), {}};
  if (pod->at + 1 < components.size()) {
    named.container_id = read_container_component(components[pod->at + 1], pod->form);
  }
  return std::optional<PodCgroup>{std::move(named)};
}

Status check_kubelet_cgroup_root(std::string_view root) {
  auto components = root_components(root);
  if (!components) return components.error();
  return Ok{};
}

}  // namespace gpushare::agent
