// Every setting gpushare reads, in one table (options_table.cpp): its environment variable, HAMi
// alias, `gpushare run` and `gpushare quota set` flags, C/C++ API field, default and parser. Every
// way in goes through that table's parser (apply_option): the preload library's environment,
// both commands' flags and their --help lines, and gpushare_join's options (as the variables they
// stand for). Settings' defaults are the table's, and docs/configuration.md is checked against it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/compute_policy.hpp"
#include "core/shared_state.hpp"
#include "core/size.hpp"

namespace gpushare {

enum class LogLevel { kError, kWarn, kInfo, kDebug };
enum class FailPolicy { kClosed, kOpen };

inline constexpr int kMaxDeviceOrdinals = 64;

struct Settings;

// One value of an option as some way in wrote it.
struct OptionValue {
  std::string_view text;
  int device = -1;               // the index <i> of a per-device option, else -1
  bool from_hami_alias = false;  // read from the HAMi variable, whose meaning may differ
};

// Every option, in the table's order: how code outside the table names one (option_spec(id)),
// so that its variable and flags are written only in the table.
enum class OptionId {
  kMemoryLimit,
  kDeviceMemoryLimit,
  kTenant,
  kState,
  kRealLibcuda,
  kLog,
  kOnError,
  kContextMemory,
  kComputeShare,
  kComputeLimit,
  kPriority,
  kSlice,
  kInflightLaunches,
  kInflightMs,
  kTrace,
  kCupti,
};

struct OptionSpec {
  OptionId id;
  std::string_view env;              // "GPUSHARE_MEMORY_LIMIT"; "<i>" stands for a device index
  std::string_view hami_alias;       // "" when none
  std::string_view run_flag;         // `gpushare run` flag, "" when none
  std::string_view quota_flag;       // `gpushare quota set` flag, "" when none
  std::string_view api_field;        // the gpushare_options field, "" when none
  std::string_view value_name;       // the flag's argument in --help: SIZE, PERCENT, ...
  std::string_view default_value;    // parsed into Settings' defaults; "" when the default is "not set"
  std::string_view default_meaning;  // what "not set" means, for the docs and --help ("" when it has a value)
  std::string_view help;             // one line for --help
  Status (*apply)(const OptionValue& value, Settings& settings);

  bool per_device() const { return env.ends_with("<i>"); }
  // A memory quota, for every device or one (checked against the context charge).
  bool memory_quota() const { return id == OptionId::kMemoryLimit || id == OptionId::kDeviceMemoryLimit; }
  // default_meaning when there is one, else default_value.
  std::string_view default_text() const { return default_meaning.empty() ? default_value : default_meaning; }
};
std::span<const OptionSpec> option_specs();
const OptionSpec& option_spec(OptionId id);

// The ways a value comes in, each naming options its own way.
enum class OptionWay { kEnvironment, kHamiAlias, kRunFlag, kQuotaFlag, kApiField };
std::string_view option_name(const OptionSpec& spec, OptionWay way);
// The option `name` stands for in `way` ("--limit", "compute_limit_pct"); nullptr when none.
const OptionSpec* find_option(OptionWay way, std::string_view name);
// The environment variable an API field stands for ("" when none).
std::string option_variable(OptionWay way, std::string_view name);
// Parses `value` with the option's own parser into `settings`; the error says why, not where from.
Status apply_option(const OptionSpec& spec, const OptionValue& value, Settings& settings);

// The variable a flag's value stands for, and that value.
struct OptionAssignment {
  std::string variable;  // GPUSHARE_MEMORY_LIMIT_3 for `--device-memory 3=2GiB`
  std::string value;     // 2GiB
  int device = -1;
};
// Parses a flag's value (INDEX=SIZE for a per-device option) with the option's parser into
// `settings`, and says which variable it stands for. The error says why, not which flag.
Result<OptionAssignment> apply_flag(const OptionSpec& spec, std::string_view text, Settings& settings);

struct Settings {
  // Every field starts at the table's default (Settings() applies each default_value).
  Settings();

  std::uint64_t memory_limit_bytes{};  // kUnlimited: no quota
  std::map<int, std::uint64_t> device_memory_limit_bytes;  // by device ordinal as this process sees it
  std::string tenant;      // empty: this process is a tenant of its own
  std::string state_path;  // empty: default_state_path() (see resolved_state_path)
  std::string real_libcuda;
  LogLevel log_level{};
  FailPolicy on_error{};
  std::uint64_t context_memory_bytes{};
  ComputePolicyValues compute;
  // Launches a process may have queued on a GPU (the in-flight bound); 0 turns the bound off. The
  // bound records an event and waits on an older one every inflight_launches / 2 launches at most:
  // its cost per launch shrinks as the bound grows. The time bound (inflight_ms) is what keeps long
  // kernels from queueing that many.
  std::uint32_t inflight_launches{};
  // GPU time a process may have queued, in milliseconds, as the bound estimates it; 0: launches only.
  std::uint32_t inflight_ms{};
  // Trace mode (docs/tracing.md): the folder each process writes its trace file into; empty: off.
  std::string trace_dir;
  // The CUPTI library trace mode opens; empty: found by soname (libcupti.so, then versioned names).
  std::string cupti_library;

  std::uint64_t memory_limit_for(int ordinal) const;
};

// Settings{}, made once: the table's defaults for those who need one of them (the hooks' checkpoint
// spacing when the in-flight bound is off, the compute policy of a tenant that stated none).
const Settings& default_settings();

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

// The state file, decided in one place for the library, the commands, the exporter and the NVML
// shadow: settings.state_path (GPUSHARE_STATE, --state, the API's state_path) when set, trusted as
// given; else default_state_path(), which SharedState::open checks for its owner.
struct StatePath {
  std::string path;
  bool configured = false;
  SharedState::Origin origin() const {
    return configured ? SharedState::Origin::kConfigured : SharedState::Origin::kDefault;
  }
};
StatePath resolved_state_path(const Settings& settings);

// The state a command works on: its --state (`flag`) when given, else GPUSHARE_STATE read through
// `env`, else the default. An empty --state or GPUSHARE_STATE is an error (never the default by
// accident), whose message starts with "--state: " or "GPUSHARE_STATE is set but empty".
Result<StatePath> state_path_for_command(const std::optional<std::string>& flag, const EnvLookup& env);

Result<LogLevel> parse_log_level(std::string_view text);
// A percentage for --share: an integer 1..100 (a trailing % is allowed).
Result<std::uint32_t> parse_percent(std::string_view text);
// A hard cap on GPU time (--limit, GPUSHARE_COMPUTE_LIMIT, HAMi's CUDA_DEVICE_SM_LIMIT): a
// percentage 1..99, or 0, none or 100 for no cap, which is returned as 0.
Result<std::uint32_t> parse_compute_cap(std::string_view text);
// GPUSHARE_SLICE_MS: 1..1000 milliseconds.
Result<std::chrono::microseconds> parse_slice_ms(std::string_view text);
Result<FailPolicy> parse_fail_policy(std::string_view text);

}  // namespace gpushare
