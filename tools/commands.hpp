// The `gpushare` subcommands and what they share. Each command lives in its own file; main.cpp
// only wires them to the command line.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "core/settings.hpp"
#include "core/shared_state.hpp"

namespace gpushare::tools {

inline constexpr int kExitBadInput = 2;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitCannotExec = 127;

// The state file `gpushare COMMAND` works on: --state, else $GPUSHARE_STATE, else the default
// (state_path_for_command). nullopt, after printing why, when --state or GPUSHARE_STATE is empty.
std::optional<StatePath> resolve_state_path(std::string_view command, const std::optional<std::string>& option);
// Opens an existing state file; a clear error when there is none yet. Watchers (top) open it
// read-only: they need only read permission and can change nothing.
Result<std::unique_ptr<SharedState>> open_existing(const StatePath& path,
                                                   SharedState::Mode mode = SharedState::Mode::kExistingOnly);
// A file installed beside the `gpushare` binary (relative to bin/), else the build-tree path.
std::optional<std::string> find_installed(const char* from_bindir, const char* build_path);
// `gpushare COMMAND ARGS` for a companion program (the exporter, the agent): execs it with ARGS,
// found as find_installed does. Returns only on failure, with the exit status, after saying why.
int exec_companion(std::string_view command, const char* program_name, const char* from_bindir,
                   const char* build_path, const std::vector<std::string>& args);

// The options-table flags a command was given, by flag ("--memory" -> "8GiB"). main.cpp makes one
// entry per flag of the table before parsing, so an entry without a value was not given.
struct TableFlags {
  std::map<std::string, std::optional<std::string>, std::less<>> once;
  std::map<std::string, std::vector<std::string>, std::less<>> repeatable;  // per-device flags

  std::optional<std::string> value(std::string_view flag) const;
};
// Every given flag parsed by the options table into `settings`, in table order; nullopt after
// printing "gpushare COMMAND: FLAG: why" for the first bad one. Otherwise the variables the flags
// stand for.
std::optional<std::vector<OptionAssignment>> parse_table_flags(std::string_view command, OptionWay way,
                                                               const TableFlags& flags, Settings& settings);

struct RunOptions {
  TableFlags flags;  // OptionWay::kRunFlag
  bool nvml = false;
  bool init = false;  // stay as CMD's init (as PID 1 always): init_process.hpp
  std::vector<std::string> command;
};
int run_command(RunOptions& options);

struct QuotaOptions {
  std::string tenant;
  TableFlags flags;  // OptionWay::kQuotaFlag
};
int quota_set_command(const QuotaOptions& options);

struct StatusOptions {
  std::optional<std::string> state;
  bool json = false;
};
int status_command(const StatusOptions& options);

struct TopOptions {
  std::optional<std::string> state;
  double interval_s = 1.0;
  int iterations = 0;  // 0: until interrupted
};
int top_command(const TopOptions& options);

struct VersionOptions {
  bool json = false;
};
// `gpushare version`: one line (agent/version_line.hpp), or a JSON object with --json.
int version_command(const VersionOptions& options);

// `gpushare exporter ARGS`: runs the exporter program installed beside this one.
int exporter_command(const std::vector<std::string>& args);

// `gpushare agent ARGS`: runs the node agent program installed beside this one.
int agent_command(const std::vector<std::string>& args);

// `gpushare webhook ARGS`: runs the Kubernetes admission webhook installed beside this one.
int webhook_command(const std::vector<std::string>& args);
struct NodeInstallOptions {
  std::string host_dir;  // e.g. /host/usr/local/gpushare (the node's /usr/local/gpushare)
};
// `gpushare node-install`: copies this installed gpushare into a node's host folder as a release
// and points `current` at it (node_install.hpp).
int node_install_command(const NodeInstallOptions& options);

struct TraceMergeOptions {
  std::string dir;
  std::string output;
};
// `gpushare trace merge DIR -o FILE`: the trace directory as one Chrome/Perfetto trace (docs/tracing.md).
int trace_merge_command(const TraceMergeOptions& options);

struct TraceSummaryOptions {
  std::string dir;
  bool json = false;
};
// `gpushare trace summary DIR [--json]`: busy time, shares, idle gaps and latencies per GPU and tenant.
int trace_summary_command(const TraceSummaryOptions& options);

}  // namespace gpushare::tools
