// `gpushare version [--json]`: the release, the state ABI and the agent protocol of this build.
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "core/state_layout.hpp"
#include "protocol.hpp"
#include "version_line.hpp"

namespace gpushare::tools {

int version_command(const VersionOptions& options) {
  if (options.json) {
    const nlohmann::json version{{"version", GPUSHARE_VERSION},
                                 {"state_abi", layout::kStateAbiVersion},
                                 {"agent_protocol", agent::kProtocolVersion}};
    fmt::print("{}\n", version.dump());
  } else {
    fmt::print("{}\n", agent::version_line(GPUSHARE_VERSION));
  }
  return std::fflush(stdout) == 0 ? 0 : kExitFailure;
}

}  // namespace gpushare::tools
