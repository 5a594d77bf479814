// The tenant's view of a GPU's memory: what cuMemGetInfo, cuDeviceTotalMem (the preload library)
// and nvmlDeviceGetMemoryInfo (the shadow NVML) tell a process under gpushare. The GPU looks as
// big as the tenant's quota, and never bigger than the card (cuDNN's heuristics break on that):
//
//   total = min(limit, card's total)
//   free  = min(limit - tenant's use (0 once over it), card's free)
//   used  = the tenant's own bytes
//
// Without a quota (limit = kUnlimited) the card is shown as it is, but for `used`.
#pragma once

#include <cstdint>

#include "core/memory_ledger.hpp"

namespace gpushare {

// What the driver (or NVML) says of the whole card.
struct DeviceMemory {
  std::uint64_t total_bytes = 0;
  std::uint64_t free_bytes = 0;
};

struct TenantMemory {
  std::uint64_t total_bytes = 0;
  std::uint64_t free_bytes = 0;
  std::uint64_t used_bytes = 0;
};

// The card as the tenant with `quota` (its limit and use on this GPU) sees it.
TenantMemory tenant_memory_view(const DeviceMemory& device, const MemoryView& quota);

// Only the total: for cuDeviceTotalMem, which has no free figure.
std::uint64_t tenant_total_bytes(std::uint64_t device_total_bytes, const MemoryView& quota);

}  // namespace gpushare
