// `gpushare agent ARGS`: execs the node agent installed beside the preload library. It is a
// program of its own: it runs as a long-lived service (by root or a dedicated user), and its
// arguments, --help included, are its own, except `gpushare agent reload`, which asks the running
// agent to re-read its policy file (root and the admin group only).
#include <fmt/format.h>

#include "agent_admin.hpp"
#include "commands.hpp"

namespace gpushare::tools {

int agent_command(const std::vector<std::string>& args) {
  if (!args.empty() && args.front() == "reload") {
    if (args.size() > 1) {
      fmt::print(stderr, "gpushare agent reload: takes no arguments (the socket: GPUSHARE_AGENT, else {})\n",
                 kAgentSocketPath);
      return kExitBadInput;
    }
    const auto socket = agent_socket_path();
    if (!socket) {
      fmt::print(stderr, "gpushare agent reload: no agent socket (set GPUSHARE_AGENT; {} does not exist)\n",
                 kAgentSocketPath);
      return kExitFailure;
    }
    return send_admin_request("agent reload", *socket, agent::PolicyReload{});
  }
  return exec_companion("agent", "gpushare-agent", GPUSHARE_AGENT_FROM_BINDIR, GPUSHARE_AGENT_BUILD_PATH, args);
}

}  // namespace gpushare::tools
