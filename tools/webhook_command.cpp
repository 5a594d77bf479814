// `gpushare webhook ARGS`: execs the Kubernetes admission webhook installed beside the preload
// library. It is a program of its own because it links the HTTP library, OpenSSL and the JSON
// library, which `gpushare` itself (carried into containers and onto bare GPU hosts) should not
// depend on. Its arguments, --help included, are its own.
#include "commands.hpp"

namespace gpushare::tools {

int webhook_command(const std::vector<std::string>& args) {
  return exec_companion("webhook", "gpushare-webhook", GPUSHARE_WEBHOOK_FROM_BINDIR, GPUSHARE_WEBHOOK_BUILD_PATH, args);
}

}  // namespace gpushare::tools
