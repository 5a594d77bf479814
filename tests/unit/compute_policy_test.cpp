// The compute policy's values: priorities by name, the slice bounds the settings accept, and the
// first process of a tenant deciding its policy.
#include "core/compute_policy.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <initializer_list>
#include <string>
#include <string_view>

#include "core/arbiter.hpp"
#include "core/registry.hpp"
#include "core/settings.hpp"
#include "core/snapshot.hpp"
#include "test_support.hpp"

namespace gpushare {
namespace {

TEST(ComputeSettings, PercentagesPrioritiesAndSlices) {
  EXPECT_EQ(parse_percent("30").value(), 30u);
  EXPECT_EQ(parse_percent("100%").value(), 100u);
  for (const char* bad : {"0", "101", "", "-5", "3.5", "abc", "1000"}) EXPECT_FALSE(parse_percent(bad).ok()) << bad;
  EXPECT_EQ(parse_priority("high").value(), Priority::kHigh);
  EXPECT_FALSE(parse_priority("urgent").ok());
  EXPECT_EQ(parse_slice_ms("20").value(), std::chrono::milliseconds(20));
  EXPECT_FALSE(parse_slice_ms("0").ok());
  EXPECT_FALSE(parse_slice_ms("5000").ok());
}

// Settings loaded from an environment where only `variable` is set.
LoadedSettings load_only(const char* variable, const char* value) {
  return load_settings([variable, value](const char* name) -> const char* {
    return std::string_view(name) == variable ? value : nullptr;
  });
}

// Each bad value is one error naming the variable, and leaves `field` at its default.
template <typename Field>
void expect_refused(const char* variable, std::initializer_list<const char*> bad, Field Settings::*field) {
  const Settings defaults;
  for (const char* value : bad) {
    const auto loaded = load_only(variable, value);
    ASSERT_EQ(loaded.errors.size(), 1u) << value;
    EXPECT_NE(loaded.errors[0].find(variable), std::string::npos) << loaded.errors[0];
    EXPECT_EQ(loaded.settings.*field, defaults.*field) << "a bad value keeps the default";
  }
}

TEST(ComputeSettings, InflightLaunchesFromTheEnvironment) {
  EXPECT_EQ(Settings{}.inflight_launches, 64u);
  EXPECT_EQ(load_only("GPUSHARE_INFLIGHT_LAUNCHES", "128").settings.inflight_launches, 128u);
  EXPECT_EQ(load_only("GPUSHARE_INFLIGHT_LAUNCHES", "0").settings.inflight_launches, 0u);
  expect_refused("GPUSHARE_INFLIGHT_LAUNCHES", {"33", "-2", "8192", "many", ""}, &Settings::inflight_launches);
}

TEST(ComputeSettings, InflightMillisecondsFromTheEnvironment) {
  EXPECT_EQ(Settings{}.inflight_ms, 2u);
  EXPECT_EQ(load_only("GPUSHARE_INFLIGHT_MS", "5").settings.inflight_ms, 5u);
  EXPECT_EQ(load_only("GPUSHARE_INFLIGHT_MS", "0").settings.inflight_ms, 0u);
  expect_refused("GPUSHARE_INFLIGHT_MS", {"1001", "-1", "1.5", "2ms", ""}, &Settings::inflight_ms);
}

// The options table (--help, docs/configuration.md) states the defaults Settings has.
TEST(ComputeSettings, TheOptionsTableStatesTheNumericDefaults) {
  const auto stated = [](std::string_view name) {
    for (const OptionSpec& option : option_specs()) {
      if (option.env == name) return load_only(option.env.data(), option.default_value.data()).settings;
    }
    ADD_FAILURE() << name << " is not in the table";
    return Settings{};
  };
  EXPECT_EQ(stated("GPUSHARE_INFLIGHT_LAUNCHES").inflight_launches, Settings{}.inflight_launches);
  EXPECT_EQ(stated("GPUSHARE_INFLIGHT_MS").inflight_ms, Settings{}.inflight_ms);
  EXPECT_EQ(stated("GPUSHARE_SLICE_MS").compute.slice, Settings{}.compute.slice);
}

TEST(ComputePolicy, EveryPriorityIsParsedFromItsName) {
  for (Priority priority : {Priority::kLow, Priority::kNormal, Priority::kHigh}) {
    const auto parsed = parse_priority(priority_name(priority));
    ASSERT_TRUE(parsed.ok()) << priority_name(priority);
    EXPECT_EQ(parsed.value(), priority);
  }
}

// The settings accept exactly the slices the arbiter believes: a tenant's slice is never cut
// short of what it asked for.
TEST(ComputePolicy, SettingsAcceptTheSlicesTheArbiterBelieves) {
  const auto longest = std::chrono::duration_cast<std::chrono::milliseconds>(kLongestSlice).count();
  ASSERT_TRUE(parse_slice_ms(std::to_string(longest)).ok());
  EXPECT_EQ(parse_slice_ms(std::to_string(longest)).value(), kLongestSlice);
  EXPECT_FALSE(parse_slice_ms(std::to_string(longest + 1)).ok());
}

class AdoptComputePolicyTest : public testing::StateTest {};

// The first process of a tenant states its policy; later ones get the one in force, whatever they
// ask, and a stored priority out of range reads as the highest class (it was written by someone
// else: the file is untrusted).
TEST_F(AdoptComputePolicyTest, TheFirstProcessDecides) {
  auto member = TenantMembership::join(*state_, "t");
  ASSERT_TRUE(member.ok());
  const std::uint32_t tenant = member.value()->tenant_index();
  ComputePolicyValues first;
  first.share_pct = 30;
  first.limit_pct = 60;
  first.priority = Priority::kLow;
  first.slice = std::chrono::milliseconds(20);
  ComputePolicyValues second;
  second.share_pct = 70;
  second.priority = Priority::kHigh;
  const auto expect_in_force = [&](const ComputePolicyValues& got, Priority priority) {
    EXPECT_EQ(got.share_pct, 30u);
    EXPECT_EQ(got.limit_pct, 60u);
    EXPECT_EQ(got.priority, priority);
    EXPECT_EQ(got.slice, std::chrono::milliseconds(20));
  };
  expect_in_force(adopt_compute_policy(state_->state(), tenant, first), Priority::kLow);
  expect_in_force(adopt_compute_policy(state_->state(), tenant, second), Priority::kLow);
  state_->state().tenants[tenant].compute_policy.priority.store(7);
  expect_in_force(adopt_compute_policy(state_->state(), tenant, second), Priority::kHigh);
}

// A tenant whose record names no slice gets the table's default from the arbiter, and one that
// stated no policy at all is shown with the table's defaults, what its processes would adopt.
TEST_F(AdoptComputePolicyTest, ATenantThatStatedNothingHasTheTablesDefaults) {
  const ComputePolicyValues& defaults = Settings{}.compute;
  auto stated = TenantMembership::join(*state_, "stated");
  ASSERT_TRUE(stated.ok());
  ComputePolicyValues no_slice;
  no_slice.priority = Priority::kHigh;
  ASSERT_TRUE(stated.value()->adopt_compute_policy(no_slice).ok());
  const auto& record = state_->state().tenants[stated.value()->tenant_index()];
  EXPECT_EQ(std::chrono::nanoseconds(slice_ns_of(record)), defaults.slice);

  auto silent = TenantMembership::join(*state_, "silent");
  ASSERT_TRUE(silent.ok());
  bool seen = false;
  for (const TenantSnapshot& tenant : snapshot_tenants(*state_)) {
    if (tenant.name != "silent") continue;
    seen = true;
    EXPECT_EQ(tenant.compute.share_pct, defaults.share_pct);
    EXPECT_EQ(tenant.compute.limit_pct, defaults.limit_pct);
    EXPECT_EQ(tenant.compute.priority, defaults.priority);
    EXPECT_EQ(tenant.compute.slice, defaults.slice);
  }
  EXPECT_TRUE(seen);
  EXPECT_EQ(default_compute_policy().priority, defaults.priority);
  EXPECT_EQ(default_compute_policy().slice, defaults.slice);
}

}  // namespace
}  // namespace gpushare
