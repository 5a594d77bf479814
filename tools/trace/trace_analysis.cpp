// Interval arithmetic and slice reconstruction for the trace commands.
#include "trace_analysis.hpp"

#include <algorithm>
#include <cmath>

namespace gpushare::trace {

std::vector<Interval> union_of(std::vector<Interval> intervals) {
  std::sort(intervals.begin(), intervals.end(),
            [](const Interval& a, const Interval& b) { return a.start != b.start ? a.start < b.start : a.end < b.end; });
  std::vector<Interval> joined;
  for (const Interval& interval : intervals) {
    if (!joined.empty() && interval.start <= joined.back().end) {
      joined.back().end = std::max(joined.back().end, interval.end);
    } else {
      joined.push_back(interval);
    }
  }
  return joined;
}

std::vector<Interval> union_of_sorted(const std::vector<Interval>& a, const std::vector<Interval>& b) {
  std::vector<Interval> both;
  both.reserve(a.size() + b.size());
  std::merge(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both),
             [](const Interval& x, const Interval& y) { return x.start < y.start; });
  return union_of(std::move(both));
}

std::int64_t total_length(const std::vector<Interval>& disjoint) {
  std::int64_t total = 0;
  for (const Interval& interval : disjoint) total += interval.end - interval.start;
  return total;
}

std::vector<Interval> uncovered_parts(const std::vector<Interval>& covered, const std::vector<Interval>& busy) {
  std::vector<Interval> parts;
  std::size_t next_busy = 0;
  for (const Interval& span : covered) {
    std::int64_t from = span.start;
    while (next_busy < busy.size() && busy[next_busy].end <= from) ++next_busy;
    for (std::size_t i = next_busy; i < busy.size() && busy[i].start < span.end; ++i) {
      if (busy[i].start > from) parts.push_back({from, busy[i].start});
      from = std::max(from, busy[i].end);
    }
    if (from < span.end) parts.push_back({from, span.end});
  }
  return parts;
}

std::int64_t percentile(const std::vector<std::int64_t>& sorted_values, double p) {
  if (sorted_values.empty()) return 0;
  const double rank = std::ceil(p / 100.0 * static_cast<double>(sorted_values.size()));
  const auto index = static_cast<std::size_t>(std::clamp(rank, 1.0, static_cast<double>(sorted_values.size()))) - 1;
  return sorted_values[index];
}

std::vector<Slice> slices_from(const std::vector<GpushareEvent>& events, std::int64_t last_time) {
  std::vector<Slice> slices;
  bool open = false;
  for (const GpushareEvent& event : events) {
    if (open && ((event.what == "granted" && event.tenant != slices.back().tenant) ||
                 (event.what == "drain_ended" && event.tenant == slices.back().tenant))) {
      slices.back().end = event.at;
      open = false;
    }
    // A repeated grant to the holder continues its slice.
    if (event.what == "granted" && !open) {
      slices.push_back({event.tenant, event.at, event.at});
      open = true;
    }
  }
  if (open) slices.back().end = std::max(slices.back().start, last_time);
  return slices;
}

}  // namespace gpushare::trace
