// `gpushare exporter ARGS`: execs the exporter program installed beside the preload library. It
// is a separate binary because it links the HTTP library, which `gpushare` itself (carried into
// containers and onto bare GPU hosts) should not depend on.
#include <algorithm>

#include "commands.hpp"

namespace gpushare::tools {
namespace {

// The exporter's --state as given (--state PATH or --state=PATH), nullopt when absent.
std::optional<std::string> state_argument(const std::vector<std::string>& args) {
  std::optional<std::string> state;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--state" && i + 1 < args.size()) {
      state = args[++i];
    } else if (args[i].starts_with("--state=")) {
      state = args[i].substr(std::string_view("--state=").size());
    }
  }
  return state;
}

}  // namespace

int exporter_command(const std::vector<std::string>& args) {
  // An empty --state or GPUSHARE_STATE is refused here, as by the other commands (not when only
  // asking for help).
  const bool asks_help = std::ranges::any_of(
      args, [](const std::string& arg) { return arg == "-h" || arg == "--help" || arg == "--version"; });
  if (!asks_help && !resolve_state_path("exporter", state_argument(args))) return kExitBadInput;
  return exec_companion("exporter", "gpushare-exporter", GPUSHARE_EXPORTER_FROM_BINDIR, GPUSHARE_EXPORTER_BUILD_PATH,
                        args);
}

}  // namespace gpushare::tools
