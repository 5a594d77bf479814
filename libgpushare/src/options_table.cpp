// The options table: every setting, its names in each way in, its default and its parser. Adding
// an option here gives it its environment variable, its flags, their --help lines and its default.
#include <array>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "core/tenant_name.hpp"
#include "core/settings.hpp"

namespace gpushare {
namespace {

// A whole number written with decimal digits only, in [low, high]; nullopt otherwise.
constexpr std::optional<std::uint32_t> whole_number(std::string_view text, std::uint32_t low, std::uint32_t high) {
  if (text.empty() || text.size() > 9) return std::nullopt;
  std::uint32_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (value < low || value > high) return std::nullopt;
  return value;
}

// Stores a parsed value, or passes the parser's error on.
template <typename T, typename Store>
Status store(Result<T> parsed, Store&& into) {
  if (!parsed) return parsed.error();
  into(std::move(parsed).value());
  return Ok{};
}

Status apply_memory_limit(const OptionValue& value, Settings& s) {
  return store(parse_limit(value.text), [&](std::uint64_t bytes) { s.memory_limit_bytes = bytes; });
}

Status apply_device_memory_limit(const OptionValue& value, Settings& s) {
  if (value.device < 0 || value.device >= kMaxDeviceOrdinals) {
    return Error{fmt::format("device index {} is not 0 to {}", value.device, kMaxDeviceOrdinals - 1)};
  }
  return store(parse_limit(value.text),
               [&](std::uint64_t bytes) { s.device_memory_limit_bytes[value.device] = bytes; });
}

// HAMi's CUDA_DEVICE_MEMORY_SHARED_CACHE is a per-container file path: one container, one tenant,
// named by load_settings after the pod (hami_tenant_name); empty leaves the tenant unset.
Status apply_tenant(const OptionValue& value, Settings& s) {
  if (value.from_hami_alias) {
    if (!value.text.empty()) s.tenant = normalize_tenant_name(value.text);
    return Ok{};
  }
  if (auto valid = validate_tenant_name(value.text); !valid) return valid.error();
  s.tenant = value.text;
  return Ok{};
}

Status apply_state_path(const OptionValue& value, Settings& s) {
  if (value.text.empty()) {
    return Error{fmt::format("empty path (leave it out to use the default, {})", default_state_path())};
  }
  s.state_path = value.text;
  return Ok{};
}

// Empty leaves the default library.
Status apply_real_libcuda(const OptionValue& value, Settings& s) {
  if (!value.text.empty()) s.real_libcuda = value.text;
  return Ok{};
}

Status apply_log_level(const OptionValue& value, Settings& s) {
  return store(parse_log_level(value.text), [&](LogLevel level) { s.log_level = level; });
}

Status apply_fail_policy(const OptionValue& value, Settings& s) {
  return store(parse_fail_policy(value.text), [&](FailPolicy policy) { s.on_error = policy; });
}

Status apply_context_memory(const OptionValue& value, Settings& s) {
  return store(parse_size(value.text), [&](std::uint64_t bytes) { s.context_memory_bytes = bytes; });
}

Status apply_share(const OptionValue& value, Settings& s) {
  return store(parse_percent(value.text), [&](std::uint32_t pct) { s.compute.share_pct = pct; });
}

Status apply_compute_cap(const OptionValue& value, Settings& s) {
  return store(parse_compute_cap(value.text), [&](std::uint32_t pct) { s.compute.limit_pct = pct; });
}

Status apply_priority(const OptionValue& value, Settings& s) {
  return store(parse_priority(value.text), [&](Priority priority) { s.compute.priority = priority; });
}

Status apply_slice(const OptionValue& value, Settings& s) {
  return store(parse_slice_ms(value.text), [&](std::chrono::microseconds slice) { s.compute.slice = slice; });
}

Status apply_inflight_launches(const OptionValue& value, Settings& s) {
  if (auto count = whole_number(value.text, 0, 4096); count && *count % 2 == 0) {
    s.inflight_launches = *count;
    return Ok{};
  }
  return Error{fmt::format("invalid launch count '{}' (expected an even number from 0 to 4096)", value.text)};
}

Status apply_inflight_ms(const OptionValue& value, Settings& s) {
  if (auto ms = whole_number(value.text, 0, 1000)) {
    s.inflight_ms = *ms;
    return Ok{};
  }
  return Error{fmt::format("invalid queue length '{}' (expected milliseconds from 0 to 1000)", value.text)};
}

Status apply_trace_dir(const OptionValue& value, Settings& s) {
  s.trace_dir = value.text;
  return Ok{};
}

Status apply_cupti_library(const OptionValue& value, Settings& s) {
  s.cupti_library = value.text;
  return Ok{};
}

// id, env, HAMi alias, run flag, quota flag, API field, value name, default value, default meaning, help, parser.
constexpr std::array kOptions{
    OptionSpec{OptionId::kMemoryLimit, "GPUSHARE_MEMORY_LIMIT", "CUDA_DEVICE_MEMORY_LIMIT", "--memory", "--memory",
               "memory_limit_bytes", "SIZE", "unlimited", "",
               "Memory quota on each GPU the tenant uses: 8GiB, 8Gi, 512MiB, 1073741824, 8g, or unlimited",
               apply_memory_limit},
    OptionSpec{OptionId::kDeviceMemoryLimit, "GPUSHARE_MEMORY_LIMIT_<i>", "CUDA_DEVICE_MEMORY_LIMIT_<i>",
               "--device-memory", "", "", "INDEX=SIZE", "", "GPUSHARE_MEMORY_LIMIT",
               "Quota on one device, INDEX=SIZE, INDEX as the program sees it (0-63, no leading zeros); repeatable",
               apply_device_memory_limit},
    OptionSpec{OptionId::kTenant, "GPUSHARE_TENANT", "CUDA_DEVICE_MEMORY_SHARED_CACHE", "--tenant", "", "tenant",
               "NAME", "", "a new one per gpushare run, else one per process",
               "Tenant name; processes with the same name share one quota", apply_tenant},
    OptionSpec{OptionId::kState, "GPUSHARE_STATE", "", "--state", "--state", "state_path", "PATH", "",
               "/run/gpushare/gpushare.state where a node agent runs (root's, beside /run/gpushare/agent.sock), "
               "else /tmp/vgpulock/gpushare.state if /tmp/vgpulock is a folder of root's, else /dev/shm/gpushare.state",
               "Shared state file where the tenants of a GPU meet; an empty path is an error", apply_state_path},
    OptionSpec{OptionId::kRealLibcuda, "GPUSHARE_REAL_LIBCUDA", "", "", "", "", "PATH", "libcuda.so.1", "",
               "The real CUDA driver library, opened at run time", apply_real_libcuda},
    OptionSpec{OptionId::kLog, "GPUSHARE_LOG", "", "--log", "", "", "LEVEL", "warn", "",
               "Messages on stderr: error, warn, info or debug", apply_log_level},
    OptionSpec{OptionId::kOnError, "GPUSHARE_ON_ERROR", "", "", "", "", "POLICY", "closed", "",
               "When the configuration or state is unusable: closed = allocations fail, open = no quotas",
               apply_fail_policy},
    OptionSpec{OptionId::kContextMemory, "GPUSHARE_CONTEXT_MEMORY", "", "--context-memory", "", "", "SIZE", "0", "",
               "Charge this much per process and GPU for the CUDA context; below every quota", apply_context_memory},
    OptionSpec{OptionId::kComputeShare, "GPUSHARE_COMPUTE_SHARE", "", "--share", "--share", "compute_share_pct",
               "PERCENT", "", "an equal part of what shares leave",
               "Weight of GPU time while others want the GPU, percent (1-100)", apply_share},
    OptionSpec{OptionId::kComputeLimit, "GPUSHARE_COMPUTE_LIMIT", "CUDA_DEVICE_SM_LIMIT", "--limit", "--limit",
               "compute_limit_pct", "PERCENT", "none", "",
               "Hard cap on GPU time, percent of wall time (1-100), held even when idle; 0, none or 100: no cap",
               apply_compute_cap},
    OptionSpec{OptionId::kPriority, "GPUSHARE_PRIORITY", "", "--priority", "--priority", "priority", "CLASS", "normal",
               "", "high, normal or low", apply_priority},
    OptionSpec{OptionId::kSlice, "GPUSHARE_SLICE_MS", "", "--slice-ms", "", "slice_ms", "MS", "10", "",
               "Time-slice length in milliseconds (1-1000)", apply_slice},
    OptionSpec{OptionId::kInflightLaunches, "GPUSHARE_INFLIGHT_LAUNCHES", "", "", "", "", "COUNT", "64", "",
               "Launches a process may have queued on a GPU (even, 0-4096; 0 = no bound)", apply_inflight_launches},
    OptionSpec{OptionId::kInflightMs, "GPUSHARE_INFLIGHT_MS", "", "", "", "", "MS", "2", "",
               "GPU time a process may have queued on a GPU, milliseconds (0-1000; 0 = launches only)",
               apply_inflight_ms},
    OptionSpec{OptionId::kTrace, "GPUSHARE_TRACE", "", "--trace", "", "", "DIR", "", "no trace",
               "Record each process's kernels, copies and slices on the GPU's clock (CUPTI) into files in DIR",
               apply_trace_dir},
    OptionSpec{OptionId::kCupti, "GPUSHARE_CUPTI", "", "", "", "", "PATH", "",
               "libcupti.so, else libcupti.so.13, .12, .11.8 (found by the loader)",
               "The CUPTI library trace mode opens at run time", apply_cupti_library},
};

// Row i is OptionId i, so that option_spec(id) is an index.
constexpr bool rows_in_id_order() {
  for (std::size_t i = 0; i < kOptions.size(); ++i) {
    if (kOptions[i].id != static_cast<OptionId>(i)) return false;
  }
  return true;
}
static_assert(rows_in_id_order(), "kOptions must list the options in OptionId order");
static_assert(kOptions.back().id == OptionId::kCupti, "every OptionId has a row");

constexpr const OptionSpec& row(OptionId id) { return kOptions[static_cast<std::size_t>(id)]; }

// A state file's slice of 0 means kDefaultSlice (the arbiter reads it alone): it is the table's.
static_assert(whole_number(row(OptionId::kSlice).default_value, 1, 1000).value_or(0) * std::chrono::milliseconds(1) ==
                  kDefaultSlice,
              "kDefaultSlice must be GPUSHARE_SLICE_MS's default in the table");

}  // namespace

std::span<const OptionSpec> option_specs() { return kOptions; }

const OptionSpec& option_spec(OptionId id) { return row(id); }

const Settings& default_settings() {
  static const Settings defaults;
  return defaults;
}

std::string_view option_name(const OptionSpec& spec, OptionWay way) {
  switch (way) {
    case OptionWay::kEnvironment:
      return spec.env;
    case OptionWay::kHamiAlias:
      return spec.hami_alias;
    case OptionWay::kRunFlag:
      return spec.run_flag;
    case OptionWay::kQuotaFlag:
      return spec.quota_flag;
    case OptionWay::kApiField:
      return spec.api_field;
  }
  return {};
}

const OptionSpec* find_option(OptionWay way, std::string_view name) {
  if (name.empty()) return nullptr;
  for (const OptionSpec& spec : kOptions) {
    if (option_name(spec, way) == name) return &spec;
  }
  return nullptr;
}

std::string option_variable(OptionWay way, std::string_view name) {
  const OptionSpec* spec = find_option(way, name);
  return spec != nullptr ? std::string(spec->env) : std::string();
}

Status apply_option(const OptionSpec& spec, const OptionValue& value, Settings& settings) {
  return spec.apply(value, settings);
}

Settings::Settings() {
  for (const OptionSpec& spec : kOptions) {
    // Every default parses (a unit test checks it); a failure would leave the zero value.
    if (!spec.default_value.empty()) (void)spec.apply(OptionValue{spec.default_value}, *this);
  }
}

Result<LogLevel> parse_log_level(std::string_view text) {
  if (text == "error") return LogLevel::kError;
  if (text == "warn") return LogLevel::kWarn;
  if (text == "info") return LogLevel::kInfo;
  if (text == "debug") return LogLevel::kDebug;
  return Error{fmt::format("invalid log level '{}' (expected error, warn, info or debug)", text)};
}

Result<FailPolicy> parse_fail_policy(std::string_view text) {
  if (text == "closed") return FailPolicy::kClosed;
  if (text == "open") return FailPolicy::kOpen;
  return Error{fmt::format("invalid policy '{}' (expected closed or open)", text)};
}

Result<std::uint32_t> parse_percent(std::string_view text) {
  std::string_view digits = text;
  if (!digits.empty() && digits.back() == '%') digits.remove_suffix(1);
  if (auto value = whole_number(digits, 1, 100)) return *value;
  return Error{fmt::format("invalid percentage '{}' (expected a whole number from 1 to 100)", text)};
}

Result<std::uint32_t> parse_compute_cap(std::string_view text) {
  // HAMi writes 0 (and 100) for "no limit"; none says it in words.
  std::string_view digits = text;
  if (!digits.empty() && digits.back() == '%') digits.remove_suffix(1);
  if (text == "none" || digits == "0" || digits == "100") return 0u;
  if (auto value = whole_number(digits, 1, 99)) return *value;
  return Error{
      fmt::format("invalid cap '{}' (expected a whole percentage from 1 to 100; 0, none or 100: no cap)", text)};
}

Result<std::chrono::microseconds> parse_slice_ms(std::string_view text) {
  if (auto value = whole_number(text, 1, 1000)) return std::chrono::microseconds(*value * 1000);
  return Error{fmt::format("invalid slice length '{}' (expected milliseconds from 1 to 1000)", text)};
}

}  // namespace gpushare
