// interpose/cupti_api.hpp declares the part of CUPTI trace mode uses instead of including NVIDIA's
// headers (not on every build machine): where the headers are installed, every value and offset it
// states is checked against them, for every record version whose fields it reads.
#include <gtest/gtest.h>

#include <cstddef>

#include "cupti_api.hpp"

#if __has_include(<cupti_activity.h>) && __has_include(<cupti_activity_deprecated.h>)
#include <cupti.h>
#include <cupti_activity_deprecated.h>
#define GPUSHARE_HAVE_CUPTI_HEADERS 1

namespace gpushare::cupti {
namespace {

static_assert(kSuccess == CUPTI_SUCCESS);
static_assert(kErrorMaxLimitReached == CUPTI_ERROR_MAX_LIMIT_REACHED);
static_assert(kErrorInsufficientPrivileges == CUPTI_ERROR_INSUFFICIENT_PRIVILEGES);
static_assert(kErrorMultipleSubscribers == CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED);
static_assert(kKindMemcpy == CUPTI_ACTIVITY_KIND_MEMCPY);
static_assert(kKindMemset == CUPTI_ACTIVITY_KIND_MEMSET);
static_assert(kKindConcurrentKernel == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
static_assert(kFlushForced == CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
static_assert(sizeof(ActivityKind) == sizeof(CUpti_ActivityKind));
static_assert(CUPTI_ACTIVITY_MEMCPY_KIND_DTOD == 8 && CUPTI_ACTIVITY_MEMCPY_KIND_PTOP == 10);

template <typename Kernel>
constexpr bool kernel_fields_where_stated() {
  namespace k = kernel_field;
  return offsetof(Kernel, start) == k::kStart && offsetof(Kernel, end) == k::kEnd &&
         offsetof(Kernel, deviceId) == k::kDeviceId && offsetof(Kernel, contextId) == k::kContextId &&
         offsetof(Kernel, streamId) == k::kStreamId && offsetof(Kernel, correlationId) == k::kCorrelationId &&
         offsetof(Kernel, name) == k::kName && sizeof(Kernel) >= k::kLeastSize;
}
static_assert(kernel_fields_where_stated<CUpti_ActivityKernel4>());
static_assert(kernel_fields_where_stated<CUpti_ActivityKernel5>());
static_assert(kernel_fields_where_stated<CUpti_ActivityKernel6>());
static_assert(kernel_fields_where_stated<CUpti_ActivityKernel7>());
static_assert(kernel_fields_where_stated<CUpti_ActivityKernel8>());
static_assert(kernel_fields_where_stated<CUpti_ActivityKernel9>());
static_assert(sizeof(CUpti_ActivityKernel4) == kernel_field::kLeastSize);

template <typename Copy>
constexpr bool memcpy_fields_where_stated() {
  namespace m = memcpy_field;
  return offsetof(Copy, copyKind) == m::kCopyKind && offsetof(Copy, bytes) == m::kBytes &&
         offsetof(Copy, start) == m::kStart && offsetof(Copy, end) == m::kEnd && offsetof(Copy, deviceId) == m::kDeviceId &&
         offsetof(Copy, contextId) == m::kContextId && offsetof(Copy, streamId) == m::kStreamId &&
         offsetof(Copy, correlationId) == m::kCorrelationId && sizeof(Copy) >= m::kLeastSize;
}
static_assert(memcpy_fields_where_stated<CUpti_ActivityMemcpy>());
static_assert(memcpy_fields_where_stated<CUpti_ActivityMemcpy3>());
static_assert(memcpy_fields_where_stated<CUpti_ActivityMemcpy4>());
static_assert(memcpy_fields_where_stated<CUpti_ActivityMemcpy5>());

template <typename Set>
constexpr bool memset_fields_where_stated() {
  namespace s = memset_field;
  return offsetof(Set, bytes) == s::kBytes && offsetof(Set, start) == s::kStart && offsetof(Set, end) == s::kEnd &&
         offsetof(Set, deviceId) == s::kDeviceId && offsetof(Set, contextId) == s::kContextId &&
         offsetof(Set, streamId) == s::kStreamId && offsetof(Set, correlationId) == s::kCorrelationId &&
         sizeof(Set) >= s::kLeastSize;
}
static_assert(memset_fields_where_stated<CUpti_ActivityMemset>());
static_assert(memset_fields_where_stated<CUpti_ActivityMemset2>());
static_assert(memset_fields_where_stated<CUpti_ActivityMemset3>());

}  // namespace
}  // namespace gpushare::cupti
#endif

#ifdef GPUSHARE_HAVE_CUPTI_HEADERS
// The current record versions of the installed toolkit (CUDA 12: Kernel9, Memcpy5; CUDA 13: Kernel10,
// Memcpy6), by the names its header still has.
#if defined(CUPTI_API_VERSION) && CUPTI_API_VERSION >= 130000
static_assert(gpushare::cupti::kernel_fields_where_stated<CUpti_ActivityKernel10>());
static_assert(gpushare::cupti::memcpy_fields_where_stated<CUpti_ActivityMemcpy6>());
static_assert(gpushare::cupti::memset_fields_where_stated<CUpti_ActivityMemset4>());
#endif
#endif

namespace gpushare::cupti {
namespace {

TEST(CuptiAbi, DeclarationsMatchTheInstalledHeaders) {
#ifndef GPUSHARE_HAVE_CUPTI_HEADERS
  GTEST_SKIP() << "no CUPTI headers on this machine: nothing to compare cupti_api.hpp with";
#else
  // The comparisons are the static_asserts above; this records that they were compiled.
  EXPECT_GE(static_cast<unsigned>(CUPTI_API_VERSION), kOldestVersion);
#endif
}

TEST(CuptiAbi, CopyKindsAreNamedAsTheTraceFormatSays) {
  EXPECT_STREQ(copy_kind_name(1), "HtoD");
  EXPECT_STREQ(copy_kind_name(2), "DtoH");
  EXPECT_STREQ(copy_kind_name(8), "DtoD");
  EXPECT_STREQ(copy_kind_name(10), "PtoP");
  EXPECT_STREQ(copy_kind_name(0), "unknown");
  EXPECT_STREQ(copy_kind_name(200), "unknown");
}

}  // namespace
}  // namespace gpushare::cupti
