// The agent's time slices: the same arbiter as the daemonless mode (core/arbiter.hpp), run by the
// agent alone. Tenants mark themselves waiting in their own pages and say so (SliceWanted); holders
// say when they drained after being asked to hand over (SliceDone) and when their slice is over
// (SliceRenew). The agent arbitrates each GPU on those messages and again whenever the arbiter asked
// to look again (idle holders, grace periods, caps), and wakes the waiters on the GPU's futex.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>

#include "core/compute_policy.hpp"
#include "core/shared_state.hpp"

namespace gpushare::agent {

class SliceService {
 public:
  // `live_slot`: whether a slot belongs to a connected process (a closed connection is a dead one).
  SliceService(SharedState& state, std::function<bool(std::uint32_t slot)> live_slot, ArbiterTiming timing = {});

  void wanted(std::uint32_t slot, std::uint32_t gpu);
  // The slice is charged up to the drain's end the process reports (the message itself may wait in
  // a busy agent's queue), never before the process was asked to hand over nor after now: a process
  // that lies can spare its own tenant no more than its drain.
  void done(std::uint32_t slot, std::uint32_t gpu, std::uint32_t slice_seen, std::uint64_t drained_at_ns);
  void renew(std::uint32_t slot, std::uint32_t gpu);
  // A process left: its slice and marks are gone (the registry's hooks); the GPUs are decided again.
  void slot_released();

  // Arbitrates every GPU whose time to look again has come; returns how long until the next one.
  std::chrono::nanoseconds tick();

 private:
  // Arbitrates `gpu` now: recounts its waiters, lets the highest waiting class ask first.
  void decide(std::uint32_t gpu);

  SharedState& state_;
  std::function<bool(std::uint32_t)> live_slot_;
  ArbiterTiming timing_;
  std::array<std::uint64_t, layout::kMaxGpus> next_look_ns_{};  // 0: nothing to look at
  std::array<std::uint64_t, layout::kMaxGpus> last_decided_ns_{};
  static constexpr std::uint64_t kCoalesceNs = 50'000;
};

}  // namespace gpushare::agent
