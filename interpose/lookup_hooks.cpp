// Entry-point lookups: whatever address the real driver hands out is replaced by the wrapper of
// exactly that function (see hooks.def), so every lookup path reaches the same wrappers.
#include "driver.hpp"
#include "hooks.hpp"

namespace gpushare::interpose::hooks {

CUresult cuGetProcAddress(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr || driver->cuGetProcAddress == nullptr) return kMissing;
  const CUresult result = driver->cuGetProcAddress(symbol, pfn, cudaVersion, flags);
  if (result == CUDA_SUCCESS && pfn != nullptr) *pfn = wrapper_for(*pfn);
  return result;
}

CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags,
                             CUdriverProcAddressQueryResult* symbolStatus) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr || driver->cuGetProcAddress_v2 == nullptr) return kMissing;
  const CUresult result = driver->cuGetProcAddress_v2(symbol, pfn, cudaVersion, flags, symbolStatus);
  if (result == CUDA_SUCCESS && pfn != nullptr) *pfn = wrapper_for(*pfn);
  return result;
}

void* map_dlsym_result(const char* /*symbol*/, void* address) {
  // Only an address inside the real driver can need mapping, and then the driver is loaded.
  if (real_driver_if_loaded() == nullptr) return address;
  return wrapper_for(address);
}

}  // namespace gpushare::interpose::hooks
