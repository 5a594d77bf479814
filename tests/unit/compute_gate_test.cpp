// A process's gate: its activity lanes, and its slow paths (acquire, checkpoint, hand-over) against
// the arbiter on the same state file. The clock is the fake one where the gate takes it as a
// parameter, the real one where the gate reads it itself.
#include "core/compute_gate.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "arbiter_fixture.hpp"
#include "core/arbiter.hpp"
#include "core/platform.hpp"

namespace gpushare {
namespace {

class ComputeGateTest : public testing::ArbiterTest {};

// At the end of its slice a holder with only lower classes waiting renews its slice at a
// checkpoint; it does not drain.
TEST_F(ComputeGateTest, AHigherClassRenewsItsSliceWithoutDraining) {
  const auto low = add("low", 50, 0, Priority::kLow), high = add("high", 50, 0, Priority::kHigh);
  ComputeGate gate(*state_, high);
  grant_to(high);
  want(low);
  // checkpoint() reads the real clock: put the slice's end in the past.
  s().schedules[kGpu].slice_end_ns.store(1);
  int drains = 0;
  ASSERT_TRUE(gate.checkpoint(kGpu, [&](std::uint32_t) { ++drains; }).ok());
  EXPECT_EQ(drains, 0);
  EXPECT_TRUE(gate.holds(kGpu));
  EXPECT_GT(s().schedules[kGpu].slice_end_ns.load(), monotonic_now_ns()) << "a fresh slice";
}

TEST_F(ComputeGateTest, ALowerClassKnowsAHigherOneWasAroundRecently) {
  const auto low = add("low", 50, 0, Priority::kLow), high = add("high", 50, 0, Priority::kHigh);
  const ComputeGate low_gate(*state_, low), high_gate(*state_, high);
  EXPECT_FALSE(low_gate.higher_class_recently(kGpu, now_));
  grant_to(high);
  EXPECT_TRUE(low_gate.higher_class_recently(kGpu, now_ + 50 * kMs));
  EXPECT_FALSE(high_gate.higher_class_recently(kGpu, now_ + 50 * kMs)) << "nothing is above high";
  EXPECT_FALSE(low_gate.higher_class_recently(kGpu, now_ + 150 * kMs)) << "100 ms later it is forgotten";
}

// The gate knows its tenant from when it was made: a slot's tenant index written over later (any
// process can write the file) does not change the class it compares with.
TEST_F(ComputeGateTest, ALowerClassGateKeepsItsClassWhenItsSlotIsWrittenOver) {
  const auto low = add("low", 50, 0, Priority::kLow), high = add("high", 50, 0, Priority::kHigh);
  const ComputeGate low_gate(*state_, low);
  grant_to(high);
  s().slots[low].tenant_index.store(s().slots[high].tenant_index.load());
  EXPECT_TRUE(low_gate.higher_class_recently(kGpu, now_ + 50 * kMs)) << "written to say high";
  s().slots[low].tenant_index.store(0x7fffffff);
  EXPECT_TRUE(low_gate.higher_class_recently(kGpu, now_ + 50 * kMs)) << "written out of range";
}

// The activity lanes: the first threads of a process to launch own a lane each and move it with
// plain stores; later ones share lane 0 with atomic adds. More threads than lanes, all launching at
// once: no call is lost (two threads on one private lane would lose some) and none is left inside.
TEST_F(ComputeGateTest, ThreadsPastThePrivateLanesShareOneAndNoCallIsLost) {
  const auto a = add("a", 50);
  ComputeGate gate(*state_, a);
  constexpr unsigned kThreads = layout::kActivityLanes + 4;
  constexpr std::uint64_t kCalls = 20'000;
  std::atomic<unsigned> ready{0};
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      ++ready;
      while (ready < kThreads) std::this_thread::yield();  // all at once, lanes claimed together
      LaneClaim claim;
      for (std::uint64_t i = 0; i < kCalls; ++i) ComputeGate::end_launch(gate.begin_launch(kGpu, claim));
    });
  }
  for (auto& thread : threads) thread.join();
  const layout::SlotCompute& compute = s().slots[a].compute[kGpu];
  EXPECT_EQ(layout::calls_between(0, layout::activity_of(compute)), kThreads * kCalls);
  EXPECT_EQ(gate.threads_inside(kGpu), 0u);
  for (unsigned lane = 1; lane < layout::kActivityLanes; ++lane) {
    EXPECT_EQ(layout::calls_between(0, compute.activity[lane].load()), kCalls) << "lane " << lane << ": one thread";
  }
  EXPECT_EQ(layout::calls_between(0, compute.activity[0].load()), (kThreads - layout::kActivityLanes + 1) * kCalls);
}

// A thread inside a call on its own lane keeps its process busy, and the arbiter sees its calls.
TEST_F(ComputeGateTest, AThreadOnItsOwnLaneKeepsTheHolderBusy) {
  const auto a = add("a", 50), b = add("b", 50);
  ComputeGate gate(*state_, a);
  grant_to(a);
  LaneClaim claim;
  const ActivityLane lane = gate.begin_launch(kGpu, claim);
  ASSERT_FALSE(lane.shared) << "the first thread to call gets a lane of its own";
  EXPECT_EQ(gate.threads_inside(kGpu), 1u);
  want(b);
  look_for(8, b, a);  // inside: never idle
  ComputeGate::end_launch(lane);
  expect_idle_once_still(a, b);
}

// Private lanes go to launching threads, per GPU: a process with one launching thread per GPU has
// a private lane on each, and synchronizes (which block anyway) take none.
TEST_F(ComputeGateTest, PrivateLanesGoToLaunchingThreadsOnEachGpu) {
  const auto a = add("a", 50);
  ComputeGate gate(*state_, a);
  ComputeGate::end_launch(gate.begin_wait(kGpu));
  std::vector<LaneClaim> threads(layout::kActivityLanes);  // one claim per thread, on kGpu
  for (unsigned t = 0; t + 1 < layout::kActivityLanes; ++t) {
    const ActivityLane lane = gate.begin_launch(kGpu, threads[t]);
    EXPECT_FALSE(lane.shared) << "thread " << t;
    ComputeGate::end_launch(lane);
  }
  const ActivityLane last = gate.begin_launch(kGpu, threads.back());
  EXPECT_TRUE(last.shared) << "past the private lanes";
  ComputeGate::end_launch(last);
  LaneClaim on_gpu1;
  const ActivityLane other = gate.begin_launch(1, on_gpu1);
  EXPECT_FALSE(other.shared) << "GPU 1 has lanes of its own";
  ComputeGate::end_launch(other);
  EXPECT_EQ(layout::calls_between(0, layout::activity_of(s().slots[a].compute[kGpu])), layout::kActivityLanes + 1);
  EXPECT_EQ(gate.threads_inside(kGpu) + gate.threads_inside(1), 0u);
}

// Where the kernel allows asymmetric fences (membarrier), a process's gate registers it and marks
// its slot, so that a waiter fences its threads instead of watching its lanes for 10 µs; the mark
// goes with the slot. (Skipped where a seccomp profile or an old kernel refuses membarrier: the
// readers then watch, which the tests of slots without a gate exercise.)
TEST_F(ComputeGateTest, AGateMarksItsSlotFencedWhereTheKernelAllows) {
  if (!fence::register_process_for_global() || !fence::register_process_for_own()) {
    GTEST_SKIP() << "membarrier refused here";
  }
  const auto a = add("a", 50), b = add("b", 50);
  EXPECT_EQ(s().slots[a].fenced.load(), 0u) << "no gate yet";
  {
    ComputeGate gate(*state_, a);
    EXPECT_EQ(s().slots[a].fenced.load(), 1u);
    EXPECT_TRUE(gate.fence_own_threads());
    EXPECT_TRUE(fence::registered_processes());
    grant_to(a);
    LaneClaim claim;
    ComputeGate::end_launch(gate.begin_launch(kGpu, claim));
    want(b);
    look_for(1, b, a);
    expect_idle_once_still(a, b);  // through the fenced look
  }
  members_.erase(members_.begin());  // a leaves
  EXPECT_EQ(s().slots[a].fenced.load(), 0u) << "a slot's next owner starts unmarked";
}

// A thread's lane is its process's: in another gate (another process's slot here, the child's new
// slot after a fork) it takes a lane there, and its calls count where it made them.
TEST_F(ComputeGateTest, AThreadHasALaneInEachGateItCallsThrough) {
  const auto a = add("a", 50), b = add("b", 50);
  ComputeGate first(*state_, a), second(*state_, b);
  LaneClaim claim;  // one thread's, on kGpu
  for (int i = 0; i < 3; ++i) {
    ComputeGate::end_launch(first.begin_launch(kGpu, claim));
    ComputeGate::end_launch(second.begin_launch(kGpu, claim));
  }
  EXPECT_EQ(layout::calls_between(0, layout::activity_of(s().slots[a].compute[kGpu])), 3u);
  EXPECT_EQ(layout::calls_between(0, layout::activity_of(s().slots[b].compute[kGpu])), 3u);
  EXPECT_EQ(first.threads_inside(kGpu) + second.threads_inside(kGpu), 0u);
}

// A process's own handover asks for itself first, so its other launching threads go to acquire and
// hand over too, each with a drain of its own. The slower drain must not end the slice the process
// was granted again meanwhile (it did: the process lost a slice nobody asked for, and the next
// holder started while its threads still launched).
TEST_F(ComputeGateTest, ALateSiblingDrainDoesNotEndTheNextSlice) {
  const auto x = add("x", 50), w = add("w", 50);
  ComputeGate gate(*state_, x);
  ASSERT_TRUE(gate.acquire(kGpu, nullptr).ok());
  ASSERT_TRUE(gate.holds(kGpu));
  // w waits (same class, so x's checkpoint hands over) but is far behind: x is picked again.
  auto& w_entry = s().tenants[s().slots[w].tenant_index.load()].compute[kGpu];
  w_entry.virtual_ns.store(std::uint64_t{1} << 60);
  w_entry.active.store(1);
  s().slots[w].compute[kGpu].waiting_since_ns.store(monotonic_now_ns());
  s().schedules[kGpu].waiting.fetch_add(1);
  std::atomic<bool> a_in{false}, b_in{false}, release_a{false}, release_b{false};
  const auto blocking_drain = [](std::atomic<bool>& in, std::atomic<bool>& release) {
    return ComputeGate::Drain([&in, &release](std::uint32_t) {
      in = true;
      while (!release) std::this_thread::yield();
    });
  };
  const std::uint64_t past_end = s().schedules[kGpu].slice_end_ns.load() + 1;
  std::thread a([&] { EXPECT_TRUE(gate.checkpoint(kGpu, blocking_drain(a_in, release_a), past_end).ok()); });
  while (!a_in) std::this_thread::yield();
  EXPECT_FALSE(gate.holds(kGpu)) << "asked for itself: the other threads stop";
  std::thread b([&] { EXPECT_TRUE(gate.acquire(kGpu, blocking_drain(b_in, release_b)).ok()); });
  while (!b_in) std::this_thread::yield();
  release_a = true;
  a.join();
  ASSERT_TRUE(gate.holds(kGpu)) << "x granted again";
  const std::uint64_t charges = s().schedules[kGpu].charge_seq.load();
  const std::uint64_t start = s().schedules[kGpu].slice_start_ns.load();
  release_b = true;
  b.join();
  EXPECT_EQ(s().schedules[kGpu].charge_seq.load(), charges) << "the late drain ended the new slice";
  EXPECT_EQ(s().schedules[kGpu].slice_start_ns.load(), start);
  s().slots[w].compute[kGpu].waiting_since_ns.store(0);
  s().schedules[kGpu].waiting.fetch_sub(1);
}

// A gate's thread waiting in acquire whose process is granted the slice, and asked to hand over
// before that thread runs again (its slice ran out meanwhile), hands over as soon as it runs: it
// waited for the holder's grace (1 s) before, since only acquire's entry looked for the request.
TEST_F(ComputeGateTest, AWaiterFindingItsGrantAlreadyAskedForHandsOverAtOnce) {
  const auto late = add("late", 50), other = add("other", 50);
  auto& schedule = s().schedules[kGpu];
  auto& other_since = s().slots[other].compute[kGpu].waiting_since_ns;
  other_since.store(monotonic_now_ns());
  arbitrate(s(), kGpu, monotonic_now_ns(), kNoRequester, timing_);
  ASSERT_EQ(holder(), other);
  other_since.store(0);
  launch(other);
  // other stays inside a launch, so it never looks idle: the taker cannot be granted the GPU before
  // the test sets up the scene (under load, the test thread may not run for milliseconds).
  enter(other);
  // late is far behind in virtual time: once it has handed over, other goes first.
  auto& late_entry = s().tenants[s().slots[late].tenant_index.load()].compute[kGpu];
  late_entry.virtual_ns.store(std::uint64_t{1} << 60);
  late_entry.active.store(1);
  ComputeGate gate(*state_, late);
  std::atomic<bool> done{false};
  enter(late);  // as the launch hooks do: the waiting thread is inside its gated call
  std::thread taker([&] {
    EXPECT_TRUE(gate.acquire(kGpu, nullptr).ok());
    done = true;
  });
  const std::uint64_t marked_by = monotonic_now_ns() + 5'000 * kMs;
  while (s().slots[late].compute[kGpu].waiting_since_ns.load() == 0 && !done && monotonic_now_ns() < marked_by) {
    std::this_thread::yield();
  }
  if (s().slots[late].compute[kGpu].waiting_since_ns.load() == 0) {
    taker.join();  // it is granted within other's grace at the latest
    FAIL() << "the taker never marked itself waiting, or was granted before the scene was set";
  }
  std::uint64_t started = 0;
  {
    // While the taker sleeps: other's slice ends, late is granted and, before its thread runs,
    // asked to hand over (granted and asked in one store, so the thread never sees the grant alone).
    auto lock = lock_schedule(s(), kGpu);
    ASSERT_TRUE(lock.ok());
    started = monotonic_now_ns();
    end_slice(s(), kGpu, started);
    schedule.slice_start_ns.store(started);
    schedule.slice_end_ns.store(started + 10 * kMs);
    schedule.handover_asked_ns.store(started);
    schedule.activity_at_grant.store(layout::activity_of(s().slots[late].compute[kGpu]));
    schedule.holder_word.store(holder_token(late) | layout::kHandoverBit);
    schedule.grant_seq.fetch_add(1);
    other_since.store(started);
    schedule.waiting.fetch_add(1);
  }
  wake_waiters(s(), kGpu);
  std::uint64_t handed_at = 0;
  while (!done && monotonic_now_ns() - started < 5'000 * kMs) {
    if (handed_at == 0 && holder() != late) handed_at = monotonic_now_ns();
    if (holder() == other && other_since.load() != 0) {  // other's turn: it takes it up, uses it, ends it
      other_since.store(0);
      schedule.waiting.fetch_sub(1);
      auto lock = lock_schedule(s(), kGpu);
      end_slice(s(), kGpu, monotonic_now_ns());
      wake_waiters(s(), kGpu);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  taker.join();
  ASSERT_NE(handed_at, 0u);
  EXPECT_LT(handed_at - started, 200 * kMs) << "handed over after " << (handed_at - started) / kMs << " ms";
  EXPECT_TRUE(gate.holds(kGpu)) << "and then waited for its turn and got it";
  EXPECT_EQ(schedule.waiting.load(), 0u) << "every waiting mark counted once and uncounted once";
}

// A waiter whose own slot was made to say another tenant, or not in use, was never granted the GPU
// (its launches hung): its gate puts the slot right.
TEST_F(ComputeGateTest, AGateRestoresItsOwnSlotWhereTheFileWasChanged) {
  const auto a = add("a", 50);
  const std::uint32_t tenant = s().slots[a].tenant_index.load();
  ComputeGate gate(*state_, a);
  s().slots[a].tenant_index.store(0x7fffffff);
  s().slots[a].state.store(0x55);
  ASSERT_TRUE(gate.acquire(kGpu, nullptr).ok());
  EXPECT_TRUE(gate.holds(kGpu));
  EXPECT_EQ(s().slots[a].tenant_index.load(), tenant);
  EXPECT_EQ(s().slots[a].state.load(), layout::kInUse);
}

// A renewed slice is no untaken grant, even while a sibling thread's old waiting mark is still
// there: a busy holder whose launch blocks in the driver for 2 ms lost the GPU, uncharged.
TEST_F(ComputeGateTest, ARenewedSliceIsNotWithdrawnForASiblingsOldMark) {
  const auto p = add("p", 50), q = add("q", 50);
  want(p);  // thread B of p waits...
  arbitrate(s(), kGpu, now_, kNoRequester, timing_);
  ASSERT_EQ(holder(), p);  // ...p is granted on B's mark; B has not run since
  launch(p);               // thread A of p launches on the grant
  ComputeGate gate(*state_, p);
  ASSERT_TRUE(gate.holds(kGpu));
  // A's next launch: its checkpoint, after the slice, renews it (nobody else waits); then the
  // launch blocks in the driver (a full queue), A inside all along.
  enter(p);
  now_ += 20 * kMs;
  ASSERT_TRUE(gate.checkpoint(kGpu, nullptr, now_).ok());
  ASSERT_TRUE(gate.holds(kGpu));
  want(q);
  for (int i = 0; i < 5; ++i) {
    now_ += kMs;
    arbitrate(s(), kGpu, now_, q, timing_);
    ASSERT_EQ(holder(), p) << "a thread inside a launch, and a renewed slice (" << i + 1 << " ms)";
  }
}

}  // namespace
}  // namespace gpushare

namespace gpushare {
namespace {

// What a gate tells its observer (trace mode), in order.
class RecordingObserver final : public GateObserver {
 public:
  void gate_event(std::uint32_t gpu, GateEvent event, std::uint64_t at_ns) override {
    EXPECT_EQ(gpu, 0u) << "the fixture's GPU";
    EXPECT_GE(at_ns, last_at_) << "events come in time order";
    last_at_ = at_ns;
    events.push_back(event);
  }
  std::vector<GateEvent> events;

 private:
  std::uint64_t last_at_ = 0;
};

// A wait is bracketed and ends with a grant; a handover at a checkpoint is asked, drained, then the
// gate waits again; nothing is told on a checkpoint that keeps the slice, nor once it stops observing.
TEST_F(ComputeGateTest, AnObserverSeesWaitsGrantsAndHandovers) {
  const auto x = add("x", 50), w = add("w", 50);
  ComputeGate gate(*state_, x);
  RecordingObserver observer;
  gate.observe(&observer);
  ASSERT_TRUE(gate.acquire(kGpu, nullptr).ok());
  using E = GateEvent;
  EXPECT_EQ(observer.events, (std::vector<E>{E::kWaitBegun, E::kWaitEnded, E::kGranted}));
  observer.events.clear();
  ASSERT_TRUE(gate.checkpoint(kGpu, nullptr).ok());
  EXPECT_TRUE(observer.events.empty()) << "the slice is not over: nothing happened";
  // w waits, with less GPU time than x: at the end of x's slice x hands over and waits.
  s().tenants[s().slots[w].tenant_index.load()].compute[kGpu].active.store(1);
  s().slots[w].compute[kGpu].waiting_since_ns.store(monotonic_now_ns());
  s().schedules[kGpu].waiting.fetch_add(1);
  int drains = 0;
  std::thread w_takes_its_turn([&] {
    // Once x has handed over, w's slice is granted, used and ended, so that x is granted again.
    const std::uint64_t by = monotonic_now_ns() + 5'000 * kMs;
    while (holder() != w && monotonic_now_ns() < by) std::this_thread::yield();
    s().slots[w].compute[kGpu].waiting_since_ns.store(0);
    s().schedules[kGpu].waiting.fetch_sub(1);
    auto lock = lock_schedule(s(), kGpu);
    end_slice(s(), kGpu, monotonic_now_ns());
    wake_waiters(s(), kGpu);
  });
  const std::uint64_t past_end = s().schedules[kGpu].slice_end_ns.load() + 1;
  ASSERT_TRUE(gate.checkpoint(kGpu, [&](std::uint32_t) { ++drains; }, past_end).ok());
  w_takes_its_turn.join();
  EXPECT_EQ(drains, 1);
  EXPECT_EQ(observer.events, (std::vector<E>{E::kHandoverAsked, E::kDrainBegun, E::kDrainEnded, E::kWaitBegun,
                                             E::kWaitEnded, E::kGranted}));
  gate.observe(nullptr);
  observer.events.clear();
  ASSERT_TRUE(gate.checkpoint(kGpu, nullptr).ok());
  EXPECT_TRUE(observer.events.empty());
}

}  // namespace
}  // namespace gpushare
