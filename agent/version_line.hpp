// The one version line every gpushare program prints (`gpushare version`, `--version` of gpushare,
// gpushare-agent and gpushare-exporter): the release, the state ABI it reads and writes, and the
// agent protocol it speaks. Before 1.0 the release's minor version is the state ABI
// (CMakeLists.txt refuses to configure otherwise).
#pragma once

#include <string>
#include <string_view>

#include <fmt/format.h>

#include "core/state_layout.hpp"
#include "protocol.hpp"

namespace gpushare::agent {

// `release` is the project version the program was built as (GPUSHARE_VERSION).
inline std::string version_line(std::string_view release) {
  return fmt::format("gpushare {} (state ABI {}, agent protocol {})", release, layout::kStateAbiVersion,
                     kProtocolVersion);
}

}  // namespace gpushare::agent
