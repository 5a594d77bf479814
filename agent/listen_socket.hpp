// The agent's listening socket file and what the kernel says about each peer.
//
// The socket is created with mode 0666 (anyone may connect; who they are is read from the kernel,
// not trusted from them) in a directory the agent owns and nobody else can write, so that no
// other user can replace the socket or plant one for clients to find. A stale socket file left by
// an agent that died is replaced atomically: the new socket is bound under a temporary name in
// the same directory and renamed over it. A path where an agent still answers is left alone.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "protocol.hpp"

namespace gpushare::agent {

class ListenSocket {
 public:
  // Creates the directory (mode 0755) when missing, then binds and listens on `path`.
  static Result<ListenSocket> create(const std::string& path);
  ListenSocket(ListenSocket&& other) noexcept;
  ListenSocket& operator=(ListenSocket&&) = delete;
  ListenSocket(const ListenSocket&) = delete;
  ~ListenSocket();  // closes the socket and removes its file if it is still this socket's

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

 private:
  ListenSocket(int fd, std::string path, dev_t device, ino_t inode);
  int fd_ = -1;
  std::string path_;
  dev_t device_ = 0;
  ino_t inode_ = 0;
};

// A descriptor of the process that connected (SO_PEERPIDFD), closed with its last copy.
class PeerPidfd {
 public:
  explicit PeerPidfd(int fd) : fd_(fd) {}
  PeerPidfd(const PeerPidfd&) = delete;
  PeerPidfd& operator=(const PeerPidfd&) = delete;
  ~PeerPidfd();
  int fd() const { return fd_; }

 private:
  int fd_;
};

// The peer of a connected Unix socket as the kernel recorded it at connect time.
struct SocketPeer {
  PeerCredentials credentials;
  std::vector<std::uint32_t> supplementary_groups;
  std::uint64_t connection_id = 0;  // given by the server: unique among its connections, never reused
  // What tells later whether credentials.pid is still the process that connected (its pid may be
  // reused once it exits): when the connection was accepted, in CLOCK_BOOTTIME nanoseconds (0:
  // unknown, a peer not from a socket), and the process's pidfd on Linux 6.5+.
  std::uint64_t accepted_boottime_ns = 0;
  std::shared_ptr<const PeerPidfd> pidfd{};
};
// Read right after accept: also records the accept time and takes the pidfd.
Result<SocketPeer> read_socket_peer(int connected_fd);

// Ok when process credentials.pid is still the one that connected, to be asked right after
// reading anything from /proc/PID: its pidfd says it has not exited; without one (older kernels),
// it must have started before the connection was accepted (to the kernel's clock tick). Else an
// Error "process PID is not the one that connected". Ok too when the accept time is unknown.
Status check_peer_process(const SocketPeer& peer);

// The start-time rule: a process that started `start_ticks` clock ticks after boot (/proc/PID/stat
// field 22), `ticks_per_second` a second, started no later than `accepted_boottime_ns`.
bool started_by(std::uint64_t start_ticks, std::uint64_t ticks_per_second, std::uint64_t accepted_boottime_ns);
// Field 22 (starttime) of a /proc/PID/stat line; nullopt when it has none. The command's name
// (field 2, in parentheses) may hold spaces and parentheses: fields are counted after its last ')'.
std::optional<std::uint64_t> start_ticks_of_stat(std::string_view stat_line);
// CLOCK_BOOTTIME now, in nanoseconds.
std::uint64_t boottime_ns();

// Root, a peer whose primary or supplementary group is `admin_gid`, and nobody else.
bool is_administrator(const SocketPeer& peer, const std::optional<std::uint32_t>& admin_gid);

}  // namespace gpushare::agent
