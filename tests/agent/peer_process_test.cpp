// Whether a peer's pid is still the process that connected: the start-time rule, /proc/PID/stat
// parsing, and a connecting process that exits before its identity is read.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <fstream>
#include <string>

#include "listen_socket.hpp"

namespace gpushare::agent {
namespace {

constexpr std::uint64_t kSecond = 1'000'000'000;

TEST(PeerProcessTest, StartTimeRule) {
  // 100 ticks a second: tick 150 is 1.5 s after boot.
  EXPECT_TRUE(started_by(150, 100, 3 * kSecond / 2));
  EXPECT_TRUE(started_by(149, 100, 3 * kSecond / 2));
  EXPECT_TRUE(started_by(150, 100, 3 * kSecond / 2 + 9'999'999));  // the same tick
  EXPECT_FALSE(started_by(151, 100, 3 * kSecond / 2));
  EXPECT_FALSE(started_by(150, 100, 3 * kSecond / 2 - 1));  // accepted during tick 149
  EXPECT_TRUE(started_by(0, 100, 0));
  EXPECT_FALSE(started_by(0, 0, kSecond));
  // A year of uptime at 1000 ticks a second, without overflow.
  const std::uint64_t year = 365ull * 24 * 3600;
  EXPECT_TRUE(started_by(year * 1000, 1000, year * kSecond));
  EXPECT_FALSE(started_by(year * 1000 + 1, 1000, year * kSecond));
}

TEST(PeerProcessTest, StartTicksOfAStatLine) {
  // Fields 3..21, then starttime (22) and more; the name may hold spaces and parentheses.
  const std::string fields = " S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 19 20";
  EXPECT_EQ(start_ticks_of_stat("1234 (sh)" + fields), 424242u);
  EXPECT_EQ(start_ticks_of_stat("1234 (a) S 1 (b c)" + fields), 424242u);
  EXPECT_EQ(start_ticks_of_stat("1234 ())" + fields), 424242u);
  EXPECT_FALSE(start_ticks_of_stat("1234 (sh) S 1 2 3").has_value());
  EXPECT_FALSE(start_ticks_of_stat("1234 sh" + fields).has_value());
  EXPECT_FALSE(start_ticks_of_stat("1234 (sh) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 -5 19").has_value());
  EXPECT_FALSE(start_ticks_of_stat("").has_value());
  // This process's own, which started before now.
  std::ifstream stat("/proc/self/stat");
  std::string line;
  ASSERT_TRUE(std::getline(stat, line));
  const auto ticks = start_ticks_of_stat(line);
  ASSERT_TRUE(ticks.has_value()) << line;
  EXPECT_TRUE(started_by(*ticks, static_cast<std::uint64_t>(::sysconf(_SC_CLK_TCK)), boottime_ns()));
}

TEST(PeerProcessTest, StartTimeCheckWithoutAPidfd) {
  SocketPeer peer;
  peer.credentials.pid = static_cast<std::int32_t>(::getpid());
  EXPECT_TRUE(check_peer_process(peer).ok()) << "no accept time: nothing to check";
  peer.accepted_boottime_ns = boottime_ns();
  EXPECT_TRUE(check_peer_process(peer).ok());
  // Accepted before this process started: a process that took a connector's pid after it.
  peer.accepted_boottime_ns = 1;
  const Status refused = check_peer_process(peer);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message, "process " + std::to_string(::getpid()) + " is not the one that connected");
}

// A process connects, its identity is read at accept, then it exits: its pid no longer vouches
// for anything read from /proc/PID (the pidfd says so, or else the start time once reused).
TEST(PeerProcessTest, AConnectorThatExitedIsNoLongerTheProcess) {
  const std::string path = ::testing::TempDir() + "peer-process-" + std::to_string(::getpid()) + "/agent.sock";
  auto listening = ListenSocket::create(path);
  ASSERT_TRUE(listening.ok()) << listening.error().message;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) ::_exit(2);
    char byte = 0;
    ::_exit(::read(fd, &byte, 1) == 0 ? 0 : 3);  // until the agent's end closes
  }
  // Killed on any early return; reaped below otherwise.
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      if (pid > 0 && ::kill(pid, SIGKILL) == 0) ::waitpid(pid, nullptr, 0);
    }
  } reaper{child};
  pollfd listening_fd{listening.value().fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&listening_fd, 1, 10000), 1) << "no connection";
  const int accepted = ::accept4(listening.value().fd(), nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(accepted, 0) << std::strerror(errno);
  auto peer = read_socket_peer(accepted);
  ASSERT_TRUE(peer.ok()) << peer.error().message;
  EXPECT_EQ(peer.value().credentials.pid, child);
  EXPECT_TRUE(check_peer_process(peer.value()).ok());
  ::close(accepted);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  reaper.pid = 0;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  const Status gone = check_peer_process(peer.value());
  ASSERT_FALSE(gone.ok());
  EXPECT_NE(gone.error().message.find("is not the one that connected"), std::string::npos);
}

}  // namespace
}  // namespace gpushare::agent
