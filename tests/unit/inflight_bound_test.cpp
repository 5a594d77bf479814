// The in-flight bound, the handover's wait for launching threads and the ungated pause, driven by
// a fake clock: a simulated GPU runs launches back to back on one stream, and its events finish
// when the work queued before them has. No sleeping, no driver.
#include "core/inflight_bound.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <utility>
#include <vector>

#include "core/handover_drain.hpp"
#include "core/settings.hpp"
#include "core/ungated_pause.hpp"

namespace gpushare {
namespace {

constexpr std::uint64_t kUs = 1'000;
constexpr std::uint64_t kMs = 1'000'000;

int g_context_a = 0;
int g_context_b = 0;
const ContextHandle kContextA = &g_context_a;
const ContextHandle kContextB = &g_context_b;
constexpr int kDeviceA = 0;
constexpr int kDeviceB = 1;

// One GPU, one stream. The host's clock moves by kLaunchCostNs per launch and by waits; the GPU
// runs each launch for its own time once the ones before it are done.
class SimulatedGpu final : public InflightEvents {
 public:
  static constexpr std::uint64_t kLaunchCostNs = 2 * kUs;
  static constexpr std::uint64_t kLookCostNs = 500;  // a wait for a finished event

  std::uint64_t clock_ns = 1'000 * kMs;
  ContextHandle current = kContextA;  // the calling thread's context
  bool create_fails = false;
  bool record_fails = false;
  int created = 0;
  int destroyed = 0;
  int recorded = 0;
  int waits = 0;
  std::size_t most_in_flight = 0;  // launches queued or running, the new one included

  void launch(std::uint64_t gpu_ns) {
    while (!in_flight_.empty() && in_flight_.front() <= clock_ns) in_flight_.pop_front();
    busy_until_ns_ = std::max(busy_until_ns_, clock_ns) + gpu_ns;
    in_flight_.push_back(busy_until_ns_);
    most_in_flight = std::max(most_in_flight, in_flight_.size());
    clock_ns += kLaunchCostNs;
  }
  // A handover's drain: everything queued has run.
  void drain() { clock_ns = std::max(clock_ns, busy_until_ns_); }
  // The GPU time queued ahead of a launch made now.
  std::uint64_t queued_ns() const { return busy_until_ns_ > clock_ns ? busy_until_ns_ - clock_ns : 0; }
  bool live(EventHandle event) const { return contexts_.contains(event); }

  bool create(EventHandle* event) override {
    if (create_fails) return false;
    *event = reinterpret_cast<EventHandle>(static_cast<std::uintptr_t>(++handles_));
    contexts_[*event] = current;
    ++created;
    return true;
  }
  bool record(EventHandle event, StreamHandle /*stream*/) override {
    EXPECT_TRUE(live(event)) << "recorded a destroyed event";
    EXPECT_EQ(contexts_[event], current) << "recorded an event of another context";
    if (record_fails) return false;
    finishes_at_[event] = std::max(busy_until_ns_, clock_ns);
    ++recorded;
    return true;
  }
  void wait(EventHandle event) override {
    EXPECT_TRUE(live(event)) << "waited for a destroyed event";
    ++waits;
    clock_ns = std::max(clock_ns + kLookCostNs, finishes_at_[event]);
  }
  void destroy(EventHandle event) override {
    EXPECT_TRUE(live(event)) << "destroyed an event twice";
    contexts_.erase(event);
    finishes_at_.erase(event);
    ++destroyed;
  }
  std::uint64_t now_ns() override { return clock_ns; }

 private:
  std::uintptr_t handles_ = 0;
  std::uint64_t busy_until_ns_ = 0;
  std::deque<std::uint64_t> in_flight_;  // when each launch finishes
  std::map<EventHandle, ContextHandle> contexts_;
  std::map<EventHandle, std::uint64_t> finishes_at_;
};

// A launching thread: a checkpoint, then as many launches as it says, and again.
class InflightBoundTest : public ::testing::Test {
 protected:
  unsigned checkpoint(bool queue_empty = false) {
    std::uint64_t now = gpu_.clock_ns;
    const int device = gpu_.current == kContextA ? kDeviceA : kDeviceB;
    const unsigned interval =
        bound_.checkpoint(pacing_, gpu_, {gpu_.current, device, nullptr}, most_, queue_empty, &now);
    EXPECT_EQ(now, gpu_.clock_ns) << "the returned clock is the clock after the bound's waits";
    return interval;
  }
  // `checkpoints` checkpoints, each followed by its launches of `gpu_ns` each; the intervals. The
  // first checkpoint of all comes with the grant of the slice, on an empty queue.
  std::vector<unsigned> run(int checkpoints, std::uint64_t gpu_ns) {
    std::vector<unsigned> intervals;
    for (int c = 0; c < checkpoints; ++c) {
      const unsigned interval = checkpoint(/*queue_empty=*/std::exchange(first_, false));
      intervals.push_back(interval);
      for (unsigned l = 0; l < interval; ++l) gpu_.launch(gpu_ns);
    }
    return intervals;
  }

  InflightPacing pacing_ = InflightPacing::from_settings(64, 2, 64);
  unsigned most_ = 32;
  SimulatedGpu gpu_;
  InflightBound bound_;
  bool first_ = true;
};

TEST(InflightPacingTest, ComesFromTheSettings) {
  const InflightPacing pacing = InflightPacing::from_settings(64, 2, 64);
  EXPECT_TRUE(pacing.bounded);
  EXPECT_EQ(pacing.checkpoint_every, 32u);  // two events in the ring
  EXPECT_EQ(pacing.queue_target_ns, 2 * kMs);
  EXPECT_EQ(InflightPacing::from_settings(1, 2, 64).checkpoint_every, 1u);
  EXPECT_EQ(InflightPacing::from_settings(128, 0, 64).queue_target_ns, 0u);
  // Off: no events, but the slice is still checked at the pace of the table's default.
  const std::uint32_t table_default = default_settings().inflight_launches;
  const InflightPacing off = InflightPacing::from_settings(0, 2, table_default);
  EXPECT_FALSE(off.bounded);
  EXPECT_EQ(off.checkpoint_every, table_default / 2);
  EXPECT_EQ(off.checkpoint_every, InflightPacing::from_settings(table_default, 2, table_default).checkpoint_every);
}

TEST(InflightPacingTest, CheckpointsOftenNearAHigherClass) {
  const InflightPacing pacing = InflightPacing::from_settings(64, 2, 64);
  EXPECT_EQ(pacing.most_launches(false), 32u);
  EXPECT_EQ(pacing.most_launches(true), InflightPacing::kNearHigherClassLaunches);
  EXPECT_EQ(InflightPacing::from_settings(2, 2, 64).most_launches(true), 1u);
}

TEST_F(InflightBoundTest, StartsAtOneLaunchAndGrowsByOneWhileTheQueueIsShort) {
  const std::vector<unsigned> intervals = run(40, 10 * kUs);
  // The first two checkpoints have nothing to wait for, the third waits for the grant's event;
  // then one more launch per checkpoint up to the most, 32 launches of 10 µs being well under half
  // the 2 ms target.
  std::vector<unsigned> expected = {1, 1, 1};
  for (unsigned i = 2; i <= 32; ++i) expected.push_back(i);
  while (expected.size() < intervals.size()) expected.push_back(32);
  EXPECT_EQ(intervals, expected);
}

TEST_F(InflightBoundTest, ScalesTheIntervalDownWhenTheQueueIsLongInTime) {
  (void)run(40, 10 * kUs);
  ASSERT_EQ(checkpoint(), 32u);
  // Launches of 200 µs: 32 of them queue 6.4 ms. The interval goes down at once, by the target
  // over what the event waited for, and the queue stays near the target.
  const std::vector<unsigned> intervals = run(40, 200 * kUs);
  EXPECT_LE(intervals[3], 16u);
  for (std::size_t c = 10; c < intervals.size(); ++c) {
    EXPECT_GE(intervals[c], 3u) << c;
    EXPECT_LE(intervals[c], 10u) << c;
    EXPECT_LE(gpu_.queued_ns(), 3 * pacing_.queue_target_ns);
  }
}

TEST_F(InflightBoundTest, ALateLookScalesNothingDown) {
  (void)run(40, 10 * kUs);
  // The thread was descheduled for 50 ms: the events it waits for next finished long ago, and
  // (now - recorded) says how late it looked, not how long the GPU took.
  gpu_.clock_ns += 50 * kMs;
  const std::vector<unsigned> intervals = run(2, 10 * kUs);
  EXPECT_EQ(intervals, (std::vector<unsigned>{32, 32}));
}

TEST_F(InflightBoundTest, LongLaunchesRunOneWhileTheNextIsQueued) {
  // Each launch alone is over half the target: one checkpoint per launch, and the newest event
  // is waited for too, so at most two launches are on the GPU, one running and one queued.
  const std::vector<unsigned> intervals = run(30, 3 * kMs);
  EXPECT_EQ(intervals, std::vector<unsigned>(30, 1u));
  EXPECT_EQ(gpu_.most_in_flight, 2u);
}

TEST_F(InflightBoundTest, LongLaunchesEndWhenOneLaunchIsShortAgain) {
  (void)run(30, 3 * kMs);
  const std::vector<unsigned> intervals = run(10, 10 * kUs);
  EXPECT_GE(intervals.back(), 4u);
}

TEST_F(InflightBoundTest, BecomingLongLaunchesBoundsThemToTwoInFlight) {
  (void)run(40, 10 * kUs);
  // From 32 short launches to launches of 5 ms: scaled to 1 launch per checkpoint, and from then
  // on no more than two in flight.
  const std::vector<unsigned> intervals = run(4, 5 * kMs);
  ASSERT_EQ(intervals.back(), 1u);
  gpu_.most_in_flight = 0;
  (void)run(20, 5 * kMs);
  EXPECT_EQ(gpu_.most_in_flight, 2u);
}

TEST_F(InflightBoundTest, AnEventOnAJustDrainedQueueSaysNothing) {
  const std::vector<unsigned> before = run(6, 10 * kUs);
  ASSERT_EQ(before.back(), 4u);
  // A handover drained the queue and the slice came back later: the event recorded now finishes
  // at once whatever the kernels, so when it is waited for (two checkpoints on) it grows nothing.
  gpu_.clock_ns += 30 * kMs;
  const unsigned granted = checkpoint(/*queue_empty=*/true);
  for (unsigned l = 0; l < granted; ++l) gpu_.launch(10 * kUs);
  const std::vector<unsigned> after = run(3, 10 * kUs);
  // The checkpoints after the grant wait for events looked at late (no change), then for the
  // grant's own (no change), then for one marking work (one more).
  EXPECT_EQ(granted, 4u);
  EXPECT_EQ(after, (std::vector<unsigned>{4, 4, 5}));
}

TEST_F(InflightBoundTest, LongLaunchesStayAssumedAtAGrant) {
  (void)run(30, 3 * kMs);
  (void)run(2, 10 * kUs);
  // A handover drained the queue and the slice is granted again: the newest event, waited for at
  // the grant, finished at some moment of the drain, so it shows nothing about the launches. Only
  // the event recorded after the grant on short launches does.
  gpu_.drain();
  ASSERT_EQ(checkpoint(/*queue_empty=*/true), 1u);
  gpu_.launch(10 * kUs);
  const std::vector<unsigned> after = run(3, 10 * kUs);
  EXPECT_EQ(after, (std::vector<unsigned>{1, 1, 2}));
}

TEST_F(InflightBoundTest, ATargetOfZeroBoundsLaunchesOnly) {
  pacing_ = InflightPacing::from_settings(8, 0, 64);
  most_ = pacing_.checkpoint_every;
  const std::vector<unsigned> intervals = run(30, 3 * kMs);
  EXPECT_EQ(intervals, std::vector<unsigned>(30, 4u));
  // The checkpoint waits for the event of two checkpoints before: the launches of those two
  // intervals and of the current one may be queued, never more.
  EXPECT_EQ(gpu_.most_in_flight, 3 * 4u);
  EXPECT_EQ(gpu_.waits, 28);
}

TEST_F(InflightBoundTest, UnboundedRecordsNoEvents) {
  pacing_ = InflightPacing::from_settings(0, 2, 64);
  const std::vector<unsigned> intervals = run(30, 3 * kMs);
  EXPECT_EQ(intervals, std::vector<unsigned>(30, 32u));
  EXPECT_EQ(gpu_.created, 0);
  EXPECT_EQ(gpu_.waits, 0);
  EXPECT_EQ(gpu_.most_in_flight, 30 * 32u);
}

TEST_F(InflightBoundTest, MovesToAContextThatKeepsLaunching) {
  (void)run(3, 10 * kUs);
  ASSERT_EQ(gpu_.created, 2);
  const int recorded = gpu_.recorded;
  // Another context of the GPU launches: not bounded (an event is recorded only in its own
  // context), one launch per checkpoint; a checkpoint back in the events' context starts the
  // count again.
  gpu_.current = kContextB;
  for (unsigned c = 1; c < InflightBound::kMoveAfterCheckpoints; ++c) EXPECT_EQ(checkpoint(), 1u);
  gpu_.current = kContextA;
  (void)checkpoint();
  gpu_.current = kContextB;
  for (unsigned c = 1; c < InflightBound::kMoveAfterCheckpoints; ++c) EXPECT_EQ(checkpoint(), 1u);
  EXPECT_EQ(gpu_.recorded, recorded + 1);
  EXPECT_EQ(gpu_.destroyed, 0);
  // The next one in a row moves the bound: the old context's events go, new ones are made here.
  (void)checkpoint();
  EXPECT_EQ(gpu_.destroyed, 2);
  EXPECT_EQ(gpu_.created, 3);
  EXPECT_EQ(gpu_.recorded, recorded + 2);
  (void)run(4, 10 * kUs);  // records in context B only (SimulatedGpu::record checks)
  EXPECT_EQ(gpu_.created, 4);
}

TEST_F(InflightBoundTest, ForgetsTheEventsOfAnEndingContext) {
  (void)run(3, 10 * kUs);
  bound_.forget_context(gpu_, kContextB);
  bound_.forget_device(gpu_, kDeviceB);
  EXPECT_EQ(gpu_.destroyed, 0);
  bound_.forget_context(gpu_, kContextA);
  EXPECT_EQ(gpu_.destroyed, 2);
  // The context is gone; the next one gets new events, and nothing of the old is waited for.
  gpu_.current = kContextB;
  const int waits = gpu_.waits;
  (void)checkpoint();
  EXPECT_EQ(gpu_.created, 3);
  EXPECT_EQ(gpu_.waits, waits);
  // A device reset ends its contexts too.
  bound_.forget_device(gpu_, kDeviceB);
  EXPECT_EQ(gpu_.destroyed, 3);
  bound_.forget_device(gpu_, kDeviceB);
  EXPECT_EQ(gpu_.destroyed, 3);
}

TEST_F(InflightBoundTest, WithoutEventsChecksTheSliceAtTheMostLaunches) {
  gpu_.create_fails = true;
  EXPECT_EQ(checkpoint(), 32u);
  EXPECT_EQ(checkpoint(), 32u);
  EXPECT_EQ(gpu_.recorded, 0);
  gpu_.create_fails = false;
  EXPECT_EQ(checkpoint(), 1u);
  EXPECT_EQ(gpu_.created, 1);
}

TEST_F(InflightBoundTest, AnEventNotRecordedIsNotWaitedFor) {
  gpu_.record_fails = true;
  (void)run(4, 10 * kUs);
  EXPECT_EQ(gpu_.waits, 0);
  gpu_.record_fails = false;
  (void)run(3, 10 * kUs);
  EXPECT_EQ(gpu_.waits, 2);  // the second after it waits for the first
}

TEST_F(InflightBoundTest, ADrainWaitsForTheNewestEvent) {
  bound_.wait_for_newest(gpu_);
  EXPECT_EQ(gpu_.waits, 0);  // nothing recorded yet
  (void)run(10, 100 * kUs);
  const unsigned interval = checkpoint();
  for (unsigned l = 0; l < interval; ++l) gpu_.launch(100 * kUs);
  // The newest event marks the work up to the last checkpoint, not the launches after it.
  const std::uint64_t queued = gpu_.queued_ns();
  const int waits = gpu_.waits;
  bound_.wait_for_newest(gpu_);
  EXPECT_EQ(gpu_.waits, waits + 1);
  EXPECT_EQ(gpu_.queued_ns(), std::uint64_t{interval} * 100 * kUs);
  EXPECT_LT(gpu_.queued_ns(), queued);
}

// The handover's wait for launching threads: the counts come from scripts, each call taking the
// next value (the last one repeats); every look at the clock moves it by 1 µs.
class LaunchingThreadsScript {
 public:
  std::vector<std::uint64_t> inside = {0};
  std::vector<std::uint64_t> parked = {0};
  std::uint64_t clock_ns = 0;
  int yields = 0;

  LaunchingThreads threads() {
    return {[this] { return next(inside, &inside_at_); }, [this] { return next(parked, &parked_at_); },
            [this] { return clock_ns += kUs; }, [this] { ++yields; }};
  }

 private:
  static std::uint64_t next(const std::vector<std::uint64_t>& values, std::size_t* at) {
    const std::uint64_t value = values[std::min(*at, values.size() - 1)];
    ++*at;
    return value;
  }
  std::size_t inside_at_ = 0;
  std::size_t parked_at_ = 0;
};

TEST(HandoverDrainTest, NoLaunchingThreadNoWaitOnceFenced) {
  LaunchingThreadsScript script;
  script.inside = {1};  // the thread handing over, parked
  script.parked = {1};
  wait_for_launching_threads(script.threads(), 0);
  EXPECT_EQ(script.yields, 0);
  EXPECT_EQ(script.clock_ns, 1 * kUs);
}

TEST(HandoverDrainTest, UnfencedThreadsAreWatchedForAWhile) {
  LaunchingThreadsScript script;
  wait_for_launching_threads(script.threads(), 10 * kUs);
  EXPECT_EQ(script.yields, 0);
  EXPECT_EQ(script.clock_ns, 11 * kUs);  // looked until 10 µs had passed
}

TEST(HandoverDrainTest, WaitsUntilTheLaunchesHaveGoneIn) {
  LaunchingThreadsScript script;
  script.inside = {2, 2, 2, 2, 2, 2, 1};  // one thread launching for three looks
  script.parked = {1};
  wait_for_launching_threads(script.threads(), 0);
  EXPECT_EQ(script.yields, 3);
}

TEST(HandoverDrainTest, WaitsForALaunchingThreadAtMostTheLongestWait) {
  LaunchingThreadsScript script;
  script.inside = {2};
  script.parked = {1};
  wait_for_launching_threads(script.threads(), 0);
  EXPECT_EQ(script.clock_ns, kLaunchesInFlightWaitNs + kUs);
}

TEST(HandoverDrainTest, CountsInsideBeforeAndAfterTheParked) {
  // A launching thread and a parked one; the parked one leaves between the counts: counted after,
  // the launching thread would pass for the parked one.
  LaunchingThreadsScript script;
  script.inside = {2, 1, 0};
  script.parked = {1, 0};
  wait_for_launching_threads(script.threads(), 0);
  EXPECT_EQ(script.yields, 1);
  // One that enters and parks between the counts, while another launches: counted before, missed.
  LaunchingThreadsScript entering;
  entering.inside = {0, 2, 0};
  entering.parked = {1, 0};
  wait_for_launching_threads(entering.threads(), 0);
  EXPECT_EQ(entering.yields, 1);
}

TEST(UngatedPauseTest, DoublesWithEachFailureInARowUpToTheLongest) {
  UngatedPause pause;
  std::uint64_t now = 1'000 * kMs;
  EXPECT_FALSE(pause.ungated(now));
  EXPECT_EQ(pause.failed(now), UngatedPause::kFirstNs);
  EXPECT_TRUE(pause.ungated(now + UngatedPause::kFirstNs - 1));
  EXPECT_FALSE(pause.ungated(now + UngatedPause::kFirstNs));
  std::uint64_t expected = UngatedPause::kFirstNs;
  for (int failure = 0; failure < 10; ++failure) {
    expected = std::min(2 * expected, UngatedPause::kLongestNs);
    now += 10'000 * kMs;
    EXPECT_EQ(pause.failed(now), expected);
  }
  EXPECT_EQ(expected, UngatedPause::kLongestNs);
  EXPECT_TRUE(pause.ungated(now + UngatedPause::kLongestNs - 1));
  // A success starts again from the first pause.
  pause.worked();
  EXPECT_EQ(pause.failed(now + UngatedPause::kLongestNs), UngatedPause::kFirstNs);
}

}  // namespace
}  // namespace gpushare
