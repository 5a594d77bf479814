// The in-flight bound: how much of a process's work may be queued on a GPU, so that a handover or
// a higher-priority tenant never waits behind a deep queue. At each checkpoint (every few
// launches) the bound records an event on the launching stream and first waits for the event
// recorded two checkpoints before:
//
//   checkpoint → wait for the ring's older event → record it again → `interval` launches → ...
//
// so at most (launches between checkpoints) x (events in the ring) launches are in flight. The
// launches between checkpoints adapt to how long the waited-for events were queued, so that the
// queue stays near a target in GPU time. The driver is reached only through InflightEvents and the
// clock through its now_ns(): the shim adapts the CUDA event calls, a test a simulated engine.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>

namespace gpushare {

// What the bound needs of the driver and the clock. Handles are opaque to the core.
using EventHandle = void*;
using StreamHandle = void*;
using ContextHandle = const void*;
class InflightEvents {
 public:
  virtual ~InflightEvents() = default;
  // A new event in the current context; false when none could be made.
  virtual bool create(EventHandle* event) = 0;
  // Records `event` on `stream`: it finishes once the work queued there before it has.
  virtual bool record(EventHandle event, StreamHandle stream) = 0;
  // Blocks until `event` has finished.
  virtual void wait(EventHandle event) = 0;
  virtual void destroy(EventHandle event) = 0;
  virtual std::uint64_t now_ns() = 0;
};

// The bound's settings, fixed for the process; made only by from_settings, so every value comes
// from the settings (whose defaults are the options table's).
struct InflightPacing {
  // Launches between checkpoints while a higher priority class is around: then at most ~4-6
  // launches of this process are queued ahead of its next request.
  static constexpr unsigned kNearHigherClassLaunches = 2;

  bool bounded;  // false: checkpoints only check the slice, no events
  // Launches between checkpoints at most: half the launch bound (two events in the ring).
  unsigned checkpoint_every;
  // GPU time the queue may hold (0: bounded in launches only): in launches alone, 64 kernels of
  // 1 ms would put 64 ms in front of a handover, while 64 tiny kernels are a few hundred µs.
  std::uint64_t queue_target_ns;

  // From GPUSHARE_INFLIGHT_LAUNCHES (0: off; the slice checks then keep `default_launches`'s
  // pace, the table's default) and GPUSHARE_INFLIGHT_MS.
  static InflightPacing from_settings(std::uint32_t inflight_launches, std::uint32_t inflight_ms,
                                      std::uint32_t default_launches);
  // Launches between checkpoints at most, now.
  unsigned most_launches(bool higher_class_near) const;

 private:
  InflightPacing(bool bounded_by_events, unsigned launches_between_checkpoints, std::uint64_t target_ns)
      : bounded(bounded_by_events), checkpoint_every(launches_between_checkpoints), queue_target_ns(target_ns) {}
};

// One GPU's bound for one process. Thread-safe: every launching thread of the process takes its
// turn (while one waits for an event the others wait for it, or they would queue without bound
// meanwhile).
class InflightBound {
 public:
  // An event wait shorter than this found its event finished (on finished work it costs well
  // under a microsecond): how long it was queued is then only an upper bound.
  static constexpr std::uint64_t kWaitedNs = 20'000;
  // Checkpoints in a row in another context than the events' before the bound moves there (a
  // context made first and then left alone, as pycuda's before PyTorch's, keeps no bound).
  static constexpr unsigned kMoveAfterCheckpoints = 8;

  // The launch at a checkpoint: its (the current) context, that context's device, its stream.
  struct Launch {
    ContextHandle context = nullptr;
    int device = -1;
    StreamHandle stream = nullptr;
  };

  // Bounds the work in flight and returns the launches until the next checkpoint (1..`most`).
  // `queue_empty`: the caller was just granted the slice (after its handover's drain, or for its
  // first launch), so the event recorded now marks no work. `*now`: the clock when called, moved
  // on when the bound waited. REQUIRES: most >= 1.
  unsigned checkpoint(const InflightPacing& pacing, InflightEvents& events, const Launch& launch, unsigned most,
                      bool queue_empty, std::uint64_t* now);

  // A handover's drain while the context cannot be synchronized (a stream capture is going on):
  // waits for the newest event, the launching stream's work up to its last checkpoint.
  void wait_for_newest(InflightEvents& events);

  // Destroys the events if they live in `context` / on `device` (before a driver call ends it: a
  // stale handle could be reused for one of the program's own events); the next checkpoint makes
  // new ones in its own context.
  void forget_context(InflightEvents& events, ContextHandle context);
  void forget_device(InflightEvents& events, int device);

 private:
  static constexpr unsigned kRing = 2;

  // REQUIRES: mutex_ held.
  void release_events(InflightEvents& events);
  // Waits for event `e`; returns how long it was queued: exactly when the wait ended as it
  // finished (`*waited`), at most when it had finished before (this look may simply be late).
  std::uint64_t wait_for(InflightEvents& events, unsigned e, std::uint64_t* now, bool* waited);

  std::mutex mutex_;
  std::array<EventHandle, kRing> events_{};
  std::array<std::uint64_t, kRing> recorded_at_ns_{};  // 0 = not pending
  std::array<unsigned, kRing> interval_at_record_{};   // the interval in force then
  std::array<bool, kRing> marked_work_{};              // whether work was queued ahead of it, as far as known
  unsigned next_ = 0;
  // One launch is over half the target: wait for the newest event too. Assumed at first, like
  // the interval of 1, until an event shows launches short.
  bool long_launches_ = true;
  // Launches between checkpoints; starts at 1 so that a program of long kernels never queues
  // much even at its start.
  unsigned interval_ = 1;
  // The context the events were made in (null: none yet) and its device: an event can only be
  // recorded in its own context.
  ContextHandle context_ = nullptr;
  int device_ = -1;
  unsigned checkpoints_elsewhere_ = 0;  // in a row, in another context
};

}  // namespace gpushare
