// The arithmetic of a trace, free of files: unions of intervals, the parts of one set not covered
// by another, percentiles, and gpushare's slices rebuilt from its events. All times nanoseconds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gpushare::trace {

struct Interval {
  std::int64_t start = 0;
  std::int64_t end = 0;  // end >= start
  bool operator==(const Interval&) const = default;
};

// Sorted, disjoint intervals covering exactly what `intervals` covers; touching ones are joined.
// Takes its argument by value: it sorts in place.
std::vector<Interval> union_of(std::vector<Interval> intervals);
// The merge step of two such unions (both sorted and disjoint).
std::vector<Interval> union_of_sorted(const std::vector<Interval>& a, const std::vector<Interval>& b);
std::int64_t total_length(const std::vector<Interval>& disjoint);

// The pieces of `covered` (sorted, disjoint) that `busy` (sorted, disjoint) leaves uncovered.
std::vector<Interval> uncovered_parts(const std::vector<Interval>& covered, const std::vector<Interval>& busy);

// Nearest-rank percentile (p in (0, 100]) of `sorted_values`; 0 when empty.
std::int64_t percentile(const std::vector<std::int64_t>& sorted_values, double p);

// One gpushare event on a GPU, with the tenant whose process reported it.
struct GpushareEvent {
  std::int64_t at = 0;
  std::string tenant;
  std::string what;  // granted, handover_asked, drain_begun, drain_ended, wait_begun, ...
};
struct Slice {
  std::string tenant;
  std::int64_t start = 0;
  std::int64_t end = 0;
  bool operator==(const Slice&) const = default;
};
// The slices of one GPU: a tenant's `granted` opens one, which ends at the next `granted` of
// another tenant or at the holder's next `drain_ended`, whichever comes first; one still open at
// the end closes at `last_time`. `events` must be sorted by time (ties in a fixed order).
std::vector<Slice> slices_from(const std::vector<GpushareEvent>& events, std::int64_t last_time);

}  // namespace gpushare::trace
