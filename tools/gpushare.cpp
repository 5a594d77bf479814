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

#include "gpushare/compute.hpp"
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
  std::optional<std::string> share;
  std::optional<std::string> limit;
  std::optional<std::string> priority;
  std::optional<std::string> slice_ms;
  std::vector<std::string> command;
};

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

struct QuotaOptions {
  std::string tenant;
  std::string state;
  std::optional<std::string> memory;
  std::optional<std::string> share;
  std::optional<std::string> limit;
  std::optional<std::string> priority;
};

int quota_set_command(const QuotaOptions& options) {
  if (!options.memory && !options.share && !options.limit && !options.priority) {
    fmt::print(stderr, "gpushare quota set: nothing to set (give --memory, --share, --limit or --priority)\n");
    return kExitBadInput;
  }
  std::optional<std::uint64_t> bytes;
  if (options.memory) {
    bytes = size_option("--memory", *options.memory, true);
    if (!bytes) return kExitBadInput;
  }
  ComputePolicyChange change;
  auto percent = [&](const std::optional<std::string>& text, const char* flag, std::optional<std::uint32_t>& out,
                     bool zero_means_none) {
    if (!text) return true;
    if (zero_means_none && (*text == "0" || *text == "none" || *text == "100")) {
      out = 0;
      return true;
    }
    auto parsed = parse_percent(*text);
    if (!parsed) {
      fmt::print(stderr, "gpushare quota set: {}: {}\n", flag, parsed.error().message);
      return false;
    }
    out = parsed.value();
    return true;
  };
  if (!percent(options.share, "--share", change.share_pct, false) ||
      !percent(options.limit, "--limit", change.limit_pct, true)) {
    return kExitBadInput;
  }
  if (options.priority) {
    auto parsed = parse_priority(*options.priority);
    if (!parsed) {
      fmt::print(stderr, "gpushare quota set: --priority: {}\n", parsed.error().message);
      return kExitBadInput;
    }
    change.priority = parsed.value();
  }
  const std::string& tenant = options.tenant;
  auto state = open_existing(options.state);
  if (!state) {
    fmt::print(stderr, "gpushare quota set: {}\n", state.error().message);
    return kExitFailure;
  }
  reclaim_dead_processes(**state);
  if (bytes) {
    if (auto set = set_tenant_memory_limit(**state, tenant, *bytes); !set) {
      fmt::print(stderr, "gpushare quota set: {}\n", set.error().message);
      return kExitFailure;
    }
    fmt::print("tenant '{}': memory limit {} on every GPU it uses\n", tenant, format_size(*bytes));
  }
  if (change.share_pct || change.limit_pct || change.priority) {
    if (auto set = set_tenant_compute_policy(**state, tenant, change); !set) {
      fmt::print(stderr, "gpushare quota set: {}\n", set.error().message);
      return kExitFailure;
    }
    if (change.share_pct) fmt::print("tenant '{}': share {}%\n", tenant, *change.share_pct);
    if (change.limit_pct) {
      fmt::print("tenant '{}': limit {}\n", tenant, *change.limit_pct == 0 ? std::string("none") : fmt::format("{}%", *change.limit_pct));
    }
    if (change.priority) fmt::print("tenant '{}': priority {}\n", tenant, priority_name(*change.priority));
  }
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
    fmt::print("tenant {}  ({} live process{})  share {}  limit {}  priority {}\n", tenant.name, alive,
               alive == 1 ? "" : "es",
               tenant.compute.share_pct == 0 ? std::string("-") : fmt::format("{}%", tenant.compute.share_pct),
               tenant.compute.limit_pct == 0 ? std::string("-") : fmt::format("{}%", tenant.compute.limit_pct),
               priority_name(tenant.compute.priority));
    for (const auto& gpu : tenant.gpus) {
      fmt::print("  {}  used {:>12}  limit {:>12}  peak {:>12}  refused {}\n", format_gpu_uuid(gpu.uuid),
                 format_size(gpu.used_bytes), format_size(gpu.limit_bytes), format_size(gpu.peak_bytes),
                 gpu.oom_refusals);
      fmt::print("  {:<40}  gpu time {:.3f} s  launches {}  waited {:.3f} s\n", "", static_cast<double>(gpu.gpu_ns) / 1e9,
                 gpu.launches, static_cast<double>(gpu.wait_ns) / 1e9);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gpushare: share one GPU between programs: hard memory quotas, exact shares of GPU time.\n"};
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
  run->add_option("--share", run_options.share, "Weight of GPU time while others want the GPU, percent (1-100)");
  run->add_option("--limit", run_options.limit, "Hard cap on GPU time, percent of wall time (1-100), even when idle");
  run->add_option("--priority", run_options.priority, "high, normal (default) or low");
  run->add_option("--slice-ms", run_options.slice_ms, "Time-slice length in milliseconds (default 10)");
  // Everything from the first non-option on (or after --) is CMD and its own arguments, untouched.
  run->prefix_command();

  run->footer("Usage: gpushare run [OPTIONS] [--] CMD [ARGS...]\nExample: gpushare run --memory 8GiB --share 30 -- python train.py\nExit status: CMD's; 2 for bad options.");

  auto* quota = app.add_subcommand("quota", "Change a live tenant");
  quota->require_subcommand(1);
  QuotaOptions quota_options;
  auto* quota_set = quota->add_subcommand(
      "set", "Change a live tenant: memory at its next allocation, compute within one slice");
  quota_set->add_option("tenant", quota_options.tenant, "Tenant name (see gpushare status)")->required();
  quota_set->add_option("--memory", quota_options.memory, "New memory quota on every GPU (or 'unlimited')");
  quota_set->add_option("--share", quota_options.share, "New share of GPU time, percent (1-100)");
  quota_set->add_option("--limit", quota_options.limit, "New hard cap, percent (1-100; 0 or none removes it)");
  quota_set->add_option("--priority", quota_options.priority, "high, normal or low");
  quota_set->add_option("--state", quota_options.state, "Shared state file");

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
  if (*quota_set) return quota_set_command(quota_options);
  if (*status) return status_command(status_state);
  return kExitBadInput;
}
