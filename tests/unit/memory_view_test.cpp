// The tenant's view of a GPU's memory: the one rule behind cuMemGetInfo, cuDeviceTotalMem and the
// shadow NVML.
#include "core/memory_view.hpp"

#include <gtest/gtest.h>

#include "core/size.hpp"

namespace gpushare {
namespace {

TEST(MemoryView, TheCardLooksAsBigAsTheQuota) {
  const TenantMemory view = tenant_memory_view({.total_bytes = 80_GiB, .free_bytes = 70_GiB},
                                               {.limit_bytes = 8_GiB, .used_bytes = 3_GiB});
  EXPECT_EQ(view.total_bytes, 8_GiB);
  EXPECT_EQ(view.free_bytes, 5_GiB);
  EXPECT_EQ(view.used_bytes, 3_GiB);
}

TEST(MemoryView, NeverMoreFreeThanTheCardHas) {
  // Other tenants hold most of the card: the quota's room is larger than what is really free.
  const TenantMemory view = tenant_memory_view({.total_bytes = 16_GiB, .free_bytes = 1_GiB},
                                               {.limit_bytes = 8_GiB, .used_bytes = 2_GiB});
  EXPECT_EQ(view.total_bytes, 8_GiB);
  EXPECT_EQ(view.free_bytes, 1_GiB);
  EXPECT_EQ(view.used_bytes, 2_GiB);
}

TEST(MemoryView, AQuotaLargerThanTheCardShowsTheCard) {
  const TenantMemory view = tenant_memory_view({.total_bytes = 16_GiB, .free_bytes = 12_GiB},
                                               {.limit_bytes = 64_GiB, .used_bytes = 1_GiB});
  EXPECT_EQ(view.total_bytes, 16_GiB);
  EXPECT_EQ(view.free_bytes, 12_GiB);
}

TEST(MemoryView, ATenantOverItsQuotaHasNothingFree) {
  // `gpushare quota set` lowered the limit below what the tenant already holds.
  const TenantMemory view = tenant_memory_view({.total_bytes = 16_GiB, .free_bytes = 10_GiB},
                                               {.limit_bytes = 2_GiB, .used_bytes = 3_GiB});
  EXPECT_EQ(view.total_bytes, 2_GiB);
  EXPECT_EQ(view.free_bytes, 0u);
  EXPECT_EQ(view.used_bytes, 3_GiB);
}

TEST(MemoryView, WithoutAQuotaTheCardIsShownAsItIs) {
  const TenantMemory view = tenant_memory_view({.total_bytes = 16_GiB, .free_bytes = 10_GiB},
                                               {.limit_bytes = kUnlimited, .used_bytes = 4_GiB});
  EXPECT_EQ(view.total_bytes, 16_GiB);
  EXPECT_EQ(view.free_bytes, 10_GiB);
  EXPECT_EQ(view.used_bytes, 4_GiB);
}

TEST(MemoryView, TheTotalAloneFollowsTheSameRule) {
  EXPECT_EQ(tenant_total_bytes(80_GiB, {.limit_bytes = 8_GiB, .used_bytes = 0}), 8_GiB);
  EXPECT_EQ(tenant_total_bytes(16_GiB, {.limit_bytes = 64_GiB, .used_bytes = 0}), 16_GiB);
  EXPECT_EQ(tenant_total_bytes(16_GiB, {.limit_bytes = kUnlimited, .used_bytes = 0}), 16_GiB);
}

}  // namespace
}  // namespace gpushare
