#include "agent_admin.hpp"

#include <chrono>

#include <fmt/format.h>

#include "commands.hpp"
#include "connection.hpp"

namespace gpushare::tools {

int send_admin_request(std::string_view command, const std::string& socket_path, const agent::Message& request) {
  constexpr std::chrono::milliseconds kDeadline{5000};
  auto connection = agent::AgentConnection::connect(socket_path);
  if (!connection) {
    fmt::print(stderr, "gpushare {}: cannot reach the gpushare agent at {}: {}\n", command, socket_path,
               connection.error().message);
    return kExitFailure;
  }
  const auto exchange = [&](const agent::Message& message) -> Result<agent::Message> {
    if (auto sent = connection->send(message, kDeadline); !sent) return sent.error();
    return connection->receive(kDeadline);
  };
  auto welcome = exchange(agent::Hello{agent::ClientKind::kAdministrator, agent::kProtocolVersion});
  const auto* welcomed = welcome ? std::get_if<agent::Welcome>(&welcome.value()) : nullptr;
  if (welcomed == nullptr || !welcomed->accepted) {
    fmt::print(stderr, "gpushare {}: the gpushare agent at {} did not welcome this tool: {}\n", command, socket_path,
               !welcome              ? welcome.error().message
               : welcomed != nullptr ? welcomed->tenant_or_refusal
                                     : std::string(agent::message_type_name(agent::message_type(welcome.value()))));
    return kExitFailure;
  }
  auto answer = exchange(request);
  if (!answer) {
    fmt::print(stderr, "gpushare {}: no answer from the gpushare agent at {}: {}\n", command, socket_path,
               answer.error().message);
    return kExitFailure;
  }
  if (const auto* reply = std::get_if<agent::AdminReply>(&answer.value())) {
    fmt::print("{}\n", reply->text);
    return 0;
  }
  if (const auto* error = std::get_if<agent::ErrorMessage>(&answer.value())) {
    fmt::print(stderr, "gpushare {}: the gpushare agent: {}\n", command, error->text);
    return error->code == agent::ErrorCode::kPermissionDenied ? kExitPermissionDenied : kExitFailure;
  }
  fmt::print(stderr, "gpushare {}: the gpushare agent answered with {}\n", command,
             agent::message_type_name(agent::message_type(answer.value())));
  return kExitFailure;
}

}  // namespace gpushare::tools
