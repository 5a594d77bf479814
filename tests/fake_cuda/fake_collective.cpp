// See fake_collective.hpp.

#include "fake_collective.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <ctime>
#include <mutex>
#include <unordered_map>

#include "fake_engine.hpp"

namespace fake_collective {
namespace {

static_assert(std::atomic<uint32_t>::is_always_lock_free);

constexpr uint64_t kStepBits = (1ULL << 40) - 1;
constexpr uint64_t kPollCapNs = 50'000'000;  // a waiter looks again at least this often
constexpr uint32_t kGpuMask = 0xFF;      // Step::gpus: the physical device + 1 ...
constexpr uint32_t kBesideFlag = 0x100;  // ... and whether the part spun beside another collective

uint64_t handle_value(CUfunction f) { return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(f)); }

uint64_t pending_token(uint32_t slot, uint64_t step) { return kPendingBit | uint64_t{slot} << 40 | (step & kStepBits); }

// Sleeps while `word` still holds `expected`, at most `ns` (the futex works across processes on
// the shared mapping). Spurious wake-ups are fine: every caller looks again.
void futex_wait(std::atomic<uint32_t>& word, uint32_t expected, uint64_t ns) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000ULL);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000ULL);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

// The table's lock, made by the first process that needs it. Robust: the lock of a process that
// died holding it is taken over (the records it left are checked like any other).
class TableLock {
 public:
  explicit TableLock(Table& table) : mutex_(&table.lock) {
    uint32_t state = table.lock_state.load(std::memory_order_acquire);
    if (state != 2) {
      uint32_t expected = 0;
      if (table.lock_state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
        pthread_mutexattr_t attr;
        pthread_mutexattr_init(&attr);
        pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(mutex_, &attr);
        pthread_mutexattr_destroy(&attr);
        table.lock_state.store(2, std::memory_order_release);
      }
      while (table.lock_state.load(std::memory_order_acquire) != 2) fake_engine::sleep_until(fake_engine::now_ns() + 100'000);
    }
    if (pthread_mutex_lock(mutex_) == EOWNERDEAD) pthread_mutex_consistent(mutex_);
  }
  ~TableLock() { pthread_mutex_unlock(mutex_); }
  TableLock(const TableLock&) = delete;
  TableLock& operator=(const TableLock&) = delete;

 private:
  pthread_mutex_t* mutex_;
};

// The step index of this process's next part in each group, in launch order.
std::mutex g_steps_mutex;
std::unordered_map<uint32_t, uint64_t> g_next_step;

uint64_t next_step(uint32_t group) {
  std::lock_guard<std::mutex> lock(g_steps_mutex);
  return g_next_step[group];
}
void count_step(uint32_t group) {
  std::lock_guard<std::mutex> lock(g_steps_mutex);
  ++g_next_step[group];
}

// Raises `word` to at least `t`.
void raise_to(std::atomic<uint64_t>& word, uint64_t t) {
  uint64_t value = word.load(std::memory_order_acquire);
  while (value < t && !word.compare_exchange_weak(value, t, std::memory_order_acq_rel)) {
  }
}

// The step's first `parts` parts end at `time`: a GPU it made pending shows that time (or the end
// of what ran beside it, if later); a GPU where a part spun beside another collective has its
// beside timeline raised. Under the table's lock.
void release_gpus_locked(uint32_t slot, Step& step, uint32_t parts, uint64_t time) {
  const uint64_t token = pending_token(slot, step.index.load(std::memory_order_relaxed));
  for (uint32_t r = 0; r < std::min(parts, kMaxRanks); ++r) {
    const uint32_t gpu = step.gpus[r].load(std::memory_order_relaxed);
    const uint32_t phys = (gpu & kGpuMask) - 1;
    if ((gpu & kGpuMask) == 0 || phys >= static_cast<uint32_t>(fake_engine::kDevices)) continue;
    std::atomic<uint64_t>& beside = fake_engine::beside_until(static_cast<int>(phys));
    if ((gpu & kBesideFlag) != 0) {
      raise_to(beside, time);
    } else {
      uint64_t expected = token;
      fake_engine::busy_until(static_cast<int>(phys))
          .compare_exchange_strong(expected, std::max(time, beside.load(std::memory_order_acquire)),
                                   std::memory_order_acq_rel);
    }
  }
}

// The step failed: its parts' GPUs are free now. Under the table's lock.
void fail_locked(uint32_t slot, Step& step) {
  release_gpus_locked(slot, step, step.arrived.load(std::memory_order_relaxed), fake_engine::now_ns());
  step.state.store(kFailed, std::memory_order_release);
  futex_wake_all(step.state);
}

bool step_is_open(const Step& step, uint64_t index) {
  return step.state.load(std::memory_order_acquire) == kOpen &&
         (step.index.load(std::memory_order_acquire) & kStepBits) == (index & kStepBits);
}

// Sleeps while `step` (slot `slot`) is open, failing it once past its deadline, or until `until`.
void wait_while_open(uint32_t slot, Step& step, uint64_t index, uint64_t until = UINT64_MAX) {
  Table& table = fake_engine::collective_table();
  while (step_is_open(step, index)) {
    const uint64_t now = fake_engine::now_ns();
    const uint64_t deadline = step.deadline_ns.load(std::memory_order_acquire);
    if (now >= until) return;
    if (now < deadline) {
      futex_wait(step.state, kOpen, std::min({deadline - now, until - now, kPollCapNs}));
      continue;
    }
    TableLock lock(table);
    if (step_is_open(step, index) && fake_engine::now_ns() >= step.deadline_ns.load(std::memory_order_relaxed))
      fail_locked(slot, step);
  }
}

// The slot of `group`, claimed if new: a free slot, or one idle (nothing open) for longer than the
// timeout. -1 with *error set when none or when the group was opened with another rank count.
int group_slot_locked(Table& table, uint32_t group, uint32_t ranks, uint64_t now, uint64_t timeout, CUresult* error) {
  int free_slot = -1;
  for (uint32_t i = 0; i < kGroups; ++i) {
    Group& g = table.groups[i];
    const uint32_t id = g.id.load(std::memory_order_relaxed);
    if (id == group) {
      if (g.ranks.load(std::memory_order_relaxed) == ranks) return static_cast<int>(i);
      *error = CUDA_ERROR_INVALID_VALUE;
      return -1;
    }
    if (free_slot >= 0) continue;
    bool idle = id == 0 || now - std::min(now, g.last_active_ns.load(std::memory_order_relaxed)) > timeout;
    for (const Step& s : g.steps) idle = idle && s.state.load(std::memory_order_relaxed) != kOpen;
    if (idle) free_slot = static_cast<int>(i);
  }
  if (free_slot < 0) {
    *error = CUDA_ERROR_OUT_OF_MEMORY;
    return -1;
  }
  Group& g = table.groups[free_slot];
  for (Step& s : g.steps) s.state.store(kUnused, std::memory_order_release);
  g.ranks.store(ranks, std::memory_order_relaxed);
  g.id.store(group, std::memory_order_release);
  return free_slot;
}

}  // namespace

bool is_collective(CUfunction f) { return handle_value(f) >> 48 == kHandleTag; }

CUresult launch(CUfunction f, int phys, uint64_t earliest, uint64_t duration, const Timing& timing, uint64_t* end,
                uint64_t* queued) {
  const uint64_t value = handle_value(f);
  const auto group = static_cast<uint32_t>(value);
  const auto ranks = static_cast<uint32_t>(value >> 32 & 0xFFFF);
  if (group == 0 || ranks == 0 || ranks > kMaxRanks) return CUDA_ERROR_INVALID_HANDLE;
  const uint64_t index = next_step(group);
  std::atomic<uint64_t>& busy = fake_engine::busy_until(phys);
  Table& table = fake_engine::collective_table();
  Step* waiting = nullptr;
  uint32_t waiting_slot = 0;
  uint64_t waited_since = 0;
  for (;;) {
    // Wait for the GPU as an ordinary launch does: another collective pending there (for one time
    // slice at most, then this part spins beside it), or room in the queue.
    uint64_t now = fake_engine::now_ns();
    uint64_t last = busy.load(std::memory_order_acquire);
    bool beside = false;
    if ((last & kPendingBit) != 0) {
      if (waited_since == 0) waited_since = now;
      if (wait_resolved(phys, last, waited_since + timing.timeslice)) continue;
      beside = true;
    } else if (const uint64_t start = std::max({now, last, earliest}); start - now > timing.max_queue) {
      fake_engine::sleep_until(start - timing.max_queue);
      continue;
    }
    TableLock lock(table);
    // Only the lock's holder makes a GPU pending: if none is now, none becomes so until we unlock.
    last = busy.load(std::memory_order_acquire);
    if (beside != ((last & kPendingBit) != 0)) continue;  // changed meanwhile: look again
    now = fake_engine::now_ns();
    CUresult error = CUDA_SUCCESS;
    const int slot = group_slot_locked(table, group, ranks, now, timing.timeout, &error);
    if (slot < 0) return error;
    Group& g = table.groups[slot];
    g.last_active_ns.store(now, std::memory_order_relaxed);
    Step& step = g.steps[index % kStepsKept];
    const uint32_t state = step.state.load(std::memory_order_relaxed);
    const uint64_t recorded = step.index.load(std::memory_order_relaxed);
    if (state != kUnused && recorded == index) {
      // A peer's part is there already (open), the step failed before this part came, or it has
      // all its parts already (one rank too many).
      if (state == kFailed) count_step(group);
      if (state != kOpen) return state == kFailed ? CUDA_ERROR_LAUNCH_TIMEOUT : CUDA_ERROR_INVALID_VALUE;
    } else if (state != kUnused && recorded > index) {
      count_step(group);  // this rank is behind steps that were given up on without it
      return CUDA_ERROR_LAUNCH_TIMEOUT;
    } else {
      if (state == kOpen) fail_locked(static_cast<uint32_t>(slot), step);  // older, never completed
      step.index.store(index, std::memory_order_relaxed);
      step.arrived.store(0, std::memory_order_relaxed);
      step.max_start_ns.store(0, std::memory_order_relaxed);
      step.end_ns.store(0, std::memory_order_relaxed);
      step.deadline_ns.store(now + timing.timeout, std::memory_order_relaxed);
      for (auto& gpu : step.gpus) gpu.store(0, std::memory_order_relaxed);
      step.state.store(kOpen, std::memory_order_release);
    }
    count_step(group);
    const uint64_t token = pending_token(static_cast<uint32_t>(slot), index);
    const uint32_t arrived = step.arrived.load(std::memory_order_relaxed) + 1;
    // The part's timeline: the GPU's, or beside the collective pending there. Ordinary launches
    // may still move it on: reserve with a CAS.
    std::atomic<uint64_t>& timeline = beside ? fake_engine::beside_until(phys) : busy;
    uint64_t start = 0;
    last = timeline.load(std::memory_order_acquire);
    if (arrived >= ranks) {
      uint64_t finish = 0;
      do {
        start = std::max({now, last, earliest});
        finish = std::max(step.max_start_ns.load(std::memory_order_relaxed), start) + duration;
      } while (!timeline.compare_exchange_weak(last, finish, std::memory_order_acq_rel));
      step.end_ns.store(finish, std::memory_order_relaxed);
      release_gpus_locked(static_cast<uint32_t>(slot), step, arrived - 1, finish);
      step.arrived.store(arrived, std::memory_order_relaxed);
      step.state.store(kResolved, std::memory_order_release);
      futex_wake_all(step.state);
      *end = finish;
      *queued = start - now;
      return CUDA_SUCCESS;
    }
    if (beside) {
      start = std::max({now, last, earliest});
    } else {
      do {
        start = std::max({now, last, earliest});
      } while (!busy.compare_exchange_weak(last, token, std::memory_order_acq_rel));
    }
    step.max_start_ns.store(std::max(step.max_start_ns.load(std::memory_order_relaxed), start), std::memory_order_relaxed);
    step.gpus[arrived - 1].store(static_cast<uint32_t>(phys + 1) | (beside ? kBesideFlag : 0), std::memory_order_relaxed);
    step.arrived.store(arrived, std::memory_order_relaxed);
    *queued = start - now;
    waiting = &step;
    waiting_slot = static_cast<uint32_t>(slot);
    break;
  }
  // This part spins on its GPU until its peers come: the host waits here, as behind a full queue.
  Step& step = *waiting;
  wait_while_open(waiting_slot, step, index);
  if (step.state.load(std::memory_order_acquire) == kResolved &&
      (step.index.load(std::memory_order_acquire) & kStepBits) == (index & kStepBits)) {
    *end = step.end_ns.load(std::memory_order_acquire);
    return CUDA_SUCCESS;
  }
  return CUDA_ERROR_LAUNCH_TIMEOUT;
}

uint64_t launch_beside(int phys, uint64_t earliest, uint64_t duration, uint64_t max_queue, uint64_t* queued) {
  std::atomic<uint64_t>& beside = fake_engine::beside_until(phys);
  for (;;) {
    const uint64_t now = fake_engine::now_ns();
    uint64_t last = beside.load(std::memory_order_acquire);
    const uint64_t start = std::max({now, last, earliest});
    if (start - now > max_queue) {
      fake_engine::sleep_until(start - max_queue);
      continue;
    }
    if (!beside.compare_exchange_weak(last, start + duration, std::memory_order_acq_rel)) continue;
    // Resolved meanwhile: what comes next on the GPU comes after this kernel too.
    std::atomic<uint64_t>& busy = fake_engine::busy_until(phys);
    uint64_t value = busy.load(std::memory_order_acquire);
    while ((value & kPendingBit) == 0 && value < start + duration &&
           !busy.compare_exchange_weak(value, start + duration, std::memory_order_acq_rel)) {
    }
    *queued = start - now;
    return start + duration;
  }
}

bool wait_resolved(int phys, uint64_t pending, uint64_t until) {
  std::atomic<uint64_t>& busy = fake_engine::busy_until(phys);
  const uint64_t beside = fake_engine::beside_until(phys).load(std::memory_order_acquire);
  const auto slot = static_cast<uint32_t>(pending >> 40 & ((1ULL << 23) - 1));
  const uint64_t index = pending & kStepBits;
  if (slot >= kGroups) {  // not a token this code makes: the file was damaged
    busy.compare_exchange_strong(pending, std::max(fake_engine::now_ns(), beside), std::memory_order_acq_rel);
    return true;
  }
  Step& step = fake_engine::collective_table().groups[slot].steps[index % kStepsKept];
  wait_while_open(slot, step, index, until);
  if (step_is_open(step, index)) return busy.load(std::memory_order_acquire) != pending;
  // Resolved, failed, or the record was reused: make sure the GPU shows a time again (whoever
  // resolved or failed the step normally did so already).
  const bool resolved = step.state.load(std::memory_order_acquire) == kResolved &&
                        (step.index.load(std::memory_order_acquire) & kStepBits) == index;
  const uint64_t time = resolved ? step.end_ns.load(std::memory_order_acquire) : fake_engine::now_ns();
  busy.compare_exchange_strong(pending, std::max(time, fake_engine::beside_until(phys).load()), std::memory_order_acq_rel);
  return true;
}

}  // namespace fake_collective

CUfunction fake_cuda_collective(uint32_t group, uint32_t ranks) {
  if (group == 0 || ranks == 0 || ranks > fake_collective::kMaxRanks) return nullptr;
  const uint64_t value = fake_collective::kHandleTag << 48 | uint64_t{ranks} << 32 | group;
  return reinterpret_cast<CUfunction>(static_cast<uintptr_t>(value));
}
