// Isolation mode, a tenant process's side: its link to the node agent (agent/), which alone writes
// the shared state. The process maps the state read-only (from a descriptor the agent passes) with
// its private page (also passed) over its slot's owner page, so the launch hooks' hot path reads and
// writes exactly what it does in the daemonless mode.
//
// Memory is spent from the slot's lease (ProcessSlot::lease_left_bytes) with a compare-and-swap:
// no system call per allocation while the lease lasts. When it does not, the process asks the agent
// (Lease), which charges the allocation and a new lease to the slot, or refuses it once it has
// taken back every unspent lease of the tenant. Freed bytes go back to the lease; what is held
// beyond two leases is handed back (LeaseTrim). One exchange with the agent at a time; each has a
// deadline, after which the link counts as broken and every later request fails at once, so that
// the caller applies GPUSHARE_ON_ERROR (launches pass ungated).
//
// When the agent dies the process keeps running: its lease and page are its own. A thread of the
// link watches the socket; once it closes, the thread tries every 100 ms to rejoin a restarted
// agent on the same state (Rejoin, with the page), which keeps the slot, its bytes and its GPUs.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <sys/types.h>

#include "connection.hpp"
#include "core/compute_gate.hpp"
#include "core/memory_ledger.hpp"
#include "core/registry.hpp"
#include "core/settings.hpp"
#include "core/shared_state.hpp"

namespace gpushare::interpose {



class AgentLink final : public SliceBroker {
 public:
  // Connects, is told its tenant, joins (sending its own wishes, which may only lower its limits)
  // and maps the state and its page.
  static Result<std::unique_ptr<AgentLink>> connect(const std::string& socket_path, const Settings& settings);
  ~AgentLink();
  AgentLink(const AgentLink&) = delete;
  AgentLink& operator=(const AgentLink&) = delete;

  SharedState& shared_state() { return *state_; }
  std::uint32_t slot_index() const { return slot_; }
  std::uint32_t tenant_index() const { return tenant_index_; }
  const std::string& tenant_name() const { return tenant_; }
  const ComputePolicyValues& compute_policy() const { return compute_; }

  Result<TenantMembership::Attached> attach_gpu(const GpuUuid& uuid, int ordinal, std::uint64_t physical_bytes,
                                                std::uint64_t wanted_limit_bytes, std::string_view name);
  Result<Reservation> try_reserve(std::uint32_t gpu, std::uint64_t bytes);
  Status release(std::uint32_t gpu, std::uint64_t bytes);
  // The tenant's limit and use, less this process's unspent lease.
  MemoryView view(std::uint32_t gpu) const;

  // For a child after fork(): the connection is the parent's; closes the child's copy only.
  void abandon();

  // SliceBroker: time slices are the agent's to decide.
  void wanted(std::uint32_t gpu) override { notify(agent::SliceWanted{gpu}); }
  void done(std::uint32_t gpu, std::uint32_t slice_seen, std::uint64_t drained_at_ns) override {
    notify(agent::SliceDone{gpu, slice_seen, drained_at_ns});
  }
  void renew(std::uint32_t gpu) override { notify(agent::SliceRenew{gpu}); }
  bool usable() const override { return !broken_.load(std::memory_order_relaxed); }

 private:
  explicit AgentLink(std::unique_ptr<agent::AgentConnection> connection) : connection_(std::move(connection)) {}
  // The watcher thread's loop, and one attempt to rejoin: kNever when the agent refuses this
  // process (its grace for rejoining is over, another state, another policy): then it stops trying.
  enum class Rejoined { kYes, kNotYet, kNever };
  void watch();
  Rejoined rejoin();
  void mark_broken();
  // One request and its answer, under the exchange mutex.
  Result<agent::Message> exchange(const agent::Message& request);
  // A message that has no answer.
  void notify(const agent::Message& message);
  std::atomic<std::int64_t>& lease_left(std::uint32_t gpu) {
    return state_->state().slots[slot_].lease_left_bytes[gpu];
  }

  std::unique_ptr<agent::AgentConnection> connection_;  // replaced on a rejoin, under exchange_mutex_
  std::mutex exchange_mutex_;
  std::string socket_path_;
  int page_fd_ = -1;  // kept for a rejoin
  dev_t state_device_ = 0;
  ino_t state_inode_ = 0;
  std::atomic<bool> broken_{false};  // set under exchange_mutex_
  std::unique_ptr<SharedState> state_;
  std::uint32_t slot_ = 0;
  std::uint32_t tenant_index_ = 0;
  std::string tenant_;
  ComputePolicyValues compute_;
};

}  // namespace gpushare::interpose
