// Changes made to live tenants from outside (`gpushare quota set`), under the registry lock. The
// compute policy's counterpart, set_tenant_compute_policy, is declared with the policy
// (compute.hpp) and defined in administration.cpp too, as is TenantMembership::adopt_compute_policy
// (a tenant's first process states the policy).
#pragma once

#include <cstdint>
#include <string_view>

#include "core/result.hpp"
#include "core/shared_state.hpp"

namespace gpushare {

// `gpushare quota set`: changes a live tenant's limit on every GPU it uses and on GPUs it starts
// using later. Lowering it below current use makes further allocations fail until use drops.
Status set_tenant_memory_limit(SharedState& state, std::string_view tenant, std::uint64_t limit_bytes);

}  // namespace gpushare
