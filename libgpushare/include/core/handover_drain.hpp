// The first step of a handover's drain: launches of other threads of the process that passed their
// slice check before the handover was asked go in first. Submitted after the drain, their kernels
// would run, uncharged, in the next holder's slice. The threads are counted through callables, so
// that a test drives the wait with a fake clock.
#pragma once

#include <cstdint>
#include <functional>

namespace gpushare {

// Longest a handover waits for those launches to go in.
inline constexpr std::uint64_t kLaunchesInFlightWaitNs = 10'000'000;

struct LaunchingThreads {
  // Threads of the process inside a gated call on the GPU.
  std::function<std::uint64_t()> inside;
  // Of those, the ones not about to submit: in the gate's slow path or in a synchronize.
  std::function<std::uint64_t()> parked;
  std::function<std::uint64_t()> now_ns;
  // Lets a launching thread run.
  std::function<void()> yield;
};

// Returns once no thread is between its slice check and the end of its launch, or after
// kLaunchesInFlightWaitNs. `watch_ns`: how long to keep looking when none is seen (0 once the
// threads were fenced; else a launching thread's entry may still be in its core's store buffer).
void wait_for_launching_threads(const LaunchingThreads& threads, std::uint64_t watch_ns);

}  // namespace gpushare
