// The agent's connection loop, in-process: the kernel's identity in the Welcome, garbage cut off
// at once, stalled and non-reading clients cut off while others are served, admin requests
// checked, the socket file replaced only when stale, and a protocol fuzz from several clients.
#include <gtest/gtest.h>

#include <grp.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <random>

#include "connection.hpp"
#include "server_harness.hpp"

namespace gpushare::agent {
namespace {

using namespace std::chrono_literals;
using testing::closed_by_agent;
using testing::raw_connect;
using testing::RunningServer;

constexpr auto kAnswerBound = 1000ms;  // a served client's answer arrives within this

ServerLimits quick_limits() {
  ServerLimits limits;
  limits.exchange_deadline = 300ms;
  limits.max_output_bytes = 4096;
  return limits;
}

// A client that has said Hello and been welcomed.
AgentConnection welcomed_client(const std::string& path) {
  auto connection = AgentConnection::connect(path);
  if (!connection) throw std::runtime_error(connection.error().message);
  if (!connection->send(Hello{ClientKind::kTenant, kProtocolVersion}, kAnswerBound)) throw std::runtime_error("send");
  auto welcome = connection->receive(kAnswerBound);
  if (!welcome || !std::holds_alternative<Welcome>(*welcome)) throw std::runtime_error("no Welcome");
  return std::move(connection).value();
}

// A Ping answered by its Pong in time.
bool ping_answered(AgentConnection& connection, std::uint64_t nonce) {
  if (!connection.send(Ping{nonce}, kAnswerBound)) return false;
  auto answer = connection.receive(kAnswerBound);
  return answer && std::holds_alternative<Pong>(*answer) && std::get<Pong>(*answer).nonce == nonce;
}

TEST(AgentServer, WelcomeReportsTheIdentityTheKernelGives) {
  RunningServer server(quick_limits());
  auto connection = AgentConnection::connect(server.socket_path());
  ASSERT_TRUE(connection) << connection.error().message;
  ASSERT_TRUE(connection->send(Hello{ClientKind::kTool, kProtocolVersion}, kAnswerBound));
  auto answer = connection->receive(kAnswerBound);
  ASSERT_TRUE(answer) << answer.error().message;
  const auto& welcome = std::get<Welcome>(*answer);
  EXPECT_TRUE(welcome.accepted);
  EXPECT_EQ(welcome.peer.pid, ::getpid());
  EXPECT_EQ(welcome.peer.uid, ::getuid());
  EXPECT_EQ(welcome.peer.gid, ::getgid());
  EXPECT_TRUE(ping_answered(*connection, 42));
}

TEST(AgentServer, TheSocketFileIsOpenToEveryone) {
  RunningServer server(quick_limits());
  struct stat info {};
  ASSERT_EQ(::lstat(server.socket_path().c_str(), &info), 0);
  EXPECT_TRUE(S_ISSOCK(info.st_mode));
  EXPECT_EQ(info.st_mode & 0777, 0666u);
}

TEST(AgentServer, GarbageIsCutOffAtOnce) {
  ServerLimits limits = quick_limits();
  limits.exchange_deadline = 60s;  // a cut-off seen within the test's bound is not the stall deadline
  RunningServer server(limits);
  const int fd = raw_connect(server.socket_path());
  ASSERT_GE(fd, 0);
  ASSERT_GT(::send(fd, "GET / HTTP/1.1\r\n", 16, MSG_NOSIGNAL), 0);
  EXPECT_TRUE(closed_by_agent(fd, 5s));
  ::close(fd);
  EXPECT_TRUE(server.wait_for_disconnects(DisconnectReason::kMalformed, 1, 5s));
}

TEST(AgentServer, AnOversizedLengthIsCutOffBeforeItsPayload) {
  ServerLimits limits = quick_limits();
  limits.exchange_deadline = 60s;
  RunningServer server(limits);
  std::string header = encode(Ping{1}).substr(0, kHeaderBytes);
  header[10] = 0x10;  // payload length 1 MiB
  const int fd = raw_connect(server.socket_path());
  ASSERT_EQ(::send(fd, header.data(), header.size(), MSG_NOSIGNAL), static_cast<ssize_t>(header.size()));
  EXPECT_TRUE(closed_by_agent(fd, 5s));
  ::close(fd);
  EXPECT_TRUE(server.wait_for_disconnects(DisconnectReason::kMalformed, 1, 5s));
}

TEST(AgentServer, ARequestBeforeHelloIsAnsweredWithAnErrorThenClosed) {
  RunningServer server(quick_limits());
  auto connection = AgentConnection::connect(server.socket_path());
  ASSERT_TRUE(connection);
  ASSERT_TRUE(connection->send(Ping{1}, kAnswerBound));
  auto answer = connection->receive(kAnswerBound);
  ASSERT_TRUE(answer) << answer.error().message;
  EXPECT_EQ(std::get<ErrorMessage>(*answer).code, ErrorCode::kNotWelcomed);
  EXPECT_FALSE(connection->receive(kAnswerBound));  // closed
}

TEST(AgentServer, AnUnsupportedProtocolVersionIsToldSo) {
  RunningServer server(quick_limits());
  auto connection = AgentConnection::connect(server.socket_path());
  ASSERT_TRUE(connection);
  ASSERT_TRUE(connection->send(Hello{ClientKind::kTenant, kProtocolVersion + 1}, kAnswerBound));
  auto answer = connection->receive(kAnswerBound);
  ASSERT_TRUE(answer) << answer.error().message;
  EXPECT_EQ(std::get<ErrorMessage>(*answer).code, ErrorCode::kUnsupportedVersion);
}

TEST(AgentServer, AMessageOnlyTheAgentSendsCutsTheClientOff) {
  RunningServer server(quick_limits());
  AgentConnection connection = welcomed_client(server.socket_path());
  ASSERT_TRUE(connection.send(Welcome{true, "forged", {}}, kAnswerBound));
  EXPECT_TRUE(closed_by_agent(connection.fd(), 5s));
  EXPECT_TRUE(server.wait_for_disconnects(DisconnectReason::kProtocolViolation, 1, 5s));
}

TEST(AgentServer, AStalledPartialSenderIsCutOffWhileAnotherIsServed) {
  const ServerLimits limits = quick_limits();
  RunningServer server(limits);
  AgentConnection stalled = welcomed_client(server.socket_path());
  AgentConnection served = welcomed_client(server.socket_path());
  const std::string half_ping = encode(Ping{1}).substr(0, 7);
  const auto sent_at = std::chrono::steady_clock::now();
  ASSERT_EQ(::send(stalled.fd(), half_ping.data(), half_ping.size(), MSG_NOSIGNAL), 7);
  EXPECT_TRUE(ping_answered(served, 1));
  EXPECT_TRUE(closed_by_agent(stalled.fd(), 10 * limits.exchange_deadline));
  EXPECT_GE(std::chrono::steady_clock::now() - sent_at, limits.exchange_deadline);
  EXPECT_TRUE(server.wait_for_disconnects(DisconnectReason::kStalled, 1, 5s));
  EXPECT_TRUE(ping_answered(served, 2));
}

TEST(AgentServer, AClientThatNeverSaysHelloIsCutOff) {
  const ServerLimits limits = quick_limits();
  RunningServer server(limits);
  const int silent = raw_connect(server.socket_path());
  ASSERT_GE(silent, 0);
  EXPECT_TRUE(closed_by_agent(silent, 10 * limits.exchange_deadline));
  ::close(silent);
  EXPECT_TRUE(server.wait_for_disconnects(DisconnectReason::kStalled, 1, 5s));
}

TEST(AgentServer, AClientThatStopsReadingIsCutOffWhileAnotherIsServed) {
  RunningServer server(quick_limits());
  AgentConnection reader = welcomed_client(server.socket_path());
  AgentConnection flooder = welcomed_client(server.socket_path());
  const std::string ping = encode(Ping{7});
  std::string batch;
  for (int i = 0; i < 256; ++i) batch += ping;
  // Pings without ever reading the Pongs, until the agent hangs up; the other client is answered
  // all along.
  const auto give_up = std::chrono::steady_clock::now() + 30s;
  bool cut = false;
  for (std::uint64_t round = 0; !cut && std::chrono::steady_clock::now() < give_up; ++round) {
    const ssize_t sent = ::send(flooder.fd(), batch.data(), batch.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0 && (errno == EPIPE || errno == ECONNRESET)) cut = true;
    if (sent < 0 && errno == EAGAIN) {
      pollfd entry{flooder.fd(), POLLOUT, 0};
      ::poll(&entry, 1, 100);
    }
    if (round % 16 == 0) {
      ASSERT_TRUE(ping_answered(reader, round));
    }
  }
  EXPECT_TRUE(cut);
  EXPECT_TRUE(server.wait_for_disconnects(DisconnectReason::kNotReading, 1, 5s));
  EXPECT_TRUE(ping_answered(reader, 1));
}

TEST(AgentServer, EveryClosedConnectionIsReported) {
  RunningServer server(quick_limits());
  { AgentConnection gone = welcomed_client(server.socket_path()); }
  EXPECT_TRUE(server.wait_for_disconnects(DisconnectReason::kClosedByPeer, 1, 5s));
}

TEST(AgentServer, AdminRequestsAreServedToRootOnly) {
  RunningServer server(quick_limits());
  AgentConnection connection = welcomed_client(server.socket_path());
  ASSERT_TRUE(connection.send(AdminRequest{"check"}, kAnswerBound));
  auto answer = connection.receive(kAnswerBound);
  ASSERT_TRUE(answer) << answer.error().message;
  if (::getuid() == 0) {
    EXPECT_EQ(std::get<AdminReply>(*answer).text, "granted");
  } else {
    EXPECT_EQ(std::get<ErrorMessage>(*answer).code, ErrorCode::kPermissionDenied);
  }
  EXPECT_TRUE(ping_answered(connection, 3));  // a refusal does not close the connection
}

TEST(AgentServer, AdministratorsAreRootAndTheAdminGroup) {
  const SocketPeer root{{1, 0, 0}, {}};
  const SocketPeer primary{{1, 1000, 50}, {}};
  const SocketPeer supplementary{{1, 1000, 1000}, {7, 50}};
  const SocketPeer other{{1, 1000, 1000}, {7}};
  EXPECT_TRUE(is_administrator(root, std::nullopt));
  EXPECT_FALSE(is_administrator(primary, std::nullopt));
  EXPECT_TRUE(is_administrator(primary, 50u));
  EXPECT_TRUE(is_administrator(supplementary, 50u));
  EXPECT_FALSE(is_administrator(other, 50u));
}

TEST(AgentSocketFile, AStaleSocketIsReplacedALiveOneOrAnotherFileIsNot) {
  testing::TemporaryDirectory directory;
  const std::string path = directory.path() + "/agent.sock";
  {
    auto first = ListenSocket::create(path);
    ASSERT_TRUE(first) << first.error().message;
    EXPECT_FALSE(ListenSocket::create(path)) << "an agent answers there";
  }
  EXPECT_FALSE(std::filesystem::exists(path)) << "an agent removes its own socket file";
  // Leave a stale socket: bound, then closed without removing the file.
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address), 0);
    ::close(fd);
  }
  auto replaced = ListenSocket::create(path);
  ASSERT_TRUE(replaced) << replaced.error().message;
  const int client = raw_connect(path);
  EXPECT_GE(client, 0);
  ::close(client);

  const std::string regular = directory.path() + "/not-a-socket";
  { std::ofstream(regular) << "keep me"; }
  EXPECT_FALSE(ListenSocket::create(regular));
  EXPECT_TRUE(std::filesystem::is_regular_file(regular));
}

TEST(AgentSocketFile, ADirectoryOthersCanWriteIsRefused) {
  testing::TemporaryDirectory directory;
  ASSERT_EQ(::chmod(directory.path().c_str(), 0777), 0);
  EXPECT_FALSE(ListenSocket::create(directory.path() + "/agent.sock"));
}

// After a damaged message: sends a Ping behind it and reads until the agent answers it or closes
// the connection (for a damaged length, after the stall deadline).
void settle(int fd) {
  const std::string ping = encode(Ping{0xfeed});
  if (::send(fd, ping.data(), ping.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) return;
  std::string received;
  const auto give_up = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < give_up) {
    pollfd entry{fd, POLLIN, 0};
    if (::poll(&entry, 1, 100) <= 0) continue;
    char chunk[4096];
    const ssize_t length = ::recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
    if (length <= 0) return;  // cut off (or reset)
    received.append(chunk, static_cast<std::size_t>(length));
    while (true) {
      auto frame = decode_frame(received);
      ASSERT_TRUE(frame) << "the agent sent bytes that do not decode: " << frame.error().message;
      if (!*frame) break;
      if ((*frame)->message == Message{Pong{0xfeed}}) return;
      received.erase(0, (*frame)->consumed_bytes);
    }
  }
  ADD_FAILURE() << "the agent neither answered nor closed a connection within 5 s";
}

// Several clients send thousands of random, mutated, truncated and valid messages at once; a
// well-behaved client is answered all along, and a new one is welcomed afterwards.
TEST(AgentServer, ProtocolFuzzLeavesTheAgentServingOthers) {
  ServerLimits limits;
  limits.exchange_deadline = 200ms;
  limits.max_output_bytes = 16 * 1024;
  RunningServer server(limits);
  constexpr int kFuzzers = 4;
  constexpr int kMessagesEach = 1500;
  std::atomic<int> fuzzers_running{kFuzzers};
  std::vector<std::thread> fuzzers;
  for (int index = 0; index < kFuzzers; ++index) {
    fuzzers.emplace_back([&, index] {
      std::mt19937 random(1300 + index);
      const std::vector<Message> valid = {Hello{ClientKind::kTenant, kProtocolVersion}, Ping{9}, AdminRequest{"check"},
                                          AdminRequest{"unknown"}, Pong{1}, Hello{ClientKind::kTool, 3}};
      // A fresh connection, welcomed or not: the agent sees messages in both states.
      const std::string hello = encode(valid.front());
      const auto reconnect = [&](int old_fd) {
        if (old_fd >= 0) ::close(old_fd);
        const int fd = raw_connect(server.socket_path(), true);
        if (fd >= 0 && random() % 2 == 0) ::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        return fd;
      };
      int fd = reconnect(-1);
      for (int step = 0; step < kMessagesEach; ++step) {
        std::string bytes = encode(valid[random() % valid.size()]);
        bool damaged = true;
        bool partial = false;
        switch (random() % 10) {
          case 0: case 1: bytes[random() % bytes.size()] = static_cast<char>(random()); break;
          case 2:  // a partial message, left to the stall deadline
            bytes.resize(random() % bytes.size());
            partial = true;
            break;
          case 3:
            bytes.resize(random() % 32);
            for (char& byte : bytes) byte = static_cast<char>(random());
            break;
          default: damaged = false;
        }
        const bool sent = fd >= 0 && ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT) >= 0;
        if (random() % 2 == 0 && fd >= 0) {
          char chunk[4096];
          while (::recv(fd, chunk, sizeof chunk, MSG_DONTWAIT) > 0) {
          }
        }
        // A damaged message most likely ends the connection: the fuzzer waits for the agent's
        // verdict (its answer to a Ping, or the cut-off) and goes on with a new connection.
        if (sent && damaged && !partial) settle(fd);
        if (!sent || damaged || random() % 20 == 0) fd = reconnect(fd);
      }
      if (fd >= 0) ::close(fd);
      --fuzzers_running;
    });
  }
  AgentConnection steady = welcomed_client(server.socket_path());
  for (std::uint64_t nonce = 0; fuzzers_running > 0; ++nonce) ASSERT_TRUE(ping_answered(steady, nonce));
  for (auto& fuzzer : fuzzers) fuzzer.join();

  const auto started = std::chrono::steady_clock::now();
  auto fresh = AgentConnection::connect(server.socket_path());
  ASSERT_TRUE(fresh) << fresh.error().message;
  ASSERT_TRUE(fresh->send(Hello{ClientKind::kTenant, kProtocolVersion}, kAnswerBound));
  auto welcome = fresh->receive(kAnswerBound);
  ASSERT_TRUE(welcome) << welcome.error().message;
  EXPECT_TRUE(std::holds_alternative<Welcome>(*welcome));
  EXPECT_LT(std::chrono::steady_clock::now() - started, kAnswerBound);
  // The damaged messages reached the agent and were cut off as such (a tenth of them are random bytes).
  EXPECT_TRUE(server.wait_for_disconnects(DisconnectReason::kMalformed, kFuzzers * kMessagesEach / 20, 10s))
      << server.disconnects(DisconnectReason::kMalformed);
}

}  // namespace
}  // namespace gpushare::agent
