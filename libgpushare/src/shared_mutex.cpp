#include "core/shared_mutex.hpp"

#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

namespace gpushare::shared_mutex {
namespace {

pthread_mutexattr_t robust_shared_attributes() {
  pthread_mutexattr_t attributes;
  pthread_mutexattr_init(&attributes);
  pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
  return attributes;
}

// The kind word glibc writes for our attributes (robust, process-shared): what every mutex of the
// state must still have.
int expected_kind() {
  static const int kind = [] {
    pthread_mutexattr_t attributes = robust_shared_attributes();
    pthread_mutex_t probe;
    pthread_mutex_init(&probe, &attributes);
    pthread_mutexattr_destroy(&attributes);
    const int value = probe.__data.__kind;
    pthread_mutex_destroy(&probe);
    return value;
  }();
  return kind;
}

// Thread ids never exceed the kernel's PID_MAX_LIMIT (2^22); the futex word keeps them in its low
// 30 bits, beside the waiters and owner-died flags.
constexpr int kMaxThreadId = 1 << 22;
constexpr int kFutexTidMask = 0x3fffffff;

}  // namespace

void init(pthread_mutex_t* mutex) {
  pthread_mutexattr_t attributes = robust_shared_attributes();
  pthread_mutex_init(mutex, &attributes);
  pthread_mutexattr_destroy(&attributes);
}

bool plausible(const pthread_mutex_t* mutex) {
  const auto& data = mutex->__data;
  if (data.__kind != expected_kind()) return false;
  if ((data.__lock & kFutexTidMask) > kMaxThreadId) return false;
  // The owner: none, a thread, or glibc's markers for an inconsistent or unrecoverable mutex.
  return (data.__owner >= 0 && data.__owner <= kMaxThreadId) || data.__owner >= INT_MAX - 1;
}

Result<Acquired> lock(pthread_mutex_t* mutex, std::chrono::nanoseconds wait) {
  if (!plausible(mutex)) return Error{"a lock of the shared state is damaged (not a robust mutex)"};
  // Uncontended (nearly always): no clock to read.
  if (const int rc = pthread_mutex_trylock(mutex); rc == 0) {
    return Acquired::kClean;
  } else if (rc == EOWNERDEAD) {
    return Acquired::kOwnerDied;
  } else if (rc != EBUSY) {
    return Error{fmt::format("a lock of the shared state is unusable: {}", std::strerror(rc))};
  }
#ifdef __SANITIZE_THREAD__
  // GCC 12's ThreadSanitizer intercepts timedlock but not clocklock (it would see unlocks only).
  constexpr clockid_t kClock = CLOCK_REALTIME;
#else
  // Monotonic: a change of the wall clock must not lengthen the wait.
  constexpr clockid_t kClock = CLOCK_MONOTONIC;
#endif
  timespec deadline{};
  ::clock_gettime(kClock, &deadline);
  const auto total_ns = deadline.tv_nsec + wait.count();
  deadline.tv_sec += static_cast<time_t>(total_ns / 1'000'000'000);
  deadline.tv_nsec = static_cast<long>(total_ns % 1'000'000'000);
#ifdef __SANITIZE_THREAD__
  const int rc = pthread_mutex_timedlock(mutex, &deadline);
#else
  const int rc = pthread_mutex_clocklock(mutex, kClock, &deadline);
#endif
  if (rc == 0) return Acquired::kClean;
  if (rc == EOWNERDEAD) return Acquired::kOwnerDied;
  // The waiter itself may have been descheduled past its deadline while the lock came free.
  if (rc == ETIMEDOUT) {
    if (const int late = pthread_mutex_trylock(mutex); late == 0) {
      return Acquired::kClean;
    } else if (late == EOWNERDEAD) {
      return Acquired::kOwnerDied;
    }
    return Error{fmt::format("a lock of the shared state was not free within {} ms (its holder is stopped, or "
                             "the lock is forged)",
                             std::chrono::duration_cast<std::chrono::milliseconds>(wait).count())};
  }
  return Error{fmt::format("a lock of the shared state is unusable: {}", std::strerror(rc))};
}

void mark_consistent(pthread_mutex_t* mutex) { pthread_mutex_consistent(mutex); }
void unlock(pthread_mutex_t* mutex) { pthread_mutex_unlock(mutex); }

}  // namespace gpushare::shared_mutex
