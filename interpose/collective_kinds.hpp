// Which kernels are collectives (NCCL's, vLLM's custom all-reduce): a gang's ranks count the ones
// they launch (ComputeGate::note_collective), so that at a handover a rank behind its siblings goes
// on until it has launched the part they wait for (core/gang.hpp). Asked of the driver once per
// kernel; the launch hooks look the answer up in a table, without a lock.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "driver.hpp"

namespace gpushare::interpose {

// Whether the driver names `function` as a collective's kernel: a name with "nccl" in it (NCCL's
// ncclKernel_* and ncclDevKernel_*, perhaps mangled) or "cross_device_reduce" (vLLM). False where
// the driver cannot name kernels (cuFuncGetName: CUDA 12.3 and later).
bool names_a_collective(const RealDriver& driver, CUfunction function);

// Per function handle, (handle << 1) | collective, indexed by the handle's bits; a collision only
// asks the driver again. Handles with the top bit set (none in a user-space address) are not kept.
extern std::array<std::atomic<std::uintptr_t>, 256> g_kernel_kinds;

// Whether launching `function` launches a collective. A graph (null) is not counted: it may hold
// collectives (vLLM captures its all-reduces) or none, and the independent processes of one tenant
// on several GPUs would then look behind one another.
[[gnu::always_inline]] inline bool launches_a_collective(const RealDriver& driver, CUfunction function) {
  if (function == nullptr) return false;
  const auto key = reinterpret_cast<std::uintptr_t>(function);
  constexpr std::uintptr_t kTopBit = ~(~std::uintptr_t{0} >> 1);
  auto& entry = g_kernel_kinds[(key ^ (key >> 8)) & 255];
  const std::uintptr_t known = entry.load(std::memory_order_relaxed);
  if ((known >> 1) == key) return (known & 1) != 0;
  const bool collective = names_a_collective(driver, function);
  if ((key & kTopBit) == 0) entry.store((key << 1) | (collective ? 1 : 0), std::memory_order_relaxed);
  return collective;
}

}  // namespace gpushare::interpose
