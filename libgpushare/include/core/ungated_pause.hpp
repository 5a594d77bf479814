// After a GPU's time-slice arbiter failed (its schedule lock held by a stopped or descheduled
// process, damaged or forged), launches on that GPU go ungated for a while rather than each
// waiting out the lock's bound, so the GPU is never left idle; then the arbiter is tried again.
// The pause doubles with each failure in a row and starts again after a success.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace gpushare {

class UngatedPause {
 public:
  // A process descheduled under the lock is back soon.
  static constexpr std::uint64_t kFirstNs = 50'000'000;
  // A forged lock stays: try again now and then.
  static constexpr std::uint64_t kLongestNs = 5'000'000'000;

  // Whether launches at `now` go ungated.
  bool ungated(std::uint64_t now) const {
    const std::uint64_t until = until_ns_.load(std::memory_order_relaxed);
    return until != 0 && now < until;
  }
  // The arbiter failed at `now`: returns the pause begun.
  std::uint64_t failed(std::uint64_t now) {
    const std::uint64_t last = pause_ns_.load(std::memory_order_relaxed);
    const std::uint64_t pause = last == 0 ? kFirstNs : std::min(2 * last, kLongestNs);
    pause_ns_.store(pause, std::memory_order_relaxed);
    until_ns_.store(now + pause, std::memory_order_relaxed);
    return pause;
  }
  void worked() {
    if (pause_ns_.load(std::memory_order_relaxed) != 0) pause_ns_.store(0, std::memory_order_relaxed);
  }

 private:
  std::atomic<std::uint64_t> until_ns_{0};
  std::atomic<std::uint64_t> pause_ns_{0};
};

}  // namespace gpushare
