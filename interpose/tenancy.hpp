// This process's membership in its tenant: created on the first driver call that needs it (never
// in a constructor: the library may be preloaded into processes that never use CUDA).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "agent_link.hpp"
#include "allocation_map.hpp"
#include "cuda_api.hpp"
#include "core/compute_gate.hpp"
#include "core/inflight_bound.hpp"
#include "core/registry.hpp"
#include "core/settings.hpp"

namespace gpushare::interpose {

// Settings from the environment, read once (or those a linked program gave gpushare_join).
const LoadedSettings& process_settings();
// For the linked API: the settings to use instead of the environment's. False once the tenancy
// has started (a driver call came first), in which case nothing changes.
bool install_process_settings(LoadedSettings settings);

class Tenancy {
 public:
  enum class Mode {
    kEnforce,      // quotas apply
    kPassThrough,  // GPUSHARE_ON_ERROR=open after a configuration or state problem
    kDenyAll,      // GPUSHARE_ON_ERROR=closed (the default) after such a problem
  };

  // Starts it on first use. Inline: every gated launch asks, and once started it is one load.
  static Tenancy& get() {
    if (Tenancy* tenancy = instance_.load(std::memory_order_acquire)) [[likely]] return *tenancy;
    return start_once();
  }
  // The tenancy if a driver call or gpushare_join has started it, else null (starts nothing).
  static Tenancy* if_started() { return instance_.load(std::memory_order_acquire); }

  Mode mode() const { return mode_; }
  // Why the mode is not kEnforce (empty when it is).
  const std::string& failure() const { return failure_; }
  const std::string& tenant_name() const { return tenant_; }
  SharedState& shared_state() { return agent_ ? agent_->shared_state() : *state_; }

  // The shared-state GPU index for a device ordinal, attached (and its context charge taken) on
  // first use. nullopt when the device cannot be identified: the caller passes the call through
  // to the driver, which reports the problem itself.
  std::optional<std::uint32_t> gpu_for(CUdevice ordinal);
  // Whether the device is a GPU the shared state could not record (its table of GPUs is full of
  // GPUs live processes use): its allocations cannot be counted. Tried again once a second.
  bool untracked(CUdevice ordinal) const;
  // Allocations on an untracked device are refused (GPUSHARE_ON_ERROR=closed).
  bool refuses_untracked(CUdevice ordinal) const { return untracked(ordinal) && refuses_uncounted(); }
  static constexpr std::uint64_t kUntrackedRetryNs = 1'000'000'000;
  // What to do with an allocation the ledger cannot count (an untracked GPU, an unusable lock of
  // the state): refuse it (GPUSHARE_ON_ERROR=closed, the default) or let it through uncounted.
  bool refuses_uncounted() const;
  // Takes the context charge if GPUSHARE_CONTEXT_MEMORY asks for one and it is still owed.
  bool context_charge_paid(CUdevice ordinal);

  // The memory ledger, through the shared state (daemonless) or the agent's leases (isolation).
  Result<Reservation> try_reserve(std::uint32_t gpu, std::uint64_t bytes) {
    return agent_ ? agent_->try_reserve(gpu, bytes) : membership_->try_reserve(gpu, bytes);
  }
  Status release(std::uint32_t gpu, std::uint64_t bytes) {
    return agent_ ? agent_->release(gpu, bytes) : membership_->release(gpu, bytes);
  }
  MemoryView view(std::uint32_t gpu) const { return agent_ ? agent_->view(gpu) : membership_->view(gpu); }
  std::uint32_t tenant_index() const { return agent_ ? agent_->tenant_index() : membership_->tenant_index(); }
  // REQUIRES: mode() == kEnforce (both modes make the gate when they join).
  ComputeGate& gate() { return *gate_; }

  // Per GPU: bounds this process's work in flight with events (so that a handover or a
  // higher-priority tenant never waits behind a deep queue). Used on the slow path only.
  InflightBound& inflight(std::uint32_t gpu) { return inflight_[gpu]; }
  std::uint64_t physical_bytes(CUdevice ordinal) const;

  AllocationMap device_pointers;
  AllocationMap vmm_handles;
  AllocationMap arrays;
  AllocationMap mipmapped_arrays;

 private:
  Tenancy() = default;
  void start();
  // Isolation mode: joins through the agent at `socket_path`; returns why not, or "" on success.
  std::string start_with_agent(const std::string& socket_path, const Settings& settings);
  static Tenancy& start_once();
  static void forget_after_fork();

  // Never destroyed once made: driver calls can arrive from other threads while the process exits,
  // and the kernel drops the slot's liveness lock at exit anyway. Null again in a forked child.
  static std::atomic<Tenancy*> instance_;

  struct DeviceBinding {
    std::atomic<int> gpu{-1};
    std::atomic<bool> context_paid{false};
    std::atomic<bool> untracked{false};
    std::atomic<std::uint64_t> retry_at_ns{0};
    std::uint64_t physical_bytes = 0;
  };

  Mode mode_ = Mode::kEnforce;
  std::string failure_;
  std::string tenant_;
  std::unique_ptr<SharedState> state_;
  std::unique_ptr<TenantMembership> membership_;  // daemonless mode
  std::unique_ptr<AgentLink> agent_;               // isolation mode
  std::unique_ptr<ComputeGate> gate_;
  std::array<InflightBound, layout::kMaxGpus> inflight_;
  std::mutex bind_mutex_;
  std::array<DeviceBinding, kMaxDeviceOrdinals> devices_;
};

}  // namespace gpushare::interpose
