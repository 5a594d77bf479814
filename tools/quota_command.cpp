// `gpushare quota set`: changes a live tenant's memory limit or compute policy.
#include <algorithm>

#include <fmt/format.h>

#include "agent_admin.hpp"
#include "commands.hpp"
#include "core/administration.hpp"
#include "core/compute_policy.hpp"
#include "core/compute_slot_release.hpp"
#include "core/registry.hpp"
#include "core/settings.hpp"
#include "core/size.hpp"

namespace gpushare::tools {
namespace {

// "--memory, --share, --limit or --priority": the table's quota flags that change something.
std::string changing_flags() {
  std::vector<std::string_view> flags;
  for (const OptionSpec& spec : option_specs()) {
    if (!spec.quota_flag.empty() && spec.id != OptionId::kState) flags.push_back(spec.quota_flag);
  }
  std::string text;
  for (std::size_t i = 0; i < flags.size(); ++i) {
    text += i == 0 ? "" : (i + 1 == flags.size() ? " or " : ", ");
    text += flags[i];
  }
  return text;
}

}  // namespace

int quota_set_command(const QuotaOptions& options) {
  Settings requested;
  const auto assignments = parse_table_flags("quota set", OptionWay::kQuotaFlag, options.flags, requested);
  if (!assignments) return kExitBadInput;
  auto given = [&](OptionId id) {
    const std::string_view variable = option_spec(id).env;
    return std::ranges::any_of(*assignments, [&](const OptionAssignment& a) { return a.variable == variable; });
  };
  std::optional<std::uint64_t> bytes;
  if (given(OptionId::kMemoryLimit)) bytes = requested.memory_limit_bytes;
  ComputePolicyChange change;
  if (given(OptionId::kComputeShare)) change.share_pct = requested.compute.share_pct;
  if (given(OptionId::kComputeLimit)) change.limit_pct = requested.compute.limit_pct;  // 0: no cap
  if (given(OptionId::kPriority)) change.priority = requested.compute.priority;
  if (!bytes && !change.share_pct && !change.limit_pct && !change.priority) {
    fmt::print(stderr, "gpushare quota set: nothing to set (give {})\n", changing_flags());
    return kExitBadInput;
  }
  const std::string& tenant = options.tenant;
  // Isolation mode: the agent owns the state and decides who may change it.
  if (!options.flags.value("--state")) {
    if (const auto socket = agent_socket_path()) {
      agent::QuotaSet request{tenant, bytes, change.share_pct, change.limit_pct, std::nullopt};
      if (change.priority) request.priority = static_cast<std::uint8_t>(*change.priority);
      return send_admin_request("quota set", *socket, request);
    }
  }
  const auto path = resolve_state_path("quota set", options.flags.value("--state"));
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
