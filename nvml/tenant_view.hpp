// The tenant's view of a GPU's memory, as the shadow NVML reports it: the same numbers
// cuMemGetInfo gives the tenant under gpushare, taken from the shared state.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/snapshot.hpp"
#include "core/shared_state.hpp"

namespace gpushare::nvml {

struct MemoryFigures {
  std::uint64_t total = 0;
  std::uint64_t free = 0;
  std::uint64_t used = 0;
};

// A tenant's quota on one GPU and what it holds there.
struct TenantQuota {
  std::uint64_t limit_bytes = 0;
  std::uint64_t used_bytes = 0;
};

// The card as the tenant sees it: core/memory_view.hpp's rule, the same cuMemGetInfo follows.
MemoryFigures tenant_figures(const MemoryFigures& real, const TenantQuota& quota);

// The quota of `tenant` on the GPU nvidia-smi names `gpu_uuid` ("GPU-…"), from `tenants` (a
// snapshot of the state; empty when no state file exists yet). A live tenant already on the GPU
// has its ledger there; otherwise its next process will set the limit: a `quota set` override of
// a live tenant, else `environment_limit` (GPUSHARE_MEMORY_LIMIT; nullopt when it cannot be told
// which limit applies). nullopt: nothing to rewrite (no quota, or not a whole GPU).
std::optional<TenantQuota> find_tenant_quota(const std::vector<TenantSnapshot>& tenants, std::string_view tenant,
                                             std::string_view gpu_uuid,
                                             std::optional<std::uint64_t> environment_limit);

// This process's tenant, read from its environment once, and the state file, opened once it
// exists and kept open: a query costs one snapshot of the state, cheap enough for nvidia-smi -l.
// Safe to call from any thread.
class TenantQuotaLookup {
 public:
  // nullopt on any problem (no tenant, an unusable setting or state file, no quota).
  std::optional<TenantQuota> find(std::string_view gpu_uuid);

 private:
  void read_environment();
  // Isolation mode: the tenant the preload library in this process joined through the agent
  // (gpushare_tenant_name), "" before it has.
  static std::string joined_tenant();

  std::mutex mutex_;
  bool environment_read_ = false;
  std::string tenant_;  // empty: this process is nobody's tenant
  std::string state_path_;
  SharedState::Origin state_origin_ = SharedState::Origin::kConfigured;
  std::optional<std::uint64_t> environment_limit_;
  bool through_agent_ = false;  // isolation mode: the agent names the tenant and its limits
  std::unique_ptr<SharedState> state_;
};

}  // namespace gpushare::nvml
