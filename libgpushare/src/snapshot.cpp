// One read of every live tenant record, for those who only look.
#include "core/snapshot.hpp"

#include <algorithm>
#include <cstring>

#include "core/tenant_name.hpp"

namespace gpushare {
using layout::kInUse;
using layout::kMaxGpus;
using layout::kMaxSlots;
using layout::kMaxTenants;
using layout::StateLayout;

namespace {
constexpr auto kAcquire = std::memory_order_acquire;
constexpr auto kRelaxed = std::memory_order_relaxed;
}  // namespace

std::vector<TenantSnapshot> snapshot_tenants(SharedState& shared) {
  StateLayout& state = shared.state();
  std::vector<TenantSnapshot> tenants;
  for (std::uint32_t t = 0; t < kMaxTenants; ++t) {
    const auto& record = state.tenants[t];
    if (record.state.load(kAcquire) != kInUse) continue;
    TenantSnapshot snap;
    snap.index = t;
    snap.name = tenant_name_of(record);
    const std::uint64_t override_limit = record.override_limit_bytes.load(kRelaxed);
    if (override_limit != layout::kNoOverride) snap.override_limit_bytes = override_limit;
    // Until a process of the tenant has stated a policy (or `quota set` has), the defaults apply.
    snap.compute = default_compute_policy();
    if (record.compute_configured.load(kAcquire) != 0) {
      snap.compute.share_pct = record.compute_policy.share_pct.load(kRelaxed);
      snap.compute.limit_pct = record.compute_policy.limit_pct.load(kRelaxed);
      snap.compute.priority =
          static_cast<Priority>(layout::priority_class(record.compute_policy.priority.load(kRelaxed)));
    }
    for (std::uint32_t g = 0; g < kMaxGpus; ++g) {
      const auto& entry = record.ledger[g];
      if (entry.configured.load(kAcquire) == 0) continue;
      LedgerSnapshot ledger;
      ledger.gpu = g;
      std::copy(std::begin(state.gpus[g].uuid), std::end(state.gpus[g].uuid), ledger.uuid.begin());
      ledger.gpu_name.assign(state.gpus[g].name, ::strnlen(state.gpus[g].name, layout::kGpuNameBytes));
      ledger.physical_bytes = state.gpus[g].physical_bytes.load(kRelaxed);
      ledger.limit_bytes = entry.limit_bytes.load(kRelaxed);
      ledger.used_bytes = entry.used_bytes.load(kRelaxed);
      ledger.peak_bytes = entry.peak_bytes.load(kRelaxed);
      ledger.oom_refusals = entry.oom_refusals.load(kRelaxed);
      ledger.gpu_ns = record.compute[g].gpu_ns.load(kRelaxed);
      ledger.launches = record.compute[g].launches.load(kRelaxed);
      ledger.wait_ns = record.compute[g].wait_ns.load(kRelaxed);
      ledger.peer_wait_ns = record.compute[g].peer_wait_ns.load(kRelaxed);
      snap.gpus.push_back(ledger);
    }
    for (std::uint32_t s = 0; s < kMaxSlots; ++s) {
      auto& slot = state.slots[s];
      if (slot.state.load(kAcquire) == layout::kFree || slot.tenant_index != t) continue;
      ProcessSnapshot process;
      process.slot = s;
      process.pid = slot.pid;
      process.started_unix_ns = slot.started_unix_ns.load(kRelaxed);
      // A free liveness lock means the owner is gone. Tested, not taken: a sweep running at this
      // moment must not find the lock held by a mere look.
      process.alive = shared.slot_locked(s);
      for (std::uint32_t g = 0; g < kMaxGpus; ++g) process.held_bytes[g] = slot.held_bytes[g].load(kRelaxed);
      snap.processes.push_back(process);
    }
    tenants.push_back(std::move(snap));
  }
  return tenants;
}

}  // namespace gpushare
