// `gpushare status [--json]`: one report of every GPU, its tenants and their processes.
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
  auto state = open_existing(*path);
  if (!state) {
    fmt::print(stderr, "gpushare status: {}\n", state.error().message);
    return kExitFailure;
  }
  // Bytes of processes that died without leaving go back to their tenants before the look, so the
  // figures are what the next allocation will see.
  install_compute_slot_release();
  reclaim_dead_processes(**state);
  const Report report = build_report(**state);
  fmt::print("{}", options.json ? report_to_json(report) : render_status(report));
  return 0;
}

}  // namespace gpushare::tools
