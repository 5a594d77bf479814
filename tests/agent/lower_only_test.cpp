// The "only lower" rule, field by field.
#include "lower_only.hpp"

#include <gtest/gtest.h>

namespace gpushare::agent {
namespace {

TenantLimits granted_limits() {
  TenantLimits granted;
  granted.memory_bytes = 8_GiB;
  granted.memory_per_gpu_bytes[1] = 4_GiB;
  granted.compute.share_pct = 50;
  granted.compute.limit_pct = 40;
  granted.compute.priority = Priority::kNormal;
  return granted;
}

TEST(LowerOnly, NoRequestKeepsTheGrantSilently) {
  LoweredLimits lowered = lower_only(granted_limits(), Settings{});
  EXPECT_EQ(lowered.effective, granted_limits());
  EXPECT_TRUE(lowered.ignored.empty());
}

TEST(LowerOnly, MemoryLowerIsTakenOnEveryGpu) {
  Settings requested;
  requested.memory_limit_bytes = 2_GiB;
  LoweredLimits lowered = lower_only(granted_limits(), requested);
  EXPECT_EQ(lowered.effective.memory_for(0), 2_GiB);
  EXPECT_EQ(lowered.effective.memory_for(1), 2_GiB);
  EXPECT_TRUE(lowered.ignored.empty());
}

TEST(LowerOnly, MemoryHigherIsIgnored) {
  Settings requested;
  requested.memory_limit_bytes = 16_GiB;
  LoweredLimits lowered = lower_only(granted_limits(), requested);
  EXPECT_EQ(lowered.effective.memory_for(0), 8_GiB);
  EXPECT_EQ(lowered.effective.memory_for(1), 4_GiB);
  ASSERT_EQ(lowered.ignored.size(), 1u);
  EXPECT_EQ(lowered.ignored[0], "GPUSHARE_MEMORY_LIMIT=16 GiB ignored: the policy grants 8 GiB per GPU");
}

TEST(LowerOnly, PerDeviceMemory) {
  Settings requested;
  requested.device_memory_limit_bytes[0] = 1_GiB;  // lower than 8 GiB: taken
  requested.device_memory_limit_bytes[1] = 6_GiB;  // higher than GPU 1's 4 GiB: ignored
  LoweredLimits lowered = lower_only(granted_limits(), requested);
  EXPECT_EQ(lowered.effective.memory_for(0), 1_GiB);
  EXPECT_EQ(lowered.effective.memory_for(1), 4_GiB);
  EXPECT_EQ(lowered.effective.memory_for(2), 8_GiB);
  ASSERT_EQ(lowered.ignored.size(), 1u);
  EXPECT_EQ(lowered.ignored[0], "GPUSHARE_MEMORY_LIMIT_1=6 GiB ignored: the policy grants 4 GiB on GPU 1");
}

TEST(LowerOnly, Share) {
  Settings lower;
  lower.compute.share_pct = 20;
  EXPECT_EQ(lower_only(granted_limits(), lower).effective.compute.share_pct, 20u);
  Settings higher;
  higher.compute.share_pct = 90;
  LoweredLimits lowered = lower_only(granted_limits(), higher);
  EXPECT_EQ(lowered.effective.compute.share_pct, 50u);
  ASSERT_EQ(lowered.ignored.size(), 1u);
  EXPECT_NE(lowered.ignored[0].find("GPUSHARE_COMPUTE_SHARE=90 ignored"), std::string::npos);
  TenantLimits no_share = granted_limits();
  no_share.compute.share_pct = 0;
  LoweredLimits uncomparable = lower_only(no_share, lower);
  EXPECT_EQ(uncomparable.effective.compute.share_pct, 0u);
  EXPECT_EQ(uncomparable.ignored.size(), 1u);
}

TEST(LowerOnly, Cap) {
  Settings lower;
  lower.compute.limit_pct = 10;
  EXPECT_EQ(lower_only(granted_limits(), lower).effective.compute.limit_pct, 10u);
  Settings higher;
  higher.compute.limit_pct = 60;
  LoweredLimits lowered = lower_only(granted_limits(), higher);
  EXPECT_EQ(lowered.effective.compute.limit_pct, 40u);
  ASSERT_EQ(lowered.ignored.size(), 1u);
  EXPECT_EQ(lowered.ignored[0], "GPUSHARE_COMPUTE_LIMIT=60% ignored: the policy caps at 40%");
  TenantLimits uncapped = granted_limits();
  uncapped.compute.limit_pct = 0;
  EXPECT_EQ(lower_only(uncapped, higher).effective.compute.limit_pct, 60u);  // any cap is lower than none
}

TEST(LowerOnly, Priority) {
  Settings lower;
  lower.compute.priority = Priority::kLow;
  EXPECT_EQ(lower_only(granted_limits(), lower).effective.compute.priority, Priority::kLow);
  Settings higher;
  higher.compute.priority = Priority::kHigh;
  LoweredLimits lowered = lower_only(granted_limits(), higher);
  EXPECT_EQ(lowered.effective.compute.priority, Priority::kNormal);
  ASSERT_EQ(lowered.ignored.size(), 1u);
  EXPECT_EQ(lowered.ignored[0], "GPUSHARE_PRIORITY=high ignored: the policy grants normal");
}

TEST(LowerOnly, SliceIsTheAgents) {
  Settings requested;
  requested.compute.slice = std::chrono::milliseconds(500);
  LoweredLimits lowered = lower_only(granted_limits(), requested);
  EXPECT_EQ(lowered.effective.compute.slice, granted_limits().compute.slice);
  ASSERT_EQ(lowered.ignored.size(), 1u);
  EXPECT_EQ(lowered.ignored[0], "GPUSHARE_SLICE_MS=500 ignored: the agent decides the slice");
}

}  // namespace
}  // namespace gpushare::agent
