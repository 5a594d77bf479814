#include "core/settings.hpp"

#include <unistd.h>

#include <array>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "core/tenant_name.hpp"
#include "core/shared_state.hpp"

namespace gpushare {
namespace {

constexpr std::array kOptions{
    OptionSpec{"GPUSHARE_MEMORY_LIMIT", "CUDA_DEVICE_MEMORY_LIMIT", "--memory", "unlimited",
               "Memory quota of the tenant on each GPU it uses (SIZE)."},
    OptionSpec{"GPUSHARE_MEMORY_LIMIT_<i>", "CUDA_DEVICE_MEMORY_LIMIT_<i>", "--device-memory i=SIZE",
               "GPUSHARE_MEMORY_LIMIT",
               "Memory quota on the device this process sees as index i (after CUDA_VISIBLE_DEVICES); "
               "overrides GPUSHARE_MEMORY_LIMIT for that device. Stored by GPU UUID. i is 0 to 63 without leading "
               "zeros; any other index is an error."},
    OptionSpec{"GPUSHARE_TENANT", "CUDA_DEVICE_MEMORY_SHARED_CACHE", "--tenant",
               "one tenant per process (gpushare run: one per run)",
               "Name of the tenant whose quota this process shares. HAMi's variable, a per-container file "
               "path, is taken as the tenant's name: one container, one tenant."},
    OptionSpec{"GPUSHARE_STATE", "", "--state",
               "/tmp/vgpulock/gpushare.state if /tmp/vgpulock is a folder of root's, else /dev/shm/gpushare.state",
               "Path of the shared state file where all tenants of a GPU meet. Every tenant of a GPU must use "
               "the same file (in containers: a host folder mounted into each). Set but empty is an error."},
    OptionSpec{"GPUSHARE_REAL_LIBCUDA", "", "", "libcuda.so.1",
               "The real CUDA driver library, opened at run time."},
    OptionSpec{"GPUSHARE_LOG", "", "", "warn", "Messages printed to stderr: error, warn, info or debug."},
    OptionSpec{"GPUSHARE_ON_ERROR", "", "", "closed",
               "What the preload library does when its configuration or state is unusable: closed = every "
               "device allocation fails with CUDA_ERROR_OUT_OF_MEMORY; open = run without quotas."},
    OptionSpec{"GPUSHARE_CONTEXT_MEMORY", "", "--context-memory", "0",
               "Bytes charged to the tenant's quota for each process's CUDA context on a GPU (an H100 "
               "context takes about 0.5 GiB outside any allocation). 0 = quotas count allocations only. Must be "
               "below every memory quota set."},
    OptionSpec{"GPUSHARE_COMPUTE_SHARE", "", "--share", "an equal part of what shares leave",
               "Weight of the tenant's GPU time while others want the GPU too, in percent (1-100). Shares "
               "summing past 100 are normalised; tenants without one split what is left equally."},
    OptionSpec{"GPUSHARE_COMPUTE_LIMIT", "CUDA_DEVICE_SM_LIMIT", "--limit", "none",
               "Hard cap on the tenant's GPU time, in percent of wall time (1-100), held even on an idle GPU."},
    OptionSpec{"GPUSHARE_PRIORITY", "", "--priority", "normal",
               "high, normal or low. A waiting higher class takes the GPU at once; lower classes wait while "
               "it is busy."},
    OptionSpec{"GPUSHARE_SLICE_MS", "", "--slice-ms", "10",
               "Length of a time slice in milliseconds (1-1000); also the longest pause through which a "
               "tenant keeps the GPU while only lower priority classes wait."},
    OptionSpec{"GPUSHARE_INFLIGHT_LAUNCHES", "", "", "64",
               "Launches a process may have queued on a GPU (a multiple of 2 up to 4096; 0 = no bound). Smaller "
               "values make handovers and priority more responsive, larger ones cost fewer event waits."},
    OptionSpec{"GPUSHARE_INFLIGHT_MS", "", "", "2",
               "GPU time a process may have queued on a GPU, in milliseconds (0-1000; 0 = bound in launches "
               "only), estimated from how long its events wait. Smaller values make handovers and priority "
               "more responsive; larger ones absorb longer stalls of the program's own threads."},
};

// Reads gpushare's variable, else HAMi's alias.
const char* lookup(const EnvLookup& env, const std::string& name, const std::string& alias, std::string* used) {
  if (const char* value = env(name.c_str())) {
    *used = name;
    return value;
  }
  if (!alias.empty()) {
    if (const char* value = env(alias.c_str())) {
      *used = alias;
      return value;
    }
  }
  return nullptr;
}

}  // namespace

std::span<const OptionSpec> option_specs() { return kOptions; }

std::uint64_t Settings::memory_limit_for(int ordinal) const {
  auto it = device_memory_limit_bytes.find(ordinal);
  return it != device_memory_limit_bytes.end() ? it->second : memory_limit_bytes;
}

Result<LogLevel> parse_log_level(std::string_view text) {
  if (text == "error") return LogLevel::kError;
  if (text == "warn") return LogLevel::kWarn;
  if (text == "info") return LogLevel::kInfo;
  if (text == "debug") return LogLevel::kDebug;
  return Error{fmt::format("invalid log level '{}' (expected error, warn, info or debug)", text)};
}

namespace {
// A whole number written with decimal digits only, in [low, high]; nullopt otherwise.
std::optional<std::uint32_t> whole_number(std::string_view text, std::uint32_t low, std::uint32_t high) {
  if (text.empty() || text.size() > 9) return std::nullopt;
  std::uint32_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (value < low || value > high) return std::nullopt;
  return value;
}
}  // namespace

Result<std::uint32_t> parse_percent(std::string_view text) {
  std::string_view digits = text;
  if (!digits.empty() && digits.back() == '%') digits.remove_suffix(1);
  if (auto value = whole_number(digits, 1, 100)) return *value;
  return Error{fmt::format("invalid percentage '{}' (expected a whole number from 1 to 100)", text)};
}

Result<std::chrono::microseconds> parse_slice_ms(std::string_view text) {
  if (auto value = whole_number(text, 1, 1000)) return std::chrono::microseconds(*value * 1000);
  return Error{fmt::format("invalid slice length '{}' (expected milliseconds from 1 to 1000)", text)};
}

namespace {
// A device index as written in GPUSHARE_MEMORY_LIMIT_<i>: 0..kMaxDeviceOrdinals-1, no leading zeros.
bool is_device_index(std::string_view text) {
  return (text.size() == 1 || (!text.empty() && text.front() != '0')) &&
         whole_number(text, 0, kMaxDeviceOrdinals - 1).has_value();
}

// Per-device variables whose index names no device would be ignored: each one is an error.
void check_device_variable_names(const EnvLookup& env, const EnvNames& names, std::vector<std::string>& errors) {
  if (!names) return;
  for (const std::string& name : names()) {
    for (std::string_view prefix : {"GPUSHARE_MEMORY_LIMIT_", "CUDA_DEVICE_MEMORY_LIMIT_"}) {
      if (!name.starts_with(prefix) || is_device_index(name.substr(prefix.size()))) continue;
      if (env(name.c_str()) == nullptr) continue;
      errors.push_back(fmt::format("{}: '{}' is not a device index (expected 0 to {} without leading zeros)", name,
                                   name.substr(prefix.size()), kMaxDeviceOrdinals - 1));
    }
  }
}
}  // namespace

std::vector<std::string> environment_names() {
  std::vector<std::string> names;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view text = *entry;
    names.emplace_back(text.substr(0, text.find('=')));
  }
  return names;
}

Result<FailPolicy> parse_fail_policy(std::string_view text) {
  if (text == "closed") return FailPolicy::kClosed;
  if (text == "open") return FailPolicy::kOpen;
  return Error{fmt::format("invalid policy '{}' (expected closed or open)", text)};
}

LoadedSettings load_settings(const EnvLookup& env, const EnvNames& names) {
  LoadedSettings loaded;
  Settings& s = loaded.settings;
  std::string used;
  auto complain = [&](const Error& error) { loaded.errors.push_back(fmt::format("{}: {}", used, error.message)); };

  if (const char* v = lookup(env, "GPUSHARE_LOG", "", &used)) {
    if (auto level = parse_log_level(v)) s.log_level = level.value(); else complain(level.error());
  }
  if (const char* v = lookup(env, "GPUSHARE_ON_ERROR", "", &used)) {
    if (auto policy = parse_fail_policy(v)) s.on_error = policy.value(); else complain(policy.error());
  }
  // The variable each limit came from, for the context check below.
  std::map<int, std::string> limit_variables;
  if (const char* v = lookup(env, "GPUSHARE_MEMORY_LIMIT", "CUDA_DEVICE_MEMORY_LIMIT", &used)) {
    if (auto limit = parse_limit(v)) {
      s.memory_limit_bytes = limit.value();
      limit_variables[-1] = used;
    } else {
      complain(limit.error());
    }
  }
  for (int i = 0; i < kMaxDeviceOrdinals; ++i) {
    if (const char* v = lookup(env, fmt::format("GPUSHARE_MEMORY_LIMIT_{}", i),
                               fmt::format("CUDA_DEVICE_MEMORY_LIMIT_{}", i), &used)) {
      if (auto limit = parse_limit(v)) {
        s.device_memory_limit_bytes[i] = limit.value();
        limit_variables[i] = used;
      } else {
        complain(limit.error());
      }
    }
  }
  check_device_variable_names(env, names, loaded.errors);
  if (const char* v = lookup(env, "GPUSHARE_CONTEXT_MEMORY", "", &used)) {
    if (auto bytes = parse_size(v)) s.context_memory_bytes = bytes.value(); else complain(bytes.error());
  }
  // A context charge that fills the quota would refuse every allocation without a word.
  for (const auto& [ordinal, variable] : limit_variables) {
    const std::uint64_t limit = ordinal < 0 ? s.memory_limit_bytes : s.device_memory_limit_bytes.at(ordinal);
    if (s.context_memory_bytes == 0 || limit == kUnlimited || s.context_memory_bytes < limit) continue;
    loaded.errors.push_back(fmt::format(
        "GPUSHARE_CONTEXT_MEMORY: {} is not below {} ({}): the context charge alone would fill the quota and every "
        "allocation would be refused",
        format_size(s.context_memory_bytes), variable, format_size(limit)));
  }
  if (const char* v = lookup(env, "GPUSHARE_COMPUTE_SHARE", "", &used)) {
    if (auto pct = parse_percent(v)) s.compute.share_pct = pct.value(); else complain(pct.error());
  }
  if (const char* v = lookup(env, "GPUSHARE_COMPUTE_LIMIT", "CUDA_DEVICE_SM_LIMIT", &used)) {
    // HAMi writes 0 (and 100) for "no limit".
    if (std::string_view(v) == "0") {
      s.compute.limit_pct = 0;
    } else if (auto pct = parse_percent(v)) {
      s.compute.limit_pct = pct.value() == 100 ? 0 : pct.value();
    } else {
      complain(pct.error());
    }
  }
  if (const char* v = lookup(env, "GPUSHARE_PRIORITY", "", &used)) {
    if (auto priority = parse_priority(v)) s.compute.priority = priority.value(); else complain(priority.error());
  }
  if (const char* v = lookup(env, "GPUSHARE_SLICE_MS", "", &used)) {
    if (auto slice = parse_slice_ms(v)) s.compute.slice = slice.value(); else complain(slice.error());
  }
  if (const char* v = lookup(env, "GPUSHARE_INFLIGHT_LAUNCHES", "", &used)) {
    if (auto value = whole_number(v, 0, 4096); value && *value % 2 == 0) {
      s.inflight_launches = *value;
    } else {
      complain(Error{fmt::format("invalid launch count '{}' (expected an even number from 0 to 4096)", v)});
    }
  }
  if (const char* v = lookup(env, "GPUSHARE_INFLIGHT_MS", "", &used)) {
    if (auto value = whole_number(v, 0, 1000)) {
      s.inflight_ms = *value;
    } else {
      complain(Error{fmt::format("invalid queue length '{}' (expected milliseconds from 0 to 1000)", v)});
    }
  }
  if (const char* v = lookup(env, "GPUSHARE_TENANT", "", &used)) {
    if (auto valid = validate_tenant_name(v)) s.tenant = v; else complain(valid.error());
  } else if (const char* path = lookup(env, "", "CUDA_DEVICE_MEMORY_SHARED_CACHE", &used); path && *path) {
    s.tenant = normalize_tenant_name(path);
  }
  if (const char* v = lookup(env, "GPUSHARE_STATE", "", &used)) {
    if (*v != '\0') {
      s.state_path = v;
    } else {
      complain(Error{fmt::format("empty path (unset it to use the default, {})", default_state_path())});
    }
  }
  if (const char* v = lookup(env, "GPUSHARE_REAL_LIBCUDA", "", &used); v && *v) s.real_libcuda = v;
  return loaded;
}

}  // namespace gpushare
