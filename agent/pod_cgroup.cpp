// A pod and container from a cgroup path (pod_cgroup.hpp).
#include "pod_cgroup.hpp"

#include <algorithm>
#include <array>
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

// "pod<uid>" (cgroupfs) or "<anything>kubepods[-qos]-pod<uid with '_'>.slice" (systemd).
PodComponent read_pod_component(std::string_view component) {
  if (has_prefix(component, "pod") && is_pod_uid(component.substr(3))) {
    return {PodForm::kCgroupfs, std::string(component.substr(3))};
  }
  constexpr std::string_view kSlice = ".slice";
  const std::size_t marker = component.rfind("-pod");
  if (!has_suffix(component, kSlice) || marker == std::string_view::npos) return {};
  const std::string_view owner = component.substr(0, marker);  // "kubepods-burstable", "kubelet-kubepods"
  if (!has_suffix(owner, "kubepods") && !has_suffix(owner, "kubepods-burstable") &&
      !has_suffix(owner, "kubepods-besteffort")) {
    return {};
  }
  std::string uid(component.substr(marker + 4, component.size() - marker - 4 - kSlice.size()));
  if (uid.find('-') != std::string::npos) return {};  // systemd escapes '-' as '_'
  std::replace(uid.begin(), uid.end(), '_', '-');
  if (!is_pod_uid(uid)) return {};
  return {PodForm::kSystemd, std::move(uid)};
}

// Whether the components before a pod component are where the kubelet puts pods: a kubepods
// component and at most a QoS class after it, or nothing visible past a cgroup namespace's root.
bool placed_by_kubelet(const std::vector<std::string_view>& before, bool behind_namespace, PodForm form) {
  if (form == PodForm::kCgroupfs) {
    std::size_t end = before.size();
    if (end > 0 && is_qos_class(before[end - 1])) --end;
    if (end == 0) return behind_namespace;
    return before[end - 1] == "kubepods";
  }
  if (before.empty()) return behind_namespace;
  const std::string_view parent = before.back();
  return has_suffix(parent, ".slice") && parent.find("kubepods") != std::string_view::npos;
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

Result<std::optional<PodCgroup>> pod_of_cgroup(std::string_view path) {
  if (path.size() > kMaxCgroupPathBytes) return Error{fmt::format("cgroup path of {} bytes", path.size())};
  if (path.empty() || path.front() != '/') return Error{"cgroup path is not absolute"};
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
  std::optional<std::size_t> pod_at;
  PodComponent pod;
  for (std::size_t i = 0; i < components.size(); ++i) {
    PodComponent found = read_pod_component(components[i]);
    if (found.form == PodForm::kNone) continue;
    const std::vector<std::string_view> before(components.begin(), components.begin() + static_cast<long>(i));
    if (!placed_by_kubelet(before, hidden > 0, found.form)) continue;
    if (pod_at) return Error{fmt::format("cgroup path {} names two pods", path)};
    pod_at = i;
    pod = std::move(found);
  }
  if (!pod_at) return std::optional<PodCgroup>{};
  PodCgroup named{std::move(pod.uid), {}};
  if (*pod_at + 1 < components.size()) named.container_id = read_container_component(components[*pod_at + 1], pod.form);
  return std::optional<PodCgroup>{std::move(named)};
}

}  // namespace gpushare::agent
