// The fake driver's kernel activity queue (fake_activity.hpp): appended by launches while recording
// is on, taken by the fake CUPTI when it flushes. Kept ordered by end time, so taking the completed
// entries is popping from the front.
#include "fake_activity.hpp"

#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>

#include "fake_activity_record.hpp"

#define FAKE_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

struct Queue {
  std::mutex mu;
  std::deque<FakeKernelActivity> pending;  // ascending end_ns
  uint32_t next_correlation = 1;
};

// Leaked on purpose: launches on other threads may still record while static destructors run.
Queue& queue() {
  static Queue* q = new Queue;
  return *q;
}

std::atomic<bool> g_recording{false};
std::atomic<uint64_t> g_dropped{0};

}  // namespace

namespace fake_activity {

bool recording() { return g_recording.load(std::memory_order_relaxed); }

void record(uint64_t start_ns, uint64_t end_ns, int device, uint32_t stream, bool graph) noexcept {
  try {
    Queue& q = queue();
    std::lock_guard lock(q.mu);
    if (q.pending.size() >= kFakeActivityPending) {
      g_dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    FakeKernelActivity entry{start_ns, end_ns, device, stream, q.next_correlation++, graph ? 1u : 0u};
    // Launches finish their engine reservation in nearly the order they append, so the place is
    // found from the back in a step or two.
    auto later = std::find_if(q.pending.rbegin(), q.pending.rend(),
                              [&](const FakeKernelActivity& a) { return a.end_ns <= end_ns; });
    q.pending.insert(later.base(), entry);
  } catch (...) {
    g_dropped.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace fake_activity

FAKE_EXPORT void fake_cuda_record_activity(int on) { g_recording.store(on != 0, std::memory_order_relaxed); }

FAKE_EXPORT size_t fake_cuda_take_activity(FakeKernelActivity* out, size_t max, uint64_t completed_by_ns) {
  if (out == nullptr) return 0;
  Queue& q = queue();
  size_t taken = 0;
  try {
    std::lock_guard lock(q.mu);
    while (taken < max && !q.pending.empty() && q.pending.front().end_ns <= completed_by_ns) {
      out[taken++] = q.pending.front();
      q.pending.pop_front();
    }
  } catch (...) {  // std::system_error from the mutex: nothing taken
  }
  return taken;
}

FAKE_EXPORT uint64_t fake_cuda_activity_dropped(void) { return g_dropped.load(std::memory_order_relaxed); }
