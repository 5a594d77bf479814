// What a slice costs: slice lengths and ends, hard-cap budgets, and the charge that ends a slice
// (GPU time, virtual time, budget) in the tenant's record.
#include "core/arbiter.hpp"

#include <algorithm>
#include <chrono>

namespace gpushare {
using layout::GpuSchedule;
using layout::kInUse;
using layout::kMaxSlots;
using layout::kMaxTenants;
using layout::StateLayout;

namespace {
constexpr auto kRelaxed = std::memory_order_relaxed;
constexpr auto kAcquire = std::memory_order_acquire;
constexpr auto kRelease = std::memory_order_release;
constexpr std::uint64_t kDefaultSliceNs = std::chrono::nanoseconds(kDefaultSlice).count();
constexpr std::uint64_t kMaxSliceNs = std::chrono::nanoseconds(kLongestSlice).count();

bool tenant_waits(const StateLayout& state, std::uint32_t gpu, std::uint32_t tenant) {
  for (const auto& slot : state.slots) {
    if (slot.state.load(kAcquire) == kInUse && slot.tenant_index.load(kRelaxed) == tenant &&
        slot.compute[gpu].waiting_since_ns.load(kRelaxed) != 0) {
      return true;
    }
  }
  return false;
}

// Weight in percent points: the share, or an equal part of what the shares leave.
std::uint64_t weight_of(const StateLayout& state, std::uint32_t gpu, std::uint32_t tenant) {
  const std::uint32_t own = state.tenants[tenant].compute_policy.share_pct.load(kRelaxed);
  if (own != 0) return own;
  std::uint64_t explicit_sum = 0, active = 0, unspecified = 0;
  for (std::uint32_t t = 0; t < kMaxTenants; ++t) {
    if (state.tenants[t].state.load(kAcquire) != kInUse) continue;
    if (state.tenants[t].compute[gpu].active.load(kRelaxed) == 0 && t != tenant) continue;
    ++active;
    const std::uint32_t share = state.tenants[t].compute_policy.share_pct.load(kRelaxed);
    if (share == 0) ++unspecified; else explicit_sum += share;
  }
  if (explicit_sum < 100 && unspecified > 0) return std::max<std::uint64_t>(1, (100 - explicit_sum) / unspecified);
  return std::max<std::uint64_t>(1, explicit_sum / std::max<std::uint64_t>(active, 1));
}

// A capped tenant's hard-cap budget at `now`: what it had, refilled at limit% of the time since,
// at most one slice deep (a new tenant starts with a full slice).
std::int64_t budget_at(const layout::TenantRecord& tenant, std::uint32_t gpu, std::uint64_t now) {
  const std::uint32_t limit = tenant.compute_policy.limit_pct.load(kRelaxed);
  const auto& entry = tenant.compute[gpu];
  const auto depth = static_cast<std::int64_t>(slice_ns_of(tenant));
  const std::uint64_t last = entry.budget_at_ns.load(kRelaxed);
  if (last == 0) return depth;
  std::int64_t budget = entry.budget_ns.load(kRelaxed);
  if (now > last) budget += static_cast<std::int64_t>((now - last) * limit / 100);
  return std::min(budget, depth);
}

// Grant only with at least half a slice of budget: tiny slices would cost a handover each.
std::int64_t budget_needed(const layout::TenantRecord& tenant) {
  return static_cast<std::int64_t>(slice_ns_of(tenant) / 2);
}
}  // namespace

std::uint64_t slice_ns_of(const layout::TenantRecord& tenant) {
  const std::uint32_t slice_us = tenant.compute_policy.slice_us.load(kRelaxed);
  return slice_us == 0 ? kDefaultSliceNs : std::min(std::uint64_t{slice_us} * 1000, kMaxSliceNs);
}

std::uint64_t slice_end_of(const GpuSchedule& schedule, std::uint64_t now) {
  const std::uint64_t start = schedule.slice_start_ns.load(kRelaxed);
  if (start > now) return now;
  return std::min(schedule.slice_end_ns.load(kRelaxed), start + kMaxSliceNs);
}

bool capped(const layout::TenantRecord& tenant) {
  const std::uint32_t limit = tenant.compute_policy.limit_pct.load(kRelaxed);
  return limit != 0 && limit < 100;
}

bool may_be_granted(const layout::TenantRecord& tenant, std::uint32_t gpu, std::uint64_t now) {
  return !capped(tenant) || budget_at(tenant, gpu, now) >= budget_needed(tenant);
}

bool refill_budget(layout::TenantRecord& tenant, std::uint32_t gpu, std::uint64_t now, std::uint64_t* wait_ns) {
  // Read once: another process may change it between a check and a division.
  const std::uint32_t limit = tenant.compute_policy.limit_pct.load(kRelaxed);
  if (limit == 0 || limit >= 100) return true;
  const std::int64_t budget = budget_at(tenant, gpu, now);
  tenant.compute[gpu].budget_ns.store(budget, kRelaxed);
  tenant.compute[gpu].budget_at_ns.store(now, kRelaxed);
  const std::int64_t needed = budget_needed(tenant);
  if (budget >= needed) return true;
  *wait_ns = static_cast<std::uint64_t>(needed - budget) * 100 / limit + 1;
  return false;
}

void end_slice(StateLayout& state, std::uint32_t gpu, std::uint64_t now) {
  GpuSchedule& schedule = state.schedules[gpu];
  const std::uint32_t holder = layout::holder_slot(schedule.holder_word.load(kAcquire));
  if (holder == layout::kNoHolder || holder >= kMaxSlots) {
    schedule.holder_word.store(0, kRelease);
    return;
  }
  schedule.charge_seq.fetch_add(1, std::memory_order_acq_rel);  // odd: charging
  const std::uint32_t tenant = state.slots[holder].tenant_index.load(kRelaxed);
  if (tenant < kMaxTenants) {
    auto& record = state.tenants[tenant];
    auto& entry = record.compute[gpu];
    const std::uint64_t start = schedule.slice_start_ns.load(kRelaxed);
    const std::uint64_t used = now > start ? now - start : 0;
    entry.gpu_ns.fetch_add(used, kRelaxed);
    entry.virtual_ns.fetch_add(used * 100 / weight_of(state, gpu, tenant), kRelaxed);
    if (capped(record)) entry.budget_ns.fetch_sub(static_cast<std::int64_t>(used), kRelaxed);
    entry.launches.fetch_add(layout::calls_between(schedule.activity_at_grant.load(kRelaxed),
                                                   layout::activity_of(state.slots[holder].compute[gpu])),
                             kRelaxed);
    if (!tenant_waits(state, gpu, tenant)) entry.active.store(0, kRelaxed);
    // The class held the GPU until now: a long tenure (a hold through pauses, renewals only every
    // few launches) must not look like a class long gone to the lower ones that come next.
    const std::uint32_t priority = layout::priority_class(record.compute_policy.priority.load(kRelaxed));
    schedule.class_granted_ns[priority].store(now, kRelaxed);
  }
  schedule.holder_word.store(0, kRelease);
  schedule.charge_seq.fetch_add(1, kRelease);  // even: charged, and no slice in progress
  schedule.grant_seq.fetch_add(1, kRelease);
}

std::uint64_t gone_holder_used_until(const GpuSchedule& schedule, std::uint64_t now) {
  const std::uint64_t last_seen =
      std::max(schedule.slice_start_ns.load(kRelaxed), schedule.observed_at_ns.load(kRelaxed));
  return std::min(now, last_seen);
}

}  // namespace gpushare
