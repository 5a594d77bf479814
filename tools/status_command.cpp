// `gpushare status [--json]`: one report of every GPU, its tenants and their processes.
#include <unistd.h>

#include <fmt/format.h>

#include "commands.hpp"
#include "core/compute_slot_release.hpp"
#include "core/registry.hpp"
#include "core/report.hpp"
#include "core/report_json.hpp"
#include "core/size.hpp"
#include "views.hpp"

namespace gpushare::tools {

int status_command(const StatusOptions& options) {
  const auto path = resolve_state_path("status", options.state);
  if (!path) return kExitBadInput;
  // A state this user may not write (a node agent's) is read only: the agent keeps it current.
  const bool writable = ::access(path->path.c_str(), W_OK) == 0;
  auto state = open_existing(*path, writable ? SharedState::Mode::kExistingOnly : SharedState::Mode::kReadOnly);
  if (!state) {
    fmt::print(stderr, "gpushare status: {}\n", state.error().message);
    return kExitFailure;
  }
  // Bytes of processes that died without leaving go back to their tenants before the look, so the
  // figures are what the next allocation will see.
  install_compute_slot_release();
  if (writable) reclaim_dead_processes(**state);
  const Report report = build_report(**state);
  fmt::print("{}", options.json ? report_to_json(report) : render_status(report));
  return 0;
}

}  // namespace gpushare::tools
