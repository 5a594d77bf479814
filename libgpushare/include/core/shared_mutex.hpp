// Robust, process-shared mutexes in the mapped state, used as locks of untrusted memory: any
// participant can write into the file, so a lock is checked before it is used (garbage in a
// mutex made glibc abort every new process) and never waited on without a bound (a forged owner,
// or an owner stopped inside its critical section, would otherwise hang every other process).
#pragma once

#include <pthread.h>

#include <chrono>
#include <utility>

#include "core/result.hpp"

namespace gpushare::shared_mutex {

// How long a process waits for a lock of the shared state before it gives up and applies
// GPUSHARE_ON_ERROR. Critical sections last microseconds; a holder that keeps a lock this long is
// stopped (SIGSTOP, a paused or frozen container) or the lock word is forged.
inline constexpr std::chrono::milliseconds kDefaultWait{1000};

void init(pthread_mutex_t* mutex);
// Whether the bytes look like a mutex made by init(): its kind, and an owner that could be a
// thread. Reads only; never calls into the C library on the mutex.
bool plausible(const pthread_mutex_t* mutex);

enum class Acquired { kClean, kOwnerDied };
// Locks within `wait`. Reports whether the previous holder died while holding it: the caller must
// then repair what the mutex guards before unlocking. Errors: the mutex is damaged (refused
// without touching it), or it was not free within `wait`.
Result<Acquired> lock(pthread_mutex_t* mutex, std::chrono::nanoseconds wait = kDefaultWait);
void mark_consistent(pthread_mutex_t* mutex);
void unlock(pthread_mutex_t* mutex);

// The one lock type of the shared state: holds a mutex of the mapped file until destroyed. When
// the previous holder died inside, `repair` puts right what the mutex guards before anyone else
// can take it.
class [[nodiscard]] Guard {
 public:
  template <class Repair>
  static Result<Guard> acquire(pthread_mutex_t* mutex, std::chrono::nanoseconds wait, Repair&& repair) {
    auto acquired = lock(mutex, wait);
    if (!acquired) return acquired.error();
    if (acquired.value() == Acquired::kOwnerDied) {
      std::forward<Repair>(repair)();
      mark_consistent(mutex);
    }
    return Guard(mutex);
  }
  Guard(Guard&& other) noexcept : mutex_(std::exchange(other.mutex_, nullptr)) {}
  Guard& operator=(Guard&&) = delete;
  ~Guard() {
    if (mutex_ != nullptr) unlock(mutex_);
  }

 private:
  explicit Guard(pthread_mutex_t* mutex) : mutex_(mutex) {}
  pthread_mutex_t* mutex_;
};

}  // namespace gpushare::shared_mutex
