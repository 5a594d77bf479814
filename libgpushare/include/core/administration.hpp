// Changes made to live tenants from outside (`gpushare quota set`), under the registry lock. What a
// tenant starts with is stated by its first process when it joins (TenantMembership::attach_gpu and
// adopt_compute_policy, registry.hpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "core/compute_policy.hpp"
#include "core/result.hpp"
#include "core/shared_state.hpp"

namespace gpushare {

// `gpushare quota set`: changes a live tenant's limit on every GPU it uses and on GPUs it starts
// using later. Lowering it below current use makes further allocations fail until use drops.
Status set_tenant_memory_limit(SharedState& state, std::string_view tenant, std::uint64_t limit_bytes);

// Changes a live tenant's policy (found by name under the registry mutex); the arbiter reads it at every decision, so it takes effect within one slice.
struct ComputePolicyChange {
  std::optional<std::uint32_t> share_pct;
  std::optional<std::uint32_t> limit_pct;
  std::optional<Priority> priority;
};
Status set_tenant_compute_policy(SharedState& state, std::string_view tenant, const ComputePolicyChange& change);

}  // namespace gpushare
