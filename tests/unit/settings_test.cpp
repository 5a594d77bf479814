#include "core/settings.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <string>

#include <fmt/format.h>

#include "core/tenant_name.hpp"
#include "core/state_layout.hpp"
#include "test_support.hpp"

namespace gpushare {
namespace {

using testing::Contains;

// A fake environment: load_settings sees only what the test puts in the map (values and names).
class FakeEnv {
 public:
  FakeEnv(std::initializer_list<std::pair<const std::string, std::string>> values) : values_(values) {}
  EnvLookup lookup() const {
    return [this](const char* name) -> const char* {
      auto it = values_.find(name);
      return it == values_.end() ? nullptr : it->second.c_str();
    };
  }
  EnvNames names() const {
    return [this] {
      std::vector<std::string> names;
      for (const auto& [name, value] : values_) names.push_back(name);
      return names;
    };
  }
  LoadedSettings load() const { return load_settings(lookup(), names()); }

 private:
  std::map<std::string, std::string> values_;
};

bool any_error_contains(const LoadedSettings& loaded, const std::string& needle) {
  for (const auto& line : loaded.errors) {
    if (line.find(needle) != std::string::npos) return true;
  }
  return false;
}

std::string all_errors(const LoadedSettings& loaded) {
  std::string out;
  for (const auto& line : loaded.errors) out += line + "\n";
  return out;
}

TEST(LoadSettings, DefaultsWhenNothingIsSet) {
  const LoadedSettings loaded = FakeEnv{}.load();
  EXPECT_TRUE(loaded.errors.empty()) << all_errors(loaded);
  const Settings& s = loaded.settings;
  EXPECT_EQ(s.memory_limit_bytes, kUnlimited);
  EXPECT_TRUE(s.device_memory_limit_bytes.empty());
  EXPECT_EQ(s.memory_limit_for(0), kUnlimited);
  EXPECT_EQ(s.tenant, "");
  EXPECT_EQ(s.state_path, "");
  EXPECT_EQ(s.real_libcuda, "libcuda.so.1");
  EXPECT_EQ(s.log_level, LogLevel::kWarn);
  EXPECT_EQ(s.on_error, FailPolicy::kClosed);
  EXPECT_EQ(s.context_memory_bytes, 0u);
}

TEST(LoadSettings, GlobalLimit) {
  const LoadedSettings loaded = FakeEnv{{"GPUSHARE_MEMORY_LIMIT", "8GiB"}}.load();
  EXPECT_TRUE(loaded.errors.empty()) << all_errors(loaded);
  EXPECT_EQ(loaded.settings.memory_limit_bytes, 8_GiB);
  EXPECT_EQ(loaded.settings.memory_limit_for(0), 8_GiB);
  EXPECT_EQ(loaded.settings.memory_limit_for(5), 8_GiB);
}

TEST(LoadSettings, PerDeviceLimitOverridesTheGlobalOneForThatDeviceOnly) {
  const LoadedSettings loaded =
      FakeEnv{{"GPUSHARE_MEMORY_LIMIT", "8GiB"}, {"GPUSHARE_MEMORY_LIMIT_3", "2GiB"}}.load();
  EXPECT_TRUE(loaded.errors.empty()) << all_errors(loaded);
  EXPECT_EQ(loaded.settings.memory_limit_for(3), 2_GiB);
  EXPECT_EQ(loaded.settings.memory_limit_for(0), 8_GiB);
  EXPECT_EQ(loaded.settings.memory_limit_for(4), 8_GiB);
  EXPECT_EQ(loaded.settings.device_memory_limit_bytes.size(), 1u);
}

TEST(LoadSettings, PerDeviceLimitMayBeUnlimited) {
  const LoadedSettings loaded =
      FakeEnv{{"GPUSHARE_MEMORY_LIMIT", "8GiB"}, {"GPUSHARE_MEMORY_LIMIT_1", "unlimited"}}.load();
  EXPECT_TRUE(loaded.errors.empty()) << all_errors(loaded);
  EXPECT_EQ(loaded.settings.memory_limit_for(1), kUnlimited);
  EXPECT_EQ(loaded.settings.memory_limit_for(0), 8_GiB);
}

TEST(LoadSettings, HighestDeviceOrdinalIsRead) {
  const std::string last = "GPUSHARE_MEMORY_LIMIT_" + std::to_string(kMaxDeviceOrdinals - 1);
  const std::string beyond = "GPUSHARE_MEMORY_LIMIT_" + std::to_string(kMaxDeviceOrdinals);
  const LoadedSettings loaded = FakeEnv{{last, "1GiB"}, {beyond, "2GiB"}}.load();
  EXPECT_EQ(loaded.settings.memory_limit_for(kMaxDeviceOrdinals - 1), 1_GiB);
  EXPECT_EQ(loaded.settings.memory_limit_for(kMaxDeviceOrdinals), kUnlimited);
  ASSERT_EQ(loaded.errors.size(), 1u) << all_errors(loaded);
  EXPECT_TRUE(Contains(loaded.errors[0], beyond + ": ")) << all_errors(loaded);
}

TEST(LoadSettings, PerDeviceVariableWhoseIndexNamesNoDeviceIsAnError) {
  const LoadedSettings loaded = FakeEnv{{"GPUSHARE_MEMORY_LIMIT_64", "256MiB"},
                                        {"GPUSHARE_MEMORY_LIMIT_00", "1GiB"},
                                        {"GPUSHARE_MEMORY_LIMIT_65", "bad"},
                                        {"GPUSHARE_MEMORY_LIMIT_x", "1GiB"},
                                        {"CUDA_DEVICE_MEMORY_LIMIT_07", "1g"},
                                        {"GPUSHARE_MEMORY_LIMIT_7", "2GiB"}}
                                    .load();
  EXPECT_EQ(loaded.errors.size(), 5u) << all_errors(loaded);
  for (const char* variable : {"GPUSHARE_MEMORY_LIMIT_64: ", "GPUSHARE_MEMORY_LIMIT_00: ",
                               "GPUSHARE_MEMORY_LIMIT_65: ", "GPUSHARE_MEMORY_LIMIT_x: ",
                               "CUDA_DEVICE_MEMORY_LIMIT_07: "}) {
    EXPECT_TRUE(any_error_contains(loaded, variable)) << variable << "\n" << all_errors(loaded);
  }
  EXPECT_TRUE(any_error_contains(loaded, "not a device index")) << all_errors(loaded);
  // The valid one is still read, and _00 is not taken for device 0.
  EXPECT_EQ(loaded.settings.memory_limit_for(7), 2_GiB);
  EXPECT_EQ(loaded.settings.memory_limit_for(0), kUnlimited);
}

TEST(LoadSettings, ThePreloadLibrarysReaderFindsBadIndexesInTheRealEnvironment) {
  // load_settings with only a lookup (as the preload library calls it) scans environ for names.
  ASSERT_EQ(::setenv("GPUSHARE_MEMORY_LIMIT_64", "256MiB", 1), 0);
  const std::vector<std::string> names = environment_names();
  const LoadedSettings loaded = load_settings([](const char* name) { return std::getenv(name); });
  ::unsetenv("GPUSHARE_MEMORY_LIMIT_64");
  EXPECT_NE(std::find(names.begin(), names.end(), "GPUSHARE_MEMORY_LIMIT_64"), names.end());
  EXPECT_TRUE(any_error_contains(loaded, "GPUSHARE_MEMORY_LIMIT_64: ")) << all_errors(loaded);
}

TEST(LoadSettings, EmptyStatePathIsAnError) {
  const LoadedSettings loaded = FakeEnv{{"GPUSHARE_STATE", ""}}.load();
  ASSERT_EQ(loaded.errors.size(), 1u) << all_errors(loaded);
  EXPECT_TRUE(Contains(loaded.errors[0], "GPUSHARE_STATE: empty path")) << all_errors(loaded);
}

TEST(LoadSettings, ContextMemoryThatFillsTheQuotaIsAnError) {
  const LoadedSettings equal = FakeEnv{{"GPUSHARE_CONTEXT_MEMORY", "512MiB"}, {"GPUSHARE_MEMORY_LIMIT", "512MiB"}}.load();
  ASSERT_EQ(equal.errors.size(), 1u) << all_errors(equal);
  EXPECT_TRUE(Contains(equal.errors[0], "GPUSHARE_CONTEXT_MEMORY: 512 MiB is not below GPUSHARE_MEMORY_LIMIT"))
      << all_errors(equal);

  const LoadedSettings device = FakeEnv{{"GPUSHARE_CONTEXT_MEMORY", "512MiB"},
                                        {"GPUSHARE_MEMORY_LIMIT", "8GiB"},
                                        {"GPUSHARE_MEMORY_LIMIT_1", "256MiB"},
                                        {"GPUSHARE_MEMORY_LIMIT_2", "unlimited"}}
                                    .load();
  ASSERT_EQ(device.errors.size(), 1u) << all_errors(device);
  EXPECT_TRUE(Contains(device.errors[0], "GPUSHARE_MEMORY_LIMIT_1 (256 MiB)")) << all_errors(device);

  const LoadedSettings alias = FakeEnv{{"GPUSHARE_CONTEXT_MEMORY", "1GiB"}, {"CUDA_DEVICE_MEMORY_LIMIT", "1g"}}.load();
  ASSERT_EQ(alias.errors.size(), 1u) << all_errors(alias);
  EXPECT_TRUE(Contains(alias.errors[0], "CUDA_DEVICE_MEMORY_LIMIT")) << all_errors(alias);

  // Below the quota, or without one, the charge is fine.
  for (const FakeEnv& fine : {FakeEnv{{"GPUSHARE_CONTEXT_MEMORY", "256MiB"}, {"GPUSHARE_MEMORY_LIMIT", "1GiB"}},
                              FakeEnv{{"GPUSHARE_CONTEXT_MEMORY", "8GiB"}},
                              FakeEnv{{"GPUSHARE_CONTEXT_MEMORY", "0"}, {"GPUSHARE_MEMORY_LIMIT", "0"}}}) {
    const LoadedSettings loaded = fine.load();
    EXPECT_TRUE(loaded.errors.empty()) << all_errors(loaded);
  }
}

TEST(LoadSettings, HamiAliasesAreUsedWhenGpushareVariablesAreAbsent) {
  const LoadedSettings loaded =
      FakeEnv{{"CUDA_DEVICE_MEMORY_LIMIT", "4g"}, {"CUDA_DEVICE_MEMORY_LIMIT_1", "8g"}}.load();
  EXPECT_TRUE(loaded.errors.empty()) << all_errors(loaded);
  EXPECT_EQ(loaded.settings.memory_limit_bytes, 4_GiB);
  EXPECT_EQ(loaded.settings.memory_limit_for(1), 8_GiB);
  EXPECT_EQ(loaded.settings.memory_limit_for(0), 4_GiB);
}

TEST(LoadSettings, GpushareVariablesWinOverHamiAliases) {
  const LoadedSettings loaded = FakeEnv{{"CUDA_DEVICE_MEMORY_LIMIT", "4g"},
                                        {"GPUSHARE_MEMORY_LIMIT", "3GiB"},
                                        {"CUDA_DEVICE_MEMORY_LIMIT_1", "8g"},
                                        {"GPUSHARE_MEMORY_LIMIT_1", "512MiB"}}
                                    .load();
  EXPECT_TRUE(loaded.errors.empty()) << all_errors(loaded);
  EXPECT_EQ(loaded.settings.memory_limit_bytes, 3_GiB);
  EXPECT_EQ(loaded.settings.memory_limit_for(1), 512_MiB);
}

TEST(LoadSettings, HamiSharedCacheNamesTheTenantAfterThePod) {
  const LoadedSettings in_pod =
      FakeEnv{{"CUDA_DEVICE_MEMORY_SHARED_CACHE", "/tmp/vgpu/abc.cache"}, {"HOSTNAME", "train-0"}}.load();
  EXPECT_TRUE(in_pod.errors.empty()) << all_errors(in_pod);
  EXPECT_TRUE(std::regex_match(in_pod.settings.tenant, std::regex("train-0-[0-9a-f]{8}"))) << in_pod.settings.tenant;
  // Another container of the same pod has another cache file: another tenant.
  const LoadedSettings sidecar =
      FakeEnv{{"CUDA_DEVICE_MEMORY_SHARED_CACHE", "/tmp/vgpu/def.cache"}, {"HOSTNAME", "train-0"}}.load();
  EXPECT_NE(sidecar.settings.tenant, in_pod.settings.tenant);
  // The same container (a second process of it) gets the same name.
  const LoadedSettings again =
      FakeEnv{{"CUDA_DEVICE_MEMORY_SHARED_CACHE", "/tmp/vgpu/abc.cache"}, {"HOSTNAME", "train-0"}}.load();
  EXPECT_EQ(again.settings.tenant, in_pod.settings.tenant);
}

TEST(LoadSettings, HamiSharedCacheWithoutHostnameIsNamedHami) {
  const LoadedSettings loaded = FakeEnv{{"CUDA_DEVICE_MEMORY_SHARED_CACHE", "/tmp/vgpu/abc.cache"}}.load();
  EXPECT_TRUE(loaded.errors.empty()) << all_errors(loaded);
  EXPECT_TRUE(std::regex_match(loaded.settings.tenant, std::regex("hami-[0-9a-f]{8}"))) << loaded.settings.tenant;
}

TEST(LoadSettings, GpushareTenantWinsOverHamiSharedCache) {
  const LoadedSettings loaded =
      FakeEnv{{"CUDA_DEVICE_MEMORY_SHARED_CACHE", "/tmp/vgpu/abc.cache"}, {"GPUSHARE_TENANT", "team-a"}}.load();
  EXPECT_TRUE(loaded.errors.empty()) << all_errors(loaded);
  EXPECT_EQ(loaded.settings.tenant, "team-a");
}

TEST(LoadSettings, EmptyHamiSharedCacheLeavesTheTenantUnset) {
  const LoadedSettings loaded = FakeEnv{{"CUDA_DEVICE_MEMORY_SHARED_CACHE", ""}}.load();
  EXPECT_TRUE(loaded.errors.empty()) << all_errors(loaded);
  EXPECT_EQ(loaded.settings.tenant, "");
}

TEST(LoadSettings, LongHamiPathsAndHostnamesGiveValidDistinctNames) {
  const std::string head_a = "/var/lib/kubelet/pods/" + std::string(150, 'a');
  const std::string head_b = "/var/lib/kubelet/pods/" + std::string(150, 'b');
  const std::string tail = "/volumes/vgpu/" + std::string(100, 'x') + "/cache";
  const std::string path_a = head_a + tail;
  const std::string path_b = head_b + tail;
  const std::string hostname(200, 'h');

  const LoadedSettings a1 = FakeEnv{{"CUDA_DEVICE_MEMORY_SHARED_CACHE", path_a}, {"HOSTNAME", hostname}}.load();
  const LoadedSettings a2 = FakeEnv{{"CUDA_DEVICE_MEMORY_SHARED_CACHE", path_a}, {"HOSTNAME", hostname}}.load();
  const LoadedSettings b = FakeEnv{{"CUDA_DEVICE_MEMORY_SHARED_CACHE", path_b}, {"HOSTNAME", hostname}}.load();
  EXPECT_TRUE(a1.errors.empty()) << all_errors(a1);
  EXPECT_EQ(a1.settings.tenant, a2.settings.tenant);
  EXPECT_NE(a1.settings.tenant, b.settings.tenant);
  EXPECT_TRUE(validate_tenant_name(a1.settings.tenant).ok());
  EXPECT_TRUE(validate_tenant_name(b.settings.tenant).ok());
  const LoadedSettings odd = FakeEnv{{"CUDA_DEVICE_MEMORY_SHARED_CACHE", path_a}, {"HOSTNAME", "a b\tc"}}.load();
  EXPECT_TRUE(validate_tenant_name(odd.settings.tenant).ok()) << odd.settings.tenant;
}

TEST(NormalizeTenantName, ShortNamesKeptAndUnprintablesReplaced) {
  EXPECT_EQ(normalize_tenant_name("team-a"), "team-a");
  // Replaced characters leave a hash of the original: names that differ only there stay apart.
  EXPECT_EQ(normalize_tenant_name("a b\tc").rfind("a_b_c~", 0), 0u) << normalize_tenant_name("a b\tc");
  EXPECT_NE(normalize_tenant_name("a b\tc"), normalize_tenant_name("a_b_c"));
  EXPECT_NE(normalize_tenant_name("a b\tc"), normalize_tenant_name("a\tb c"));
  EXPECT_EQ(normalize_tenant_name("a_b_c"), "a_b_c");
  EXPECT_EQ(normalize_tenant_name(std::string("x\xc3\xa9y")).rfind("x__y~", 0), 0u);
  EXPECT_TRUE(validate_tenant_name(normalize_tenant_name("a b\tc")).ok());
  const std::string exactly_max(layout::kTenantNameBytes - 1, 'n');
  EXPECT_EQ(normalize_tenant_name(exactly_max), exactly_max);
  const std::string one_more(layout::kTenantNameBytes, 'n');
  EXPECT_EQ(normalize_tenant_name(one_more).size(), layout::kTenantNameBytes - 1);
  EXPECT_NE(normalize_tenant_name(one_more), exactly_max);
}

TEST(NormalizeTenantName, ManyLongPathsStayDistinct) {
  std::set<std::string> names;
  for (int i = 0; i < 1000; ++i) {
    const std::string path = "/pods/" + std::to_string(i) + std::string(200, '/') + "vgpu.cache";
    const std::string name = normalize_tenant_name(path);
    EXPECT_TRUE(validate_tenant_name(name).ok()) << name;
    names.insert(name);
  }
  EXPECT_EQ(names.size(), 1000u);
}

TEST(ValidateTenantName, Rules) {
  EXPECT_TRUE(validate_tenant_name("a").ok());
  EXPECT_TRUE(validate_tenant_name(std::string(layout::kTenantNameBytes - 1, 'n')).ok());
  EXPECT_FALSE(validate_tenant_name("").ok());
  EXPECT_FALSE(validate_tenant_name(std::string(layout::kTenantNameBytes, 'n')).ok());
  EXPECT_FALSE(validate_tenant_name("a b").ok());
  EXPECT_FALSE(validate_tenant_name(std::string("a\0b", 3)).ok());
  EXPECT_FALSE(validate_tenant_name("a\x7f").ok());
  EXPECT_FALSE(validate_tenant_name("caf\xc3\xa9").ok());
}

TEST(LoadSettings, BadValuesProduceOneLineEachNamingTheVariableAndDoNotAbort) {
  const LoadedSettings loaded = FakeEnv{{"GPUSHARE_MEMORY_LIMIT", "8XB"},
                                        {"GPUSHARE_MEMORY_LIMIT_2", "lots"},
                                        {"CUDA_DEVICE_MEMORY_LIMIT_5", "-3"},
                                        {"GPUSHARE_CONTEXT_MEMORY", "unlimited"},
                                        {"GPUSHARE_LOG", "verbose"},
                                        {"GPUSHARE_ON_ERROR", "maybe"},
                                        {"GPUSHARE_TENANT", "has space"},
                                        // Good values next to the bad ones are still applied.
                                        {"GPUSHARE_MEMORY_LIMIT_1", "1GiB"},
                                        {"GPUSHARE_STATE", "/tmp/x.state"}}
                                    .load();
  EXPECT_EQ(loaded.errors.size(), 7u) << all_errors(loaded);
  EXPECT_TRUE(any_error_contains(loaded, "GPUSHARE_MEMORY_LIMIT: ")) << all_errors(loaded);
  EXPECT_TRUE(any_error_contains(loaded, "'8XB'")) << all_errors(loaded);
  EXPECT_TRUE(any_error_contains(loaded, "GPUSHARE_MEMORY_LIMIT_2: ")) << all_errors(loaded);
  EXPECT_TRUE(any_error_contains(loaded, "CUDA_DEVICE_MEMORY_LIMIT_5: ")) << all_errors(loaded);
  EXPECT_TRUE(any_error_contains(loaded, "GPUSHARE_CONTEXT_MEMORY: ")) << all_errors(loaded);
  EXPECT_TRUE(any_error_contains(loaded, "GPUSHARE_LOG: ")) << all_errors(loaded);
  EXPECT_TRUE(any_error_contains(loaded, "'verbose'")) << all_errors(loaded);
  EXPECT_TRUE(any_error_contains(loaded, "GPUSHARE_ON_ERROR: ")) << all_errors(loaded);
  EXPECT_TRUE(any_error_contains(loaded, "GPUSHARE_TENANT: ")) << all_errors(loaded);

  const Settings& s = loaded.settings;
  // Bad values leave the defaults.
  EXPECT_EQ(s.memory_limit_bytes, kUnlimited);
  EXPECT_EQ(s.device_memory_limit_bytes.count(2), 0u);
  EXPECT_EQ(s.device_memory_limit_bytes.count(5), 0u);
  EXPECT_EQ(s.context_memory_bytes, 0u);
  EXPECT_EQ(s.log_level, LogLevel::kWarn);
  EXPECT_EQ(s.on_error, FailPolicy::kClosed);
  EXPECT_EQ(s.tenant, "");
  EXPECT_EQ(s.memory_limit_for(1), 1_GiB);
  EXPECT_EQ(s.state_path, "/tmp/x.state");
}

TEST(LoadSettings, BadHamiAliasIsReportedUnderItsOwnName) {
  const LoadedSettings loaded = FakeEnv{{"CUDA_DEVICE_MEMORY_LIMIT", "8 gigs"}}.load();
  ASSERT_EQ(loaded.errors.size(), 1u) << all_errors(loaded);
  EXPECT_TRUE(Contains(loaded.errors[0], "CUDA_DEVICE_MEMORY_LIMIT: "));
  EXPECT_EQ(loaded.settings.memory_limit_bytes, kUnlimited);
}

TEST(LoadSettings, LogAndFailPolicy) {
  const std::pair<const char*, LogLevel> levels[] = {
      {"error", LogLevel::kError}, {"warn", LogLevel::kWarn}, {"info", LogLevel::kInfo}, {"debug", LogLevel::kDebug}};
  for (const auto& [text, level] : levels) {
    const LoadedSettings loaded = FakeEnv{{"GPUSHARE_LOG", text}}.load();
    EXPECT_TRUE(loaded.errors.empty()) << text;
    EXPECT_EQ(loaded.settings.log_level, level) << text;
  }
  const LoadedSettings open = FakeEnv{{"GPUSHARE_ON_ERROR", "open"}}.load();
  EXPECT_TRUE(open.errors.empty());
  EXPECT_EQ(open.settings.on_error, FailPolicy::kOpen);
  const LoadedSettings closed = FakeEnv{{"GPUSHARE_ON_ERROR", "closed"}}.load();
  EXPECT_EQ(closed.settings.on_error, FailPolicy::kClosed);

  EXPECT_FALSE(parse_log_level("WARN").ok());
  EXPECT_FALSE(parse_log_level("").ok());
  EXPECT_FALSE(parse_fail_policy("Open").ok());
  EXPECT_TRUE(Contains(parse_fail_policy("sideways").error().message, "'sideways'"));
}

TEST(LoadSettings, OtherVariables) {
  const LoadedSettings loaded = FakeEnv{{"GPUSHARE_CONTEXT_MEMORY", "512MiB"},
                                        {"GPUSHARE_STATE", "/dev/shm/mine.state"},
                                        {"GPUSHARE_REAL_LIBCUDA", "/opt/cuda/libcuda.so.1"},
                                        {"GPUSHARE_TENANT", "team-b"}}
                                    .load();
  EXPECT_TRUE(loaded.errors.empty()) << all_errors(loaded);
  EXPECT_EQ(loaded.settings.context_memory_bytes, 512_MiB);
  EXPECT_EQ(loaded.settings.state_path, "/dev/shm/mine.state");
  EXPECT_EQ(loaded.settings.real_libcuda, "/opt/cuda/libcuda.so.1");
  EXPECT_EQ(loaded.settings.tenant, "team-b");
}

TEST(OptionSpecs, EveryVariableReadIsDocumentedInTheTable) {
  std::set<std::string> documented;
  for (const auto& spec : option_specs()) {
    EXPECT_FALSE(spec.env.empty());
    EXPECT_FALSE(spec.help.empty()) << spec.env;
    EXPECT_FALSE(spec.value_name.empty()) << spec.env;
    EXPECT_FALSE(spec.default_text().empty()) << spec.env;
    documented.insert(std::string(spec.env));
    if (!spec.hami_alias.empty()) documented.insert(std::string(spec.hami_alias));
  }
  // Record every name load_settings asks for; each must appear in the table (with <i> for ordinals).
  std::set<std::string> asked;
  const EnvLookup recorder = [&](const char* name) -> const char* {
    asked.insert(name);
    return nullptr;
  };
  (void)load_settings(recorder, [] { return std::vector<std::string>{}; });
  for (std::string name : asked) {
    if (name.empty()) continue;
    const auto digits = name.find_last_not_of("0123456789");
    if (digits != std::string::npos && digits + 1 < name.size() && name[digits] == '_') {
      name = name.substr(0, digits + 1) + "<i>";
    }
    EXPECT_EQ(documented.count(name), 1u) << name << " is read but not in option_specs()";
  }
  EXPECT_GE(asked.size(), 2u * kMaxDeviceOrdinals);
}

// Every field of a Settings, so that two can be compared and a difference shown.
std::string describe(const Settings& s) {
  std::string out = fmt::format(
      "memory={} context={} tenant='{}' state='{}' libcuda='{}' log={} on_error={} share={} limit={} priority={} "
      "slice={}us launches={} queue={}ms",
      s.memory_limit_bytes, s.context_memory_bytes, s.tenant, s.state_path, s.real_libcuda,
      static_cast<int>(s.log_level), static_cast<int>(s.on_error), s.compute.share_pct, s.compute.limit_pct,
      priority_name(s.compute.priority), s.compute.slice.count(), s.inflight_launches, s.inflight_ms);
  for (const auto& [device, bytes] : s.device_memory_limit_bytes) out += fmt::format(" device{}={}", device, bytes);
  return out;
}

// One option given one way: the settings that result, or the error.
struct Outcome {
  bool ok = false;
  std::string settings_or_error;
};
constexpr int kSampleDevice = 3;

std::string variable_for(std::string_view pattern) {
  return pattern.ends_with("<i>") ? std::string(pattern.substr(0, pattern.size() - 3)) + std::to_string(kSampleDevice)
                                  : std::string(pattern);
}

Outcome through_environment(const std::string& variable, const std::string& text) {
  const LoadedSettings loaded = FakeEnv{{variable, text}}.load();
  if (!loaded.errors.empty()) {
    // "VARIABLE: why": the why must not depend on the way in.
    return {false, loaded.errors.front().substr(variable.size() + 2)};
  }
  return {true, describe(loaded.settings)};
}

Outcome through_flag(const OptionSpec& spec, const std::string& text) {
  Settings settings;
  const std::string flag_text = spec.per_device() ? fmt::format("{}={}", kSampleDevice, text) : text;
  auto assignment = apply_flag(spec, flag_text, settings);
  if (!assignment) return {false, assignment.error().message};
  EXPECT_EQ(assignment.value().variable, variable_for(spec.env));
  EXPECT_EQ(assignment.value().value, text);
  return {true, describe(settings)};
}

// Texts worth trying on every option: good and bad values of each kind.
const std::vector<std::string> kSamples{
    "",     "0",     "1",    "2",         "10",    "30",      "64",   "99",   "100",   "101",
    "3.5",  "none",  "unlimited", "8GiB", "8Gi",   "8g",      "8G",   "8GB",  "512MiB", "-1",
    "high", "normal", "low", "urgent",    "warn",  "debug",   "loud", "open", "closed", "team-a",
    "has space", "/tmp/x.state", "libcuda.so.1", "4096", "4097", "1000", "1001", "30%",
};

TEST(OptionsTable, EveryWayInNamesTheSameOptionAndParsesItAlike) {
  for (const OptionSpec& spec : option_specs()) {
    for (OptionWay way : {OptionWay::kEnvironment, OptionWay::kHamiAlias, OptionWay::kRunFlag, OptionWay::kQuotaFlag,
                          OptionWay::kApiField}) {
      const std::string_view name = option_name(spec, way);
      if (!name.empty()) {
        EXPECT_EQ(find_option(way, name), &spec) << name;
      }
    }
    const std::string variable = variable_for(spec.env);
    for (const std::string& text : kSamples) {
      const Outcome expected = through_environment(variable, text);
      const std::string context = fmt::format("{}='{}'", spec.env, text);
      // HAMi's alias of the tenant is a file path made into a name: its own rule (tested below).
      if (!spec.hami_alias.empty() && spec.env != "GPUSHARE_TENANT") {
        const Outcome alias = through_environment(variable_for(spec.hami_alias), text);
        EXPECT_EQ(alias.ok, expected.ok) << context << " via " << spec.hami_alias;
        EXPECT_EQ(alias.settings_or_error, expected.settings_or_error) << context << " via " << spec.hami_alias;
      }
      if (!spec.run_flag.empty() || !spec.quota_flag.empty()) {
        const Outcome flag = through_flag(spec, text);
        EXPECT_EQ(flag.ok, expected.ok) << context << " via a flag";
        EXPECT_EQ(flag.settings_or_error, expected.settings_or_error) << context << " via a flag";
      }
      if (!spec.api_field.empty()) {
        // gpushare_join overlays the variable its field stands for.
        EXPECT_EQ(option_variable(OptionWay::kApiField, spec.api_field), spec.env);
      }
    }
  }
}

TEST(OptionsTable, NoCapIsZeroNoneOrHundredInEveryWayIn) {
  const OptionSpec* cap = find_option(OptionWay::kEnvironment, "GPUSHARE_COMPUTE_LIMIT");
  ASSERT_NE(cap, nullptr);
  EXPECT_EQ(find_option(OptionWay::kHamiAlias, "CUDA_DEVICE_SM_LIMIT"), cap);
  EXPECT_EQ(find_option(OptionWay::kRunFlag, "--limit"), cap);
  EXPECT_EQ(find_option(OptionWay::kQuotaFlag, "--limit"), cap);
  EXPECT_EQ(find_option(OptionWay::kApiField, "compute_limit_pct"), cap);
  const std::pair<const char*, std::uint32_t> accepted[] = {{"0", 0},  {"none", 0}, {"100", 0}, {"100%", 0},
                                                             {"1", 1},  {"30", 30},  {"30%", 30}, {"99", 99}};
  for (const auto& [text, pct] : accepted) {
    for (const char* variable : {"GPUSHARE_COMPUTE_LIMIT", "CUDA_DEVICE_SM_LIMIT"}) {
      const LoadedSettings loaded = FakeEnv{{variable, text}}.load();
      EXPECT_TRUE(loaded.errors.empty()) << variable << "=" << text << ": " << all_errors(loaded);
      EXPECT_EQ(loaded.settings.compute.limit_pct, pct) << variable << "=" << text;
    }
    Settings flagged;
    ASSERT_TRUE(apply_flag(*cap, text, flagged).ok()) << text;
    EXPECT_EQ(flagged.compute.limit_pct, pct) << text;
    EXPECT_EQ(parse_compute_cap(text).value(), pct) << text;
  }
  for (const char* text : {"", "101", "3.5", "-1", "unlimited", "None", "0.5"}) {
    EXPECT_FALSE(parse_compute_cap(text).ok()) << text;
    Settings flagged;
    EXPECT_FALSE(apply_flag(*cap, text, flagged).ok()) << text;
    const LoadedSettings loaded = FakeEnv{{"GPUSHARE_COMPUTE_LIMIT", text}}.load();
    EXPECT_FALSE(loaded.errors.empty()) << text;
  }
  EXPECT_TRUE(Contains(parse_compute_cap("101").error().message, "0, none or 100: no cap"));
}

TEST(OptionsTable, DefaultsComeFromTheTable) {
  const Settings defaults;
  EXPECT_EQ(describe(defaults), describe(FakeEnv{}.load().settings));
  for (const OptionSpec& spec : option_specs()) {
    if (spec.default_value.empty()) continue;
    // Each default parses, and writing it out changes nothing.
    Settings applied;
    EXPECT_TRUE(apply_option(spec, {spec.default_value}, applied).ok()) << spec.env;
    const LoadedSettings loaded = FakeEnv{{std::string(spec.env), std::string(spec.default_value)}}.load();
    EXPECT_TRUE(loaded.errors.empty()) << spec.env << ": " << all_errors(loaded);
    EXPECT_EQ(describe(loaded.settings), describe(defaults)) << spec.env << "=" << spec.default_value;
  }
  // Those who need a default take it from the settings made once, the table's.
  EXPECT_EQ(describe(default_settings()), describe(defaults));
  EXPECT_EQ(&default_settings(), &default_settings());
}

// Code outside the table names an option by its id, which finds its own row.
TEST(OptionsTable, EachIdNamesItsOwnRow) {
  for (const OptionSpec& spec : option_specs()) {
    EXPECT_EQ(&option_spec(spec.id), &spec) << spec.env;
    EXPECT_EQ(find_option(OptionWay::kEnvironment, spec.env), &spec) << spec.env;
  }
}

TEST(OptionsTable, APerDeviceFlagStandsForItsIndexedVariable) {
  const OptionSpec* device = find_option(OptionWay::kRunFlag, "--device-memory");
  ASSERT_NE(device, nullptr);
  Settings settings;
  auto assignment = apply_flag(*device, "3=2GiB", settings);
  ASSERT_TRUE(assignment.ok()) << assignment.error().message;
  EXPECT_EQ(assignment.value().variable, "GPUSHARE_MEMORY_LIMIT_3");
  EXPECT_EQ(assignment.value().value, "2GiB");
  EXPECT_EQ(settings.memory_limit_for(3), 2_GiB);
  ASSERT_TRUE(apply_flag(*device, "63=unlimited", settings).ok());
  EXPECT_EQ(settings.memory_limit_for(63), kUnlimited);
  for (const char* bad : {"64=1GiB", "03=1GiB", "x=1GiB", "3", "=1GiB", "-1=1GiB", "3=8G", "3="}) {
    Settings untouched;
    EXPECT_FALSE(apply_flag(*device, bad, untouched).ok()) << bad;
  }
  EXPECT_TRUE(Contains(apply_flag(*device, "3=8G", settings).error().message, "Gi"));
}

TEST(OptionsTable, EveryFieldOfTheApiStandsForAVariable) {
  // The fields of gpushare_options (include/gpushare/gpushare.h) that gpushare_join overlays.
  for (const char* field : {"tenant", "state_path", "memory_limit_bytes", "compute_share_pct", "compute_limit_pct",
                            "priority", "slice_ms"}) {
    EXPECT_FALSE(option_variable(OptionWay::kApiField, field).empty()) << field;
  }
  EXPECT_EQ(option_variable(OptionWay::kApiField, "no_such_field"), "");
}

TEST(StatePath, OneRuleForEveryone) {
  const auto no_variables = [](const char*) -> const char* { return nullptr; };
  const auto variable_set = [](const char* name) -> const char* {
    return std::string_view(name) == "GPUSHARE_STATE" ? "/tmp/from-env.state" : nullptr;
  };
  const auto variable_empty = [](const char* name) -> const char* {
    return std::string_view(name) == "GPUSHARE_STATE" ? "" : nullptr;
  };

  const StatePath by_default = resolved_state_path(Settings{});
  EXPECT_EQ(by_default.path, default_state_path());
  EXPECT_FALSE(by_default.configured);
  EXPECT_EQ(by_default.origin(), SharedState::Origin::kDefault);
  const StatePath configured = resolved_state_path(FakeEnv{{"GPUSHARE_STATE", "/tmp/x.state"}}.load().settings);
  EXPECT_EQ(configured.path, "/tmp/x.state");
  EXPECT_EQ(configured.origin(), SharedState::Origin::kConfigured);

  EXPECT_EQ(state_path_for_command(std::nullopt, no_variables).value().path, default_state_path());
  EXPECT_FALSE(state_path_for_command(std::nullopt, no_variables).value().configured);
  EXPECT_EQ(state_path_for_command(std::nullopt, variable_set).value().path, "/tmp/from-env.state");
  EXPECT_TRUE(state_path_for_command(std::nullopt, variable_set).value().configured);
  // --state wins over the variable, even over an empty one.
  EXPECT_EQ(state_path_for_command("/tmp/flag.state", variable_set).value().path, "/tmp/flag.state");
  EXPECT_EQ(state_path_for_command("/tmp/flag.state", variable_empty).value().path, "/tmp/flag.state");
  // Empty is never the default by accident.
  const auto empty_flag = state_path_for_command(std::string(), variable_set);
  ASSERT_FALSE(empty_flag.ok());
  EXPECT_TRUE(Contains(empty_flag.error().message, "--state: empty path")) << empty_flag.error().message;
  const auto empty_variable = state_path_for_command(std::nullopt, variable_empty);
  ASSERT_FALSE(empty_variable.ok());
  EXPECT_TRUE(Contains(empty_variable.error().message, "GPUSHARE_STATE is set but empty"))
      << empty_variable.error().message;
}

}  // namespace
}  // namespace gpushare
