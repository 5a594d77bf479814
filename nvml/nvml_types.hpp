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
  kErrorInsufficientSize = 7,
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

// nvmlProcessInfo_v1_t: what the unversioned nvmlDeviceGetComputeRunningProcesses fills.
struct ProcessInfoV1 {
  unsigned int pid;
  unsigned long long used_gpu_memory;
};

// nvmlProcessInfo_t (= nvmlProcessInfo_v2_t): what nvmlDeviceGetComputeRunningProcesses_v3 fills;
// the two ids name the MIG instance the process runs in.
struct ProcessInfo {
  unsigned int pid;
  unsigned long long used_gpu_memory;
  unsigned int gpu_instance_id;
  unsigned int compute_instance_id;
};
static_assert(sizeof(ProcessInfoV1) == 16 && sizeof(ProcessInfo) == 24, "NVML's process records");

// NVML_VALUE_NOT_AVAILABLE: a used_gpu_memory the driver cannot tell.
inline constexpr unsigned long long kValueNotAvailable = ~0ull;

using GetMemoryInfoFn = Return (*)(Device, Memory*);
using GetMemoryInfoV2Fn = Return (*)(Device, MemoryV2*);
using GetUuidFn = Return (*)(Device, char*, unsigned int);
// nvmlDeviceGetComputeRunningProcesses(_v3): *count is the room in, the number of processes out;
// kErrorInsufficientSize when the room is short (then *count is what it needs).
using GetComputeRunningProcessesFn = Return (*)(Device, unsigned int*, ProcessInfo*);
using GetComputeRunningProcessesV1Fn = Return (*)(Device, unsigned int*, ProcessInfoV1*);

}  // namespace gpushare::nvml
