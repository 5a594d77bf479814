// A restarted agent's first seconds. The state file outlives the agent (tenants map it), and so do
// the tenants: when the agent dies they keep running on their leases and their private pages, and
// reconnect. The new agent keeps every slot that was in use as it was (its tenant, its bytes, its
// GPUs) by holding the slot's liveness lock itself, so that no sweep takes it, until the slot's
// process rejoins (Rejoin: it proves itself by its pid and tenant and hands its page back) or the
// grace period ends; then the slots nobody took back are swept like any dead process's.
//
// The same lock file byte makes the agent the only one: a second agent on the same state refuses
// to start.
#pragma once

#include <bitset>
#include <chrono>
#include <cstdint>
#include <memory>

#include "core/result.hpp"
#include "core/shared_state.hpp"

namespace gpushare::agent {

class Recovery {
 public:
  // Takes the agent's lock on the state and holds the liveness lock of every slot in use.
  static Result<std::unique_ptr<Recovery>> begin(SharedState& state, std::chrono::milliseconds grace);
  ~Recovery();
  Recovery(const Recovery&) = delete;
  Recovery& operator=(const Recovery&) = delete;

  std::size_t pending() const { return pending_.count(); }
  // Whether `slot` waits for its process; if so, gives its lock up so the caller can adopt it.
  bool release_for_adoption(std::uint32_t slot);
  // Gives the locks of the slots nobody took back up once the grace is over; returns how many
  // (the caller sweeps them).
  std::size_t expire_if_due(std::chrono::steady_clock::time_point now);
  // How long until the grace ends; zero when nothing is pending.
  std::chrono::milliseconds time_left(std::chrono::steady_clock::time_point now) const;

 private:
  Recovery(int fd, std::chrono::steady_clock::time_point deadline) : fd_(fd), deadline_(deadline) {}
  int fd_;
  std::chrono::steady_clock::time_point deadline_;
  std::bitset<layout::kMaxSlots> pending_;
};

}  // namespace gpushare::agent
