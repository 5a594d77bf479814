#include "core/platform.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <ctime>

namespace gpushare {

namespace {
constexpr std::uint64_t kNsPerSecond = 1'000'000'000;

std::uint64_t now_ns(clockid_t clock) {
  timespec now{};
  ::clock_gettime(clock, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * kNsPerSecond + static_cast<std::uint64_t>(now.tv_nsec);
}

timespec timespec_of(std::uint64_t ns) {
  return {static_cast<time_t>(ns / kNsPerSecond), static_cast<long>(ns % kNsPerSecond)};
}
}  // namespace

std::uint64_t monotonic_now_ns() { return now_ns(CLOCK_MONOTONIC); }

std::uint64_t unix_now_ns() { return now_ns(CLOCK_REALTIME); }

void sleep_ns(std::uint64_t ns) {
  // An absolute wake-up time, so that sleeping again after a signal does not add up the sleeps.
  const timespec until = timespec_of(monotonic_now_ns() + ns);
  while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, nullptr) == EINTR) {
  }
}

namespace futex {
namespace {
long call(std::atomic<std::uint32_t>& word, int op, std::uint32_t value, const timespec* timeout) {
  // Not FUTEX_PRIVATE: the word lives in memory shared between processes.
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), op, value, timeout, nullptr, 0);
}
}  // namespace

void wake_all(std::atomic<std::uint32_t>& word) { call(word, FUTEX_WAKE, INT_MAX, nullptr); }

void wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::uint64_t timeout_ns) {
  const timespec timeout = timespec_of(timeout_ns);
  call(word, FUTEX_WAIT, expected, &timeout);
}
}  // namespace futex

namespace fence {
namespace {
bool membarrier(int command) { return ::syscall(SYS_membarrier, command, 0u, 0) == 0; }
}  // namespace
bool register_process_for_global() { return membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED); }
bool register_process_for_own() { return membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED); }
bool registered_processes() { return membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED); }
bool own_threads() { return membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED); }
}  // namespace fence

OwnFileDescription OwnFileDescription::open_read_write(const std::string& path) {
  return OwnFileDescription(::open(path.c_str(), O_RDWR | O_CLOEXEC));
}

OwnFileDescription::~OwnFileDescription() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace gpushare
