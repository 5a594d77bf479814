// Installing a release into the node's host folder (node_install.hpp).
#include "node_install.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string_view>

#include <fmt/format.h>

#include "core/unique_fd.hpp"

namespace gpushare::tools {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kPartialPrefix = ".partial-";
constexpr std::string_view kReplacedPrefix = ".replaced-";

Error system_error(std::string_view what, const fs::path& path) {
  return Error{fmt::format("{} {}: {}", what, path.string(), std::strerror(errno))};
}

Status fsync_path(const fs::path& path, int flags) {
  const UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC));
  if (fd.get() < 0) return system_error("cannot open", path);
  if (::fsync(fd.get()) != 0) return system_error("cannot fsync", path);
  return Ok{};
}

Status copy_file(const fs::path& from, const fs::path& to, mode_t mode) {
  const UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) return system_error("cannot read", from);
  const UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode & 0755));
  if (out.get() < 0) return system_error("cannot create", to);
  std::array<char, 1 << 16> buffer{};
  for (;;) {
    const ssize_t got = ::read(in.get(), buffer.data(), buffer.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return system_error("cannot read", from);
    if (got == 0) break;
    for (ssize_t written = 0; written < got;) {
      const ssize_t put = ::write(out.get(), buffer.data() + written, static_cast<size_t>(got - written));
      if (put < 0 && errno == EINTR) continue;
      if (put < 0) return system_error("cannot write", to);
      written += put;
    }
  }
  // The umask may have narrowed the mode given to open().
  if (::fchmod(out.get(), mode & 0755) != 0) return system_error("cannot chmod", to);
  if (::fsync(out.get()) != 0) return system_error("cannot fsync", to);
  return Ok{};
}

// The names in a folder, sorted; an Error when it cannot be listed.
Result<std::vector<std::string>> folder_entries(const fs::path& folder) {
  DIR* listing = ::opendir(folder.c_str());
  if (listing == nullptr) return system_error("cannot list", folder);
  std::vector<std::string> names;
  while (const dirent* entry = ::readdir(listing)) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  ::closedir(listing);
  std::sort(names.begin(), names.end());
  return names;
}

// Copies a file, a symlink (as a link) or a folder (recursively) to `to`, which must not exist;
// every file and folder written is fsync'd.
Status copy_entry(const fs::path& from, const fs::path& to) {
  struct stat info {};
  if (::lstat(from.c_str(), &info) != 0) return system_error("cannot read", from);
  if (S_ISLNK(info.st_mode)) {
    std::error_code error;
    const fs::path target = fs::read_symlink(from, error);
    if (error) return Error{fmt::format("cannot read the link {}: {}", from.string(), error.message())};
    if (::symlink(target.c_str(), to.c_str()) != 0) return system_error("cannot create", to);
    return Ok{};
  }
  if (S_ISREG(info.st_mode)) return copy_file(from, to, info.st_mode);
  if (!S_ISDIR(info.st_mode)) return Error{fmt::format("{} is neither a file, a folder nor a link", from.string())};
  auto names = folder_entries(from);
  if (!names) return names.error();
  if (::mkdir(to.c_str(), 0755) != 0) return system_error("cannot create", to);
  for (const std::string& name : *names) {
    if (Status copied = copy_entry(from / name, to / name); !copied) return copied;
  }
  return fsync_path(to, O_RDONLY | O_DIRECTORY);
}

// Whether two files read the same bytes.
bool same_contents(const fs::path& a, const fs::path& b) {
  const UniqueFd first(::open(a.c_str(), O_RDONLY | O_CLOEXEC));
  const UniqueFd second(::open(b.c_str(), O_RDONLY | O_CLOEXEC));
  if (first.get() < 0 || second.get() < 0) return false;
  std::array<char, 1 << 16> one{};
  std::array<char, 1 << 16> two{};
  for (;;) {
    const ssize_t got_one = ::read(first.get(), one.data(), one.size());
    if (got_one < 0) return false;
    // Regular files give whole blocks until their end: read the same count from the second.
    ssize_t got_two = 0;
    while (got_two < got_one) {
      const ssize_t got = ::read(second.get(), two.data() + got_two, static_cast<size_t>(got_one - got_two));
      if (got <= 0) return false;
      got_two += got;
    }
    if (got_one == 0) return ::read(second.get(), two.data(), 1) == 0;
    if (std::memcmp(one.data(), two.data(), static_cast<size_t>(got_one)) != 0) return false;
  }
}

// Whether `copy` is what copy_entry(from, copy) would write now.
bool same_entry(const fs::path& from, const fs::path& copy) {
  struct stat source {};
  struct stat installed {};
  if (::lstat(from.c_str(), &source) != 0 || ::lstat(copy.c_str(), &installed) != 0) return false;
  if ((source.st_mode & S_IFMT) != (installed.st_mode & S_IFMT)) return false;
  std::error_code error;
  if (S_ISLNK(source.st_mode)) return fs::read_symlink(from, error) == fs::read_symlink(copy, error) && !error;
  if (S_ISREG(source.st_mode)) {
    return (source.st_mode & 0755) == (installed.st_mode & 07777) && source.st_size == installed.st_size &&
           same_contents(from, copy);
  }
  if (!S_ISDIR(source.st_mode)) return false;
  auto names = folder_entries(from);
  auto installed_names = folder_entries(copy);
  if (!names || !installed_names || *names != *installed_names) return false;
  return std::all_of(names->begin(), names->end(),
                     [&](const std::string& name) { return same_entry(from / name, copy / name); });
}

// Whether `release` holds exactly the source's entries (and the folders leading to them).
bool release_matches(const ReleaseSource& source, const fs::path& release) {
  return std::all_of(source.entries.begin(), source.entries.end(), [&](const fs::path& entry) {
    return same_entry(source.prefix / entry, release / entry);
  });
}

// Writes the release into `partial` (which must not exist).
Status write_release(const ReleaseSource& source, const fs::path& partial) {
  if (::mkdir(partial.c_str(), 0755) != 0) return system_error("cannot create", partial);
  std::vector<fs::path> folders{partial};
  for (const fs::path& entry : source.entries) {
    // The folders on the way (bin/, lib/gpushare/), then the entry itself.
    fs::path folder = partial;
    for (const fs::path& part : entry.parent_path()) {
      folder /= part;
      if (::mkdir(folder.c_str(), 0755) == 0) {
        folders.push_back(folder);
      } else if (errno != EEXIST) {
        return system_error("cannot create", folder);
      }
    }
    if (Status copied = copy_entry(source.prefix / entry, partial / entry); !copied) return copied;
  }
  // Children before parents, so each folder's entries are durable before the folder's own name.
  for (auto folder = folders.rbegin(); folder != folders.rend(); ++folder) {
    if (Status synced = fsync_path(*folder, O_RDONLY | O_DIRECTORY); !synced) return synced;
  }
  return Ok{};
}

bool valid_version_name(const std::string& version) {
  if (version.empty() || version.front() == '.' || version.size() > 64) return false;
  return std::all_of(version.begin(), version.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '-' ||
           c == '_' || c == '+';
  });
}

// Points host_dir/current at releases/<version>: a new relative symlink renamed over the old one.
Status point_current(const fs::path& host_dir, const std::string& version) {
  const fs::path temporary = host_dir / fmt::format(".current-{}", ::getpid());
  ::unlink(temporary.c_str());
  const std::string target = "releases/" + version;
  if (::symlink(target.c_str(), temporary.c_str()) != 0) return system_error("cannot create", temporary);
  if (::rename(temporary.c_str(), (host_dir / "current").c_str()) != 0) {
    Error error = system_error("cannot replace", host_dir / "current");
    ::unlink(temporary.c_str());
    return error;
  }
  return fsync_path(host_dir, O_RDONLY | O_DIRECTORY);
}

// The version `current` points at (releases/<version>), or "" when there is none.
std::string current_version(const fs::path& host_dir) {
  std::error_code error;
  const fs::path target = fs::read_symlink(host_dir / "current", error);
  return !error && target.parent_path() == "releases" ? target.filename().string() : std::string();
}

// Removes every release but the newest two, the current one and the one it replaced (a process
// that resolved `current` just before the switch may still be walking into it); returns the
// versions removed.
std::vector<std::string> prune_releases(const fs::path& host_dir, const std::string& current,
                                        const std::string& replaced) {
  std::vector<std::string> removed;
  const std::vector<std::string> releases = list_releases(host_dir);
  for (std::size_t i = 2; i < releases.size(); ++i) {
    if (releases[i] == current || releases[i] == replaced) continue;
    std::error_code error;
    fs::remove_all(host_dir / "releases" / releases[i], error);
    if (!error) removed.push_back(releases[i]);
  }
  return removed;
}

// Leftovers of an install that died half way (only one install runs at a time: the lock).
void remove_leftovers(const fs::path& releases) {
  auto names = folder_entries(releases);
  if (!names) return;
  for (const std::string& name : *names) {
    if (name.starts_with(kPartialPrefix) || name.starts_with(kReplacedPrefix)) {
      std::error_code error;
      fs::remove_all(releases / name, error);
    }
  }
}

// The dotted numbers of a version ("0.10.2" -> {0, 10, 2}); nullopt when it is not one.
std::optional<std::vector<unsigned long>> version_numbers(const std::string& version) {
  std::vector<unsigned long> numbers;
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = version.find('.', start);
    const std::string part = version.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty() || part.size() > 9 || !std::all_of(part.begin(), part.end(), [](char c) {
          return c >= '0' && c <= '9';
        })) {
      return std::nullopt;
    }
    numbers.push_back(std::stoul(part));
    if (dot == std::string::npos) return numbers;
    start = dot + 1;
  }
}

Result<ReleaseOutcome> install_locked(const ReleaseSource& source, const fs::path& host_dir,
                                      const std::string& version) {
  const fs::path releases = host_dir / "releases";
  if (::mkdir(releases.c_str(), 0755) != 0 && errno != EEXIST) return system_error("cannot create", releases);
  remove_leftovers(releases);

  ReleaseOutcome outcome;
  outcome.release = releases / version;
  struct stat existing {};
  const bool exists = ::lstat(outcome.release.c_str(), &existing) == 0;
  outcome.kept_existing = exists && S_ISDIR(existing.st_mode) && release_matches(source, outcome.release);
  if (!outcome.kept_existing) {
    const fs::path partial = releases / fmt::format("{}{}", kPartialPrefix, version);
    if (Status written = write_release(source, partial); !written) {
      std::error_code ignored;
      fs::remove_all(partial, ignored);
      return written.error();
    }
    // A different release of the same version (a rebuild) is moved aside, then removed: processes
    // that run from it keep their open files.
    const fs::path replaced = releases / fmt::format("{}{}", kReplacedPrefix, version);
    if (exists && ::rename(outcome.release.c_str(), replaced.c_str()) != 0) {
      Error error = system_error("cannot move aside", outcome.release);
      std::error_code ignored;
      fs::remove_all(partial, ignored);
      return error;
    }
    if (::rename(partial.c_str(), outcome.release.c_str()) != 0) {
      Error error = system_error("cannot rename into place", outcome.release);
      std::error_code ignored;
      fs::remove_all(partial, ignored);
      if (exists) ::rename(replaced.c_str(), outcome.release.c_str());
      return error;
    }
    if (Status synced = fsync_path(releases, O_RDONLY | O_DIRECTORY); !synced) return synced.error();
    if (exists) {
      std::error_code ignored;
      fs::remove_all(replaced, ignored);
    }
  }
  const std::string replaced_current = current_version(host_dir);
  if (Status pointed = point_current(host_dir, version); !pointed) return pointed.error();
  outcome.removed = prune_releases(host_dir, version, replaced_current);
  return outcome;
}

}  // namespace

bool version_less(const std::string& a, const std::string& b) {
  const auto first = version_numbers(a);
  const auto second = version_numbers(b);
  if (first && second) return *first != *second ? *first < *second : a < b;
  if (first || second) return second.has_value();  // a name that is no version sorts as the oldest
  return a < b;
}

std::vector<std::string> list_releases(const fs::path& host_dir) {
  auto names = folder_entries(host_dir / "releases");
  if (!names) return {};
  std::vector<std::string> releases;
  for (const std::string& name : *names) {
    struct stat info {};
    if (name.front() != '.' && ::lstat((host_dir / "releases" / name).c_str(), &info) == 0 && S_ISDIR(info.st_mode)) {
      releases.push_back(name);
    }
  }
  std::sort(releases.begin(), releases.end(),
            [](const std::string& a, const std::string& b) { return version_less(b, a); });
  return releases;
}

Result<ReleaseOutcome> install_release(const ReleaseSource& source, const fs::path& host_dir,
                                       const std::string& version) {
  if (!valid_version_name(version)) return Error{fmt::format("'{}' is not a valid release name", version)};
  for (const fs::path& entry : source.entries) {
    if (entry.empty() || entry.is_absolute() || *entry.begin() == "..") {
      return Error{fmt::format("'{}' is not a path inside the source prefix", entry.string())};
    }
  }
  std::error_code error;
  fs::create_directories(host_dir, error);
  if (error) return Error{fmt::format("cannot create {}: {}", host_dir.string(), error.message())};
  const fs::path lock_path = host_dir / ".lock";
  const UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (lock.get() < 0) return system_error("cannot open", lock_path);
  while (::flock(lock.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return system_error("cannot lock", lock_path);
  }
  return install_locked(source, host_dir, version);
}

}  // namespace gpushare::tools
