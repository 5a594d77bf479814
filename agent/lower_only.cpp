// The "only lower" rule (lower_only.hpp).
#include "lower_only.hpp"

#include <algorithm>
#include <set>

#include <fmt/format.h>

namespace gpushare::agent {

namespace {

std::string cap_text(std::uint32_t limit_pct) {
  return limit_pct == 0 ? std::string("none") : fmt::format("{}%", limit_pct);
}

void lower_memory(const TenantLimits& granted, const Settings& requested, const Settings& defaults,
                  LoweredLimits& out) {
  TenantLimits& effective = out.effective;
  if (requested.memory_limit_bytes != defaults.memory_limit_bytes &&
      requested.memory_limit_bytes > granted.memory_bytes)
    out.ignored.push_back(fmt::format("GPUSHARE_MEMORY_LIMIT={} ignored: the policy grants {} per GPU",
                                      format_size(requested.memory_limit_bytes), format_size(granted.memory_bytes)));
  for (const auto& [ordinal, bytes] : requested.device_memory_limit_bytes)
    if (bytes > granted.memory_for(ordinal))
      out.ignored.push_back(fmt::format("GPUSHARE_MEMORY_LIMIT_{}={} ignored: the policy grants {} on GPU {}", ordinal,
                                        format_size(bytes), format_size(granted.memory_for(ordinal)), ordinal));
  // Every ordinal named by either side gets the smaller of the two; the rest, the smaller default.
  std::set<int> ordinals;
  for (const auto& entry : granted.memory_per_gpu_bytes) ordinals.insert(entry.first);
  for (const auto& entry : requested.device_memory_limit_bytes) ordinals.insert(entry.first);
  effective.memory_bytes = std::min(granted.memory_bytes, requested.memory_limit_bytes);
  effective.memory_per_gpu_bytes.clear();
  for (int ordinal : ordinals) {
    std::uint64_t bytes = std::min(granted.memory_for(ordinal), requested.memory_limit_for(ordinal));
    if (bytes != effective.memory_bytes) effective.memory_per_gpu_bytes[ordinal] = bytes;
  }
}

void lower_compute(const ComputePolicyValues& granted, const ComputePolicyValues& requested,
                   const ComputePolicyValues& defaults, LoweredLimits& out) {
  ComputePolicyValues& effective = out.effective.compute;
  if (requested.share_pct != defaults.share_pct) {
    if (granted.share_pct != 0 && requested.share_pct <= granted.share_pct)
      effective.share_pct = requested.share_pct;
    else
      out.ignored.push_back(
          fmt::format("GPUSHARE_COMPUTE_SHARE={} ignored: the policy grants {}", requested.share_pct,
                      granted.share_pct == 0 ? std::string("an equal part") : fmt::format("{}%", granted.share_pct)));
  }
  if (requested.limit_pct != defaults.limit_pct) {
    bool lower = requested.limit_pct != 0 && tighter_cap(granted.limit_pct, requested.limit_pct) == requested.limit_pct;
    if (lower)
      effective.limit_pct = requested.limit_pct;
    else
      out.ignored.push_back(fmt::format("GPUSHARE_COMPUTE_LIMIT={} ignored: the policy caps at {}",
                                        cap_text(requested.limit_pct), cap_text(granted.limit_pct)));
  }
  if (requested.priority != defaults.priority) {
    if (requested.priority <= granted.priority)
      effective.priority = requested.priority;
    else
      out.ignored.push_back(fmt::format("GPUSHARE_PRIORITY={} ignored: the policy grants {}",
                                        priority_name(requested.priority), priority_name(granted.priority)));
  }
  if (requested.slice != defaults.slice)
    out.ignored.push_back(
        fmt::format("GPUSHARE_SLICE_MS={} ignored: the agent decides the slice", requested.slice.count() / 1000));
}

}  // namespace

std::uint32_t tighter_cap(std::uint32_t a, std::uint32_t b) {
  if (a == 0) return b;
  if (b == 0) return a;
  return std::min(a, b);
}

LoweredLimits lower_only(const TenantLimits& granted, const Settings& requested) {
  const Settings& defaults = default_settings();
  LoweredLimits out{granted, {}};
  lower_memory(granted, requested, defaults, out);
  lower_compute(granted.compute, requested.compute, defaults.compute, out);
  return out;
}

}  // namespace gpushare::agent
