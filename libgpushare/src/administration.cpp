// Tenant limits and compute policies as `gpushare quota set` changes them.
#include "core/administration.hpp"

#include <fmt/format.h>

#include "core/compute_policy.hpp"
#include "core/registry.hpp"

namespace gpushare {
using layout::kMaxGpus;
using layout::StateLayout;

namespace {

constexpr auto kAcquire = std::memory_order_acquire;
constexpr auto kRelease = std::memory_order_release;
constexpr auto kRelaxed = std::memory_order_relaxed;

// `gpushare quota set`: runs `change` on the named live tenant's record under the registry lock.
template <typename Change>
Status change_tenant(SharedState& shared, std::string_view name, Change&& change) {
  StateLayout& state = shared.state();
  auto registry = lock_registry(state);
  if (!registry) return registry.error();
  auto tenant = find_tenant(state, name);
  if (!tenant) return Error{fmt::format("no tenant named '{}' in {}", name, shared.path())};
  change(state.tenants[*tenant]);
  return Ok{};
}

}  // namespace

Status set_tenant_memory_limit(SharedState& shared, std::string_view name, std::uint64_t limit_bytes) {
  return change_tenant(shared, name, [&](layout::TenantRecord& record) {
    record.override_limit_bytes.store(limit_bytes, kRelaxed);
    for (auto& entry : record.ledger) {
      if (entry.configured.load(kAcquire) != 0) entry.limit_bytes.store(limit_bytes, kRelaxed);
    }
  });
}

Status set_tenant_compute_policy(SharedState& shared, std::string_view name, const ComputePolicyChange& change) {
  return change_tenant(shared, name, [&](layout::TenantRecord& record) {
    auto& policy = record.compute_policy;
    if (change.share_pct) policy.share_pct.store(*change.share_pct, kRelaxed);
    if (change.limit_pct) policy.limit_pct.store(*change.limit_pct, kRelaxed);
    if (change.priority) {
      const std::uint32_t priority = layout::priority_class(static_cast<std::uint32_t>(*change.priority));
      if (policy.priority.exchange(priority, kRelaxed) != priority) {
        // Virtual times are compared within a class: one earned in the old class would put the
        // tenant far behind its new peers (it would take the GPU until it caught up) or far ahead
        // (it would starve). It starts where its new class is.
        for (std::uint32_t g = 0; g < kMaxGpus; ++g) {
          const auto& clock = shared.state().schedules[g].virtual_clock_ns[priority];
          record.compute[g].virtual_ns.store(clock.load(kRelaxed), kRelaxed);
        }
      }
    }
    record.compute_configured.store(1, kRelease);
  });
}

}  // namespace gpushare
