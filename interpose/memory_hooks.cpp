// Device-memory hooks: each one converts its arguments into (device, bytes), reserves in the
// tenant's ledger, calls the real driver, then keeps the charge or rolls it back. Policy lives in
// libgpushare; what is here is the translation from driver calls.
#include <algorithm>
#include <optional>

#include "core/memory_view.hpp"
#include "driver.hpp"
#include "hooks.hpp"
#include "log.hpp"
#include "tenancy.hpp"
#include "trace_recorder.hpp"

namespace gpushare::interpose::hooks {
namespace {

std::optional<CUdevice> current_device(const RealDriver& driver) {
  CUdevice device = 0;
  if (driver.cuCtxGetDevice != nullptr && driver.cuCtxGetDevice(&device) == CUDA_SUCCESS) return device;
  return std::nullopt;
}

// Stream-ordered allocations belong to the stream's device, which need not be the current one.
std::optional<CUdevice> stream_device(const RealDriver& driver, CUstream stream) {
  if (stream != nullptr && stream != CU_STREAM_LEGACY && stream != CU_STREAM_PER_THREAD &&
      driver.cuStreamGetCtx != nullptr && driver.cuCtxGetDevice_v2 != nullptr) {
    CUcontext context = nullptr;
    CUdevice device = 0;
    if (driver.cuStreamGetCtx(stream, &context) == CUDA_SUCCESS &&
        driver.cuCtxGetDevice_v2(&device, context) == CUDA_SUCCESS) {
      return device;
    }
  }
  return current_device(driver);
}

// A reservation between try_reserve and the driver's answer. `tenancy` is null when the call is
// not counted (pass-through mode, or a device the driver itself will reject).
struct Charge {
  Tenancy* tenancy = nullptr;
  std::uint32_t gpu = 0;
  std::uint64_t bytes = 0;
};

using MapMember = AllocationMap Tenancy::*;

// CUDA_SUCCESS: go ahead (charge filled in when counted). CUDA_ERROR_OUT_OF_MEMORY: refused.
CUresult reserve(std::optional<CUdevice> device, std::uint64_t bytes, Charge& charge) {
  Tenancy& tenancy = Tenancy::get();
  if (tenancy.mode() == Tenancy::Mode::kPassThrough) return CUDA_SUCCESS;
  if (tenancy.mode() == Tenancy::Mode::kDenyAll) return CUDA_ERROR_OUT_OF_MEMORY;
  if (!device) return CUDA_SUCCESS;
  const auto gpu = tenancy.gpu_for(*device);
  if (!gpu) {
    // Not a device the driver knows (it refuses the call itself), or a GPU the state could not
    // record: that one is never allowed uncounted unless GPUSHARE_ON_ERROR=open says so.
    return tenancy.refuses_untracked(*device) ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_SUCCESS;
  }
  if (!tenancy.context_charge_paid(*device)) return CUDA_ERROR_OUT_OF_MEMORY;
  auto reserved = tenancy.try_reserve(*gpu, bytes);
  if (!reserved) {
    const bool refuse = tenancy.refuses_uncounted();
    log_repeated(Repeated::kLedger, LogLevel::kError, "device {}: {}; {}", *device, reserved.error().message,
                 refuse ? "allocation refused (GPUSHARE_ON_ERROR=closed)"
                        : "allocation not counted (GPUSHARE_ON_ERROR=open)");
    return refuse ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_SUCCESS;
  }
  if (reserved.value() == Reservation::kOverQuota) {
    const MemoryView view = tenancy.view(*gpu);
    log(LogLevel::kInfo, "device {}: refused {} (tenant uses {} of its {} quota)", *device, format_size(bytes),
        format_size(view.used_bytes), format_size(view.limit_bytes));
    trace::oom_refused(*device, bytes);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  charge = {&tenancy, *gpu, bytes};
  return CUDA_SUCCESS;
}

// After the driver answered: remember the charge under `key`, or give it back.
CUresult settle(const Charge& charge, CUresult result, MapMember map, std::uint64_t key) {
  if (charge.tenancy == nullptr) return result;
  if (result == CUDA_SUCCESS) {
    (charge.tenancy->*map).insert(key, {charge.gpu, charge.bytes});
  } else {
    (void)charge.tenancy->release(charge.gpu, charge.bytes);
  }
  return result;
}

// The whole allocation protocol for calls whose size is known up front.
template <typename Call>
CUresult allocate(std::optional<CUdevice> device, std::uint64_t bytes, MapMember map, Call&& call) {
  Charge charge;
  if (const CUresult admitted = reserve(device, bytes, charge); admitted != CUDA_SUCCESS) return admitted;
  std::uint64_t key = 0;
  const CUresult result = call(key);
  return settle(charge, result, map, key);
}

// Release: forget the charge first (so two threads freeing the same pointer cannot both return
// it), put it back if the driver refuses the free.
template <typename Call>
CUresult release(MapMember map, std::uint64_t key, Call&& call) {
  Tenancy& tenancy = Tenancy::get();
  const auto allocation = (tenancy.*map).erase(key);
  const CUresult result = call();
  if (allocation) {
    if (result == CUDA_SUCCESS) {
      if (auto released = tenancy.release(allocation->gpu, allocation->bytes); !released) {
        log_repeated(Repeated::kLedger, LogLevel::kError, "{}; the freed bytes stay charged until this process ends",
                     released.error().message);
      }
    } else {
      (tenancy.*map).insert(key, *allocation);
    }
  }
  return result;
}

std::uint64_t element_bytes(CUarray_format format) {
  switch (format) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8:
      return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF:
      return 2;
    default:
      return 4;  // 32-bit formats, and an upper estimate for packed and compressed ones
  }
}

std::uint64_t array_bytes(CUarray_format format, unsigned channels, std::size_t width, std::size_t height,
                          std::size_t depth) {
  return element_bytes(format) * std::max(channels, 1u) * std::max<std::size_t>(width, 1) *
         std::max<std::size_t>(height, 1) * std::max<std::size_t>(depth, 1);
}

std::uint64_t as_key(const void* handle) { return reinterpret_cast<std::uintptr_t>(handle); }

}  // namespace

CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytesize) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr || driver->cuMemAlloc_v2 == nullptr) return kMissing;
  return allocate(current_device(*driver), bytesize, &Tenancy::device_pointers, [&](std::uint64_t& key) {
    const CUresult result = driver->cuMemAlloc_v2(dptr, bytesize);
    if (result == CUDA_SUCCESS) key = *dptr;
    return result;
  });
}

CUresult cuMemAllocManaged(CUdeviceptr* dptr, size_t bytesize, unsigned int flags) {
  // Managed memory can live on the device, so it counts against the device quota (as HAMi does).
  const RealDriver* driver = real_driver();
  if (driver == nullptr || driver->cuMemAllocManaged == nullptr) return kMissing;
  return allocate(current_device(*driver), bytesize, &Tenancy::device_pointers, [&](std::uint64_t& key) {
    const CUresult result = driver->cuMemAllocManaged(dptr, bytesize, flags);
    if (result == CUDA_SUCCESS) key = *dptr;
    return result;
  });
}

CUresult cuMemAllocPitch_v2(CUdeviceptr* dptr, size_t* pPitch, size_t WidthInBytes, size_t Height,
                            unsigned int ElementSizeBytes) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr || driver->cuMemAllocPitch_v2 == nullptr) return kMissing;
  // The pitch is only known after the call: reserve for the widest the driver pads to (512 B
  // rows), then give back the difference, or take the rest if the driver padded further.
  constexpr std::size_t kPitchAlignment = 512;
  const std::size_t estimated_pitch = (WidthInBytes + kPitchAlignment - 1) / kPitchAlignment * kPitchAlignment;
  const auto device = current_device(*driver);
  Charge charge;
  if (const CUresult admitted = reserve(device, std::uint64_t{estimated_pitch} * Height, charge);
      admitted != CUDA_SUCCESS) {
    return admitted;
  }
  const CUresult result = driver->cuMemAllocPitch_v2(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
  if (result == CUDA_SUCCESS && charge.tenancy != nullptr && pPitch != nullptr) {
    const std::uint64_t actual = std::uint64_t{*pPitch} * Height;
    Tenancy& tenancy = *charge.tenancy;
    if (actual < charge.bytes) {
      (void)tenancy.release(charge.gpu, charge.bytes - actual);
    } else if (actual > charge.bytes) {
      auto extra = tenancy.try_reserve(charge.gpu, actual - charge.bytes);
      if (!extra || extra.value() != Reservation::kGranted) {
        driver->cuMemFree_v2(*dptr);
        (void)tenancy.release(charge.gpu, charge.bytes);
        return CUDA_ERROR_OUT_OF_MEMORY;
      }
    }
    charge.bytes = actual;
  }
  return settle(charge, result, &Tenancy::device_pointers, result == CUDA_SUCCESS ? *dptr : 0);
}

namespace {
CUresult alloc_async(decltype(RealDriver::cuMemAllocAsync) real, CUdeviceptr* dptr, size_t bytesize,
                     CUstream stream) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr || real == nullptr) return kMissing;
  return allocate(stream_device(*driver, stream), bytesize, &Tenancy::device_pointers, [&](std::uint64_t& key) {
    const CUresult result = real(dptr, bytesize, stream);
    if (result == CUDA_SUCCESS) key = *dptr;
    return result;
  });
}
CUresult alloc_from_pool(decltype(RealDriver::cuMemAllocFromPoolAsync) real, CUdeviceptr* dptr, size_t bytesize,
                         CUmemoryPool pool, CUstream stream) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr || real == nullptr) return kMissing;
  // A pool's location cannot be queried cheaply; pools are used from streams of their own device.
  return allocate(stream_device(*driver, stream), bytesize, &Tenancy::device_pointers, [&](std::uint64_t& key) {
    const CUresult result = real(dptr, bytesize, pool, stream);
    if (result == CUDA_SUCCESS) key = *dptr;
    return result;
  });
}
CUresult free_async(decltype(RealDriver::cuMemFreeAsync) real, CUdeviceptr dptr, CUstream stream) {
  if (real == nullptr) return kMissing;
  // The bytes go back to the quota when the free is issued: the pool may keep the pages for reuse
  // by this process, but they are no longer the program's.
  return release(&Tenancy::device_pointers, dptr, [&] { return real(dptr, stream); });
}
}  // namespace

CUresult cuMemAllocAsync(CUdeviceptr* dptr, size_t bytesize, CUstream hStream) {
  return alloc_async(real_driver_or_empty().cuMemAllocAsync, dptr, bytesize, hStream);
}
CUresult cuMemAllocAsync_ptsz(CUdeviceptr* dptr, size_t bytesize, CUstream hStream) {
  return alloc_async(real_driver_or_empty().cuMemAllocAsync_ptsz, dptr, bytesize, hStream);
}
CUresult cuMemAllocFromPoolAsync(CUdeviceptr* dptr, size_t bytesize, CUmemoryPool pool, CUstream hStream) {
  return alloc_from_pool(real_driver_or_empty().cuMemAllocFromPoolAsync, dptr, bytesize, pool, hStream);
}
CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr* dptr, size_t bytesize, CUmemoryPool pool, CUstream hStream) {
  return alloc_from_pool(real_driver_or_empty().cuMemAllocFromPoolAsync_ptsz, dptr, bytesize, pool, hStream);
}
CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream) {
  return free_async(real_driver_or_empty().cuMemFreeAsync, dptr, hStream);
}
CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream) {
  return free_async(real_driver_or_empty().cuMemFreeAsync_ptsz, dptr, hStream);
}

CUresult cuMemFree_v2(CUdeviceptr dptr) {
  auto real = real_driver_or_empty().cuMemFree_v2;
  if (real == nullptr) return kMissing;
  return release(&Tenancy::device_pointers, dptr, [&] { return real(dptr); });
}

CUresult cuMemCreate(CUmemGenericAllocationHandle* handle, size_t size, const CUmemAllocationProp* prop,
                     unsigned long long flags) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr || driver->cuMemCreate == nullptr) return kMissing;
  // The device comes from the allocation's properties, not from the current context: PyTorch
  // creates expandable segments from worker threads that have none. Host and NUMA locations are
  // not device memory and are not counted.
  std::optional<CUdevice> device;
  if (prop != nullptr && prop->location.type == CU_MEM_LOCATION_TYPE_DEVICE) device = prop->location.id;
  if (!device) return driver->cuMemCreate(handle, size, prop, flags);
  return allocate(device, size, &Tenancy::vmm_handles, [&](std::uint64_t& key) {
    const CUresult result = driver->cuMemCreate(handle, size, prop, flags);
    if (result == CUDA_SUCCESS) key = *handle;
    return result;
  });
}

CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
  auto real = real_driver_or_empty().cuMemRelease;
  if (real == nullptr) return kMissing;
  return release(&Tenancy::vmm_handles, handle, [&] { return real(handle); });
}

CUresult cuArrayCreate_v2(CUarray* pHandle, const CUDA_ARRAY_DESCRIPTOR* desc) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr || driver->cuArrayCreate_v2 == nullptr) return kMissing;
  if (desc == nullptr) return driver->cuArrayCreate_v2(pHandle, desc);
  const auto bytes = array_bytes(desc->Format, desc->NumChannels, desc->Width, desc->Height, 1);
  return allocate(current_device(*driver), bytes, &Tenancy::arrays, [&](std::uint64_t& key) {
    const CUresult result = driver->cuArrayCreate_v2(pHandle, desc);
    if (result == CUDA_SUCCESS) key = as_key(*pHandle);
    return result;
  });
}

CUresult cuArray3DCreate_v2(CUarray* pHandle, const CUDA_ARRAY3D_DESCRIPTOR* desc) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr || driver->cuArray3DCreate_v2 == nullptr) return kMissing;
  if (desc == nullptr) return driver->cuArray3DCreate_v2(pHandle, desc);
  const auto bytes = array_bytes(desc->Format, desc->NumChannels, desc->Width, desc->Height, desc->Depth);
  return allocate(current_device(*driver), bytes, &Tenancy::arrays, [&](std::uint64_t& key) {
    const CUresult result = driver->cuArray3DCreate_v2(pHandle, desc);
    if (result == CUDA_SUCCESS) key = as_key(*pHandle);
    return result;
  });
}

CUresult cuArrayDestroy(CUarray hArray) {
  auto real = real_driver_or_empty().cuArrayDestroy;
  if (real == nullptr) return kMissing;
  return release(&Tenancy::arrays, as_key(hArray), [&] { return real(hArray); });
}

CUresult cuMipmappedArrayCreate(CUmipmappedArray* pHandle, const CUDA_ARRAY3D_DESCRIPTOR* desc,
                                unsigned int numMipmapLevels) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr || driver->cuMipmappedArrayCreate == nullptr) return kMissing;
  if (desc == nullptr) return driver->cuMipmappedArrayCreate(pHandle, desc, numMipmapLevels);
  std::uint64_t bytes = 0;
  std::size_t width = desc->Width, height = desc->Height, depth = desc->Depth;
  for (unsigned level = 0; level < std::max(numMipmapLevels, 1u); ++level) {
    bytes += array_bytes(desc->Format, desc->NumChannels, width, height, depth);
    width = std::max<std::size_t>(width / 2, 1);
    height = height == 0 ? 0 : std::max<std::size_t>(height / 2, 1);
    depth = depth == 0 ? 0 : std::max<std::size_t>(depth / 2, 1);
  }
  return allocate(current_device(*driver), bytes, &Tenancy::mipmapped_arrays, [&](std::uint64_t& key) {
    const CUresult result = driver->cuMipmappedArrayCreate(pHandle, desc, numMipmapLevels);
    if (result == CUDA_SUCCESS) key = as_key(*pHandle);
    return result;
  });
}

CUresult cuMipmappedArrayDestroy(CUmipmappedArray hMipmappedArray) {
  auto real = real_driver_or_empty().cuMipmappedArrayDestroy;
  if (real == nullptr) return kMissing;
  return release(&Tenancy::mipmapped_arrays, as_key(hMipmappedArray), [&] { return real(hMipmappedArray); });
}

// The program sees a GPU whose memory is its quota (core/memory_view.hpp). Where allocations are
// refused (GPUSHARE_ON_ERROR=closed after a problem), free is 0: a program sizing its pools from
// it must not plan for the whole card.
CUresult cuMemGetInfo_v2(size_t* free, size_t* total) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr || driver->cuMemGetInfo_v2 == nullptr) return kMissing;
  const CUresult result = driver->cuMemGetInfo_v2(free, total);
  if (result != CUDA_SUCCESS || free == nullptr || total == nullptr) return result;
  Tenancy& tenancy = Tenancy::get();
  if (tenancy.mode() == Tenancy::Mode::kDenyAll) *free = 0;
  if (tenancy.mode() != Tenancy::Mode::kEnforce) return result;
  const auto device = current_device(*driver);
  const auto gpu = device ? tenancy.gpu_for(*device) : std::nullopt;
  if (!gpu && device && tenancy.refuses_untracked(*device)) *free = 0;
  if (!gpu) return result;
  const TenantMemory view = tenant_memory_view({*total, *free}, tenancy.view(*gpu));
  *total = static_cast<size_t>(view.total_bytes);
  *free = static_cast<size_t>(view.free_bytes);
  return result;
}

// libcudart reads this once and caches it as totalGlobalMem; PyTorch's memory fraction and JAX's
// preallocation are computed from it.
CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice dev) {
  const RealDriver* driver = real_driver();
  if (driver == nullptr || driver->cuDeviceTotalMem_v2 == nullptr) return kMissing;
  const CUresult result = driver->cuDeviceTotalMem_v2(bytes, dev);
  if (result != CUDA_SUCCESS || bytes == nullptr) return result;
  Tenancy& tenancy = Tenancy::get();
  if (tenancy.mode() != Tenancy::Mode::kEnforce) return result;
  const auto gpu = tenancy.gpu_for(dev);
  if (!gpu) return result;
  *bytes = static_cast<size_t>(tenant_total_bytes(*bytes, tenancy.view(*gpu)));
  return result;
}

}  // namespace gpushare::interpose::hooks
