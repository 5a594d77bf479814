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
//     rebuild the ledger exactly (memory_ledger.cpp).
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
// 2: compute time-slicing; 3: GPU names; 4: SlotCompute::activity counts threads inside a launch;
// 5: SlotCompute::activity is split into per-thread lanes; 6: ProcessSlot::gpus_attached (GPU
// records are reclaimed), every process holds the users lock while it has the file open; 7: a
// ProcessSlot is two pages, the registry's and its owner's (isolation mode maps a private page over
// the owner's), with the owner's memory lease.
inline constexpr std::uint32_t kStateAbiVersion = 7;

inline constexpr std::uint32_t kMaxGpus = 16;  // at most 32: ProcessSlot::gpus_attached is a mask
inline constexpr std::uint32_t kMaxTenants = 128;
inline constexpr std::uint32_t kMaxSlots = 512;
inline constexpr std::size_t kTenantNameBytes = 96;  // including the terminating NUL
inline constexpr std::size_t kGpuNameBytes = 96;     // cuDeviceGetName's text, NUL-terminated

// Byte offsets used only for fcntl locks; they lie past the end of the file on purpose, so the
// locks never interact with the data (POSIX allows locking beyond EOF).
inline constexpr std::int64_t kInitLockOffset = std::int64_t{1} << 30;
inline constexpr std::int64_t kSlotLockBase = kInitLockOffset + 1;
// Every process that has the file open holds a shared lock on this byte, so a file in use is
// never initialised again, whatever its header says.
inline constexpr std::int64_t kUsersLockOffset = kInitLockOffset - 1;

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
  char name[kGpuNameBytes];  // written once, before state becomes kInUse
};

struct alignas(64) LedgerEntry {
  std::atomic<std::uint64_t> limit_bytes;   // gpushare::kUnlimited when no quota
  std::atomic<std::uint64_t> used_bytes;    // reserved + committed bytes of all the tenant's processes
  std::atomic<std::uint64_t> peak_bytes;
  std::atomic<std::uint64_t> oom_refusals;  // allocations refused because of this quota
  std::atomic<std::uint32_t> configured;    // 1 once a process of the tenant has used this GPU
};

// A tenant's GPU time on one GPU (arbiter.hpp). Guarded by GpuSchedule::mutex.
struct alignas(64) ComputeEntry {
  std::atomic<std::uint64_t> virtual_ns;     // charged time / weight: the fair-queueing clock
  std::atomic<std::int64_t> budget_ns;       // hard-cap tokens (GPUSHARE_COMPUTE_LIMIT)
  std::atomic<std::uint64_t> budget_at_ns;   // when budget_ns was last refilled
  std::atomic<std::uint64_t> gpu_ns;         // GPU time charged, slice start to drain end
  std::atomic<std::uint64_t> launches;       // launches gated (flushed at each handover)
  std::atomic<std::uint64_t> wait_ns;        // time its processes spent waiting for a slice
  std::atomic<std::uint32_t> active;         // 1 while it holds or waits for this GPU
  // Of wait_ns: the time a process waited for this GPU while another process of the tenant already
  // held another GPU (a gang's rank waiting while its siblings' collectives spin for its part; gang.hpp,
  // peer_wait_ns). Added to ABI 7 in what was padding: zero in older files.
  std::atomic<std::uint64_t> peer_wait_ns;
};
static_assert(sizeof(ComputeEntry) == 64, "peer_wait_ns lives in what was padding");

// A tenant's compute policy: the first process of the tenant sets it, `quota set` changes it.
struct ComputePolicy {
  std::atomic<std::uint32_t> share_pct;   // 0 = none given (an equal part of what is left)
  std::atomic<std::uint32_t> limit_pct;   // 0 = no hard cap
  std::atomic<std::uint32_t> priority;    // 0 low, 1 normal, 2 high
  std::atomic<std::uint32_t> slice_us;
};

// The priority class a ComputePolicy::priority word stands for, whatever was written there.
inline constexpr std::uint32_t kPriorityClasses = 3;
inline constexpr std::uint32_t priority_class(std::uint32_t stored) {
  return stored < kPriorityClasses ? stored : kPriorityClasses - 1;
}

// FNV-1a, 64 bits: the header's checksum and the tag of a tenant name with replaced characters.
inline constexpr std::uint64_t fnv1a(const unsigned char* bytes, std::size_t count) {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < count; ++i) hash = (hash ^ bytes[i]) * 0x100000001b3ull;
  return hash;
}

struct TenantRecord {
  std::atomic<std::uint32_t> state;
  std::uint32_t reserved;
  char name[kTenantNameBytes];
  std::atomic<std::uint64_t> override_limit_bytes;  // from `gpushare quota set`, else kNoOverride
  std::uint64_t created_unix_ns;
  LedgerEntry ledger[kMaxGpus];
  ComputePolicy compute_policy;
  std::atomic<std::uint32_t> compute_configured;
  // A gang's stop count at its last handover (gang.hpp, gang_stop_word): the request's time (low
  // 32 bits) above the most collectives any of its processes had launched on one GPU then (low 32
  // bits). Added to ABI 7 in what was padding: zero in older files, which matches no request.
  std::atomic<std::uint64_t> gang_stop;
  ComputeEntry compute[kMaxGpus];
};
static_assert(offsetof(TenantRecord, compute) == 1216 && sizeof(TenantRecord) == 2240,
              "gang_stop lives in what was padding: the tenant record's layout is unchanged");

// Who may submit work to one GPU now. `holder_word` is what the launch hot path reads: it equals
// a process's token (slot + 1) exactly while that process holds the slice and no handover has
// been asked of it (kHandoverBit). `grant_seq` is the futex word waiters sleep on.
inline constexpr std::uint32_t kHandoverBit = 1u << 31;
inline constexpr std::uint32_t kNoHolder = UINT32_MAX;
// The token of a slot in holder_word, and the slot a holder word names (kNoHolder for none; the
// result is untrusted: check it against kMaxSlots before use).
inline constexpr std::uint32_t holder_token(std::uint32_t slot) { return slot + 1; }
inline constexpr std::uint32_t holder_slot(std::uint32_t word) {
  return word == 0 ? kNoHolder : (word & ~kHandoverBit) - 1;
}
struct alignas(64) GpuSchedule {
  std::atomic<std::uint32_t> holder_word;
  std::atomic<std::uint32_t> grant_seq;
  std::atomic<std::uint32_t> waiting;        // processes waiting for this GPU
  // Odd while end_slice moves the slice's time into its tenant's counters: readers that add the
  // slice in progress to those counters (report.cpp) retry rather than count it twice.
  std::atomic<std::uint32_t> charge_seq;
  pthread_mutex_t mutex;                     // process-shared, robust: guards everything below
  std::atomic<std::uint64_t> slice_start_ns;
  std::atomic<std::uint64_t> slice_end_ns;
  std::atomic<std::uint64_t> handover_asked_ns;
  std::atomic<std::uint64_t> observed_activity;  // the holder's SlotCompute::activity when last looked at
  std::atomic<std::uint64_t> observed_at_ns;     // ... and when it last changed
  std::atomic<std::uint64_t> virtual_clock_ns[kPriorityClasses];  // per priority class: virtual time of its last grant
  std::atomic<std::uint64_t> activity_at_grant;    // the holder's activity_of() when it was granted
  std::atomic<std::uint64_t> class_granted_ns[kPriorityClasses];  // per priority class: when it last held the GPU (a grant or a slice's end)
  // When a waiter last looked at the holder's activity: a change seen long after the last look
  // may have happened at any moment since. Added to ABI 3 in what was padding (zero in older files,
  // which only means "not looked at recently"), so the size is unchanged.
  std::atomic<std::uint64_t> looked_at_ns;
  // The holder's waiting mark (SlotCompute::waiting_since_ns) its grant was made on; 0 for a slice
  // renewed without waiting. A grant whose mark is still there after the idle threshold was never
  // taken up (ABI 6).
  std::atomic<std::uint64_t> granted_mark;
};
static_assert(sizeof(GpuSchedule) == 192, "GpuSchedule's size is part of the state ABI");

// SlotCompute::activity: what a gated call writes, so that a busy process is never taken for idle.
// Each lane is one word: the launches (and synchronizes) begun in the high bits, and how many
// threads are inside one right now in the low kInsideBits. A thread adds kCallBegun as it enters and
// kCallEnded as it leaves. The words stand still while the process submits nothing; a holder is
// idle when they stand still with no thread inside (several threads may be: one waiting for the
// GPU, one launching).
//
// Lanes keep the hot path free of locked instructions: lanes 1.. each belong to one thread of the
// process (the first kActivityLanes - 1 threads that launch on this GPU), which moves its lane with
// a plain load and store; later threads, and synchronizes, share lane 0 and add to it atomically. A
// locked add waits for every store before it to drain, the driver's writes of the previous launch
// included (docs/performance.md has its cost). Readers add the lanes up (activity_of).
inline constexpr unsigned kInsideBits = 24;
inline constexpr std::uint64_t kCallBegun = (std::uint64_t{1} << kInsideBits) + 1;
inline constexpr std::uint64_t kCallEnded = 1;
inline constexpr unsigned kActivityLanes = 6;
constexpr std::uint64_t threads_inside(std::uint64_t activity) {
  return activity & ((std::uint64_t{1} << kInsideBits) - 1);
}
// Calls begun between two readings of the activity (the count wraps after 2^40).
constexpr std::uint64_t calls_between(std::uint64_t before, std::uint64_t after) {
  return ((after >> kInsideBits) - (before >> kInsideBits)) & ((std::uint64_t{1} << (64 - kInsideBits)) - 1);
}

// What one process does on one GPU, for the arbiter. Written by the process, read by waiters.
struct alignas(64) SlotCompute {
  std::atomic<std::uint64_t> activity[kActivityLanes];  // see kCallBegun; written on every gated call
  std::atomic<std::uint64_t> waiting_since_ns;          // 0 when not waiting
  // Non-zero once the process has mapped another process's GPU memory (CUDA IPC, imported
  // allocations): its kernels may then wait for another process's, perhaps the very waiter's that
  // asks it to hand over, and it gets only the short handover grace.
  std::atomic<std::uint32_t> depends_on_others;
  // Threads of the process in the gate's slow path waiting for the slice (ComputeGate::acquire):
  // a grant is untaken only while every thread inside is one of them (ABI 6).
  std::atomic<std::uint32_t> threads_waiting;
};
static_assert(sizeof(SlotCompute) == 64, "one cache line per process and GPU");

// The process's activity on one GPU: its lanes added up (a sum of words that each only grow in
// their high bits, so it moves whenever one of them does). Sequentially consistent loads (plain
// loads on x86): arbitrate pairs them with its own store of the handover bit.
inline std::uint64_t activity_of(const SlotCompute& compute) {
  std::uint64_t sum = 0;
  for (const auto& lane : compute.activity) sum += lane.load(std::memory_order_seq_cst);
  return sum;
}

// The size of each of a ProcessSlot's two pages. Isolation mode maps a page of its own over the
// owner's part, so it needs the system's page size to be this (agent/, tenant side: checked there).
inline constexpr std::size_t kSlotPageBytes = 4096;

// One process's record. Two pages: the first is the registry's (who the process is, what it holds),
// the second its owner's (what the process writes about itself on every launch). In the daemonless
// mode both are parts of the file; in isolation mode the agent alone writes the file and each
// process gets a private page (a memfd shared with the agent only) mapped over its slot's second
// page, in its own view and in the agent's, so that the code reading either part is the same.
struct alignas(kSlotPageBytes) ProcessSlot {
  // --- The registry's page ---
  std::atomic<std::uint32_t> state;
  std::atomic<std::uint32_t> tenant_index;
  std::atomic<std::uint64_t> pid;  // in the owner's PID namespace: shown to people, never used to decide
  std::atomic<std::uint64_t> started_unix_ns;
  std::atomic<std::uint64_t> held_bytes[kMaxGpus];
  // Bit g set while the owner has GPU record g attached (it keeps the index for its lifetime): a
  // record no live slot has attached may be given to another GPU. Guarded by registry_mutex.
  std::atomic<std::uint32_t> gpus_attached;
  // Isolation mode: odd while the agent moves unspent lease (lease_left_bytes) back into the
  // ledger, so that a reader of both (the owner's view of its tenant's use) retries instead of
  // seeing the bytes in neither or in both.
  std::atomic<std::uint32_t> lease_seq;

  // --- The owner's page ---
  alignas(kSlotPageBytes) SlotCompute compute[kMaxGpus];
  // Isolation mode's memory lease: bytes of held_bytes[g] the owner has not spent yet and may
  // allocate without asking the agent. The owner takes from it with a compare-and-swap and gives
  // freed bytes back with an add; the agent adds a grant and takes unspent bytes back with an
  // exchange. Untrusted by the agent (the owner may write anything here): clamped to held_bytes.
  // Unused (0) in the daemonless mode.
  std::atomic<std::int64_t> lease_left_bytes[kMaxGpus];
  // Non-zero once the process has registered for asymmetric fences (platform.hpp, `fence`): a
  // reader of its activity may then make its threads pass a barrier instead of waiting it out.
  // Written by the owner's gate (0 or 1) and cleared with the slot.
  std::atomic<std::uint32_t> fenced;
  // Collectives (NCCL's kernels) the owner has launched on each GPU: a gang's ranks launch
  // the same ones in the same order, so at a handover a rank whose count is below a sibling's is
  // behind and goes on until it catches up (gang.hpp). Added to ABI 7 in what was padding: zero in
  // files of older builds, whose processes then never look behind. Cleared with the slot.
  std::atomic<std::uint64_t> collectives[kMaxGpus];
};
static_assert(offsetof(ProcessSlot, compute) == kSlotPageBytes, "the owner's part starts a page");
static_assert(sizeof(ProcessSlot) == 2 * kSlotPageBytes, "a slot is two pages");

// A live process's own slot says it is in use by the process's tenant. Anyone can write the file:
// the owner puts that back where it finds it changed (a waiter whose slot says otherwise is never
// granted the GPU, and a sweep would count its bytes to another tenant).
inline void restore_own_slot(ProcessSlot& slot, std::uint32_t tenant) {
  if (slot.tenant_index.load(std::memory_order_relaxed) != tenant) slot.tenant_index.store(tenant, std::memory_order_relaxed);
  if (slot.state.load(std::memory_order_relaxed) != kInUse) slot.state.store(kInUse, std::memory_order_release);
}

// Isolation mode: GPU processes the agent's escape watch finds unaccounted (agent/escape_watch.hpp),
// for `gpushare status` and the exporter. Written by the agent only, as a whole table per round
// under a sequence word: odd while the agent writes, so that a reader copies the table and retries
// when the word moved (a seqlock). Every field is an atomic read with relaxed loads between the
// two reads of the word. Untrusted by readers: text may lack its NUL, entries may say anything.
inline constexpr std::uint32_t kMaxUnaccounted = 32;
inline constexpr std::size_t kCgroupBytes = 512;        // a cgroup path, NUL-terminated (cut when longer)
inline constexpr std::size_t kGpuUuidTextBytes = 96;    // NVML's UUID text ("GPU-…", "MIG-…"), NUL-terminated
inline constexpr std::uint64_t kUnknownBytes = UINT64_MAX;  // NVML could not tell the process's use

struct UnaccountedProcess {
  std::atomic<std::uint32_t> state;             // kInUse: a finding; kFree: an empty entry
  std::atomic<std::uint32_t> pid;               // in the agent's (the root) PID namespace
  std::atomic<char> gpu_uuid[kGpuUuidTextBytes];
  std::atomic<std::uint64_t> used_bytes;        // NVML's figure, or kUnknownBytes
  std::atomic<std::uint64_t> accounted_bytes;   // the ledger's (0 for a process the agent does not know)
  std::atomic<std::uint64_t> unaccounted_bytes; // what the ledger misses, or kUnknownBytes
  std::atomic<std::uint32_t> known_to_agent;    // 1: a connected process using more than its ledger
  std::atomic<std::uint32_t> kill_sent;         // 1 once `--enforce kill` sent its SIGKILL
  std::atomic<std::uint64_t> first_seen_unix_ns;
  std::atomic<char> cgroup[kCgroupBytes];       // "" when unknown
};

struct alignas(64) UnaccountedTable {
  std::atomic<std::uint32_t> seq;       // odd while the agent rewrites the table
  std::atomic<std::uint32_t> omitted;   // findings of the last round that did not fit
  std::atomic<std::uint64_t> written_unix_ns;  // the last round's time; 0 when no watch ever ran
  UnaccountedProcess entries[kMaxUnaccounted];
};
static_assert(std::atomic<char>::is_always_lock_free && sizeof(std::atomic<char>) == 1);

struct StateLayout {
  StateHeader header;
  pthread_mutex_t registry_mutex;  // process-shared, robust
  GpuRecord gpus[kMaxGpus];
  TenantRecord tenants[kMaxTenants];
  ProcessSlot slots[kMaxSlots];
  GpuSchedule schedules[kMaxGpus];
  UnaccountedTable unaccounted;  // appended to ABI 7 before its release
};

static_assert(std::is_standard_layout_v<StateLayout>);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::int64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint64_t>) == sizeof(std::uint64_t));
static_assert(offsetof(StateLayout, header) == 0);
static_assert(offsetof(StateLayout, slots) % kSlotPageBytes == 0, "slots start on a page");

}  // namespace gpushare::layout
