// Every setting gpushare reads, in one table: the environment variable, its HAMi alias, its
// default and what it means. The preload library, `gpushare run` and docs/configuration.md all
// come from this table (a test checks that the document lists every entry).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/compute_policy.hpp"
#include "core/size.hpp"

namespace gpushare {

enum class LogLevel { kError, kWarn, kInfo, kDebug };
enum class FailPolicy { kClosed, kOpen };

struct OptionSpec {
  std::string_view env;            // "GPUSHARE_MEMORY_LIMIT"; "<i>" stands for a device index
  std::string_view hami_alias;     // "" when none
  std::string_view run_flag;       // the `gpushare run` flag that sets it, "" when none
  std::string_view default_value;  // as written in the docs
  std::string_view description;
};
std::span<const OptionSpec> option_specs();

inline constexpr int kMaxDeviceOrdinals = 64;

struct Settings {
  std::uint64_t memory_limit_bytes = kUnlimited;
  std::map<int, std::uint64_t> device_memory_limit_bytes;  // by device ordinal as this process sees it
  std::string tenant;      // empty: this process is a tenant of its own
  std::string state_path;  // empty: default_state_path()
  std::string real_libcuda = "libcuda.so.1";
  LogLevel log_level = LogLevel::kWarn;
  FailPolicy on_error = FailPolicy::kClosed;
  std::uint64_t context_memory_bytes = 0;
  ComputePolicyValues compute;
  // Launches a process may have queued on a GPU (the in-flight bound); 0 turns the bound off. The
  // bound records an event and waits on an older one every inflight_launches / 2 launches at most:
  // on the real driver about 0.4 us, so 64 keeps its share of a launch near 12 ns. The time bound
  // (inflight_ms) is what keeps long kernels from queueing that many.
  static constexpr std::uint32_t kDefaultInflightLaunches = 64;
  std::uint32_t inflight_launches = kDefaultInflightLaunches;
  // GPU time a process may have queued, in milliseconds, as the bound estimates it; 0: launches only.
  std::uint32_t inflight_ms = 2;

  std::uint64_t memory_limit_for(int ordinal) const;
};

struct LoadedSettings {
  Settings settings;
  // One line per bad value, naming the variable: the preload prints them and applies on_error.
  std::vector<std::string> errors;
};

using EnvLookup = std::function<const char*(const char* name)>;
// The names of the variables set, so that per-device limits with an index that names no device
// (GPUSHARE_MEMORY_LIMIT_64, _00) are found and refused; tests inject their own.
using EnvNames = std::function<std::vector<std::string>()>;
// The names in this process's environment (environ).
std::vector<std::string> environment_names();
// Values are read through `env`; `names` only lists candidates, each then read through `env`.
LoadedSettings load_settings(const EnvLookup& env, const EnvNames& names = environment_names);

Result<LogLevel> parse_log_level(std::string_view text);
// A percentage for --share / --limit: an integer 1..100 (a trailing % is allowed).
Result<std::uint32_t> parse_percent(std::string_view text);
// GPUSHARE_SLICE_MS: 1..1000 milliseconds.
Result<std::chrono::microseconds> parse_slice_ms(std::string_view text);
Result<FailPolicy> parse_fail_policy(std::string_view text);

}  // namespace gpushare
