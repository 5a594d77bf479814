// Tenant names: the names `gpushare run` and an unnamed preloaded process make up, and names kept
// in tenant records. The rules for given names (validate, normalize) are tested with the settings
// that apply them.
#include "core/tenant_name.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <set>
#include <string>

namespace gpushare {
namespace {

bool ends_in_six_hex_digits(const std::string& name) {
  if (name.size() < 7 || name[name.size() - 7] != '-') return false;
  return name.find_first_not_of("0123456789abcdef", name.size() - 6) == std::string::npos;
}

TEST(GenerateTenantName, IsTheCommandsFileNameAndSixHexDigits) {
  const std::string name = generate_tenant_name("/usr/bin/python3", 42);
  EXPECT_EQ(name.rfind("python3-", 0), 0u) << name;
  EXPECT_EQ(name.size(), std::string("python3-").size() + 6) << name;
  EXPECT_TRUE(ends_in_six_hex_digits(name)) << name;
  EXPECT_TRUE(validate_tenant_name(name).ok()) << name;
}

TEST(GenerateTenantName, TheSameEntropyGivesTheSameNameAndNeighboursDiffer) {
  EXPECT_EQ(generate_tenant_name("train", 7), generate_tenant_name("train", 7));
  // Runs started a clock tick apart, or by processes whose ids differ, get different names.
  std::set<std::string> names;
  const std::uint64_t now = 1'700'000'000'000'000'000ull;
  for (std::uint64_t tick = 0; tick < 64; ++tick) names.insert(generate_tenant_name("train", now + tick));
  for (std::uint64_t pid = 1; pid <= 64; ++pid) names.insert(generate_tenant_name("train", now ^ (pid << 40)));
  EXPECT_GT(names.size(), 120u);
}

TEST(GenerateTenantName, ALongCommandNameIsCutTo48Bytes) {
  const std::string name = generate_tenant_name("/opt/" + std::string(200, 'x'), 1);
  EXPECT_EQ(name.rfind(std::string(48, 'x') + "-", 0), 0u) << name;
  EXPECT_EQ(name.size(), 48u + 7u);
  EXPECT_TRUE(validate_tenant_name(name).ok());
}

TEST(GenerateTenantName, AnyCommandGivesAValidName) {
  for (const char* command : {"my prog", "caf\xc3\xa9", "/", "", "a\tb/c d", "./run.sh"}) {
    const std::string name = generate_tenant_name(command, 99);
    EXPECT_TRUE(validate_tenant_name(name).ok()) << "'" << command << "' gave '" << name << "'";
  }
  EXPECT_EQ(generate_tenant_name("my prog", 99).rfind("my_prog-", 0), 0u);
  const std::string drawn = generate_tenant_name("/usr/bin/python3");  // from the clock and the pid
  EXPECT_EQ(drawn.rfind("python3-", 0), 0u) << drawn;
  EXPECT_TRUE(ends_in_six_hex_digits(drawn)) << drawn;
}

bool is_per_process_name(const std::string& name, std::uint64_t pid) {
  const std::string prefix = "pid" + std::to_string(pid) + "-";
  return name.size() == prefix.size() + 8 && name.rfind(prefix, 0) == 0 &&
         name.find_first_not_of("0123456789abcdef", prefix.size()) == std::string::npos;
}

TEST(PerProcessTenantName, IsThePidAndEightHexDigits) {
  const std::string name = per_process_tenant_name(4242, 42);
  EXPECT_TRUE(is_per_process_name(name, 4242)) << name;
  EXPECT_TRUE(validate_tenant_name(name).ok()) << name;
  EXPECT_TRUE(is_per_process_name(per_process_tenant_name(UINT64_MAX, 0), UINT64_MAX));
  EXPECT_TRUE(validate_tenant_name(per_process_tenant_name(UINT64_MAX, UINT64_MAX)).ok());
}

TEST(PerProcessTenantName, TheSameEntropyGivesTheSameNameAndNeighboursDiffer) {
  EXPECT_EQ(per_process_tenant_name(1, 7), per_process_tenant_name(1, 7));
  // Process 1 of many containers, started a clock tick apart: the digits alone tell them apart.
  std::set<std::string> names;
  const std::uint64_t now = 1'700'000'000'000'000'000ull;
  for (std::uint64_t tick = 0; tick < 256; ++tick) names.insert(per_process_tenant_name(1, now + tick));
  EXPECT_EQ(names.size(), 256u);
  EXPECT_NE(per_process_tenant_name(1, now), per_process_tenant_name(2, now)) << "the pid is part of the name";
}

TEST(PerProcessTenantName, DrawnForTheCallingProcess) {
  const auto pid = static_cast<std::uint64_t>(::getpid());
  const std::string drawn = per_process_tenant_name();  // from the clock and the pid
  EXPECT_TRUE(is_per_process_name(drawn, pid)) << drawn;
  EXPECT_TRUE(validate_tenant_name(drawn).ok()) << drawn;
}

TEST(TenantRecordName, IsStoredAndReadBack) {
  layout::TenantRecord record{};
  store_tenant_name(record, "team-a");
  EXPECT_EQ(tenant_name_of(record), "team-a");
  EXPECT_TRUE(tenant_name_is(record, "team-a"));
  EXPECT_FALSE(tenant_name_is(record, "team"));
  EXPECT_FALSE(tenant_name_is(record, "team-a2"));
  store_tenant_name(record, "b");  // a shorter name leaves nothing of the longer one
  EXPECT_EQ(tenant_name_of(record), "b");
  const std::string longest(layout::kTenantNameBytes - 1, 'n');
  store_tenant_name(record, longest);
  EXPECT_EQ(tenant_name_of(record), longest);
}

TEST(TenantRecordName, ARecordWithoutATerminatorHoldsNoName) {
  layout::TenantRecord record{};
  std::memset(record.name, 'x', sizeof record.name);  // written over by someone else
  EXPECT_EQ(tenant_name_of(record), "");
  EXPECT_FALSE(tenant_name_is(record, std::string(sizeof record.name, 'x')));
  EXPECT_FALSE(tenant_name_is(record, ""));
}

}  // namespace
}  // namespace gpushare
