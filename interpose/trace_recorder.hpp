// Trace mode (docs/tracing.md): with GPUSHARE_TRACE=DIR, this process writes DIR/<pid>-<8 hex>.gstrace:
// its kernels, copies and memsets as CUPTI's Activity API reports them (GPU timestamps), gpushare's
// own events (slices, handovers, waits, refused allocations) and its requests (synchronize to
// synchronize), all on CUPTI's clock. CUPTI is opened with dlopen only when asked; when it is
// missing, too old or held by another subscriber, the process runs untraced with one line on stderr
// and a note in its file. Buffers are flushed every second and at exit.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#include "cuda_api.hpp"

namespace gpushare::interpose {
class Tenancy;
}

namespace gpushare::interpose::trace {

namespace detail {
extern std::atomic<bool> g_recording;
}
// Whether this process records: one relaxed load, for the launch hooks.
inline bool recording() { return detail::g_recording.load(std::memory_order_relaxed); }

// Starts trace mode if the settings ask for it, once per process: after the tenancy has started and
// outside its lock (CUPTI calls the driver, and so these hooks, while it starts).
void start_if_asked(Tenancy& tenancy);

// The tenancy bound device `ordinal` to the shared state's GPU `gpu`: declares it in the trace.
void gpu_bound(CUdevice ordinal, std::uint32_t gpu, std::string_view uuid, std::string_view name);
// An allocation of `bytes` on `ordinal` refused for the tenant's quota.
void oom_refused(CUdevice ordinal, std::uint64_t bytes);

// Requests, per thread: from the first launch after the thread's last synchronize to the return of
// its next synchronize. Called only while recording().
void launched();
void synchronized();

}  // namespace gpushare::interpose::trace
