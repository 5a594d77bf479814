// The platform layer under the arbiter and the gate: the clocks and sleeping, futexes on shared
// words, and a file description of the gate's own.
#include "core/platform.hpp"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>
#include <ctime>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/shared_state.hpp"
#include "test_support.hpp"

namespace gpushare {
namespace {

constexpr std::uint64_t kMs = 1'000'000;
constexpr std::uint64_t kLongWaitNs = 30'000 * kMs;  // never reached when the test passes

TEST(Platform, TheMonotonicClockNeverGoesBack) {
  std::uint64_t previous = monotonic_now_ns();
  EXPECT_GT(previous, 0u);
  for (int i = 0; i < 1000; ++i) {
    const std::uint64_t now = monotonic_now_ns();
    ASSERT_GE(now, previous);
    previous = now;
  }
}

// The wall clock is Unix time (time(2) may read a coarser clock: a second's leeway).
TEST(Platform, TheWallClockIsUnixTime) {
  const auto before = static_cast<std::uint64_t>(::time(nullptr));
  const std::uint64_t now_s = unix_now_ns() / 1'000'000'000;
  const auto after = static_cast<std::uint64_t>(::time(nullptr));
  EXPECT_GE(now_s + 1, before);
  EXPECT_LE(now_s, after + 1);
}

TEST(Platform, ASleepLastsAtLeastItsLength) {
  const std::uint64_t began = monotonic_now_ns();
  sleep_ns(5 * kMs);
  const std::uint64_t slept = monotonic_now_ns() - began;
  EXPECT_GE(slept, 5 * kMs);
  EXPECT_LT(slept, 5'000 * kMs);
}

// Signals arriving while a thread sleeps (a handler installed without SA_RESTART) do not cut the
// sleep short: the init-lock wait relies on its pauses.
TEST(Platform, ASleepIsNotCutShortBySignals) {
  struct sigaction quiet {};
  quiet.sa_handler = [](int) {};
  struct sigaction previous {};
  ASSERT_EQ(::sigaction(SIGUSR1, &quiet, &previous), 0);
  std::atomic<bool> done{false};
  std::uint64_t slept = 0;
  std::thread sleeper([&] {
    const std::uint64_t began = monotonic_now_ns();
    sleep_ns(50 * kMs);
    slept = monotonic_now_ns() - began;
    done = true;
  });
  const pthread_t target = sleeper.native_handle();
  int signals = 0;
  while (!done) {
    ::pthread_kill(target, SIGUSR1);
    ++signals;
    sleep_ns(kMs);
  }
  sleeper.join();
  ::sigaction(SIGUSR1, &previous, nullptr);
  EXPECT_GE(slept, 50 * kMs) << "after " << signals << " signals";
}

TEST(Platform, AFutexWaitOnAWordThatMovedReturnsAtOnce) {
  std::atomic<std::uint32_t> word{1};
  const std::uint64_t began = monotonic_now_ns();
  futex::wait(word, /*expected=*/0, kLongWaitNs);
  EXPECT_LT(monotonic_now_ns() - began, 5'000 * kMs);
}

TEST(Platform, AFutexWaitEndsAtItsTimeout) {
  std::atomic<std::uint32_t> word{0};
  const std::uint64_t began = monotonic_now_ns();
  futex::wait(word, 0, 20 * kMs);
  const std::uint64_t waited = monotonic_now_ns() - began;
  EXPECT_GE(waited, 20 * kMs);
  EXPECT_LT(waited, 5'000 * kMs);
}

// Whether the thread is blocked in the futex system call now (/proc/self/task/TID/syscall starts
// with the number of the call it is in). False where that file cannot be read.
bool in_futex_call(pid_t tid) {
  std::ifstream file("/proc/self/task/" + std::to_string(tid) + "/syscall");
  long number = -1;
  return static_cast<bool>(file >> number) && number == SYS_futex;
}

// wake_all reaches every sleeper: each is seen asleep in the kernel before the wake, and all are
// back long before their timeout.
TEST(Platform, WakeAllWakesEverySleeper) {
  std::atomic<std::uint32_t> word{0};
  constexpr int kSleepers = 3;
  std::vector<std::atomic<pid_t>> tids(kSleepers);
  std::vector<std::thread> sleepers;
  for (int i = 0; i < kSleepers; ++i) {
    sleepers.emplace_back([&, i] {
      tids[i] = static_cast<pid_t>(::syscall(SYS_gettid));
      while (word.load() == 0) futex::wait(word, 0, kLongWaitNs);
    });
  }
  const std::uint64_t began = monotonic_now_ns();
  bool all_asleep = false;
  while (!all_asleep && monotonic_now_ns() - began < 5'000 * kMs) {
    all_asleep = true;
    for (auto& tid : tids) all_asleep = all_asleep && tid.load() != 0 && in_futex_call(tid.load());
    if (!all_asleep) std::this_thread::yield();
  }
  if (!all_asleep) {
    word = 1;
    futex::wake_all(word);
    for (auto& sleeper : sleepers) sleeper.join();
    GTEST_SKIP() << "cannot tell from /proc whether the threads sleep in the kernel";
  }
  const std::uint64_t woken_at = monotonic_now_ns();
  word = 1;
  futex::wake_all(word);
  for (auto& sleeper : sleepers) sleeper.join();
  EXPECT_LT(monotonic_now_ns() - woken_at, 5'000 * kMs) << "woken, not timed out";
}

class OwnFileDescriptionTest : public testing::StateTest {};

// Its OFD locks are its own: another description of the same file conflicts with them, so a gate
// probing a slot's liveness lock never sees its own process's lock as free.
TEST_F(OwnFileDescriptionTest, ItsLocksConflictWithEveryOtherDescription) {
  const auto first = OwnFileDescription::open_read_write(state_->descriptor_path());
  const auto second = OwnFileDescription::open_read_write(state_->descriptor_path());
  ASSERT_TRUE(first.valid());
  ASSERT_TRUE(second.valid());
  constexpr std::int64_t kOffset = layout::kSlotLockBase + 100;
  ASSERT_TRUE(ofd_lock::try_lock(first.fd(), kOffset));
  EXPECT_FALSE(ofd_lock::try_lock(second.fd(), kOffset));
  ofd_lock::unlock(first.fd(), kOffset);
  EXPECT_TRUE(ofd_lock::try_lock(second.fd(), kOffset));
  ofd_lock::unlock(second.fd(), kOffset);
}

TEST(Platform, AFileThatCannotBeOpenedGivesNoDescription) {
  EXPECT_FALSE(OwnFileDescription::open_read_write("/nonexistent/gpushare/state").valid());
}

}  // namespace
}  // namespace gpushare
