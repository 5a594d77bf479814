// A client of the agent for the tests: says Hello on the socket given, prints what the Welcome
// reports as `key=value` words, and with a second argument sends it as an admin request and
// prints the answer. Exit status 0 when a Welcome came, 1 otherwise.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <fmt/format.h>

#include "connection.hpp"

using namespace gpushare::agent;

int main(int argc, char** argv) {
  if (argc < 2) {
    fmt::print(stderr, "usage: agent_probe SOCKET [ADMIN_COMMAND]\n");
    return 2;
  }
  constexpr std::chrono::milliseconds kTimeout{5000};
  auto connection = AgentConnection::connect(argv[1]);
  if (!connection) return fmt::print("error message={}\n", connection.error().message), 1;
  auto answer = connection->send(Hello{ClientKind::kTool, kProtocolVersion}, kTimeout)
                    ? connection->receive(kTimeout)
                    : gpushare::Result<Message>(gpushare::Error{"cannot send Hello"});
  const auto* welcome = answer ? std::get_if<Welcome>(&answer.value()) : nullptr;
  if (welcome == nullptr) return fmt::print("error message=no-welcome\n"), 1;
  fmt::print("welcome accepted={} uid={} gid={} pid={} self_pid={} tenant={}\n", welcome->accepted ? 1 : 0,
             welcome->peer.uid, welcome->peer.gid, welcome->peer.pid, ::getpid(), welcome->tenant_or_refusal);
  if (argc > 2) {
    auto reply = connection->send(AdminRequest{argv[2]}, kTimeout) ? connection->receive(kTimeout)
                                                                  : gpushare::Result<Message>(gpushare::Error{"send"});
    if (!reply) {
      fmt::print("admin result=failed\n");
    } else if (const auto* text = std::get_if<AdminReply>(&reply.value())) {
      fmt::print("admin result=reply text={}\n", text->text);
    } else if (const auto* error = std::get_if<ErrorMessage>(&reply.value())) {
      fmt::print("admin result=error code={} text={}\n", static_cast<int>(error->code), error->text);
    }
  }
  return 0;
}
