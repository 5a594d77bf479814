#include "core/compute_policy.hpp"

#include <fmt/format.h>

#include "core/settings.hpp"
#include "core/state_layout.hpp"

namespace gpushare {

Result<Priority> parse_priority(std::string_view text) {
  if (text == "high") return Priority::kHigh;
  if (text == "normal") return Priority::kNormal;
  if (text == "low") return Priority::kLow;
  return Error{fmt::format("invalid priority '{}' (expected high, normal or low)", text)};
}

std::string_view priority_name(Priority priority) {
  switch (priority) {
    case Priority::kHigh: return "high";
    case Priority::kLow: return "low";
    default: return "normal";
  }
}

const ComputePolicyValues& default_compute_policy() { return default_settings().compute; }

ComputePolicyValues adopt_compute_policy(layout::StateLayout& state, std::uint32_t tenant,
                                         const ComputePolicyValues& wanted) {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  auto& record = state.tenants[tenant];
  auto& policy = record.compute_policy;
  if (record.compute_configured.load(std::memory_order_acquire) == 0) {
    policy.share_pct.store(wanted.share_pct, kRelaxed);
    policy.limit_pct.store(wanted.limit_pct, kRelaxed);
    policy.priority.store(static_cast<std::uint32_t>(wanted.priority), kRelaxed);
    policy.slice_us.store(static_cast<std::uint32_t>(wanted.slice.count()), kRelaxed);
    record.compute_configured.store(1, std::memory_order_release);
    return wanted;
  }
  ComputePolicyValues in_force;
  in_force.share_pct = policy.share_pct.load(kRelaxed);
  in_force.limit_pct = policy.limit_pct.load(kRelaxed);
  in_force.priority = static_cast<Priority>(layout::priority_class(policy.priority.load(kRelaxed)));
  in_force.slice = std::chrono::microseconds(policy.slice_us.load(kRelaxed));
  return in_force;
}

}  // namespace gpushare
