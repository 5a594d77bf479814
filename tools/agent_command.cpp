// `gpushare agent ARGS`: execs the node agent installed beside the preload library. It is a
// program of its own: it runs as a long-lived service (by root or a dedicated user), and its
// arguments, --help included, are its own.
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "commands.hpp"

namespace gpushare::tools {

int agent_command(const std::vector<std::string>& args) {
  const auto program = find_installed(GPUSHARE_AGENT_FROM_BINDIR, GPUSHARE_AGENT_BUILD_PATH);
  if (!program) {
    fmt::print(stderr, "gpushare agent: cannot find gpushare-agent (expected under {})\n", GPUSHARE_AGENT_FROM_BINDIR);
    return kExitFailure;
  }
  std::vector<std::string> owned{*program};
  owned.insert(owned.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& arg : owned) argv.push_back(arg.data());
  argv.push_back(nullptr);
  ::execv(argv[0], argv.data());
  fmt::print(stderr, "gpushare agent: cannot run {}: {}\n", *program, std::strerror(errno));
  return kExitCannotExec;
}

}  // namespace gpushare::tools
