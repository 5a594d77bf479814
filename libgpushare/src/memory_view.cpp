#include "core/memory_view.hpp"

#include <algorithm>

namespace gpushare {

std::uint64_t tenant_total_bytes(std::uint64_t device_total_bytes, const MemoryView& quota) {
  return std::min(device_total_bytes, quota.limit_bytes);
}

TenantMemory tenant_memory_view(const DeviceMemory& device, const MemoryView& quota) {
  const std::uint64_t room = quota.limit_bytes > quota.used_bytes ? quota.limit_bytes - quota.used_bytes : 0;
  return TenantMemory{
      .total_bytes = tenant_total_bytes(device.total_bytes, quota),
      .free_bytes = std::min(room, device.free_bytes),
      .used_bytes = quota.used_bytes,
  };
}

}  // namespace gpushare
