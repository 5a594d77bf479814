#include "fd_passing.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace gpushare::agent {
namespace {
constexpr std::size_t kMostFdsAtOnce = 8;
}  // namespace

ssize_t send_with_fds(int socket, const char* data, std::size_t size, std::span<const int> fds, int flags) {
  iovec bytes{const_cast<char*>(data), size};
  msghdr header{};
  header.msg_iov = &bytes;
  header.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(kMostFdsAtOnce * sizeof(int))] = {};
  if (!fds.empty()) {
    fds = fds.first(std::min(fds.size(), kMostFdsAtOnce));
    header.msg_control = control;
    header.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
    cmsghdr* passed = CMSG_FIRSTHDR(&header);
    passed->cmsg_level = SOL_SOCKET;
    passed->cmsg_type = SCM_RIGHTS;
    passed->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(passed), fds.data(), fds.size() * sizeof(int));
  }
  return ::sendmsg(socket, &header, flags | MSG_NOSIGNAL);
}

ssize_t receive_with_fds(int socket, char* buffer, std::size_t size, int flags, std::vector<int>& fds,
                         std::size_t max_fds) {
  iovec bytes{buffer, size};
  alignas(cmsghdr) char control[CMSG_SPACE(kMostFdsAtOnce * sizeof(int))];
  msghdr header{};
  header.msg_iov = &bytes;
  header.msg_iovlen = 1;
  header.msg_control = control;
  header.msg_controllen = sizeof control;
  const ssize_t received = ::recvmsg(socket, &header, flags | MSG_CMSG_CLOEXEC);
  if (received < 0) return received;
  for (cmsghdr* message = CMSG_FIRSTHDR(&header); message != nullptr; message = CMSG_NXTHDR(&header, message)) {
    if (message->cmsg_level != SOL_SOCKET || message->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (message->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int passed = -1;
      std::memcpy(&passed, CMSG_DATA(message) + i * sizeof(int), sizeof(int));
      if (fds.size() < max_fds) {
        fds.push_back(passed);
      } else {
        ::close(passed);
      }
    }
  }
  return received;
}

}  // namespace gpushare::agent
