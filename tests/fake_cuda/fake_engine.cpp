// See fake_engine.hpp.

#include "fake_engine.hpp"

#include "fake_collective.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace fake_engine {
namespace {

// The layout of the engine file. All zero is the initial state.
struct Shared {
  std::atomic<uint64_t> busy_until_ns[kDevices];  // end of the last kernel reserved
  fake_collective::Table collectives;
  std::atomic<uint64_t> beside_until_ns[kDevices];
};
// Shared between processes: the atomics must not hide a process-local lock.
static_assert(std::atomic<uint64_t>::is_always_lock_free);

Shared* g_shared = nullptr;

void* map_file(const char* path) {
  int fd = ::open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) return MAP_FAILED;
  void* p = MAP_FAILED;
  struct stat st {};
  // The lock makes "check the size, then grow it" atomic between processes.
  // Growing only, and only with zeros, never disturbs a process already using it.
  int rc = 0;
  while ((rc = flock(fd, LOCK_EX)) != 0 && errno == EINTR) {
  }
  if (rc == 0 && fstat(fd, &st) == 0 &&
      (static_cast<uint64_t>(st.st_size) >= sizeof(Shared) || ftruncate(fd, sizeof(Shared)) == 0))
    p = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int saved = errno;
  // Unlock explicitly: the mapping holds the open file description, and with
  // it the lock, past close() (until munmap).
  if (rc == 0) flock(fd, LOCK_UN);
  close(fd);
  errno = saved;
  return p;
}

}  // namespace

bool open() {
  static const bool ok = [] {
    const char* path = std::getenv("FAKE_CUDA_ENGINE");
    bool shared = path != nullptr && *path != '\0';
    void* p = shared ? map_file(path)
                     : mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      std::fprintf(stderr, "fake_cuda: cannot map FAKE_CUDA_ENGINE='%s': %s\n", shared ? path : "",
                   std::strerror(errno));
      return false;
    }
    g_shared = static_cast<Shared*>(p);  // zero-filled: every device idle
    return true;
  }();
  return ok;
}

uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

// The default 50 us timer slack would dominate the wait for a short kernel
// (the real driver returns within microseconds), so the calling thread's slack
// is shrunk for the sleep and then put back.
void sleep_until(uint64_t t) {
  if (now_ns() >= t) return;
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(t / 1000000000ULL);
  ts.tv_nsec = static_cast<long>(t % 1000000000ULL);
  int slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  if (slack > 1000) prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
  if (slack > 1000) prctl(PR_SET_TIMERSLACK, static_cast<unsigned long>(slack), 0, 0, 0);
}

// Kernels of all processes run one at a time, in the order their CAS won.
uint64_t launch(int phys, uint64_t earliest, uint64_t duration, uint64_t max_queue, uint64_t timeslice,
                uint64_t* queued) {
  std::atomic<uint64_t>& busy = g_shared->busy_until_ns[phys];
  uint64_t waited_since = 0;
  for (;;) {
    uint64_t now = now_ns();
    uint64_t last = busy.load(std::memory_order_acquire);
    if ((last & fake_collective::kPendingBit) != 0) {
      // As a host blocked behind a spinning kernel, until the hardware switches contexts.
      if (waited_since == 0) waited_since = now;
      if (fake_collective::wait_resolved(phys, last, waited_since + timeslice)) continue;
      return fake_collective::launch_beside(phys, earliest, duration, max_queue, queued);
    }
    uint64_t start = std::max({now, last, earliest});
    if (start - now > max_queue) {
      sleep_until(start - max_queue);  // the queue is full: wait for room, then look again
      continue;
    }
    if (busy.compare_exchange_weak(last, start + duration, std::memory_order_acq_rel)) {
      *queued = start - now;
      return start + duration;
    }
  }
}

std::atomic<uint64_t>& busy_until(int phys) { return g_shared->busy_until_ns[phys]; }

std::atomic<uint64_t>& beside_until(int phys) { return g_shared->beside_until_ns[phys]; }

fake_collective::Table& collective_table() { return g_shared->collectives; }

}  // namespace fake_engine
