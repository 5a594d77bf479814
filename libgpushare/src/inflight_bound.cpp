#include "core/inflight_bound.hpp"

#include <algorithm>

namespace gpushare {

InflightPacing InflightPacing::from_settings(std::uint32_t inflight_launches, std::uint32_t inflight_ms,
                                             std::uint32_t default_launches) {
  const std::uint32_t launches = inflight_launches == 0 ? default_launches : inflight_launches;
  return InflightPacing(inflight_launches != 0, std::max(1u, launches / 2), std::uint64_t{inflight_ms} * 1'000'000);
}

unsigned InflightPacing::most_launches(bool higher_class_near) const {
  return higher_class_near ? std::min(kNearHigherClassLaunches, checkpoint_every) : checkpoint_every;
}

std::uint64_t InflightBound::wait_for(InflightEvents& events, unsigned e, std::uint64_t* now, bool* waited) {
  const std::uint64_t before = *now;
  events.wait(events_[e]);
  *now = events.now_ns();
  *waited = *now - before >= kWaitedNs;
  return *now - recorded_at_ns_[e];
}

// When a wait ends as its event finishes, the event spent (now - recorded) queued: the GPU time of
// the work ahead of it, about two intervals' worth. Over the target, the interval is scaled down by
// target / that. Under half the target it grows by one: only slowly, because a short queue may just
// mean the GPU caught up while this thread was descheduled, and says little about the kernels.
unsigned InflightBound::checkpoint(const InflightPacing& pacing, InflightEvents& events, const Launch& launch,
                                   unsigned most, bool queue_empty, std::uint64_t* now) {
  if (!pacing.bounded) return most;
  const std::lock_guard lock(mutex_);
  if (context_ != nullptr && context_ != launch.context) {
    // The events live in another context of this GPU: this launch is not bounded, and checks again
    // at the next launch, until the bound moves here.
    if (++checkpoints_elsewhere_ < kMoveAfterCheckpoints) return 1;
    release_events(events);
  }
  checkpoints_elsewhere_ = 0;
  if (context_ == nullptr) {
    context_ = launch.context;
    device_ = launch.device;
  }
  const unsigned i = next_;
  const unsigned newest = (i + kRing - 1) % kRing;
  next_ = (i + 1) % kRing;
  if (events_[i] == nullptr && !events.create(&events_[i])) {
    events_[i] = nullptr;
    return most;
  }
  const std::uint64_t target = pacing.queue_target_ns;
  unsigned interval = target == 0 ? most : std::clamp(interval_, 1u, most);
  if (recorded_at_ns_[i] != 0) {
    bool waited = false;
    const std::uint64_t queued = wait_for(events, i, now, &waited);
    if (target == 0) {
      // bounded in launches only
    } else if (waited && queued > target) {
      const std::uint64_t scaled = interval_at_record_[i] * target / queued;
      interval = static_cast<unsigned>(std::clamp<std::uint64_t>(scaled, 1, most));
      long_launches_ = interval == 1;
    } else if (queued < target / 2 && marked_work_[i] && !long_launches_) {
      // Never on an event recorded on a just-drained queue: it finishes at once whatever the kernels.
      interval = std::min(most, interval + 1);
    }
  }
  // Even one launch per checkpoint queues too much when a launch alone is over half the target
  // (whole captured steps of tens of milliseconds): wait for the newest event too, so that one
  // launch runs while the next is queued. How long that event was queued is one launch's GPU time:
  // it says when launches have become short again (not just after a wait for the slice: it
  // finished at some moment of that wait).
  if (long_launches_ && interval == 1) {
    if (recorded_at_ns_[newest] != 0) {
      bool waited = false;
      const std::uint64_t queued = wait_for(events, newest, now, &waited);
      if (marked_work_[newest] && !queue_empty) long_launches_ = queued > target / 2;
    }
  } else {
    long_launches_ = false;
  }
  const bool recorded = events.record(events_[i], launch.stream);
  recorded_at_ns_[i] = recorded ? std::max<std::uint64_t>(*now, 1) : 0;
  interval_at_record_[i] = interval;
  marked_work_[i] = !queue_empty;
  interval_ = interval;
  return interval;
}

void InflightBound::wait_for_newest(InflightEvents& events) {
  const std::lock_guard lock(mutex_);
  const unsigned newest = (next_ + kRing - 1) % kRing;
  if (recorded_at_ns_[newest] != 0) events.wait(events_[newest]);
}

void InflightBound::forget_context(InflightEvents& events, ContextHandle context) {
  const std::lock_guard lock(mutex_);
  if (context_ != nullptr && context_ == context) release_events(events);
}

void InflightBound::forget_device(InflightEvents& events, int device) {
  const std::lock_guard lock(mutex_);
  if (context_ != nullptr && device_ == device) release_events(events);
}

void InflightBound::release_events(InflightEvents& events) {
  for (EventHandle& event : events_) {
    if (event != nullptr) events.destroy(event);
    event = nullptr;
  }
  recorded_at_ns_ = {};
  marked_work_ = {};
  next_ = 0;
  context_ = nullptr;
}

}  // namespace gpushare
