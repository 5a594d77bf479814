// Kernel activity of the fake CUDA driver, as the fake libcupti.so reads it: while recording is on,
// each kernel or graph launch that really runs (not captured) leaves one entry, timed on the
// engine's clock (CLOCK_MONOTONIC ns). Off by default. See README.md, "Fake CUPTI".
#pragma once

#include <cstddef>
#include <cstdint>

struct FakeKernelActivity {
  uint64_t start_ns;     // end_ns minus the kernel's duration
  uint64_t end_ns;       // when it completes on the engine's timeline
  int32_t device;        // the ordinal as the launching process sees it
  uint32_t stream;       // small per-stream number, stable within the process
  uint32_t correlation;  // launch counter, from 1
  uint32_t graph;        // 1 for cuGraphLaunch, 0 for a kernel launch
};

// The hooks, exported by the fake libcuda.so.1 (C names, for dlsym).
extern "C" {
// Turns recording on (non-zero) or off. Entries already recorded stay until taken.
void fake_cuda_record_activity(int on);
// Moves up to `max` recorded entries with end_ns <= completed_by_ns into `out`, earliest end first;
// returns how many.
size_t fake_cuda_take_activity(FakeKernelActivity* out, size_t max, uint64_t completed_by_ns);
// Entries not recorded because kFakeActivityPending were already waiting.
uint64_t fake_cuda_activity_dropped(void);
}

constexpr size_t kFakeActivityPending = size_t{1} << 20;  // the most entries kept untaken
