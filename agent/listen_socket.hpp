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
#include <optional>
#include <string>
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

// The peer of a connected Unix socket as the kernel recorded it at connect time.
struct SocketPeer {
  PeerCredentials credentials;
  std::vector<std::uint32_t> supplementary_groups;
  std::uint64_t connection_id = 0;  // given by the server: unique among its connections, never reused
};
Result<SocketPeer> read_socket_peer(int connected_fd);

// Root, a peer whose primary or supplementary group is `admin_gid`, and nobody else.
bool is_administrator(const SocketPeer& peer, const std::optional<std::uint32_t>& admin_gid);

}  // namespace gpushare::agent
