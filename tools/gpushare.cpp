// The `gpushare` command: wraps programs into tenants and changes live tenants.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "gpushare/ledger.hpp"
#include "gpushare/settings.hpp"
#include "gpushare/shared_state.hpp"
#include "gpushare/size.hpp"

namespace fs = std::filesystem;
using namespace gpushare;

namespace {

constexpr int kExitBadInput = 2;
constexpr int kExitFailure = 1;
constexpr int kExitCannotExec = 127;

// Where libgpushare-preload.so is: next to an installed `gpushare` (bin/ -> lib/gpushare/), else
// in the build tree this binary came from. GPUSHARE_PRELOAD_LIBRARY overrides both.
std::optional<std::string> find_preload_library() {
  if (const char* path = std::getenv("GPUSHARE_PRELOAD_LIBRARY"); path && *path) return std::string(path);
  std::error_code error;
  const fs::path self = fs::read_symlink("/proc/self/exe", error);
  if (!error) {
    const fs::path installed = self.parent_path() / GPUSHARE_PRELOAD_FROM_BINDIR;
    if (fs::exists(installed, error)) return fs::weakly_canonical(installed, error).string();
  }
  if (fs::exists(GPUSHARE_PRELOAD_BUILD_PATH, error)) return std::string(GPUSHARE_PRELOAD_BUILD_PATH);
  return std::nullopt;
}

std::string generated_tenant_name(const std::string& command) {
  const auto now = static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  std::uint64_t mix = now ^ (static_cast<std::uint64_t>(::getpid()) << 40);
  mix = (mix ^ (mix >> 31)) * 0x9e3779b97f4a7c15ull;
  std::string base = fs::path(command).filename().string();
  if (base.size() > 48) base.resize(48);
  return normalize_tenant_name(fmt::format("{}-{:06x}", base, static_cast<std::uint32_t>(mix >> 40)));
}

// Limits travel to the preload library as exact byte counts.
std::string limit_text(std::uint64_t bytes) { return bytes == kUnlimited ? "unlimited" : std::to_string(bytes); }

void set_env(const std::string& name, const std::string& value) { ::setenv(name.c_str(), value.c_str(), 1); }

std::string state_path_or_default(const std::string& path) {
  if (!path.empty()) return path;
  if (const char* env = std::getenv("GPUSHARE_STATE"); env && *env) return env;
  return default_state_path();
}

// Parses a size option, printing a clear error for bad input.
std::optional<std::uint64_t> size_option(const std::string& flag, const std::string& text, bool allow_unlimited) {
  auto parsed = allow_unlimited ? parse_limit(text) : parse_size(text);
  if (!parsed) {
    fmt::print(stderr, "gpushare: {}: {}\n", flag, parsed.error().message);
    return std::nullopt;
  }
  return parsed.value();
}

struct RunOptions {
  std::optional<std::string> memory;
  std::vector<std::string> device_memory;
  std::optional<std::string> tenant;
  std::string state;
  std::optional<std::string> context_memory;
  std::optional<std::string> log;
  std::vector<std::string> command;
};

int run_command(RunOptions& options) {
  if (options.command.empty()) {
    fmt::print(stderr, "gpushare run: no command given (usage: gpushare run [OPTIONS] -- CMD [ARGS...])\n");
    return kExitBadInput;
  }
  // Everything is validated before anything is exported, so a bad value never reaches CMD.
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
      if (!digits.empty() && digits.size() <= 2 && digits.find_first_not_of("0123456789") == std::string::npos) {
        index = std::stoi(digits);
      }
    }
    if (index < 0 || index >= kMaxDeviceOrdinals) {
      fmt::print(stderr, "gpushare run: --device-memory: expected INDEX=SIZE with INDEX in 0..{}, got '{}'\n",
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
  if (options.tenant) {
    if (auto valid = validate_tenant_name(*options.tenant); !valid) {
      fmt::print(stderr, "gpushare run: --tenant: {}\n", valid.error().message);
      return kExitBadInput;
    }
  }
  // One run is one tenant, shared by every process CMD starts (torchrun workers included).
  set_env("GPUSHARE_TENANT", options.tenant ? *options.tenant : generated_tenant_name(options.command.front()));
  if (!options.state.empty()) set_env("GPUSHARE_STATE", fs::absolute(options.state).string());

  const auto preload = find_preload_library();
  if (!preload) {
    fmt::print(stderr,
               "gpushare run: cannot find libgpushare-preload.so (expected next to this program under "
               "{}); set GPUSHARE_PRELOAD_LIBRARY\n",
               GPUSHARE_PRELOAD_FROM_BINDIR);
    return kExitFailure;
  }
  std::string preload_list = *preload;
  if (const char* existing = std::getenv("LD_PRELOAD"); existing && *existing) {
    if (std::string(existing).find(*preload) != std::string::npos) {
      preload_list = existing;
    } else {
      preload_list += ":" + std::string(existing);
    }
  }
  set_env("LD_PRELOAD", preload_list);

  std::vector<char*> argv;
  for (auto& arg : options.command) argv.push_back(arg.data());
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  fmt::print(stderr, "gpushare run: cannot run '{}': {}\n", options.command.front(), std::strerror(errno));
  return kExitCannotExec;
}

Result<std::unique_ptr<SharedState>> open_existing(const std::string& path_option) {
  const std::string path = state_path_or_default(path_option);
  if (!fs::exists(path)) {
    return Error{fmt::format("no shared state at {} (no tenant has run with it yet; --state or GPUSHARE_STATE "
                             "chooses another)",
                             path)};
  }
  return SharedState::open(path, SharedState::Mode::kExistingOnly);
}

int quota_set_command(const std::string& state_option, const std::string& tenant, const std::string& memory) {
  auto bytes = size_option("--memory", memory, true);
  if (!bytes) return kExitBadInput;
  auto state = open_existing(state_option);
  if (!state) {
    fmt::print(stderr, "gpushare quota set: {}\n", state.error().message);
    return kExitFailure;
  }
  reclaim_dead_processes(**state);
  if (auto set = set_tenant_memory_limit(**state, tenant, *bytes); !set) {
    fmt::print(stderr, "gpushare quota set: {}\n", set.error().message);
    return kExitFailure;
  }
  fmt::print("tenant '{}': memory limit {} on every GPU it uses\n", tenant, format_size(*bytes));
  return 0;
}

int status_command(const std::string& state_option) {
  auto state = open_existing(state_option);
  if (!state) {
    fmt::print(stderr, "gpushare status: {}\n", state.error().message);
    return kExitFailure;
  }
  reclaim_dead_processes(**state);
  const auto tenants = snapshot_tenants(**state);
  fmt::print("state: {}\n", (*state)->path());
  if (tenants.empty()) fmt::print("no tenants\n");
  for (const auto& tenant : tenants) {
    std::size_t alive = 0;
    for (const auto& process : tenant.processes) alive += process.alive ? 1 : 0;
    fmt::print("tenant {}  ({} live process{})\n", tenant.name, alive, alive == 1 ? "" : "es");
    for (const auto& gpu : tenant.gpus) {
      fmt::print("  {}  used {:>12}  limit {:>12}  peak {:>12}  refused {}\n", format_gpu_uuid(gpu.uuid),
                 format_size(gpu.used_bytes), format_size(gpu.limit_bytes), format_size(gpu.peak_bytes),
                 gpu.oom_refusals);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gpushare: share one GPU between programs with hard memory quotas.\n"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(GPUSHARE_VERSION));

  RunOptions run_options;
  auto* run = app.add_subcommand("run", "Run CMD as a tenant (every process it starts shares one quota)");
  run->add_option("--memory", run_options.memory, "Memory quota on each GPU: 8GiB, 512MiB, 1073741824, 8g, unlimited");
  run->add_option("--device-memory", run_options.device_memory,
                  "Quota on one device, INDEX=SIZE (index as the program sees it); repeatable")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->expected(1);
  run->add_option("--tenant", run_options.tenant,
                  "Tenant name; processes with the same name share one quota (default: a new tenant per run)");
  run->add_option("--state", run_options.state, "Shared state file (default: $GPUSHARE_STATE, else " +
                                                    default_state_path() + ")");
  run->add_option("--context-memory", run_options.context_memory,
                  "Charge this much per process and GPU for the CUDA context (default 0)");
  run->add_option("--log", run_options.log, "error, warn (default), info or debug");
  // Everything from the first non-option on (or after --) is CMD and its own arguments, untouched.
  run->prefix_command();

  run->footer("Usage: gpushare run [OPTIONS] [--] CMD [ARGS...]\nExample: gpushare run --memory 8GiB -- python train.py\nExit status: CMD's; 2 for bad options.");

  auto* quota = app.add_subcommand("quota", "Change a live tenant");
  quota->require_subcommand(1);
  std::string quota_tenant, quota_memory, quota_state;
  auto* quota_set = quota->add_subcommand("set", "Set a tenant's limits; effective for its next allocation");
  quota_set->add_option("tenant", quota_tenant, "Tenant name (see gpushare status)")->required();
  quota_set->add_option("--memory", quota_memory, "New memory quota on every GPU (or 'unlimited')")->required();
  quota_set->add_option("--state", quota_state, "Shared state file");

  std::string status_state;
  auto* status = app.add_subcommand("status", "Show tenants, their quotas and use");
  status->add_option("--state", status_state, "Shared state file");

  // `gpushare run [OPTIONS] -- CMD ARGS`: everything after the first "--" is CMD, kept verbatim.
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args.front() == "run") {
    const auto separator = std::find(args.begin(), args.end(), "--");
    if (separator != args.end()) {
      run_options.command.assign(separator + 1, args.end());
      args.erase(separator, args.end());
    }
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes the vector form in reverse order
  try {
    app.parse(args);
  } catch (const CLI::Success& success) {
    return app.exit(success);
  } catch (const CLI::ParseError& error) {
    app.exit(error);
    return kExitBadInput;
  }
  if (*run) {
    for (const auto& extra : run->remaining()) run_options.command.push_back(extra);
    return run_command(run_options);
  }
  if (*quota_set) return quota_set_command(quota_state, quota_tenant, quota_memory);
  if (*status) return status_command(status_state);
  return kExitBadInput;
}
