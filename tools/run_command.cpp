// `gpushare run`: validates every option, exports it for the preload library, and execs CMD with
// libgpushare-preload.so in LD_PRELOAD (or, as PID 1 or with --init, starts it as init_process.cpp
// does). Nothing is exported unless everything is valid.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "commands.hpp"
#include "core/compute_policy.hpp"
#include "core/settings.hpp"
#include "core/size.hpp"
#include "core/tenant_name.hpp"
#include "init_process.hpp"

namespace fs = std::filesystem;

namespace gpushare::tools {
namespace {

// What CMD's environment gets for a flag: sizes as exact byte counts (scripts read them back, as
// examples/slurm does), the state as an absolute path (CMD may change its working folder), the rest
// as given; the trace folder too, absolute. `requested` holds the flags' parsed values.
std::string exported_value(const OptionAssignment& assignment, const Settings& requested) {
  auto limit_text = [](std::uint64_t bytes) { return bytes == kUnlimited ? "unlimited" : std::to_string(bytes); };
  auto assigns = [&](OptionId id) { return assignment.variable == option_spec(id).env; };
  if (assigns(OptionId::kState) || assigns(OptionId::kTrace)) return fs::absolute(assignment.value).string();
  if (assigns(OptionId::kContextMemory)) return std::to_string(requested.context_memory_bytes);
  if (assigns(OptionId::kMemoryLimit)) return limit_text(requested.memory_limit_bytes);
  if (assignment.device >= 0) return limit_text(requested.memory_limit_for(assignment.device));
  return assignment.value;
}

void set_env(const std::string& name, const std::string& value) { ::setenv(name.c_str(), value.c_str(), 1); }

// Puts `entry` first in the colon-separated list `variable` (once).
void prepend_path_list(const char* variable, const std::string& entry) {
  const char* existing = std::getenv(variable);
  if (existing == nullptr || *existing == '\0') return set_env(variable, entry);
  const std::string list = existing;
  if (list == entry || list.starts_with(entry + ":")) return;
  set_env(variable, entry + ":" + list);
}

}  // namespace

namespace {
int exec_command(std::vector<std::string>& command) {
  std::vector<char*> argv;
  for (auto& arg : command) argv.push_back(arg.data());
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  fmt::print(stderr, "gpushare run: cannot run '{}': {}\n", command.front(), std::strerror(errno));
  return kExitCannotExec;
}

// As PID 1 (a container's first process) or with --init, run stays as CMD's init; otherwise it
// becomes CMD.
int start_command(RunOptions& options) {
  if (options.init || ::getpid() == 1) return run_as_init([&] { return exec_command(options.command); });
  return exec_command(options.command);
}
}  // namespace

int run_command(RunOptions& options) {
  if (options.command.empty()) {
    fmt::print(stderr, "gpushare run: no command given (usage: gpushare run [OPTIONS] -- CMD [ARGS...])\n");
    return kExitBadInput;
  }
  // Everything is validated before anything is exported, so a bad value never reaches CMD.
  if (!resolve_state_path("run", options.flags.value("--state"))) return kExitBadInput;
  Settings requested;
  const auto assignments = parse_table_flags("run", OptionWay::kRunFlag, options.flags, requested);
  if (!assignments) return kExitBadInput;

  // The trace folder is made here, so that a folder that cannot be is an error now, not a process
  // running untraced.
  if (!requested.trace_dir.empty()) {
    std::error_code error;
    fs::create_directories(requested.trace_dir, error);
    if (error || !fs::is_directory(requested.trace_dir) || ::access(requested.trace_dir.c_str(), W_OK) != 0) {
      fmt::print(stderr, "gpushare run: --trace: cannot use '{}' as the trace folder: {}\n", requested.trace_dir,
                 error ? error.message() : std::string(std::strerror(errno)));
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
  const OptionSpec& tenant_option = option_spec(OptionId::kTenant);
  auto environment_names_tenant = [&] {
    for (std::string_view variable : {tenant_option.env, tenant_option.hami_alias}) {
      if (const char* value = std::getenv(std::string(variable).c_str()); value != nullptr && *value != '\0') {
        return true;
      }
    }
    return false;
  };
  bool tenant_given = false;
  for (const OptionAssignment& assignment : *assignments) {
    tenant_given = tenant_given || assignment.variable == tenant_option.env;
    set_env(assignment.variable, exported_value(assignment, requested));
  }
  if (!tenant_given && !environment_names_tenant()) {
    set_env(std::string(tenant_option.env), generate_tenant_name(options.command.front()));
  }
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
  // Where a node agent runs, CMD's processes join through it (its policy decides; the options above
  // may only lower their limits): the state is the agent's, not to be opened here.
  if (agent_socket_path()) {
    if (!options.flags.value("--state")) return start_command(options);
    set_env("GPUSHARE_AGENT", "");  // the file asked for, not the agent: the daemonless mode
  }
  // A state that cannot be opened (a folder, a device, a missing folder) would refuse every
  // allocation of CMD: refuse it here, before anything runs, opened as the library will open it.
  // Closed again before the exec.
  const StatePath state_path = resolved_state_path(effective.settings);
  if (auto state = SharedState::open(state_path.path, SharedState::Mode::kCreateIfMissing, state_path.origin());
      !state) {
    fmt::print(stderr, "gpushare run: {}\n", state.error().message);
    return kExitBadInput;
  }
  return start_command(options);
}

}  // namespace gpushare::tools
