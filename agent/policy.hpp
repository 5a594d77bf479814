// The node agent's policy file: which tenant a process belongs to, decided from what the kernel
// says of it (uid, gid, cgroup), and the limits that tenant is granted. The format is described in
// docs/agent-policy.md. Parsing is strict: an unknown key, a value of the wrong type or range, or a
// uid, gid or cgroup pattern claimed by two tenants is an error naming the file, the line and the
// key, so that a typo can never silently grant more than was meant.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/compute_policy.hpp"
#include "core/result.hpp"
#include "core/size.hpp"

namespace gpushare::agent {

// Per-GPU device ordinals of memory_per_gpu: 0-63, as GPUSHARE_MEMORY_LIMIT_<i> takes them.
inline constexpr int kMaxGpuOrdinal = 63;

// What the policy grants a tenant. Memory is per GPU; kUnlimited is no quota.
struct TenantLimits {
  std::uint64_t memory_bytes = kUnlimited;
  std::map<int, std::uint64_t> memory_per_gpu_bytes;  // overrides memory_bytes on these ordinals
  // A part of each GPU's memory (KAI-Scheduler's fractions), 0 < f <= 1: known in bytes only where a
  // GPU is attached, so applied there (memory_on); the lower of it and the sizes above holds.
  std::optional<double> memory_fraction;
  // share_pct 0: not given (an equal part of what shares leave); limit_pct 0: no cap.
  ComputePolicyValues compute = default_compute_policy();

  std::uint64_t memory_for(int ordinal) const;
  // The quota on GPU `ordinal`, whose memory is `gpu_bytes`: memory_for, lowered by the fraction.
  std::uint64_t memory_on(int ordinal, std::uint64_t gpu_bytes) const;
  bool operator==(const TenantLimits& other) const;
};

// One [tenant.NAME] table, in file order.
struct TenantRule {
  std::string name;
  std::vector<std::uint32_t> uids;
  std::vector<std::uint32_t> gids;
  std::vector<std::string> cgroups;  // patterns, see cgroup_pattern_matches (identity.hpp)
  TenantLimits limits;
};

// The [default] table: what a process no rule matches gets.
struct DefaultRule {
  bool refuse = true;
  std::string tenant;   // when !refuse
  TenantLimits limits;  // when !refuse
};

// An administrator's ceiling over what pods ask for under --kubernetes: [pods], or a
// [pods.namespace.NAME] that replaces it for one namespace. A limit it gives is the most a pod may
// have and what a pod that asks for none gets; a limit it leaves out is the pod's to set.
struct PodCeiling {
  bool refuse = false;  // pods of these namespaces cannot join
  std::optional<std::uint64_t> memory_bytes;
  std::optional<std::uint32_t> share_pct;
  std::optional<std::uint32_t> limit_pct;  // 0: no cap, the same as none given
  std::optional<Priority> priority;
  bool operator==(const PodCeiling& other) const = default;
};

struct PodCeilings {
  std::optional<PodCeiling> others;              // [pods]; nullopt when the file has no [pods] table
  std::map<std::string, PodCeiling> namespaces;  // [pods.namespace.NAME]
  // The ceiling of `namespace_name`'s pods: its own table, else [pods]; nullptr when neither.
  const PodCeiling* of(const std::string& namespace_name) const;
  bool configured() const { return others.has_value() || !namespaces.empty(); }
  bool operator==(const PodCeilings& other) const = default;
};

struct Policy {
  std::string source;  // the file it was read from, for messages
  std::vector<TenantRule> tenants;
  DefaultRule fallback;
  PodCeilings pods;
};

// Parses policy text; `source` names it in messages ("policy.toml:3: tenant.train.share: ...").
Result<Policy> parse_policy(std::string_view text, std::string_view source);

// Reads and parses the file at `path`. The file, and the directory holding it, must be owned by
// root or by the user running the agent and writable by no one else (group write only for group
// root, or for a directory with the sticky bit where others may create but not replace files):
// a policy a tenant could write would let it grant itself anything.
Result<Policy> load_policy(const std::string& path);

// The check load_policy makes of the file's (or its directory's) owner and mode, given the agent's
// effective uid; `what` names the path in the message.
Status check_policy_permissions(std::string_view what, std::uint32_t owner_uid, std::uint32_t owner_gid,
                                std::uint32_t mode, bool is_directory, std::uint32_t agent_uid);

// A Kubernetes namespace's name as the API server accepts it (a DNS label: at most 63 lowercase
// letters, digits and '-', starting and ending with a letter or digit).
Status validate_namespace_name(std::string_view name);

// A cgroup pattern as the policy accepts it: absolute, no empty, "." or ".." components, no trailing
// '/', and "**" only as the whole last component. The message says what is wrong.
Status validate_cgroup_pattern(std::string_view pattern);

}  // namespace gpushare::agent
