// Administration through the node agent's socket (isolation mode): `gpushare quota set` when an
// agent serves this node, and `gpushare agent reload`.
#pragma once

#include <string>
#include <string_view>

#include "protocol.hpp"

namespace gpushare::tools {

// The agent refused the request: the caller is neither root nor in the agent's --admin-group.
inline constexpr int kExitPermissionDenied = 4;

// Sends `request` to the agent at `socket_path` as an administrator's tool and prints its reply.
// Exit status: 0 done; 4 permission denied; 1 the agent is unreachable or the request failed.
int send_admin_request(std::string_view command, const std::string& socket_path, const agent::Message& request);

}  // namespace gpushare::tools
