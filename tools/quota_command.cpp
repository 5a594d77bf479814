// `gpushare quota set`: changes a live tenant's memory limit or compute policy.
#include <fmt/format.h>

#include "commands.hpp"
#include "core/compute.hpp"
#include "core/administration.hpp"
#include "core/compute_slot_release.hpp"
#include "core/registry.hpp"
#include "core/settings.hpp"
#include "core/size.hpp"

namespace gpushare::tools {

int quota_set_command(const QuotaOptions& options) {
  if (!options.memory && !options.share && !options.limit && !options.priority) {
    fmt::print(stderr, "gpushare quota set: nothing to set (give --memory, --share, --limit or --priority)\n");
    return kExitBadInput;
  }
  std::optional<std::uint64_t> bytes;
  if (options.memory) {
    bytes = size_option("--memory", *options.memory, true);
    if (!bytes) return kExitBadInput;
  }
  ComputePolicyChange change;
  auto percent = [&](const std::optional<std::string>& text, const char* flag, std::optional<std::uint32_t>& out,
                     bool zero_means_none) {
    if (!text) return true;
    if (zero_means_none && (*text == "0" || *text == "none" || *text == "100")) {
      out = 0;
      return true;
    }
    auto parsed = parse_percent(*text);
    if (!parsed) {
      fmt::print(stderr, "gpushare quota set: {}: {}\n", flag, parsed.error().message);
      return false;
    }
    out = parsed.value();
    return true;
  };
  if (!percent(options.share, "--share", change.share_pct, false) ||
      !percent(options.limit, "--limit", change.limit_pct, true)) {
    return kExitBadInput;
  }
  if (options.priority) {
    auto parsed = parse_priority(*options.priority);
    if (!parsed) {
      fmt::print(stderr, "gpushare quota set: --priority: {}\n", parsed.error().message);
      return kExitBadInput;
    }
    change.priority = parsed.value();
  }
  const std::string& tenant = options.tenant;
  const auto path = resolve_state_path("quota set", options.state);
  if (!path) return kExitBadInput;
  auto state = open_existing(*path);
  if (!state) {
    fmt::print(stderr, "gpushare quota set: {}\n", state.error().message);
    return kExitFailure;
  }
  install_compute_slot_release();
  reclaim_dead_processes(**state);
  if (bytes) {
    if (auto set = set_tenant_memory_limit(**state, tenant, *bytes); !set) {
      fmt::print(stderr, "gpushare quota set: {}\n", set.error().message);
      return kExitFailure;
    }
    fmt::print("tenant '{}': memory limit {} on every GPU it uses\n", tenant, format_size(*bytes));
  }
  if (change.share_pct || change.limit_pct || change.priority) {
    if (auto set = set_tenant_compute_policy(**state, tenant, change); !set) {
      fmt::print(stderr, "gpushare quota set: {}\n", set.error().message);
      return kExitFailure;
    }
    if (change.share_pct) fmt::print("tenant '{}': share {}%\n", tenant, *change.share_pct);
    if (change.limit_pct) {
      fmt::print("tenant '{}': limit {}\n", tenant, *change.limit_pct == 0 ? std::string("none") : fmt::format("{}%", *change.limit_pct));
    }
    if (change.priority) fmt::print("tenant '{}': priority {}\n", tenant, priority_name(*change.priority));
  }
  return 0;
}

}  // namespace gpushare::tools
