#include "core/handover_drain.hpp"

#include <algorithm>

namespace gpushare {

// Threads go inside before they park and unpark before they leave: counting those inside before
// and after the parked ones and taking the larger count never misses a launching thread (one that
// parks or unparks meanwhile may pass for launching, for one more look).
void wait_for_launching_threads(const LaunchingThreads& threads, std::uint64_t watch_ns) {
  const std::uint64_t began = threads.now_ns();
  for (std::uint64_t now = began; now < began + kLaunchesInFlightWaitNs; now = threads.now_ns()) {
    const std::uint64_t inside_before = threads.inside();
    const std::uint64_t parked = threads.parked();
    const bool launching = std::max(inside_before, threads.inside()) > parked;
    if (!launching && now - began >= watch_ns) break;
    if (launching) threads.yield();
  }
}

}  // namespace gpushare
