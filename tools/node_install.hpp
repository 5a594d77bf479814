// `gpushare node-install`: copies the files a pod needs (bin/gpushare, the preload library, the NVML
// shadow folder) from an installed prefix into a host folder shared with the node's pods:
//
//   HOST/releases/<version>/   an install prefix (same relative paths as the source's)
//   HOST/current               relative symlink to releases/<version>
//
// A release is written into a hidden temporary folder, fsync'd, then renamed into place, so a
// release folder is complete or absent. `current` is replaced by rename(2) of a new symlink over it:
// a reader sees the old target or the new one, never no `current`. Releases older than the newest
// two, other than the current one, are removed; a process still running from one keeps its mapped
// files. One install at a time per host folder (an flock on HOST/.lock).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "core/result.hpp"

namespace gpushare::tools {

struct ReleaseSource {
  std::filesystem::path prefix;                   // the installed prefix, e.g. /opt/gpushare
  std::vector<std::filesystem::path> entries;     // relative to prefix: files or folders (copied whole)
};

struct ReleaseOutcome {
  std::filesystem::path release;         // HOST/releases/<version>
  bool kept_existing = false;            // an identical release was there already
  std::vector<std::string> removed;      // versions of the releases removed
};

// Installs `source` as release `version` under `host_dir` (created when missing) and points
// `current` at it. On failure nothing of the new release is left and `current` is unchanged.
Result<ReleaseOutcome> install_release(const ReleaseSource& source, const std::filesystem::path& host_dir,
                                       const std::string& version);

// The release names under host_dir/releases, newest first (numeric dotted order, e.g. 0.10.0
// before 0.9.1; names that are not versions last, by name).
std::vector<std::string> list_releases(const std::filesystem::path& host_dir);

// True when `a` sorts before `b` as versions (see list_releases).
bool version_less(const std::string& a, const std::string& b);

}  // namespace gpushare::tools
