// The operating system under the core: the clocks and sleeping, futexes on words of the shared
// mapping, asymmetric fences (membarrier) and a descriptor of its own on the state file. Every
// clock read and system call of the arbiter and the gate goes through here, so the decisions above
// it stay functions of the shared state and a clock that tests can drive.
//
// The rest of this layer: shared_mutex.hpp, the one lock type of the shared state (a robust,
// process-shared mutex, shared_mutex::Guard), and the open-file-description liveness locks
// (shared_state.hpp, ofd_lock).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace gpushare {

// CLOCK_MONOTONIC in nanoseconds: the clock of every slice, charge and deadline in the state.
std::uint64_t monotonic_now_ns();
// CLOCK_REALTIME in nanoseconds since the Unix epoch: for moments people read (when a tenant or a
// process joined, when a report was taken), never for a deadline (it may jump).
std::uint64_t unix_now_ns();
// Sleeps for at least `ns` on the monotonic clock; a signal does not cut the sleep short.
void sleep_ns(std::uint64_t ns);

// Futexes on words of the shared mapping (never FUTEX_PRIVATE: the sleepers are other processes).
namespace futex {
// Wakes every thread, in any process, sleeping on `word`.
void wake_all(std::atomic<std::uint32_t>& word);
// Sleeps while `word` holds `expected`, at most `timeout_ns`. May return early (a wake-up meant for
// another value, a signal): the caller looks at the state again either way.
void wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::uint64_t timeout_ns);
}  // namespace futex

// Asymmetric fences (Linux membarrier: the private one from 4.14, the global one from 4.16): for
// the rare readers that pair with the hot path's plain stores (ComputeGate::begin_launch). The hot
// path pays nothing; the reader makes the writers' running threads pass a full memory barrier (an
// interrupt to the CPUs that run them; the global one reaches every CPU running a registered
// process), after which each thread's store is visible or its next load comes after the reader's
// own store. Each returns false where the kernel, or a seccomp profile, refuses it. The global one
// is called under a GPU's schedule mutex: the kernel serialises expedited membarriers system-wide
// and holds off CPU hotplug meanwhile, so it may wait behind other programs' (.NET's garbage
// collector, liburcu), usually for microseconds. Their cost is in docs/performance.md.
namespace fence {
// Once per process, before its first launch: for both of the others.
bool register_process_for_global();
bool register_process_for_own();
// Every running thread of every process registered for it (MEMBARRIER_CMD_GLOBAL_EXPEDITED).
bool registered_processes();
// Every running thread of this process (MEMBARRIER_CMD_PRIVATE_EXPEDITED).
bool own_threads();
}  // namespace fence

// Where no fence is to be had, how long such a reader keeps looking instead. A store leaves its
// core's store buffer in nanoseconds, a few hundred with a cache miss. That is an assumption about
// the hardware (neither C++ nor x86-64 nor AArch64 bounds it), not a guarantee: should a store ever
// take longer, one launch runs, uncharged, at the start of the next holder's slice.
inline constexpr std::uint64_t kStoreVisibleNs = 10'000;

// A file opened read-write (close-on-exec) for this object alone, closed with it: an open file
// description of its own, whose OFD locks conflict with every other description's.
class OwnFileDescription {
 public:
  // Never fails: valid() says whether the file could be opened.
  static OwnFileDescription open_read_write(const std::string& path);
  ~OwnFileDescription();
  OwnFileDescription(const OwnFileDescription&) = delete;
  OwnFileDescription& operator=(const OwnFileDescription&) = delete;

  bool valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }

 private:
  explicit OwnFileDescription(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace gpushare
