// `gpushare node-install --host-dir DIR`: installs the prefix this `gpushare` runs from into a
// node's host folder (node_install.hpp). Run by the node DaemonSet's init container.
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "commands.hpp"
#include "node_install.hpp"

namespace gpushare::tools {
namespace {

namespace fs = std::filesystem;

// What a pod needs, relative to the prefix of the running `gpushare` (bin/gpushare's grandparent):
// the command itself, the preload library and the NVML shadow folder. nullopt after saying why.
std::optional<ReleaseSource> running_prefix() {
  std::error_code error;
  const fs::path self = fs::read_symlink("/proc/self/exe", error);
  if (error) {
    fmt::print(stderr, "gpushare node-install: cannot find this program (/proc/self/exe): {}\n", error.message());
    return std::nullopt;
  }
  const fs::path bindir = self.parent_path();
  ReleaseSource source{bindir.parent_path(), {}};
  for (const fs::path& file : {self, (bindir / GPUSHARE_PRELOAD_FROM_BINDIR).lexically_normal(),
                               (bindir / GPUSHARE_NVML_DIR_FROM_BINDIR).lexically_normal()}) {
    const fs::path relative = file.lexically_relative(source.prefix);
    if (relative.empty() || *relative.begin() == "..") {
      fmt::print(stderr, "gpushare node-install: {} is outside the prefix {}\n", file.string(),
                 source.prefix.string());
      return std::nullopt;
    }
    if (!fs::exists(file, error)) {
      fmt::print(stderr,
                 "gpushare node-install: {} is missing: run the installed gpushare (e.g. "
                 "/opt/gpushare/bin/gpushare), not one from a build tree\n",
                 file.string());
      return std::nullopt;
    }
    source.entries.push_back(relative);
  }
  return source;
}

}  // namespace

int node_install_command(const NodeInstallOptions& options) {
  if (options.host_dir.empty() || !fs::path(options.host_dir).is_absolute()) {
    fmt::print(stderr, "gpushare node-install: --host-dir must be an absolute path, not '{}'\n", options.host_dir);
    return kExitBadInput;
  }
  const auto source = running_prefix();
  if (!source) return kExitFailure;
  auto outcome = install_release(*source, options.host_dir, GPUSHARE_VERSION);
  if (!outcome) {
    fmt::print(stderr, "gpushare node-install: {}\n", outcome.error().message);
    return kExitFailure;
  }
  const fs::path host_dir(options.host_dir);
  fmt::print("{} release {} ({}); {} -> releases/{}\n", outcome->kept_existing ? "kept" : "installed",
             GPUSHARE_VERSION, outcome->release.string(), (host_dir / "current").string(), GPUSHARE_VERSION);
  for (const std::string& version : outcome->removed) fmt::print("removed release {}\n", version);
  fmt::print("pods: LD_PRELOAD={}\n",
             (host_dir / "current" / source->entries[1]).string());
  return std::fflush(stdout) == 0 ? 0 : kExitFailure;
}

}  // namespace gpushare::tools
