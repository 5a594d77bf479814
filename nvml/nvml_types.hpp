// The few NVML declarations the shadow library (and its test double) need. No NVML header ships
// with the CUDA toolkit here, so they are written from NVIDIA's nvml.h; its ABI is stable: a
// versioned struct carries its own size and version, and functions only ever gain suffixes.
#pragma once

namespace gpushare::nvml {

// nvmlDevice_t: an opaque pointer owned by the library that handed it out.
struct DeviceRecord;
using Device = DeviceRecord*;

// nvmlReturn_t is an enum, int-sized; the real library may return any value, so only the ones
// gpushare produces or checks are named.
enum Return : int {
  kSuccess = 0,
  kErrorUninitialized = 1,
  kErrorInvalidArgument = 2,
  kErrorLibraryNotFound = 12,
  kErrorFunctionNotFound = 13,
  kErrorArgumentVersionMismatch = 25,
};

// nvmlMemory_t: `used` counts everything not free, driver reservations included.
struct Memory {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

// nvmlMemory_v2_t: the caller sets `version`; `used` leaves the driver's `reserved` bytes out.
struct MemoryV2 {
  unsigned int version;
  unsigned long long total;
  unsigned long long reserved;
  unsigned long long free;
  unsigned long long used;
};

// NVML_STRUCT_VERSION(Memory, 2): the struct's size with the version number in the top byte.
inline constexpr unsigned int kMemoryV2Version = static_cast<unsigned int>(sizeof(MemoryV2)) | (2u << 24);

// NVML_DEVICE_UUID_V2_BUFFER_SIZE: room for "GPU-" and "MIG-" UUIDs alike.
inline constexpr unsigned int kUuidBufferSize = 96;

using GetMemoryInfoFn = Return (*)(Device, Memory*);
using GetMemoryInfoV2Fn = Return (*)(Device, MemoryV2*);
using GetUuidFn = Return (*)(Device, char*, unsigned int);

}  // namespace gpushare::nvml
