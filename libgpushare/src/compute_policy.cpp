#include "core/compute_policy.hpp"

#include <fmt/format.h>

#include "core/settings.hpp"

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

}  // namespace gpushare
