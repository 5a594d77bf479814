// Tenants, process slots and the per-GPU memory ledger, on top of the mapped shared state.
//
// Protocol for an allocation (rmm's limiting adaptor, made cross-process and crash-safe):
//   try_reserve(gpu, n)  -> the bytes are counted against the quota before the driver is asked,
//   driver call          -> on success nothing more is needed: the reservation *is* the charge,
//   release(gpu, n)      -> on driver failure (rollback), or when the memory is freed.
// Reservation and the quota check are one step under the GPU's ledger mutex, so two processes
// racing for the last bytes can never exceed the quota by a single byte.
//
// Cost: one uncontended process-shared robust mutex (an atomic exchange in user space; a futex
// system call only when two processes allocate on the same GPU at the same instant). The mutex,
// not lock-free counters, is what makes crash recovery exact: see state_layout.hpp.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/compute_policy.hpp"
#include "core/result.hpp"
#include "core/shared_state.hpp"

namespace gpushare {

using GpuUuid = std::array<std::uint8_t, 16>;

// "GPU-8f1c2a3b-...": the form nvidia-smi prints.
std::string format_gpu_uuid(const GpuUuid& uuid);

struct MemoryView {
  std::uint64_t limit_bytes = 0;
  std::uint64_t used_bytes = 0;
};

enum class Reservation { kGranted, kOverQuota };

// Checks a tenant name: 1 to 95 bytes of printable ASCII. Longer names (HAMi passes a file path)
// are shortened deterministically by normalize_tenant_name.
Status validate_tenant_name(std::string_view name);
std::string normalize_tenant_name(std::string_view name);

class TenantMembership {
 public:
  // Joins the tenant `name` (creating it when no one has) and claims a process slot. First returns
  // the slots of dead processes to their tenants.
  static Result<std::unique_ptr<TenantMembership>> join(SharedState& state, std::string_view name);

  // Leaving returns every byte still held and frees the slot. A process that dies without leaving
  // is reclaimed by the next sweep of any other process.
  ~TenantMembership();
  TenantMembership(const TenantMembership&) = delete;
  TenantMembership& operator=(const TenantMembership&) = delete;

  struct Attached {
    std::uint32_t gpu = 0;
    std::uint64_t effective_limit_bytes = 0;
    bool limit_differs = false;  // this process asked for another limit than the tenant has
  };
  // Registers a GPU by UUID and this tenant's ledger entry on it. A full table gives up the record
  // of a GPU no live process has attached. The first process of the tenant
  // to use the GPU sets the limit (unless `gpushare quota set` has set one); later processes keep
  // it and are told when theirs differs.
  // `name` (cuDeviceGetName) is for display only.
  Result<Attached> attach_gpu(const GpuUuid& uuid, std::uint64_t physical_bytes, std::uint64_t limit_bytes,
                              std::string_view name = {});

  // REQUIRES: gpu was returned by attach_gpu.
  // Before refusing, dead processes are swept once, so quota held by a killed process never
  // causes a refusal.
  Result<Reservation> try_reserve(std::uint32_t gpu, std::uint64_t bytes);
  Status release(std::uint32_t gpu, std::uint64_t bytes);
  MemoryView view(std::uint32_t gpu) const;

  // The tenant's compute policy: this process's wishes if it is the first to state any.
  Result<ComputePolicyValues> adopt_compute_policy(const ComputePolicyValues& wanted);

  std::uint32_t slot_index() const { return slot_; }
  std::uint32_t tenant_index() const { return tenant_; }

  // For a child after fork(): the slot and its bytes belong to the parent. Drops this object's
  // claim (and its copy of the slot's lock descriptor) without touching the shared state.
  void abandon();

 private:
  TenantMembership(SharedState& state, int fd, std::uint32_t tenant, std::uint32_t slot)
      : state_(state), fd_(fd), tenant_(tenant), slot_(slot) {}
  Result<Reservation> reserve_once(std::uint32_t gpu, std::uint64_t bytes);

  SharedState& state_;
  int fd_;  // its own open file description: holds the slot's liveness lock
  std::uint32_t tenant_;
  std::uint32_t slot_;
  bool abandoned_ = false;
};

struct ReclaimReport {
  std::uint32_t processes = 0;
  std::uint64_t bytes = 0;
  std::uint32_t ledgers_healed = 0;  // GPUs whose ledger did not match its slots (damage, rewritten)
};
// The sweep: finds slots whose owner has died (its liveness lock is free) and returns their bytes
// to their tenants, then re-derives every GPU's ledger from the slots (used == sum of held), so
// that numbers written into the file heal. Safe to run from any number of processes at once.
ReclaimReport reclaim_dead_processes(SharedState& state);

// `gpushare quota set`: changes a live tenant's limit on every GPU it uses and on GPUs it starts
// using later. Lowering it below current use makes further allocations fail until use drops.
Status set_tenant_memory_limit(SharedState& state, std::string_view tenant, std::uint64_t limit_bytes);

// A consistent-enough copy for display and tests (each counter is read atomically).
struct LedgerSnapshot {
  std::uint32_t gpu = 0;
  GpuUuid uuid{};
  std::string gpu_name;
  std::uint64_t physical_bytes = 0;
  std::uint64_t limit_bytes = 0;
  std::uint64_t used_bytes = 0;
  std::uint64_t peak_bytes = 0;
  std::uint64_t oom_refusals = 0;
  std::uint64_t gpu_ns = 0;      // GPU time charged
  std::uint64_t launches = 0;
  std::uint64_t wait_ns = 0;
};
struct ProcessSnapshot {
  std::uint32_t slot = 0;
  std::uint64_t pid = 0;  // in the owner's PID namespace
  std::uint64_t started_unix_ns = 0;
  bool alive = false;
  std::array<std::uint64_t, layout::kMaxGpus> held_bytes{};
};
struct TenantSnapshot {
  std::uint32_t index = 0;
  std::string name;
  std::optional<std::uint64_t> override_limit_bytes;
  ComputePolicyValues compute;
  std::vector<LedgerSnapshot> gpus;  // the GPUs this tenant has used
  std::vector<ProcessSnapshot> processes;
};
std::vector<TenantSnapshot> snapshot_tenants(SharedState& state);

}  // namespace gpushare
