#include "listen_socket.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <charconv>
#include <ctime>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

namespace gpushare::agent {
namespace {

namespace fs = std::filesystem;

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77  // Linux 6.5+; older headers lack it
#endif

constexpr std::uint64_t kNanosecondsPerSecond = 1'000'000'000;

// The pidfd of the peer, or none where the kernel has no SO_PEERPIDFD (or the peer is gone).
std::shared_ptr<const PeerPidfd> peer_pidfd(int connected_fd) {
  int pidfd = -1;
  socklen_t length = sizeof pidfd;
  if (::getsockopt(connected_fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &length) != 0 || pidfd < 0) return nullptr;
  return std::make_shared<const PeerPidfd>(pidfd);
}

// Whether the process of `pidfd` has exited (its pidfd polls readable then).
bool has_exited(const PeerPidfd& pidfd) {
  pollfd watched{pidfd.fd(), POLLIN, 0};
  const int ready = ::poll(&watched, 1, 0);
  return ready != 0;  // an error counts as exited: the pid cannot be vouched for
}

std::optional<std::uint64_t> start_ticks_of(std::int32_t pid) {
  std::ifstream file(fmt::format("/proc/{}/stat", pid));
  std::string line;
  if (!file || !std::getline(file, line)) return std::nullopt;
  return start_ticks_of_stat(line);
}

std::string system_error(std::string_view what, int error) {
  return fmt::format("{}: {}", what, std::strerror(error));
}

Result<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    return Error{fmt::format("socket path '{}' is empty or longer than {} bytes", path, sizeof(address.sun_path) - 1)};
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return address;
}

// The directory must be ours and writable by nobody else: whoever can write it can swap the socket.
Status check_directory(const fs::path& directory) {
  if (::mkdir(directory.c_str(), 0755) == 0) {
    // Whatever the umask, tenants must be able to reach the socket inside.
    if (::chmod(directory.c_str(), 0755) != 0) return Error{system_error("cannot chmod " + directory.string(), errno)};
  } else if (errno != EEXIST) {
    return Error{system_error(fmt::format("cannot create {}", directory.string()), errno)};
  }
  struct stat info {};
  if (::lstat(directory.c_str(), &info) != 0) return Error{system_error("cannot inspect " + directory.string(), errno)};
  if (!S_ISDIR(info.st_mode)) return Error{fmt::format("{} is not a directory", directory.string())};
  if (info.st_uid != ::geteuid() || (info.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return Error{fmt::format("{} must belong to the agent's user (uid {}) and be writable by nobody else",
                             directory.string(), ::geteuid())};
  }
  return Ok{};
}

// A socket file already at `path`: refused when an agent answers there or when it is no socket;
// otherwise it is stale and the caller renames a fresh socket over it.
Status check_existing(const std::string& path, const sockaddr_un& address) {
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) {
    return errno == ENOENT ? Status{Ok{}} : Status{Error{system_error("cannot inspect " + path, errno)}};
  }
  if (!S_ISSOCK(info.st_mode)) return Error{fmt::format("{} exists and is not a socket: not replacing it", path)};
  const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return Error{system_error("socket", errno)};
  const bool answered = ::connect(probe, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  ::close(probe);
  if (answered) return Error{fmt::format("an agent is already listening on {}", path)};
  return Ok{};
}

}  // namespace

Result<ListenSocket> ListenSocket::create(const std::string& path) {
  auto address = unix_address(path);
  if (!address) return address.error();
  const fs::path directory = fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
  if (auto checked = check_directory(directory); !checked) return checked.error();
  if (auto checked = check_existing(path, *address); !checked) return checked.error();

  const std::string temporary = fmt::format("{}.{}.new", path, ::getpid());
  auto temporary_address = unix_address(temporary);
  if (!temporary_address) return temporary_address.error();
  ::unlink(temporary.c_str());  // ours from an earlier run with the same pid, in our own directory
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error{system_error("socket", errno)};
  auto fail = [&](std::string_view what) {
    const int error = errno;
    ::close(fd);
    ::unlink(temporary.c_str());
    return Error{system_error(what, error)};
  };
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&*temporary_address), sizeof *temporary_address) != 0) {
    return fail("cannot bind " + temporary);
  }
  if (::chmod(temporary.c_str(), 0666) != 0) return fail("cannot make " + temporary + " mode 0666");
  if (::listen(fd, SOMAXCONN) != 0) return fail("listen");
  if (::rename(temporary.c_str(), path.c_str()) != 0) return fail("cannot move the socket to " + path);
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) return fail("cannot inspect " + path);
  return ListenSocket(fd, path, info.st_dev, info.st_ino);
}

ListenSocket::ListenSocket(int fd, std::string path, dev_t device, ino_t inode)
    : fd_(fd), path_(std::move(path)), device_(device), inode_(inode) {}

ListenSocket::ListenSocket(ListenSocket&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)), device_(other.device_), inode_(other.inode_) {}

ListenSocket::~ListenSocket() {
  if (fd_ < 0) return;
  // A newer agent may have replaced the file meanwhile: remove it only if it is still ours.
  struct stat info {};
  if (::lstat(path_.c_str(), &info) == 0 && info.st_dev == device_ && info.st_ino == inode_) ::unlink(path_.c_str());
  ::close(fd_);
}

PeerPidfd::~PeerPidfd() {
  if (fd_ >= 0) ::close(fd_);
}

std::uint64_t boottime_ns() {
  timespec now{};
  ::clock_gettime(CLOCK_BOOTTIME, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * kNanosecondsPerSecond + static_cast<std::uint64_t>(now.tv_nsec);
}

bool started_by(std::uint64_t start_ticks, std::uint64_t ticks_per_second, std::uint64_t accepted_boottime_ns) {
  if (ticks_per_second == 0) return false;
  // The accept time in whole ticks, as the kernel rounds a start time down to one.
  const std::uint64_t accepted_ticks = accepted_boottime_ns / kNanosecondsPerSecond * ticks_per_second +
                                       accepted_boottime_ns % kNanosecondsPerSecond * ticks_per_second /
                                           kNanosecondsPerSecond;
  return start_ticks <= accepted_ticks;
}

std::optional<std::uint64_t> start_ticks_of_stat(std::string_view stat_line) {
  const std::size_t name_end = stat_line.rfind(')');
  if (name_end == std::string_view::npos) return std::nullopt;
  std::string_view rest = stat_line.substr(name_end + 1);
  // Fields from 3 (the state) on, separated by single spaces; starttime is field 22.
  for (int field = 3; field <= 22; ++field) {
    if (rest.empty() || rest.front() != ' ') return std::nullopt;
    rest.remove_prefix(1);
    const std::size_t end = std::min(rest.find(' '), rest.size());
    if (field == 22) {
      std::uint64_t ticks = 0;
      const auto [at, error] = std::from_chars(rest.data(), rest.data() + end, ticks);
      if (error != std::errc() || at != rest.data() + end) return std::nullopt;
      return ticks;
    }
    rest.remove_prefix(end);
  }
  return std::nullopt;
}

Status check_peer_process(const SocketPeer& peer) {
  if (peer.accepted_boottime_ns == 0) return Ok{};
  const auto not_the_one = [&] {
    return Error{fmt::format("process {} is not the one that connected", peer.credentials.pid)};
  };
  if (peer.pidfd) return has_exited(*peer.pidfd) ? Result<Ok>(not_the_one()) : Result<Ok>(Ok{});
  const auto start_ticks = start_ticks_of(peer.credentials.pid);
  const long ticks_per_second = ::sysconf(_SC_CLK_TCK);
  if (!start_ticks || ticks_per_second <= 0 ||
      !started_by(*start_ticks, static_cast<std::uint64_t>(ticks_per_second), peer.accepted_boottime_ns)) {
    return not_the_one();
  }
  return Ok{};
}

Result<SocketPeer> read_socket_peer(int connected_fd) {
  SocketPeer peer;
  peer.accepted_boottime_ns = boottime_ns();
  peer.pidfd = peer_pidfd(connected_fd);
  ucred credentials{};
  socklen_t length = sizeof credentials;
  if (::getsockopt(connected_fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
    return Error{system_error("SO_PEERCRED", errno)};
  }
  peer.credentials = {credentials.pid, credentials.uid, credentials.gid};
  // SO_PEERGROUPS (Linux 4.13+) gives the groups recorded at connect time. Reading
  // /proc/PID/status instead would race with the pid being reused by another process, so on an
  // older kernel the peer simply has no supplementary groups here.
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 2; ++attempt) {
    socklen_t bytes = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(connected_fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &bytes) == 0) {
      groups.resize(bytes / sizeof(gid_t));
      peer.supplementary_groups.assign(groups.begin(), groups.end());
      return peer;
    }
    if (errno != ERANGE) break;
    groups.resize(bytes / sizeof(gid_t) + 1);
  }
  if (errno != ENOPROTOOPT && errno != ERANGE) return Error{system_error("SO_PEERGROUPS", errno)};
  return peer;
}

bool is_administrator(const SocketPeer& peer, const std::optional<std::uint32_t>& admin_gid) {
  if (peer.credentials.uid == 0) return true;
  if (!admin_gid) return false;
  return peer.credentials.gid == *admin_gid ||
         std::ranges::find(peer.supplementary_groups, *admin_gid) != peer.supplementary_groups.end();
}

}  // namespace gpushare::agent
