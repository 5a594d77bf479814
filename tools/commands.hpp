// The `gpushare` subcommands and what they share. Each command lives in its own file; main.cpp
// only wires them to the command line.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "core/shared_state.hpp"

namespace gpushare::tools {

inline constexpr int kExitBadInput = 2;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitCannotExec = 127;

// The state file `gpushare COMMAND` works on: --state, else $GPUSHARE_STATE, else the default.
// nullopt, after printing why, when --state or GPUSHARE_STATE is empty (never the default by accident).
std::optional<std::string> resolve_state_path(std::string_view command, const std::optional<std::string>& option);
// Opens an existing state file; a clear error when there is none yet. Watchers (top) open it
// read-only: they need only read permission and can change nothing.
Result<std::unique_ptr<SharedState>> open_existing(const std::string& path,
                                                   SharedState::Mode mode = SharedState::Mode::kExistingOnly);
// A file installed beside the `gpushare` binary (relative to bin/), else the build-tree path.
std::optional<std::string> find_installed(const char* from_bindir, const char* build_path);
// Parses a size option, printing a clear error for bad input.
std::optional<std::uint64_t> size_option(const std::string& flag, const std::string& text, bool allow_unlimited);

struct RunOptions {
  std::optional<std::string> memory;
  std::vector<std::string> device_memory;
  std::optional<std::string> tenant;
  std::optional<std::string> state;
  std::optional<std::string> context_memory;
  std::optional<std::string> log;
  std::optional<std::string> share;
  std::optional<std::string> limit;
  std::optional<std::string> priority;
  std::optional<std::string> slice_ms;
  bool nvml = false;
  std::vector<std::string> command;
};
int run_command(RunOptions& options);

struct QuotaOptions {
  std::string tenant;
  std::optional<std::string> state;
  std::optional<std::string> memory;
  std::optional<std::string> share;
  std::optional<std::string> limit;
  std::optional<std::string> priority;
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

// `gpushare exporter ARGS`: runs the exporter program installed beside this one.
int exporter_command(const std::vector<std::string>& args);

}  // namespace gpushare::tools
