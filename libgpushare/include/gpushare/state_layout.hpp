// The shared state: one plain-data structure mapped from one file by every process of every
// tenant (and by the `gpushare` tools). There is no daemon: whoever maps the file first creates it.
//
// Evolution rules: the layout is append-only within an ABI version; any change to an existing
// field's meaning, size or position bumps kStateAbiVersion, and a process that finds another
// version refuses the file with a message instead of guessing (see SharedState::open).
//
// Concurrency rules:
//   * registry_mutex guards claiming/freeing tenants, GPUs and process slots.
//   * GpuRecord::ledger_mutex guards, for that GPU, every tenant's LedgerEntry::used_bytes and
//     every slot's held_bytes[gpu]. Holding it keeps the invariant
//         ledger[t][g].used_bytes == sum of held_bytes[g] over the slots of tenant t
//     which is what lets a process that inherits the mutex from a dead holder (EOWNERDEAD)
//     rebuild the ledger exactly (ledger.cpp).
//   * Lock order: registry_mutex before any ledger_mutex.
//   * Counters that are only read for display (peaks, refusals, limits) are atomics that may be
//     read without a lock.
//   * Process liveness is an open-file-description lock on byte kSlotLockBase + slot index of the
//     state file (not a PID: PIDs are per namespace and reused). The kernel drops it when the
//     process dies, in whatever container it lived.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace gpushare::layout {

inline constexpr std::uint64_t kStateMagic = 0x3145544154535047ull;  // "GPSTATE1", little endian
inline constexpr std::uint32_t kStateAbiVersion = 1;

inline constexpr std::uint32_t kMaxGpus = 16;
inline constexpr std::uint32_t kMaxTenants = 128;
inline constexpr std::uint32_t kMaxSlots = 512;
inline constexpr std::size_t kTenantNameBytes = 96;  // including the terminating NUL

// Byte offsets used only for fcntl locks; they lie past the end of the file on purpose, so the
// locks never interact with the data (POSIX allows locking beyond EOF).
inline constexpr std::int64_t kInitLockOffset = std::int64_t{1} << 30;
inline constexpr std::int64_t kSlotLockBase = kInitLockOffset + 1;

enum : std::uint32_t { kFree = 0, kInUse = 1, kReclaiming = 2 };

// Never a valid limit: "no override set" for TenantRecord::override_limit_bytes.
inline constexpr std::uint64_t kNoOverride = UINT64_MAX - 1;

struct StateHeader {
  std::uint64_t magic;  // written last at creation, so a half-made file is never taken as valid
  std::uint32_t abi_version;
  std::uint32_t header_bytes;
  std::uint64_t total_bytes;
  std::uint32_t max_gpus;
  std::uint32_t max_tenants;
  std::uint32_t max_slots;
  std::uint32_t tenant_name_bytes;
  std::uint64_t created_unix_ns;
  std::uint64_t checksum;  // over the fields above (excluding itself); catches a scribbled header
};

struct alignas(64) GpuRecord {
  pthread_mutex_t ledger_mutex;  // process-shared, robust
  std::atomic<std::uint32_t> state;
  std::uint8_t uuid[16];
  std::atomic<std::uint64_t> physical_bytes;
};

struct alignas(64) LedgerEntry {
  std::atomic<std::uint64_t> limit_bytes;   // gpushare::kUnlimited when no quota
  std::atomic<std::uint64_t> used_bytes;    // reserved + committed bytes of all the tenant's processes
  std::atomic<std::uint64_t> peak_bytes;
  std::atomic<std::uint64_t> oom_refusals;  // allocations refused because of this quota
  std::atomic<std::uint32_t> configured;    // 1 once a process of the tenant has used this GPU
};

struct TenantRecord {
  std::atomic<std::uint32_t> state;
  std::uint32_t reserved;
  char name[kTenantNameBytes];
  std::atomic<std::uint64_t> override_limit_bytes;  // from `gpushare quota set`, else kNoOverride
  std::uint64_t created_unix_ns;
  LedgerEntry ledger[kMaxGpus];
};

struct alignas(64) ProcessSlot {
  std::atomic<std::uint32_t> state;
  std::atomic<std::uint32_t> tenant_index;
  std::atomic<std::uint64_t> pid;  // in the owner's PID namespace: shown to people, never used to decide
  std::atomic<std::uint64_t> started_unix_ns;
  std::atomic<std::uint64_t> held_bytes[kMaxGpus];
};

struct StateLayout {
  StateHeader header;
  pthread_mutex_t registry_mutex;  // process-shared, robust
  GpuRecord gpus[kMaxGpus];
  TenantRecord tenants[kMaxTenants];
  ProcessSlot slots[kMaxSlots];
};

static_assert(std::is_standard_layout_v<StateLayout>);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint64_t>) == sizeof(std::uint64_t));
static_assert(offsetof(StateLayout, header) == 0);

}  // namespace gpushare::layout
