// What a tenant asks of the time-slicing arbiter (arbiter.hpp), and the arbiter's own tunables.
//
// Per tenant: a share of the GPU in percent (its weight in fair queueing), a hard cap in percent
// (a token bucket), a strict priority class (low, normal, high) and a slice length. The first
// process of a tenant states them (GPUSHARE_COMPUTE_SHARE, GPUSHARE_COMPUTE_LIMIT, GPUSHARE_PRIORITY,
// GPUSHARE_SLICE_MS); `gpushare quota set` changes them while the tenant lives. They are stored in
// the tenant's record of the state file, where the arbiter reads them at every decision.
//
// Plain values, no state: settings, the report and the tools include this alone.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include "core/result.hpp"

namespace gpushare {

enum class Priority : std::uint32_t { kLow = 0, kNormal = 1, kHigh = 2 };
Result<Priority> parse_priority(std::string_view text);
std::string_view priority_name(Priority priority);

// The slice of a tenant whose record says 0 (the arbiter reads the state file alone), which
// options_table.cpp checks at compile time to be GPUSHARE_SLICE_MS's default; and the longest slice
// one may ask for: whatever the state file says, no slice lasts longer, so a number written into
// it cannot keep the GPU from the others.
inline constexpr std::chrono::microseconds kDefaultSlice{10'000};
inline constexpr std::chrono::microseconds kLongestSlice{1'000'000};

// No defaults of its own: zero until filled from the settings, the state file or
// default_compute_policy().
struct ComputePolicyValues {
  std::uint32_t share_pct = 0;  // 0 = not given
  std::uint32_t limit_pct = 0;  // 0 = no cap
  Priority priority{};
  std::chrono::microseconds slice{};  // 0 = kDefaultSlice, as in the state file
};

// The policy of a tenant that stated none: the options table's defaults (Settings{}.compute).
const ComputePolicyValues& default_compute_policy();

// Tunables of the arbiter (not per tenant).
struct ArbiterTiming {
  // A holder whose activity has not moved for this long, no thread inside, is idle and
  // loses the slice.
  std::chrono::nanoseconds idle_after{std::chrono::milliseconds(2)};
  // A holder asked to hand over that has not done so after this long loses the slice anyway. It is
  // still waiting for its own work then (a whole captured step, a synchronize after one): taken
  // earlier, that work would run on, uncharged, into the next holder's slice. So the grace is long,
  // and bounded; it is short for a holder whose work may wait for another process, perhaps for the
  // waiter itself: one that maps another process's GPU memory (SlotCompute::depends_on_others), or
  // whose tenant waits for another GPU (a collective across GPUs).
  std::chrono::nanoseconds handover_grace{std::chrono::seconds(1)};
  std::chrono::nanoseconds short_handover_grace{std::chrono::milliseconds(50)};
  // Longest a waiter sleeps before looking again (it is woken at once on every grant).
  std::chrono::nanoseconds max_sleep{std::chrono::milliseconds(1)};
  // A lower class keeps almost nothing in flight for this long after a higher class last held the
  // GPU, so the higher one's next request waits behind as little queued work as possible.
  std::chrono::nanoseconds higher_class_memory{std::chrono::milliseconds(100)};
};

}  // namespace gpushare
