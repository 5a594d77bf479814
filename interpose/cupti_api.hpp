// The part of NVIDIA's CUPTI Activity API that trace mode uses, declared here (CUPTI is opened at run
// time with dlopen, like libcuda, and its headers are not on every build machine). Everything here
// is the C ABI of libcupti.so as documented in cupti_activity.h (CUDA 11.0, CUPTI API version 13,
// and later): the values of the enums, the function signatures and the offsets of the record fields
// read, which have not moved since CUpti_ActivityKernel4 (CUDA 9). tests/unit/cupti_abi_test.cpp
// checks them against the real headers where a CUDA toolkit is installed; the fake libcupti.so in
// tests/fake_cuda is built from this file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace gpushare::cupti {

using Result = int;  // CUptiResult
constexpr Result kSuccess = 0;
constexpr Result kErrorMaxLimitReached = 12;           // cuptiActivityGetNextRecord: no more records
constexpr Result kErrorInsufficientPrivileges = 35;
constexpr Result kErrorMultipleSubscribers = 39;       // another subscriber (a profiler) holds CUPTI

// The oldest API version (cuptiGetVersion) whose records trace mode reads: CUDA 11.0's. From CUDA 13
// the version is written 130001 (major * 10000 + ...), still larger.
constexpr std::uint32_t kOldestVersion = 13;

using ActivityKind = int;  // CUpti_ActivityKind
constexpr ActivityKind kKindMemcpy = 1;
constexpr ActivityKind kKindMemset = 2;
constexpr ActivityKind kKindConcurrentKernel = 10;

constexpr std::uint32_t kFlushForced = 1;  // CUPTI_ACTIVITY_FLAG_FLUSH_FORCED

struct Activity {  // CUpti_Activity: every record starts with its kind
  ActivityKind kind;
};

// Record fields by byte offset from the record's start (the structs grew at their ends only).
namespace kernel_field {  // CUpti_ActivityKernel4 .. CUpti_ActivityKernel10
constexpr std::size_t kStart = 16, kEnd = 24, kDeviceId = 40, kContextId = 44, kStreamId = 48,
                      kCorrelationId = 92, kName = 104;
constexpr std::size_t kLeastSize = 144;  // sizeof(CUpti_ActivityKernel4)
}  // namespace kernel_field
namespace memcpy_field {  // CUpti_ActivityMemcpy .. CUpti_ActivityMemcpy6
constexpr std::size_t kCopyKind = 4, kBytes = 8, kStart = 16, kEnd = 24, kDeviceId = 32, kContextId = 36,
                      kStreamId = 40, kCorrelationId = 44;
constexpr std::size_t kLeastSize = 64;
}  // namespace memcpy_field
namespace memset_field {  // CUpti_ActivityMemset .. CUpti_ActivityMemset4
constexpr std::size_t kBytes = 8, kStart = 16, kEnd = 24, kDeviceId = 32, kContextId = 36, kStreamId = 40,
                      kCorrelationId = 44;
constexpr std::size_t kLeastSize = 64;
}  // namespace memset_field

// A field of a record, read without assuming the record's alignment.
template <typename T>
T field(const Activity* record, std::size_t offset) {
  T value;
  std::memcpy(&value, reinterpret_cast<const unsigned char*>(record) + offset, sizeof value);
  return value;
}

// CUpti_ActivityMemcpyKind, as the trace file writes them.
inline const char* copy_kind_name(std::uint8_t kind) {
  static constexpr const char* kNames[] = {"unknown", "HtoD", "DtoH", "HtoA", "AtoH", "AtoA",
                                           "AtoD",    "DtoA", "DtoD", "HtoH", "PtoP"};
  return kind < sizeof kNames / sizeof kNames[0] ? kNames[kind] : "unknown";
}

using SubscriberHandle = struct Subscriber*;
using CallbackFunc = void (*)(void* userdata, int domain, std::uint32_t callback_id, const void* data);
using BufferRequested = void (*)(std::uint8_t** buffer, std::size_t* size, std::size_t* max_records);
// `context` is a CUcontext; void* here keeps cuda.h out of the fake CUPTI's interface.
using BufferCompleted = void (*)(void* context, std::uint32_t stream_id, std::uint8_t* buffer, std::size_t size,
                                 std::size_t valid_size);

// The entry points: X(exported name, function type), types spelled in full so that the list can be
// expanded in any namespace (a table of pointers: std::add_pointer_t<type>).
#define GPUSHARE_CUPTI_FUNCTIONS(X)                                                                          \
  X(cuptiGetVersion, ::gpushare::cupti::Result(std::uint32_t*))                                             \
  X(cuptiGetResultString, ::gpushare::cupti::Result(::gpushare::cupti::Result, const char**))               \
  X(cuptiSubscribe, ::gpushare::cupti::Result(::gpushare::cupti::SubscriberHandle*,                         \
                                               ::gpushare::cupti::CallbackFunc, void*))                     \
  X(cuptiUnsubscribe, ::gpushare::cupti::Result(::gpushare::cupti::SubscriberHandle))                       \
  X(cuptiActivityRegisterCallbacks,                                                                         \
    ::gpushare::cupti::Result(::gpushare::cupti::BufferRequested, ::gpushare::cupti::BufferCompleted))      \
  X(cuptiActivityEnable, ::gpushare::cupti::Result(::gpushare::cupti::ActivityKind))                        \
  X(cuptiActivityDisable, ::gpushare::cupti::Result(::gpushare::cupti::ActivityKind))                       \
  X(cuptiActivityFlushAll, ::gpushare::cupti::Result(std::uint32_t))                                        \
  X(cuptiActivityGetNextRecord,                                                                             \
    ::gpushare::cupti::Result(std::uint8_t*, std::size_t, ::gpushare::cupti::Activity**))                   \
  X(cuptiActivityGetNumDroppedRecords, ::gpushare::cupti::Result(void*, std::uint32_t, std::size_t*))       \
  X(cuptiGetTimestamp, ::gpushare::cupti::Result(std::uint64_t*))

}  // namespace gpushare::cupti
