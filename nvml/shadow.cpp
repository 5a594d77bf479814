// The C boundary of the shadow libnvidia-ml.so.1 (`gpushare run --nvml`). It defines only the
// memory queries; every other NVML name that a program looks up on this library's handle is found
// in the real NVML, which the dynamic linker loads behind this library (see CMakeLists.txt here and
// docs/architecture.md). Nothing runs at load time, and no C++ exception leaves these functions:
// on any problem the real library's answer is returned unchanged.
#include <dlfcn.h>
#include <pthread.h>

#include <atomic>
#include <optional>

#include "nvml_types.hpp"
#include "tenant_view.hpp"

#define GPUSHARE_NVML_EXPORT extern "C" __attribute__((visibility("default")))

namespace gpushare::nvml {
namespace {

// The real library's entry points.
struct RealNvml {
  GetMemoryInfoFn get_memory_info = nullptr;
  GetMemoryInfoV2Fn get_memory_info_v2 = nullptr;
  GetUuidFn get_uuid = nullptr;

  // For a function the real library lacks: is the library there at all?
  Return missing() const { return get_uuid == nullptr ? kErrorLibraryNotFound : kErrorFunctionNotFound; }
};

template <typename Fn>
Fn find_function(void* handle, const char* name) {
  return reinterpret_cast<Fn>(::dlsym(handle, name));
}

// Looked up on the handle of the forwarding library this one depends on (the real NVML is its
// filtee, or the forwarder is a link to the real NVML itself), not with RTLD_NEXT: that keeps
// working when another preloaded library interposes dlsym and loses the caller's address.
RealNvml find_real_nvml() {
  RealNvml real;
  void* forwarder = ::dlopen(GPUSHARE_REAL_NVML_FORWARDER, RTLD_LAZY | RTLD_NOLOAD);
  if (forwarder == nullptr) return real;
  real.get_memory_info = find_function<GetMemoryInfoFn>(forwarder, "nvmlDeviceGetMemoryInfo");
  real.get_memory_info_v2 = find_function<GetMemoryInfoV2Fn>(forwarder, "nvmlDeviceGetMemoryInfo_v2");
  real.get_uuid = find_function<GetUuidFn>(forwarder, "nvmlDeviceGetUUID");
  // The addresses stay valid: the forwarder (and so the real NVML) is this library's dependency.
  ::dlclose(forwarder);
  return real;
}

const RealNvml& real_nvml() {
  static const RealNvml real = find_real_nvml();
  return real;
}

// The process's lookup. Never destroyed (NVML users' threads may still ask while the process
// exits), and replaced in a child after fork: another thread of the parent may have held its mutex
// at the fork, which would then stay locked in the child for ever. The parent's copy is left as is.
std::atomic<TenantQuotaLookup*> g_lookup{nullptr};

void forget_lookup_in_child() { g_lookup.store(nullptr, std::memory_order_release); }

TenantQuotaLookup& quota_lookup() {
  static const bool registered = ::pthread_atfork(nullptr, nullptr, &forget_lookup_in_child) == 0;
  (void)registered;
  TenantQuotaLookup* current = g_lookup.load(std::memory_order_acquire);
  if (current != nullptr) return *current;
  auto* fresh = new TenantQuotaLookup();
  if (!g_lookup.compare_exchange_strong(current, fresh, std::memory_order_acq_rel)) {
    delete fresh;
    return *current;
  }
  return *fresh;
}

std::optional<TenantQuota> tenant_quota(const RealNvml& real, Device device) {
  if (real.get_uuid == nullptr) return std::nullopt;
  char uuid[kUuidBufferSize] = {};
  if (real.get_uuid(device, uuid, kUuidBufferSize) != kSuccess) return std::nullopt;
  uuid[kUuidBufferSize - 1] = '\0';
  try {
    return quota_lookup().find(uuid);
  } catch (...) {
    // Out of memory in the lookup's own bookkeeping: the real figures stand.
    return std::nullopt;
  }
}

}  // namespace
}  // namespace gpushare::nvml

namespace nvml = gpushare::nvml;

GPUSHARE_NVML_EXPORT nvml::Return nvmlDeviceGetMemoryInfo(nvml::Device device, nvml::Memory* memory) {
  const nvml::RealNvml& real = nvml::real_nvml();
  if (real.get_memory_info == nullptr) return real.missing();
  const nvml::Return result = real.get_memory_info(device, memory);
  if (result != nvml::kSuccess) return result;
  if (const auto quota = nvml::tenant_quota(real, device)) {
    const nvml::MemoryFigures view = nvml::tenant_figures({memory->total, memory->free, memory->used}, *quota);
    memory->total = view.total;
    memory->free = view.free;
    memory->used = view.used;
  }
  return result;
}

// The caller's `version` is left as it is. `reserved` becomes 0: the quota counts only the
// tenant's own allocations, and total = reserved + used + free should still hold for it.
GPUSHARE_NVML_EXPORT nvml::Return nvmlDeviceGetMemoryInfo_v2(nvml::Device device, nvml::MemoryV2* memory) {
  const nvml::RealNvml& real = nvml::real_nvml();
  if (real.get_memory_info_v2 == nullptr) return real.missing();
  const nvml::Return result = real.get_memory_info_v2(device, memory);
  if (result != nvml::kSuccess) return result;
  if (const auto quota = nvml::tenant_quota(real, device)) {
    const nvml::MemoryFigures view = nvml::tenant_figures({memory->total, memory->free, memory->used}, *quota);
    memory->total = view.total;
    memory->reserved = 0;
    memory->free = view.free;
    memory->used = view.used;
  }
  return result;
}
