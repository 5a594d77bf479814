// Identity of a peer and its tenant under the policy (identity.hpp).
#include "identity.hpp"

#include <fstream>
#include <sstream>
#include <vector>

#include <fmt/format.h>

namespace gpushare::agent {

namespace {

// The components of an absolute path; false when it is not one or has an empty, "." or ".."
// component (a trailing '/' is an empty one). "/" has no components.
bool split_path(std::string_view path, std::vector<std::string_view>& components) {
  if (path.empty() || path.front() != '/') return false;
  if (path == "/") return true;
  std::string_view rest = path.substr(1);
  while (true) {
    std::size_t slash = rest.find('/');
    std::string_view component = rest.substr(0, slash);
    if (component.empty() || component == "." || component == "..") return false;
    components.push_back(component);
    if (slash == std::string_view::npos) return true;
    rest.remove_prefix(slash + 1);
  }
}

// '*' matches any run of characters (a component holds no '/'); backtracks to the last '*'.
bool component_matches(std::string_view pattern, std::string_view text) {
  std::size_t p = 0, t = 0, star = std::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace

Result<std::string> cgroup_from_proc_text(std::string_view text) {
  std::string first_path, systemd_path;
  std::istringstream lines{std::string(text)};
  std::string line;
  while (std::getline(lines, line)) {
    // "ID:CONTROLLERS:PATH"; the path may itself hold ':'.
    std::size_t first_colon = line.find(':');
    std::size_t second_colon = first_colon == std::string::npos ? first_colon : line.find(':', first_colon + 1);
    if (second_colon == std::string::npos) continue;
    std::string id = line.substr(0, first_colon);
    std::string controllers = line.substr(first_colon + 1, second_colon - first_colon - 1);
    std::string path = line.substr(second_colon + 1);
    if (path.empty() || path.front() != '/') continue;
    if (id == "0" && controllers.empty()) return path;
    if (controllers == "name=systemd" && systemd_path.empty()) systemd_path = path;
    if (first_path.empty()) first_path = path;
  }
  if (!systemd_path.empty()) return systemd_path;
  if (!first_path.empty()) return first_path;
  return Error{"no cgroup path in /proc/PID/cgroup"};
}

Result<std::string> read_cgroup(pid_t pid) {
  std::string file = fmt::format("/proc/{}/cgroup", pid);
  std::ifstream in(file);
  if (!in) return Error{fmt::format("{}: cannot be read (the process is gone?)", file)};
  std::ostringstream text;
  text << in.rdbuf();
  auto path = cgroup_from_proc_text(text.str());
  if (!path) return Error{fmt::format("{}: {}", file, path.error().message)};
  return path;
}

bool cgroup_pattern_matches(std::string_view pattern, std::string_view path) {
  std::vector<std::string_view> wanted, have;
  if (!split_path(pattern, wanted) || !split_path(path, have)) return false;
  bool below = !wanted.empty() && (wanted.back() == "*" || wanted.back() == "**");
  if (below) {
    wanted.pop_back();
    if (have.size() <= wanted.size()) return false;
  } else if (have.size() != wanted.size()) {
    return false;
  }
  for (std::size_t i = 0; i < wanted.size(); ++i)
    if (!component_matches(wanted[i], have[i])) return false;
  return true;
}

Result<Assignment> assign(const Policy& policy, const PeerIdentity& identity) {
  if (!identity.cgroup.empty()) {
    for (const auto& rule : policy.tenants)
      for (const auto& pattern : rule.cgroups)
        if (cgroup_pattern_matches(pattern, identity.cgroup))
          return Assignment{rule.name, rule.limits, fmt::format("cgroup {}", pattern)};
  }
  for (const auto& rule : policy.tenants)
    for (auto uid : rule.uids)
      if (uid == identity.uid) return Assignment{rule.name, rule.limits, fmt::format("uid {}", uid)};
  for (const auto& rule : policy.tenants)
    for (auto gid : rule.gids)
      if (gid == identity.gid) return Assignment{rule.name, rule.limits, fmt::format("gid {}", gid)};
  const DefaultRule& fallback = policy.fallback;
  if (fallback.refuse)
    return Error{fmt::format("pid {} (uid {}, gid {}, cgroup {}) matches no rule of {}, and [default] refuses it",
                             identity.pid, identity.uid, identity.gid,
                             identity.cgroup.empty() ? "unknown" : identity.cgroup, policy.source)};
  return Assignment{fallback.tenant, fallback.limits, "default"};
}

}  // namespace gpushare::agent
