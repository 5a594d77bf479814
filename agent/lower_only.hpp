// Isolation mode's rule for a tenant's own settings (GPUSHARE_MEMORY_LIMIT, its per-device form,
// --share, --limit, --priority, HAMi's variables, all read into a Settings): they may only lower
// what the policy grants. A lower value is taken; a higher one is ignored, with one line saying so.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/settings.hpp"
#include "policy.hpp"

namespace gpushare::agent {

struct LoweredLimits {
  TenantLimits effective;
  std::vector<std::string> ignored;  // one line per request above the grant, for the log
};

// "Lower" is: less memory (per GPU: the smaller of the grant and the request on every ordinal
// either names), a smaller cap (any cap is lower than none), a smaller share (a grant without a
// share takes none from the tenant: an equal part cannot be compared with a weight), a lower
// priority class. A field left at the options table's default is no request and logs nothing. The
// slice length is the agent's to decide: a requested one is ignored.
LoweredLimits lower_only(const TenantLimits& granted, const Settings& requested);

// The tighter of two compute caps (limit_pct), 0 being no cap: any cap is tighter than none.
std::uint32_t tighter_cap(std::uint32_t a, std::uint32_t b);

}  // namespace gpushare::agent
