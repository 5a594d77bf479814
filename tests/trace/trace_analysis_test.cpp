// The arithmetic of the trace commands: interval unions, uncovered parts (idle gaps), percentiles
// and slices rebuilt from gpushare's events.
#include <gtest/gtest.h>

#include "trace_analysis.hpp"

namespace gpushare::trace {
namespace {

using Intervals = std::vector<Interval>;

TEST(TraceIntervals, UnionCountsOverlapsOnceAndJoinsTouchingEnds) {
  // [0,10) and [5,15) overlap; [15,20) touches; [30,40) and [32,35) nest; [50,50) is empty.
  const Intervals joined = union_of({{30, 40}, {5, 15}, {0, 10}, {15, 20}, {32, 35}, {50, 50}});
  EXPECT_EQ(joined, (Intervals{{0, 20}, {30, 40}, {50, 50}}));
  EXPECT_EQ(total_length(joined), 30);
  EXPECT_TRUE(union_of({}).empty());
}

TEST(TraceIntervals, UnionOfSortedMergesTwoUnions) {
  EXPECT_EQ(union_of_sorted({{0, 10}, {20, 30}}, {{10, 12}, {25, 40}}), (Intervals{{0, 12}, {20, 40}}));
  EXPECT_EQ(total_length(union_of_sorted({{0, 300}}, {{300, 1000}})), 1000);
}

TEST(TraceIntervals, AWaitWithAGapLeavesTheGapUncovered) {
  // Someone waits from 100 to 500; kernels run until 200 and again from 350.
  EXPECT_EQ(uncovered_parts({{100, 500}}, {{0, 200}, {350, 600}}), (Intervals{{200, 350}}));
}

TEST(TraceIntervals, AWaitOverlappedByAnotherTenantsKernelIsNoGap) {
  EXPECT_TRUE(uncovered_parts({{100, 500}}, {{50, 600}}).empty());
  // Busy in the middle only: the two ends are gaps.
  EXPECT_EQ(uncovered_parts({{100, 500}}, {{200, 300}}), (Intervals{{100, 200}, {300, 500}}));
  // Several waits against several kernels, one wait with nothing running at all.
  EXPECT_EQ(uncovered_parts({{0, 10}, {20, 30}, {40, 50}}, {{5, 25}}), (Intervals{{0, 5}, {25, 30}, {40, 50}}));
}

TEST(TracePercentiles, NearestRank) {
  std::vector<std::int64_t> values;
  for (std::int64_t v = 1; v <= 100; ++v) values.push_back(v);
  EXPECT_EQ(percentile(values, 50), 50);
  EXPECT_EQ(percentile(values, 90), 90);
  EXPECT_EQ(percentile(values, 99), 99);
  EXPECT_EQ(percentile(values, 100), 100);
  EXPECT_EQ(percentile({7}, 50), 7);
  EXPECT_EQ(percentile({7}, 99), 7);
  EXPECT_EQ(percentile({1, 2, 3, 4}, 50), 2);
  EXPECT_EQ(percentile({1, 2, 3, 4}, 90), 4);
  EXPECT_EQ(percentile({}, 50), 0);
}

TEST(TraceSlices, GrantedToTheNextGrantOfAnotherOrTheHoldersDrainEnd) {
  const std::vector<GpushareEvent> events{{100, "a", "granted"},     {150, "a", "granted"},
                                          {200, "b", "handover_asked"}, {300, "b", "granted"},
                                          {400, "a", "drain_ended"},  {500, "b", "drain_ended"},
                                          {600, "a", "granted"}};
  EXPECT_EQ(slices_from(events, 900),
            (std::vector<Slice>{{"a", 100, 300}, {"b", 300, 500}, {"a", 600, 900}}));
  EXPECT_TRUE(slices_from({{10, "a", "wait_begun"}}, 50).empty());
}

}  // namespace
}  // namespace gpushare::trace
