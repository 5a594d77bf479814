// Descriptors passed over a Unix stream socket (SCM_RIGHTS), both ways: the agent hands each tenant
// process its page and the state; a process hands its page back to a restarted agent.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <vector>

namespace gpushare::agent {

// sendmsg of `size` bytes with `fds` attached to the first of them (none when empty).
ssize_t send_with_fds(int socket, const char* data, std::size_t size, std::span<const int> fds, int flags);
// recvmsg into `buffer`; the descriptors that came along (close-on-exec) are appended to `fds` up
// to `max_fds` in all, the others closed.
ssize_t receive_with_fds(int socket, char* buffer, std::size_t size, int flags, std::vector<int>& fds,
                         std::size_t max_fds);

}  // namespace gpushare::agent
