// Parsing of the agent's policy file with toml++ (header in policy.hpp, format in
// docs/agent-policy.md). Every table is walked key by key so that an unknown key is an error.
#include "policy.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "core/settings.hpp"
#include "core/tenant_name.hpp"

namespace gpushare::agent {

std::uint64_t TenantLimits::memory_for(int ordinal) const {
  auto it = memory_per_gpu_bytes.find(ordinal);
  return it == memory_per_gpu_bytes.end() ? memory_bytes : it->second;
}

std::uint64_t TenantLimits::memory_on(int ordinal, std::uint64_t gpu_bytes) const {
  const std::uint64_t sized = memory_for(ordinal);
  if (!memory_fraction) return sized;
  const auto part = static_cast<std::uint64_t>(std::floor(*memory_fraction * static_cast<double>(gpu_bytes)));
  return std::min(sized, part);
}

bool TenantLimits::operator==(const TenantLimits& other) const {
  return memory_bytes == other.memory_bytes && memory_per_gpu_bytes == other.memory_per_gpu_bytes &&
         memory_fraction == other.memory_fraction &&
         compute.share_pct == other.compute.share_pct && compute.limit_pct == other.compute.limit_pct &&
         compute.priority == other.compute.priority && compute.slice == other.compute.slice;
}

namespace {

constexpr std::size_t kLargestPolicyFile = 1 << 20;

// Builds "FILE:LINE: KEY: message" for every error of one parse.
class ErrorSite {
 public:
  explicit ErrorSite(std::string_view source) : source_(source) {}
  Error at(const toml::source_region& where, std::string_view key, std::string_view message) const {
    return Error{fmt::format("{}:{}: {}: {}", source_, where.begin.line, key, message)};
  }

 private:
  std::string source_;
};

// A whole number, or a string parse_percent/parse_compute_cap reads: share = 70 and share = "70%".
std::string number_or_text(const toml::node& node) {
  if (auto number = node.value_exact<std::int64_t>()) return std::to_string(*number);
  if (auto text = node.value_exact<std::string>()) return *text;
  return {};
}

Result<std::uint32_t> parse_id(const toml::node& node) {
  auto number = node.value_exact<std::int64_t>();
  // (uid_t)-1 is the "no change" value of setreuid and never a process's id.
  if (!number || *number < 0 || *number >= 0xffffffffLL) return Error{"expected whole numbers from 0 to 4294967294"};
  return static_cast<std::uint32_t>(*number);
}

Result<std::uint64_t> parse_memory(const toml::node& node) {
  auto text = node.value_exact<std::string>();
  if (!text) return Error{"expected a size as a string, such as \"8GiB\" or \"unlimited\""};
  return parse_limit(*text);
}

Result<int> parse_ordinal(std::string_view text) {
  int ordinal = -1;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), ordinal);
  bool leading_zero = text.size() > 1 && text.front() == '0';
  if (error != std::errc{} || end != text.data() + text.size() || leading_zero || ordinal < 0 ||
      ordinal > kMaxGpuOrdinal)
    return Error{
        fmt::format("GPU index '{}' is not a number from 0 to {} without leading zeros", text, kMaxGpuOrdinal)};
  return ordinal;
}

// toml++ keeps a table's keys sorted; rules match in file order, and errors come first-line-first.
std::vector<std::pair<const toml::key*, const toml::node*>> in_file_order(const toml::table& table) {
  std::vector<std::pair<const toml::key*, const toml::node*>> entries;
  for (auto&& [key, node] : table) entries.emplace_back(&key, &node);
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    const toml::source_position& left = a.first->source().begin;
    const toml::source_position& right = b.first->source().begin;
    return left.line != right.line ? left.line < right.line : left.column < right.column;
  });
  return entries;
}

// Who claimed each uid, gid and cgroup pattern so far, to refuse a second claim.
struct Claims {
  std::map<std::uint32_t, std::string> uids, gids;
  std::map<std::string, std::string> cgroups;
};

template <typename Key>
Status claim(std::map<Key, std::string>& claimed, const Key& key, const std::string& tenant) {
  auto [it, inserted] = claimed.emplace(key, tenant);
  if (inserted) return Ok{};
  if (it->second == tenant) return Error{"listed twice"};
  return Error{fmt::format("already claimed by tenant '{}'", it->second)};
}

class Parser {
 public:
  explicit Parser(std::string_view source) : site_(source) { policy_.source = source; }

  Result<Policy> run(const toml::table& root) {
    for (auto [key_at, node_at] : in_file_order(root)) {
      const toml::key& key = *key_at;
      const toml::node& node = *node_at;
      Status status = Ok{};
      if (key == "tenant") {
        status = tenants(node, key.source());
      } else if (key == "default") {
        status = fallback(node, key.source());
      } else if (key == "pods") {
        status = pods(node, key.source());
      } else {
        status = site_.at(key.source(), key.str(),
                          "unknown table (expected [tenant.NAME], [default], [pods] or [pods.namespace.NAME])");
      }
      if (!status) return status.error();
    }
    if (!policy_.fallback.refuse) {
      for (const auto& rule : policy_.tenants)
        if (rule.name == policy_.fallback.tenant)
          return Error{fmt::format("{}: default.tenant: '{}' is also a [tenant.{}]; give the default its own name",
                                   policy_.source, rule.name, rule.name)};
    }
    return std::move(policy_);
  }

 private:
  Status tenants(const toml::node& node, const toml::source_region& where) {
    const auto* table = node.as_table();
    if (table == nullptr) return site_.at(where, "tenant", "expected tables [tenant.NAME]");
    for (auto [name_at, rule_at] : in_file_order(*table)) {
      const toml::key& name = *name_at;
      const toml::node& rule_node = *rule_at;
      std::string path = fmt::format("tenant.{}", name.str());
      if (auto valid = validate_tenant_name(name.str()); !valid)
        return site_.at(name.source(), path, valid.error().message);
      const auto* rule_table = rule_node.as_table();
      if (rule_table == nullptr) return site_.at(name.source(), path, "expected a table [tenant.NAME]");
      TenantRule rule;
      rule.name = std::string(name.str());
      if (auto status = tenant_rule(*rule_table, path, rule); !status) return status;
      if (rule.uids.empty() && rule.gids.empty() && rule.cgroups.empty())
        return site_.at(name.source(), path, "claims no process (give uids, gids or cgroups)");
      policy_.tenants.push_back(std::move(rule));
    }
    return Ok{};
  }

  Status tenant_rule(const toml::table& table, const std::string& path, TenantRule& rule) {
    for (auto [key_at, node_at] : in_file_order(table)) {
      const toml::key& key = *key_at;
      const toml::node& node = *node_at;
      std::string key_path = fmt::format("{}.{}", path, key.str());
      Status status = Ok{};
      if (key == "uids") {
        status = ids(node, key_path, rule.uids, claims_.uids, rule.name);
      } else if (key == "gids") {
        status = ids(node, key_path, rule.gids, claims_.gids, rule.name);
      } else if (key == "cgroups") {
        status = cgroups(node, key_path, rule);
      } else if (!limit_key(key.str(), node, key_path, rule.limits, status)) {
        status = site_.at(key.source(), key_path, "unknown key");
      }
      if (!status) return status;
    }
    return Ok{};
  }

  Status fallback(const toml::node& node, const toml::source_region& where) {
    const auto* table = node.as_table();
    if (table == nullptr) return site_.at(where, "default", "expected a table [default]");
    DefaultRule& rule = policy_.fallback;
    bool has_limits = false;
    for (auto [key_at, value_at] : in_file_order(*table)) {
      const toml::key& key = *key_at;
      const toml::node& value = *value_at;
      std::string key_path = fmt::format("default.{}", key.str());
      Status status = Ok{};
      if (key == "refuse") {
        auto refuse = value.value_exact<bool>();
        if (!refuse) return site_.at(value.source(), key_path, "expected true or false");
        rule.refuse = *refuse;
      } else if (key == "tenant") {
        auto name = value.value_exact<std::string>();
        if (!name) return site_.at(value.source(), key_path, "expected a tenant name as a string");
        if (auto valid = validate_tenant_name(*name); !valid)
          return site_.at(value.source(), key_path, valid.error().message);
        rule.tenant = *name;
      } else if (limit_key(key.str(), value, key_path, rule.limits, status)) {
        has_limits = true;
      } else {
        status = site_.at(key.source(), key_path, "unknown key");
      }
      if (!status) return status;
    }
    if (rule.refuse && (has_limits || !rule.tenant.empty()))
      return site_.at(where, "default", "refuse = true takes no tenant or limits (set refuse = false)");
    if (!rule.refuse && rule.tenant.empty())
      return site_.at(where, "default.tenant", "refuse = false needs the tenant unmatched processes join");
    return Ok{};
  }

  // [pods] and its [pods.namespace.NAME] tables. [pods] exists once any of them is written.
  Status pods(const toml::node& node, const toml::source_region& where) {
    const auto* table = node.as_table();
    if (table == nullptr) return site_.at(where, "pods", "expected a table [pods]");
    PodCeiling others;
    if (auto status = ceiling(*table, "pods", where, others, true); !status) return status;
    policy_.pods.others = others;
    return Ok{};
  }

  Status pod_namespaces(const toml::node& node, const toml::source_region& where) {
    const auto* table = node.as_table();
    if (table == nullptr) return site_.at(where, "pods.namespace", "expected tables [pods.namespace.NAME]");
    for (auto [name_at, ceiling_at] : in_file_order(*table)) {
      const toml::key& name = *name_at;
      std::string path = fmt::format("pods.namespace.{}", name.str());
      if (auto valid = validate_namespace_name(name.str()); !valid)
        return site_.at(name.source(), path, valid.error().message);
      const auto* ceiling_table = ceiling_at->as_table();
      if (ceiling_table == nullptr) return site_.at(name.source(), path, "expected a table [pods.namespace.NAME]");
      PodCeiling own;
      if (auto status = ceiling(*ceiling_table, path, name.source(), own, false); !status) return status;
      policy_.pods.namespaces[std::string(name.str())] = own;
    }
    return Ok{};
  }

  // The keys of one ceiling table: refuse, memory, share, limit, priority (and, in [pods] alone,
  // the namespace tables).
  Status ceiling(const toml::table& table, const std::string& path, const toml::source_region& where, PodCeiling& out,
                 bool holds_namespaces) {
    bool has_limits = false;
    for (auto [key_at, value_at] : in_file_order(table)) {
      const toml::key& key = *key_at;
      const toml::node& value = *value_at;
      std::string key_path = fmt::format("{}.{}", path, key.str());
      Status status = Ok{};
      TenantLimits read;
      if (holds_namespaces && key == "namespace") {
        status = pod_namespaces(value, key.source());
      } else if (key == "refuse") {
        auto refuse = value.value_exact<bool>();
        if (!refuse) return site_.at(value.source(), key_path, "expected true or false");
        out.refuse = *refuse;
      } else if (key.str() != "memory_per_gpu" && limit_key(key.str(), value, key_path, read, status)) {
        has_limits = true;
        if (key == "memory") out.memory_bytes = read.memory_bytes;
        if (key == "share") out.share_pct = read.compute.share_pct;
        if (key == "limit") out.limit_pct = read.compute.limit_pct;
        if (key == "priority") out.priority = read.compute.priority;
      } else {
        status =
            site_.at(key.source(), key_path, "unknown key (a ceiling takes memory, share, limit, priority, refuse)");
      }
      if (!status) return status;
    }
    if (out.refuse && has_limits) return site_.at(where, path, "refuse = true takes no limits");
    return Ok{};
  }

  // Parses `key` into `limits` when it is one of the limit keys; false when it is not one.
  bool limit_key(std::string_view key, const toml::node& node, const std::string& key_path, TenantLimits& limits,
                 Status& status) {
    auto fail = [&](std::string_view message) { status = site_.at(node.source(), key_path, message); };
    if (key == "memory") {
      auto bytes = parse_memory(node);
      bytes ? void(limits.memory_bytes = *bytes) : fail(bytes.error().message);
    } else if (key == "memory_per_gpu") {
      status = memory_per_gpu(node, key_path, limits);
    } else if (key == "share") {
      auto share = parse_percent(number_or_text(node));
      share ? void(limits.compute.share_pct = *share) : fail(share.error().message);
    } else if (key == "limit") {
      auto cap = parse_compute_cap(number_or_text(node));
      cap ? void(limits.compute.limit_pct = *cap) : fail(cap.error().message);
    } else if (key == "priority") {
      auto text = node.value_exact<std::string>();
      auto priority =
          text ? parse_priority(*text) : Result<Priority>(Error{"expected \"high\", \"normal\" or \"low\""});
      priority ? void(limits.compute.priority = *priority) : fail(priority.error().message);
    } else {
      return false;
    }
    return true;
  }

  Status memory_per_gpu(const toml::node& node, const std::string& key_path, TenantLimits& limits) {
    const auto* table = node.as_table();
    if (table == nullptr) return site_.at(node.source(), key_path, "expected a table such as { 0 = \"4GiB\" }");
    for (auto&& [index, value] : *table) {
      std::string entry_path = fmt::format("{}.{}", key_path, index.str());
      auto ordinal = parse_ordinal(index.str());
      if (!ordinal) return site_.at(index.source(), entry_path, ordinal.error().message);
      auto bytes = parse_memory(value);
      if (!bytes) return site_.at(value.source(), entry_path, bytes.error().message);
      limits.memory_per_gpu_bytes[*ordinal] = *bytes;
    }
    return Ok{};
  }

  Status ids(const toml::node& node, const std::string& key_path, std::vector<std::uint32_t>& out,
             std::map<std::uint32_t, std::string>& claimed, const std::string& tenant) {
    const auto* array = node.as_array();
    if (array == nullptr) return site_.at(node.source(), key_path, "expected an array of whole numbers");
    for (const auto& element : *array) {
      auto id = parse_id(element);
      if (!id) return site_.at(element.source(), key_path, id.error().message);
      if (auto claimed_once = claim(claimed, *id, tenant); !claimed_once)
        return site_.at(element.source(), key_path, fmt::format("{} {}", *id, claimed_once.error().message));
      out.push_back(*id);
    }
    return Ok{};
  }

  Status cgroups(const toml::node& node, const std::string& key_path, TenantRule& rule) {
    const auto* array = node.as_array();
    if (array == nullptr) return site_.at(node.source(), key_path, "expected an array of cgroup path patterns");
    for (const auto& element : *array) {
      auto pattern = element.value_exact<std::string>();
      if (!pattern) return site_.at(element.source(), key_path, "expected cgroup path patterns as strings");
      if (auto valid = validate_cgroup_pattern(*pattern); !valid)
        return site_.at(element.source(), key_path, valid.error().message);
      if (auto claimed_once = claim(claims_.cgroups, *pattern, rule.name); !claimed_once)
        return site_.at(element.source(), key_path, fmt::format("'{}' {}", *pattern, claimed_once.error().message));
      rule.cgroups.push_back(*pattern);
    }
    return Ok{};
  }

  ErrorSite site_;
  Policy policy_;
  Claims claims_;
};

Result<struct stat> stat_of(int fd, std::string_view what) {
  struct stat info {};
  if (::fstat(fd, &info) != 0) return Error{fmt::format("{}: {}", what, std::strerror(errno))};
  return info;
}

Status check_opened(int fd, std::string_view what, bool directory) {
  auto info = stat_of(fd, what);
  if (!info) return info.error();
  if (directory ? !S_ISDIR(info->st_mode) : !S_ISREG(info->st_mode))
    return Error{fmt::format("{}: not a {}", what, directory ? "directory" : "regular file")};
  return check_policy_permissions(what, info->st_uid, info->st_gid, info->st_mode, directory, ::geteuid());
}

}  // namespace

const PodCeiling* PodCeilings::of(const std::string& namespace_name) const {
  auto own = namespaces.find(namespace_name);
  if (own != namespaces.end()) return &own->second;
  return others ? &*others : nullptr;
}

Status validate_namespace_name(std::string_view name) {
  const auto alphanumeric = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  const bool valid = !name.empty() && name.size() <= 63 && alphanumeric(name.front()) && alphanumeric(name.back()) &&
                     std::all_of(name.begin(), name.end(), [&](char c) { return alphanumeric(c) || c == '-'; });
  if (valid) return Ok{};
  return Error{
      fmt::format("'{}' is not a Kubernetes namespace name (at most 63 lowercase letters, digits and '-', "
                  "starting and ending with a letter or digit)",
                  name)};
}

Status validate_cgroup_pattern(std::string_view pattern) {
  if (pattern.empty() || pattern.front() != '/')
    return Error{fmt::format("cgroup pattern '{}' must be an absolute path starting with '/'", pattern)};
  if (pattern == "/") return Ok{};
  if (pattern.back() == '/')
    return Error{
        fmt::format("cgroup pattern '{}' ends in '/' (write the path alone, or '/*' for what is below it)", pattern)};
  std::string_view rest = pattern.substr(1);
  while (true) {
    std::size_t slash = rest.find('/');
    std::string_view component = rest.substr(0, slash);
    bool last = slash == std::string_view::npos;
    if (component.empty() || component == "." || component == "..")
      return Error{fmt::format("cgroup pattern '{}' has an empty, '.' or '..' component", pattern)};
    if (component.find("**") != std::string_view::npos && !(last && component == "**"))
      return Error{fmt::format("cgroup pattern '{}': '**' only as the whole last component", pattern)};
    if (last) return Ok{};
    rest.remove_prefix(slash + 1);
  }
}

Status check_policy_permissions(std::string_view what, std::uint32_t owner_uid, std::uint32_t owner_gid,
                                std::uint32_t mode, bool is_directory, std::uint32_t agent_uid) {
  if (owner_uid != 0 && owner_uid != agent_uid)
    return Error{fmt::format("{}: owned by uid {}, not by root or the agent's user (uid {}): refused", what, owner_uid,
                             agent_uid)};
  bool sticky_directory = is_directory && (mode & S_ISVTX) != 0;
  if ((mode & S_IWOTH) != 0 && !sticky_directory)
    return Error{fmt::format("{}: writable by others (mode {:o}): refused", what, mode & 07777)};
  if ((mode & S_IWGRP) != 0 && owner_gid != 0 && !sticky_directory)
    return Error{fmt::format("{}: writable by group {} (mode {:o}): refused", what, owner_gid, mode & 07777)};
  return Ok{};
}

Result<Policy> parse_policy(std::string_view text, std::string_view source) {
  try {
    toml::table root = toml::parse(text, source);
    return Parser(source).run(root);
  } catch (const toml::parse_error& error) {
    return Error{fmt::format("{}:{}: {}", source, error.source().begin.line, error.description())};
  } catch (const std::exception& error) {
    return Error{fmt::format("{}: {}", source, error.what())};
  }
}

Result<Policy> load_policy(const std::string& path) {
  std::error_code failure;
  std::filesystem::path resolved = std::filesystem::canonical(path, failure);
  if (failure) return Error{fmt::format("{}: {}", path, failure.message())};
  // The directory and the file are opened once and checked through their descriptors, and the
  // text is read from the descriptor that was checked.
  std::string directory = resolved.parent_path().string();
  int directory_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (directory_fd < 0) return Error{fmt::format("{}: {}", directory, std::strerror(errno))};
  Status directory_ok = check_opened(directory_fd, directory, true);
  int fd = ::openat(directory_fd, resolved.filename().c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  int open_errno = errno;
  ::close(directory_fd);
  if (!directory_ok) {
    if (fd >= 0) ::close(fd);
    return directory_ok.error();
  }
  if (fd < 0) return Error{fmt::format("{}: {}", resolved.string(), std::strerror(open_errno))};
  std::string text;
  Status file_ok = check_opened(fd, resolved.string(), false);
  if (file_ok) {
    char buffer[8192];
    while (true) {
      ssize_t got = ::read(fd, buffer, sizeof buffer);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) {
        file_ok = Error{fmt::format("{}: {}", resolved.string(), std::strerror(errno))};
        break;
      }
      if (got == 0) break;
      text.append(buffer, static_cast<std::size_t>(got));
      if (text.size() > kLargestPolicyFile) {
        file_ok = Error{fmt::format("{}: larger than {} bytes", resolved.string(), kLargestPolicyFile)};
        break;
      }
    }
  }
  ::close(fd);
  if (!file_ok) return file_ok.error();
  return parse_policy(text, path);
}

}  // namespace gpushare::agent
