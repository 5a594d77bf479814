// `gpushare run`: validates every option, exports it for the preload library, and execs CMD with
// libgpushare-preload.so in LD_PRELOAD. Nothing is exported unless everything is valid.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "commands.hpp"
#include "core/compute.hpp"
#include "core/settings.hpp"
#include "core/size.hpp"
#include "core/tenant_name.hpp"

namespace fs = std::filesystem;

namespace gpushare::tools {
namespace {

// Limits travel to the preload library as exact byte counts.
std::string limit_text(std::uint64_t bytes) { return bytes == kUnlimited ? "unlimited" : std::to_string(bytes); }

void set_env(const std::string& name, const std::string& value) { ::setenv(name.c_str(), value.c_str(), 1); }

// Puts `entry` first in the colon-separated list `variable` (once).
void prepend_path_list(const char* variable, const std::string& entry) {
  const char* existing = std::getenv(variable);
  if (existing == nullptr || *existing == '\0') return set_env(variable, entry);
  const std::string list = existing;
  if (list == entry || list.starts_with(entry + ":")) return;
  set_env(variable, entry + ":" + list);
}

// Validates a compute option and exports it; false (after printing why) when it is bad.
template <typename Parse>
bool export_checked(const std::optional<std::string>& value, const char* flag, const char* variable, Parse parse) {
  if (!value) return true;
  if (auto parsed = parse(*value); !parsed) {
    fmt::print(stderr, "gpushare run: {}: {}\n", flag, parsed.error().message);
    return false;
  }
  set_env(variable, *value);
  return true;
}

}  // namespace

int run_command(RunOptions& options) {
  if (options.command.empty()) {
    fmt::print(stderr, "gpushare run: no command given (usage: gpushare run [OPTIONS] -- CMD [ARGS...])\n");
    return kExitBadInput;
  }
  // Everything is validated before anything is exported, so a bad value never reaches CMD.
  if (!resolve_state_path("run", options.state)) return kExitBadInput;
  if (options.memory) {
    auto bytes = size_option("--memory", *options.memory, true);
    if (!bytes) return kExitBadInput;
    set_env("GPUSHARE_MEMORY_LIMIT", limit_text(*bytes));
  }
  for (const std::string& entry : options.device_memory) {
    const auto equals = entry.find('=');
    int index = -1;
    if (equals != std::string::npos) {
      const std::string digits = entry.substr(0, equals);
      if (!digits.empty() && digits.size() <= 2 && (digits.size() == 1 || digits.front() != '0') &&
          digits.find_first_not_of("0123456789") == std::string::npos) {
        index = std::stoi(digits);
      }
    }
    if (index < 0 || index >= kMaxDeviceOrdinals) {
      fmt::print(stderr,
                 "gpushare run: --device-memory: expected INDEX=SIZE with INDEX in 0..{} (no leading zeros), got '{}'\n",
                 kMaxDeviceOrdinals - 1, entry);
      return kExitBadInput;
    }
    auto bytes = size_option("--device-memory", entry.substr(equals + 1), true);
    if (!bytes) return kExitBadInput;
    set_env(fmt::format("GPUSHARE_MEMORY_LIMIT_{}", index), limit_text(*bytes));
  }
  if (options.context_memory) {
    auto bytes = size_option("--context-memory", *options.context_memory, false);
    if (!bytes) return kExitBadInput;
    set_env("GPUSHARE_CONTEXT_MEMORY", std::to_string(*bytes));
  }
  if (options.log) {
    if (auto level = parse_log_level(*options.log); !level) {
      fmt::print(stderr, "gpushare run: --log: {}\n", level.error().message);
      return kExitBadInput;
    }
    set_env("GPUSHARE_LOG", *options.log);
  }
  if (!export_checked(options.share, "--share", "GPUSHARE_COMPUTE_SHARE", parse_percent) ||
      !export_checked(options.limit, "--limit", "GPUSHARE_COMPUTE_LIMIT", parse_percent) ||
      !export_checked(options.priority, "--priority", "GPUSHARE_PRIORITY", parse_priority) ||
      !export_checked(options.slice_ms, "--slice-ms", "GPUSHARE_SLICE_MS", parse_slice_ms)) {
    return kExitBadInput;
  }
  if (options.tenant) {
    if (auto valid = validate_tenant_name(*options.tenant); !valid) {
      fmt::print(stderr, "gpushare run: --tenant: {}\n", valid.error().message);
      return kExitBadInput;
    }
  }

  std::optional<std::string> preload = std::nullopt;
  if (const char* path = std::getenv("GPUSHARE_PRELOAD_LIBRARY"); path && *path) {
    preload = path;
  } else {
    preload = find_installed(GPUSHARE_PRELOAD_FROM_BINDIR, GPUSHARE_PRELOAD_BUILD_PATH);
  }
  if (!preload) {
    fmt::print(stderr,
               "gpushare run: cannot find libgpushare-preload.so (expected next to this program under "
               "{}); set GPUSHARE_PRELOAD_LIBRARY\n",
               GPUSHARE_PRELOAD_FROM_BINDIR);
    return kExitFailure;
  }
  std::optional<std::string> nvml_dir;
  if (options.nvml) {
    nvml_dir = find_installed(GPUSHARE_NVML_DIR_FROM_BINDIR, GPUSHARE_NVML_BUILD_DIR);
    if (!nvml_dir) {
      fmt::print(stderr, "gpushare run: --nvml: cannot find the shadow libnvidia-ml.so.1 (expected under {})\n",
                 GPUSHARE_NVML_DIR_FROM_BINDIR);
      return kExitFailure;
    }
  }

  // One run is one tenant, shared by every process CMD starts (torchrun workers included): --tenant,
  // else the one the environment names (GPUSHARE_TENANT, or HAMi's CUDA_DEVICE_MEMORY_SHARED_CACHE,
  // e.g. set by a pod spec or an outer wrapper), else a new one.
  auto environment_names_tenant = [] {
    for (const char* variable : {"GPUSHARE_TENANT", "CUDA_DEVICE_MEMORY_SHARED_CACHE"}) {
      if (const char* value = std::getenv(variable); value != nullptr && *value != '\0') return true;
    }
    return false;
  };
  if (options.tenant) {
    set_env("GPUSHARE_TENANT", *options.tenant);
  } else if (!environment_names_tenant()) {
    set_env("GPUSHARE_TENANT", generate_tenant_name(options.command.front()));
  }
  if (options.state) set_env("GPUSHARE_STATE", fs::absolute(*options.state).string());
  // nvidia-smi and PyTorch dlopen NVML by name: the shadow copy must be found first.
  if (nvml_dir) prepend_path_list("LD_LIBRARY_PATH", *nvml_dir);
  // The loader splits LD_PRELOAD at spaces and colons: such a path would load nothing, and CMD
  // would run without quotas after a mere warning.
  if (preload->find_first_of(" :") != std::string::npos) {
    fmt::print(stderr, "gpushare run: the preload library's path '{}' contains a space or a colon, which "
               "LD_PRELOAD cannot express; install gpushare elsewhere\n", *preload);
    return kExitFailure;
  }
  prepend_path_list("LD_PRELOAD", *preload);

  // What the environment already said (GPUSHARE_* and HAMi's variables) is checked as well, by the
  // library's own reader: a bad value is an error here, not refused allocations later.
  const LoadedSettings effective = load_settings([](const char* name) { return std::getenv(name); });
  if (!effective.errors.empty()) {
    for (const auto& error : effective.errors) fmt::print(stderr, "gpushare run: {}\n", error);
    return kExitBadInput;
  }
  // A state that cannot be opened (a folder, a device, a missing folder) would refuse every
  // allocation of CMD: refuse it here, before anything runs, opened as the library will open it.
  // Closed again before the exec.
  const bool configured = !effective.settings.state_path.empty();
  if (auto state = SharedState::open(configured ? effective.settings.state_path : default_state_path(),
                                     SharedState::Mode::kCreateIfMissing,
                                     configured ? SharedState::Origin::kConfigured : SharedState::Origin::kDefault);
      !state) {
    fmt::print(stderr, "gpushare run: {}\n", state.error().message);
    return kExitBadInput;
  }

  std::vector<char*> argv;
  for (auto& arg : options.command) argv.push_back(arg.data());
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  fmt::print(stderr, "gpushare run: cannot run '{}': {}\n", options.command.front(), std::strerror(errno));
  return kExitCannotExec;
}

}  // namespace gpushare::tools
