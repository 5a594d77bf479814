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

#include <algorithm>
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

// Only the total: for cuDeviceTotalMem, which has no free figure.
inline std::uint64_t tenant_total_bytes(std::uint64_t device_total_bytes, const MemoryView& quota) {
  return std::min(device_total_bytes, quota.limit_bytes);
}

// The card as the tenant with `quota` (its limit and use on this GPU) sees it. Inline: it is on
// the path of every cuMemGetInfo.
inline TenantMemory tenant_memory_view(const DeviceMemory& device, const MemoryView& quota) {
  const std::uint64_t room = quota.limit_bytes > quota.used_bytes ? quota.limit_bytes - quota.used_bytes : 0;
  return TenantMemory{
      .total_bytes = tenant_total_bytes(device.total_bytes, quota),
      .free_bytes = std::min(room, device.free_bytes),
      .used_bytes = quota.used_bytes,
  };
}

}  // namespace gpushare
