// `gpushare exporter ARGS`: execs the exporter program installed beside the preload library. It
// is a separate binary because it links the HTTP library, which `gpushare` itself (carried into
// containers and onto bare GPU hosts) should not depend on.
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "commands.hpp"

namespace gpushare::tools {

int exporter_command(const std::vector<std::string>& args) {
  const auto program = find_installed(GPUSHARE_EXPORTER_FROM_BINDIR, GPUSHARE_EXPORTER_BUILD_PATH);
  if (!program) {
    fmt::print(stderr, "gpushare exporter: cannot find gpushare-exporter (expected under {})\n",
               GPUSHARE_EXPORTER_FROM_BINDIR);
    return kExitFailure;
  }
  std::vector<std::string> owned{*program};
  owned.insert(owned.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& arg : owned) argv.push_back(arg.data());
  argv.push_back(nullptr);
  ::execv(argv[0], argv.data());
  fmt::print(stderr, "gpushare exporter: cannot run {}: {}\n", *program, std::strerror(errno));
  return kExitCannotExec;
}

}  // namespace gpushare::tools
