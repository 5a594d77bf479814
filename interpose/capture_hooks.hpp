// What the launch hooks (compute_hooks.cpp) need to know of the process, kept by the hooks of
// capture_hooks.cpp, and the wrapper body both files use.
#pragma once

#include <atomic>

#include "driver.hpp"

namespace gpushare::interpose::hooks {

// Stream captures going on in this process (begun and not yet ended, counted by the capture hooks).
extern std::atomic<int> g_captures;

// Whether the process has mapped another process's GPU memory (CUDA IPC, imported allocations:
// NCCL, custom all-reduce kernels). Kernels that poll such memory wait for another process's
// kernels, which may be waiting for this GPU: the arbiter must not wait long for this process
// (ComputeGate::note_depends_on_other_processes). Events cannot cause that: an event wait only
// waits for work already submitted, which runs whoever holds the slice.
extern std::atomic<bool> g_imports_memory;

}  // namespace gpushare::interpose::hooks

// The body of a wrapper: the real entry point (kMissing when this driver lacks it), called inside
// `guard`, a function template taking the call as a lambda.
#define GPUSHARE_WRAPPED_CALL(name, guard, call_args)               \
  {                                                                 \
    auto real = ::gpushare::interpose::real_driver_or_empty().name; \
    if (real == nullptr) return ::gpushare::interpose::kMissing;    \
    return guard([&] { return real call_args; });                   \
  }
