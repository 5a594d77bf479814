// `gpushare agent ARGS`: execs the node agent installed beside the preload library. It is a
// program of its own: it runs as a long-lived service (by root or a dedicated user), and its
// arguments, --help included, are its own.
#include "commands.hpp"

namespace gpushare::tools {

int agent_command(const std::vector<std::string>& args) {
  return exec_companion("agent", "gpushare-agent", GPUSHARE_AGENT_FROM_BINDIR, GPUSHARE_AGENT_BUILD_PATH, args);
}

}  // namespace gpushare::tools
