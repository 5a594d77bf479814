// Collective kernels of the fake driver, as NCCL's: one rank's part of a step of a named group
// occupies its GPU from the time it could start until every rank of the group has launched its
// part, then for the transfer. The groups' state lives in the shared engine file, so ranks in
// different processes meet there. See README.md, "Collectives".
#pragma once

#include <cuda.h>
#include <pthread.h>

#include <atomic>
#include <cstdint>

// Test hook: a function handle whose launches are one rank's parts of collective `group` (not 0)
// of `ranks` ranks (1 to 8); null otherwise. Launched like any kernel, gridDimX is the transfer in us.
extern "C" __attribute__((visibility("default"))) CUfunction fake_cuda_collective(uint32_t group, uint32_t ranks);

namespace fake_collective {

constexpr uint32_t kGroups = 64;    // groups the engine file holds at once
constexpr uint32_t kMaxRanks = 8;   // ranks per group
constexpr uint32_t kStepsKept = 4;  // steps of a group remembered (a ring, by step index)

// A GPU's busy_until with this bit set is not a time: one of its collectives waits for its peers.
// Bits 40-62 name the group's slot in the table, bits 0-39 the step index (its low bits).
constexpr uint64_t kPendingBit = 1ULL << 63;

// A collective handle: this tag in bits 48-63 (above any user-space address), the rank count in
// bits 32-47, the group in bits 0-31.
constexpr uint64_t kHandleTag = 0xC011;

enum StepState : uint32_t { kUnused = 0, kOpen = 1, kResolved = 2, kFailed = 3 };

// One step of a group. Written under the table's lock; read by waiters without it.
struct Step {
  std::atomic<uint32_t> state;  // StepState; waiters sleep on it (futex)
  std::atomic<uint32_t> arrived;
  std::atomic<uint64_t> index;
  std::atomic<uint64_t> max_start_ns;  // latest start of a part arrived so far
  std::atomic<uint64_t> end_ns;        // once resolved: when every part ends
  std::atomic<uint64_t> deadline_ns;   // first arrival + the timeout
  std::atomic<uint32_t> gpus[kMaxRanks];  // physical device + 1 of each part arrived
};

struct Group {
  std::atomic<uint32_t> id;  // 0: free
  std::atomic<uint32_t> ranks;
  std::atomic<uint64_t> last_active_ns;
  Step steps[kStepsKept];
};

// Part of the engine file; all zero is the initial state.
struct Table {
  std::atomic<uint32_t> lock_state;  // 0: lock not made yet, 1: being made, 2: ready
  pthread_mutex_t lock;              // process-shared and robust
  Group groups[kGroups];
};

// Whether `f` is a handle made by fake_cuda_collective.
bool is_collective(CUfunction f);

struct Timing {
  uint64_t max_queue;  // the launch queue's bound, as for ordinary kernels
  uint64_t timeslice;  // how long a launch waits for another context's pending collective
  uint64_t timeout;    // how long a step may wait for its parts
};

// Launches this process's part of the next step of `f`'s group on physical device `phys`, after
// `earliest` (the stream's tail); `duration` is the transfer after all parts arrived. Returns once
// the step is resolved, with *end the time every part ends and *queued how long this part waited
// to start. CUDA_ERROR_LAUNCH_TIMEOUT when the step was not complete within `timing.timeout` of
// its first part (its GPUs are freed), CUDA_ERROR_INVALID_VALUE when the group was opened with
// another rank count or this step already has all its parts, CUDA_ERROR_OUT_OF_MEMORY when the
// table has no free group.
CUresult launch(CUfunction f, int phys, uint64_t earliest, uint64_t duration, const Timing& timing, uint64_t* end,
                uint64_t* queued);

// For a launch that found `pending` (kPendingBit set) as `phys`'s busy_until: sleeps until that
// collective is resolved or has failed, and leaves busy_until a time again (true), or until
// `until` while it still waits for its peers (false).
bool wait_resolved(int phys, uint64_t pending, uint64_t until);

// A kernel of another context on `phys` while a collective there waits for its peers: the
// hardware time-slices the contexts, so it runs beside the spinning part, one after the other
// with the kernels that did so before. Returns its end.
uint64_t launch_beside(int phys, uint64_t earliest, uint64_t duration, uint64_t max_queue, uint64_t* queued);

}  // namespace fake_collective
