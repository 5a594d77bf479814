// The time-slice arbiter's decisions, driven by a fake clock: no sleeping, no real GPU. Each
// "process" is a slot joined into a tenant; wanting the GPU is its waiting_since flag, holding it
// is the schedule's holder word, using it is time passing on the fake clock.
#include "core/compute.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/registry.hpp"
#include "core/settings.hpp"
#include "test_support.hpp"

namespace gpushare {
namespace {

constexpr std::uint32_t kGpu = 0;
constexpr std::uint64_t kMs = 1'000'000;

class ArbiterTest : public testing::StateTest {
 protected:
  void TearDown() override {
    members_.clear();  // before the state they point into
    StateTest::TearDown();
  }
  // Joins a tenant with a compute policy; returns the process's slot.
  std::uint32_t add(const std::string& tenant, std::uint32_t share, std::uint32_t limit = 0,
                    Priority priority = Priority::kNormal) {
    auto joined = TenantMembership::join(*state_, tenant);
    EXPECT_TRUE(joined.ok());
    ComputePolicyValues policy;
    policy.share_pct = share;
    policy.limit_pct = limit;
    policy.priority = priority;
    EXPECT_TRUE(joined.value()->adopt_compute_policy(policy).ok());
    const std::uint32_t slot = joined.value()->slot_index();
    members_.push_back(std::move(joined).value());
    return slot;
  }
  layout::StateLayout& s() { return state_->state(); }
  void want(std::uint32_t slot) {
    auto& since = s().slots[slot].compute[kGpu].waiting_since_ns;
    if (since.load() == 0) since.store(now_);
  }
  std::uint32_t holder() {
    const std::uint32_t word = s().schedules[kGpu].holder_word.load();
    return word == 0 ? UINT32_MAX : (word & ~layout::kHandoverBit) - 1;
  }
  Arbitration decide(std::uint32_t requester = kNoRequester) {
    Arbitration result = arbitrate(s(), kGpu, now_, requester, timing_);
    if (holder() != UINT32_MAX) s().slots[holder()].compute[kGpu].waiting_since_ns.store(0);
    return result;
  }
  // One whole launch: in and out again.
  void launch(std::uint32_t slot) {
    s().slots[slot].compute[kGpu].activity[0].fetch_add(layout::kCallBegun - layout::kCallEnded);
  }
  // A thread of the slot's process enters a launch or a synchronize and stays there.
  void enter(std::uint32_t slot) { s().slots[slot].compute[kGpu].activity[0].fetch_add(layout::kCallBegun); }
  // ... and waits there for the slice, as ComputeGate::acquire counts it.
  void enter_to_wait(std::uint32_t slot) {
    enter(slot);
    s().slots[slot].compute[kGpu].threads_waiting.fetch_add(1);
  }
  std::uint64_t gpu_ns(std::uint32_t slot) {
    return s().tenants[s().slots[slot].tenant_index.load()].compute[kGpu].gpu_ns.load();
  }
  // Every slot in `busy` always wants the GPU; the holder uses its slice fully, then hands over.
  void run_saturated(const std::vector<std::uint32_t>& busy, std::uint64_t duration) {
    const std::uint64_t end = now_ + duration;
    while (now_ < end) {
      for (auto slot : busy) want(slot);
      decide();
      const std::uint32_t h = holder();
      ASSERT_NE(h, UINT32_MAX);
      launch(h);
      now_ = std::max(now_ + 1, s().schedules[kGpu].slice_end_ns.load());
      want(h);
      end_slice(s(), kGpu, now_);
    }
  }

  bool taken_after_a_short_pause(std::uint32_t holder_slot, std::uint32_t waiter);
  // `slot` asks for the free GPU and gets it.
  void grant_to(std::uint32_t slot) {
    want(slot);
    decide();
    EXPECT_EQ(holder(), slot);
  }
  // `waiter` looks every millisecond for `ms` milliseconds; `kept` holds the GPU all along.
  void look_for(int ms, std::uint32_t waiter, std::uint32_t kept) {
    for (int i = 0; i < ms; ++i) {
      now_ += kMs;
      decide(waiter);
      ASSERT_EQ(holder(), kept) << "after " << i + 1 << " ms";
    }
  }

  // The last thread of `kept` has just left its call: it keeps the GPU for now (its activity just
  // moved), and loses it to `waiter` once that has stood still for the idle threshold.
  void expect_idle_once_still(std::uint32_t kept, std::uint32_t waiter) {
    now_ += kMs;
    decide(waiter);
    EXPECT_EQ(holder(), kept) << "it just moved";
    for (int i = 0; i < 3; ++i) {
      now_ += kMs;
      decide(waiter);
    }
    EXPECT_EQ(holder(), waiter) << "idle once it stands still with nobody inside";
  }

  std::vector<std::unique_ptr<TenantMembership>> members_;
  std::uint64_t now_ = 1'000 * kMs;
  ArbiterTiming timing_;
};

TEST_F(ArbiterTest, SharesOfThirtyAndSeventy) {
  const auto a = add("a", 30), b = add("b", 70);
  run_saturated({a, b}, 5'000 * kMs);
  const double total = static_cast<double>(gpu_ns(a) + gpu_ns(b));
  EXPECT_NEAR(static_cast<double>(gpu_ns(a)) / total, 0.30, 0.01);
  EXPECT_NEAR(static_cast<double>(gpu_ns(b)) / total, 0.70, 0.01);
}

TEST_F(ArbiterTest, FourTenantsTenTwentyThirtyForty) {
  const auto a = add("a", 10), b = add("b", 20), c = add("c", 30), d = add("d", 40);
  run_saturated({a, b, c, d}, 10'000 * kMs);
  const double total = static_cast<double>(gpu_ns(a) + gpu_ns(b) + gpu_ns(c) + gpu_ns(d));
  EXPECT_NEAR(static_cast<double>(gpu_ns(a)) / total, 0.10, 0.01);
  EXPECT_NEAR(static_cast<double>(gpu_ns(b)) / total, 0.20, 0.01);
  EXPECT_NEAR(static_cast<double>(gpu_ns(c)) / total, 0.30, 0.01);
  EXPECT_NEAR(static_cast<double>(gpu_ns(d)) / total, 0.40, 0.01);
}

TEST_F(ArbiterTest, TenantsWithoutAShareSplitWhatIsLeft) {
  const auto a = add("a", 30), b = add("b", 0);
  run_saturated({a, b}, 5'000 * kMs);
  const double total = static_cast<double>(gpu_ns(a) + gpu_ns(b));
  EXPECT_NEAR(static_cast<double>(gpu_ns(b)) / total, 0.70, 0.01);
}

TEST_F(ArbiterTest, SharesPastOneHundredAreNormalised) {
  const auto a = add("a", 90), b = add("b", 90);
  run_saturated({a, b}, 2'000 * kMs);
  EXPECT_NEAR(static_cast<double>(gpu_ns(a)) / static_cast<double>(gpu_ns(a) + gpu_ns(b)), 0.5, 0.01);
}

TEST_F(ArbiterTest, OverrunsAreChargedSoLongRunSharesStayExact) {
  const auto a = add("a", 50), b = add("b", 50);
  const std::uint64_t end = now_ + 4'000 * kMs;
  while (now_ < end) {
    want(a);
    want(b);
    decide();
    const std::uint32_t h = holder();
    // a always overruns its slice by 5 ms (a long kernel); b never does.
    now_ = s().schedules[kGpu].slice_end_ns.load() + (h == a ? 5 * kMs : 0);
    want(h);
    end_slice(s(), kGpu, now_);
  }
  EXPECT_NEAR(static_cast<double>(gpu_ns(a)) / static_cast<double>(gpu_ns(a) + gpu_ns(b)), 0.5, 0.01);
}

TEST_F(ArbiterTest, AHardCapHoldsOnAnIdleGpu) {
  const auto a = add("a", 0, 30);
  const std::uint64_t start = now_;
  const std::uint64_t end = now_ + 6'000 * kMs;
  while (now_ < end) {
    want(a);
    const Arbitration r = decide(a);
    if (holder() == a) {
      launch(a);
      now_ = s().schedules[kGpu].slice_end_ns.load();
      want(a);
      end_slice(s(), kGpu, now_);
    } else {
      now_ += r.recheck_after_ns;  // the waiter sleeps until told to look again
    }
  }
  EXPECT_NEAR(static_cast<double>(gpu_ns(a)) / static_cast<double>(now_ - start), 0.30, 0.02);
}

TEST_F(ArbiterTest, AShareAloneGetsTheWholeGpu) {
  const auto a = add("a", 30);
  const std::uint64_t start = now_;
  run_saturated({a}, 1'000 * kMs);
  EXPECT_EQ(gpu_ns(a), now_ - start);
}

TEST_F(ArbiterTest, HighPriorityTakesTheGpuAtOnceAndLowerClassesWait) {
  const auto low = add("low", 90, 0, Priority::kLow), high = add("high", 10, 0, Priority::kHigh);
  want(low);
  decide();
  ASSERT_EQ(holder(), low);
  now_ += 1 * kMs;  // well inside low's slice
  launch(low);
  want(high);
  const Arbitration r = decide(high);
  EXPECT_TRUE(r.granted_to_requester);
  EXPECT_EQ(holder(), high);
  // While high stays busy, low is never granted, whatever its share.
  for (int i = 0; i < 50; ++i) {
    want(low);
    launch(high);
    now_ += 1 * kMs;
    decide(low);
    EXPECT_EQ(holder(), high);
  }
}

// A high service that pauses between requests keeps the GPU through pauses shorter than its slice
// while only lower classes wait: handing over in each pause would put the low tenant's kernels in
// front of its next request.
TEST_F(ArbiterTest, AHigherClassKeepsTheGpuThroughShortPauses) {
  const auto low = add("low", 90, 0, Priority::kLow), high = add("high", 10, 0, Priority::kHigh);
  grant_to(high);
  launch(high);
  want(low);
  for (int pause = 0; pause < 20; ++pause) {
    // 5 ms without a launch (past idle_after, 2 ms; short of the 10 ms slice), low looking every
    // millisecond as a waiter does.
    look_for(5, low, high);
    launch(high);
  }
  // Past its slice, with only a lower class waiting: high keeps the GPU, and is not asked to
  // hand over (it would only drain and be granted again).
  EXPECT_EQ(s().schedules[kGpu].holder_word.load() & layout::kHandoverBit, 0u);
  // A pause longer than its slice: the GPU goes to low.
  look_for(10, low, high);
  now_ += kMs;
  EXPECT_TRUE(decide(low).granted_to_requester);
  EXPECT_EQ(holder(), low);
}

// A hold is for pauses between launches. A holder stuck in a synchronize (a thread inside, word
// still) may be waiting for something only a lower class would produce, if it uses CUDA IPC: after
// its slice and the short grace it is asked, and then made, to hand over. Without IPC its wait can
// only be for its own work: the long grace, twice (once before it is asked, once after).
TEST_F(ArbiterTest, AHigherClassStuckInASynchronizeIsMadeToHandOver) {
  for (const bool ipc : {true, false}) {
    const auto low = add(ipc ? "low" : "low2", 50, 0, Priority::kLow);
    const auto high = add(ipc ? "high" : "high2", 50, 0, Priority::kHigh);
    s().slots[high].compute[kGpu].depends_on_others.store(ipc ? 1 : 0);
    grant_to(high);
    enter(high);  // inside a synchronize, for good
    want(low);
    const std::uint64_t start = now_;
    while (holder() == high && now_ - start < 5'000 * kMs) {
      now_ += kMs;
      decide(low);
    }
    EXPECT_EQ(holder(), low);
    const std::uint64_t waited = now_ - start;
    if (ipc) {
      EXPECT_GE(waited, 60 * kMs) << "not before the slice (10 ms) and the grace (50 ms)";
      EXPECT_LE(waited, 120 * kMs);
    } else {
      EXPECT_GE(waited, 2'010 * kMs) << "the slice, the grace before asking, the grace after";
      EXPECT_LE(waited, 2'070 * kMs);
    }
    s().slots[low].compute[kGpu].waiting_since_ns.store(0);
    end_slice(s(), kGpu, now_);
  }
}

// A holder that died loses the GPU once its count has stood still for idle_after, whatever hold
// its class and slice would give it: a killed `high` tenant with a 1 s slice must not keep the GPU
// from a `low` one for a second.
TEST_F(ArbiterTest, ADeadHigherClassHolderLosesTheGpuAtOnce) {
  const auto low = add("low", 50, 0, Priority::kLow), high = add("high", 50, 0, Priority::kHigh);
  s().tenants[s().slots[high].tenant_index.load()].compute_policy.slice_us.store(1'000'000);
  grant_to(high);
  launch(high);
  want(low);
  bool high_alive = true;
  const SlotAlive alive = [&](std::uint32_t slot) { return slot != high || high_alive; };
  arbitrate(s(), kGpu, now_, low, timing_, alive);
  now_ += 5 * kMs;
  arbitrate(s(), kGpu, now_, low, timing_, alive);
  ASSERT_EQ(holder(), high) << "alive, pausing: held";
  high_alive = false;
  now_ += kMs;
  EXPECT_TRUE(arbitrate(s(), kGpu, now_, low, timing_, alive).granted_to_requester);
}

// When a higher class's long tenure ends, the lower class that comes next still knows it was
// around: the end of a slice counts as the class holding the GPU, not only its grant.
TEST_F(ArbiterTest, ALowerClassKnowsAboutALongHoldThatJustEnded) {
  const auto low = add("low", 50, 0, Priority::kLow), high = add("high", 50, 0, Priority::kHigh);
  const ComputeGate low_gate(*state_, low);
  grant_to(high);
  want(low);
  for (int i = 0; i < 40; ++i) {  // 200 ms of launches every 5 ms, never renewed
    launch(high);
    look_for(5, low, high);
  }
  for (int i = 0; i < 12 && holder() == high; ++i) {  // then quiet past its slice
    now_ += kMs;
    decide(low);
  }
  ASSERT_EQ(holder(), low);
  EXPECT_TRUE(low_gate.higher_class_recently(kGpu, now_));
}

// A capped holder's slice ends with its budget: it is asked to hand over at the end of its slice
// even when only a lower class waits.
TEST_F(ArbiterTest, ACappedHolderIsAskedToHandOverToALowerClass) {
  const auto low = add("low", 50, 0, Priority::kLow), high = add("high", 50, 30, Priority::kHigh);
  grant_to(high);
  want(low);
  now_ = s().schedules[kGpu].slice_end_ns.load() + 1;
  launch(high);
  decide(low);
  EXPECT_NE(s().schedules[kGpu].holder_word.load() & layout::kHandoverBit, 0u);
}

// Whether `waiter` gets the GPU from `holder` after the holder pauses 3 ms (past idle_after).
bool ArbiterTest::taken_after_a_short_pause(std::uint32_t holder_slot, std::uint32_t waiter) {
  want(holder_slot);
  decide();
  EXPECT_EQ(holder(), holder_slot);
  launch(holder_slot);
  want(waiter);
  decide(waiter);
  now_ += 3 * kMs;
  return decide(waiter).granted_to_requester;
}

// The hold is only for classes above every waiter: between equals idleness is 2 ms, as before.
TEST_F(ArbiterTest, PausesAreNotHeldAgainstTheSameClass) {
  const auto a = add("a", 50, 0, Priority::kHigh), b = add("b", 50, 0, Priority::kHigh);
  EXPECT_TRUE(taken_after_a_short_pause(a, b));
}

// A waiter of the holder's class that is out of budget could not take over: it does not cut the
// hold short (the GPU would only go to the lower class behind it).
TEST_F(ArbiterTest, AWaiterOutOfBudgetDoesNotEndAHold) {
  const auto low = add("low", 50, 0, Priority::kLow), high = add("high", 50, 0, Priority::kHigh),
             spent = add("spent", 50, 30, Priority::kHigh);
  auto& budget = s().tenants[s().slots[spent].tenant_index.load()].compute[kGpu];
  budget.budget_ns.store(-1'000 * static_cast<std::int64_t>(kMs));
  budget.budget_at_ns.store(now_);
  grant_to(high);
  launch(high);
  want(low);
  want(spent);
  look_for(5, low, high);
}

// A capped tenant's budget pays for GPU work, not for keeping the GPU idle.
TEST_F(ArbiterTest, ACappedHigherClassDoesNotHoldThroughPauses) {
  const auto low = add("low", 50, 0, Priority::kLow), high = add("high", 50, 50, Priority::kHigh);
  EXPECT_TRUE(taken_after_a_short_pause(high, low));
}

// At the end of its slice a holder with only lower classes waiting renews its slice at a
// checkpoint; it does not drain.
TEST_F(ArbiterTest, AHigherClassRenewsItsSliceWithoutDraining) {
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

TEST_F(ArbiterTest, ALowerClassKnowsAHigherOneWasAroundRecently) {
  const auto low = add("low", 50, 0, Priority::kLow), high = add("high", 50, 0, Priority::kHigh);
  const ComputeGate low_gate(*state_, low), high_gate(*state_, high);
  EXPECT_FALSE(low_gate.higher_class_recently(kGpu, now_));
  grant_to(high);
  EXPECT_TRUE(low_gate.higher_class_recently(kGpu, now_ + 50 * kMs));
  EXPECT_FALSE(high_gate.higher_class_recently(kGpu, now_ + 50 * kMs)) << "nothing is above high";
  EXPECT_FALSE(low_gate.higher_class_recently(kGpu, now_ + 150 * kMs)) << "100 ms later it is forgotten";
}

TEST_F(ArbiterTest, AnIdleOrDeadHolderLosesTheSlice) {
  const auto a = add("a", 50), b = add("b", 50);
  want(a);
  decide();
  ASSERT_EQ(holder(), a);
  want(b);
  now_ += 1 * kMs;
  decide(b);  // a has not launched for 1 ms: still the holder (idle_after is 2 ms)
  EXPECT_EQ(holder(), a);
  now_ += 2 * kMs;
  EXPECT_TRUE(decide(b).granted_to_requester);
  EXPECT_EQ(holder(), b);
}

TEST_F(ArbiterTest, AnIdleSpellIsNotChargedAsUse) {
  const auto a = add("a", 50), b = add("b", 50);
  want(a);
  decide();
  ASSERT_EQ(holder(), a);
  launch(a);
  now_ += 60'000 * kMs;  // a goes quiet for a minute; nobody else wants the GPU meanwhile
  want(b);
  decide(b);
  now_ += 3 * kMs;
  decide(b);
  ASSERT_EQ(holder(), b);
  EXPECT_LT(gpu_ns(a), 20 * kMs) << "charged " << gpu_ns(a) / kMs << " ms";
}

TEST_F(ArbiterTest, ACappedHighTenantWithoutBudgetDoesNotPreempt) {
  const auto normal = add("normal", 50), high = add("high", 50, 30, Priority::kHigh);
  s().tenants[s().slots[high].tenant_index.load()].compute[kGpu].budget_ns.store(-1'000 * static_cast<std::int64_t>(kMs));
  s().tenants[s().slots[high].tenant_index.load()].compute[kGpu].budget_at_ns.store(now_);
  want(normal);
  decide();
  ASSERT_EQ(holder(), normal);
  launch(normal);
  want(high);
  now_ += kMs;
  EXPECT_FALSE(decide(high).granted_to_requester);
  EXPECT_EQ(holder(), normal) << "preempting would only leave the GPU idle";
}

TEST_F(ArbiterTest, AHolderPastItsSliceIsAskedThenForcedToHandOver) {
  const auto a = add("a", 50), b = add("b", 50);
  want(a);
  decide();
  ASSERT_EQ(holder(), a);
  now_ = s().schedules[kGpu].slice_end_ns.load() + 1;
  want(b);
  launch(a);
  decide(b);
  // Asked: the hot path sees a word that is no longer its token and hands over.
  EXPECT_NE(s().schedules[kGpu].holder_word.load() & layout::kHandoverBit, 0u);
  EXPECT_FALSE(ComputeGate(*state_, a).holds(kGpu));
  // A holder that keeps launching but never hands over loses the slice after the grace period.
  for (std::uint64_t t = 0; t <= static_cast<std::uint64_t>(timing_.handover_grace.count()); t += kMs) {
    now_ += kMs;
    launch(a);
    decide(b);
  }
  EXPECT_EQ(holder(), b);
}

TEST_F(ArbiterTest, IdlenessIsNotSavedUp) {
  const auto a = add("a", 50), b = add("b", 50);
  run_saturated({a}, 1'000 * kMs);  // a alone for a second
  const std::uint64_t a_before = gpu_ns(a), b_before = gpu_ns(b);
  run_saturated({a, b}, 1'000 * kMs);  // then both: b must not get the GPU for a whole second
  const double a_share = static_cast<double>(gpu_ns(a) - a_before) /
                         static_cast<double>(gpu_ns(a) - a_before + gpu_ns(b) - b_before);
  EXPECT_NEAR(a_share, 0.5, 0.03);
}

TEST_F(ArbiterTest, QuotaSetTakesEffectWithinOneSlice) {
  const auto a = add("a", 50), b = add("b", 50);
  run_saturated({a, b}, 500 * kMs);
  ComputePolicyChange change;
  change.share_pct = 20;
  ASSERT_TRUE(set_tenant_compute_policy(*state_, "a", change).ok());
  const std::uint64_t a_before = gpu_ns(a), b_before = gpu_ns(b);
  run_saturated({a, b}, 3'000 * kMs);
  const double a_share = static_cast<double>(gpu_ns(a) - a_before) /
                         static_cast<double>(gpu_ns(a) - a_before + gpu_ns(b) - b_before);
  EXPECT_NEAR(a_share, 20.0 / 70.0, 0.02);  // weights are relative: 20 against 50
}

// Two threads of the holder inside at once (one waiting for the GPU in a synchronize, one
// launching) are as busy as one: the holder is not idle while any thread is inside, however long
// its activity stands still. (It once counted odd/even: two threads inside looked idle, and
// a 30/70 pair with two launching threads each ran 50/50.)
TEST_F(ArbiterTest, AHolderWithTwoThreadsInsideIsNotIdle) {
  const auto a = add("a", 50), b = add("b", 50);
  grant_to(a);
  enter(a);
  enter(a);
  want(b);
  look_for(8, b, a);  // well past the 2 ms idleness, within the slice
  s().slots[a].compute[kGpu].activity[0].fetch_sub(2 * layout::kCallEnded);  // both leave
  expect_idle_once_still(a, b);
}

// The activity lanes: the first threads of a process to launch own a lane each and move it with
// plain stores; later ones share lane 0 with atomic adds. More threads than lanes, all launching at
// once: no call is lost (two threads on one private lane would lose some) and none is left inside.
TEST_F(ArbiterTest, ThreadsPastThePrivateLanesShareOneAndNoCallIsLost) {
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
TEST_F(ArbiterTest, AThreadOnItsOwnLaneKeepsTheHolderBusy) {
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
TEST_F(ArbiterTest, PrivateLanesGoToLaunchingThreadsOnEachGpu) {
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
TEST_F(ArbiterTest, AGateMarksItsSlotFencedWhereTheKernelAllows) {
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
TEST_F(ArbiterTest, AThreadHasALaneInEachGateItCallsThrough) {
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

// A holder asked to hand over is still waiting for its own work (a whole captured step, a
// synchronize after one): taken after 50 ms, that work ran on, uncharged, in the next holder's
// slice (50 ms graphs against 1 ms kernels at equal shares got 83 %). So it gets 1 s. But a holder
// whose work may wait for the very waiter gets 50 ms: one that uses CUDA IPC (a consumer whose
// producer waits would otherwise idle the GPU for a second at each crossing), or whose tenant waits
// for another GPU (a collective).
class HandoverGraceTest : public ArbiterTest {
 protected:
  // How long after being asked `holder` loses the slice to `waiter`, looking every millisecond.
  std::uint64_t taken_after(std::uint32_t holder_slot, std::uint32_t waiter) {
    now_ = s().schedules[kGpu].slice_end_ns.load();
    const std::uint64_t asked = now_;
    while (holder() == holder_slot && now_ - asked < 5'000 * kMs) {
      now_ += kMs;
      decide(waiter);
    }
    return now_ - asked;
  }
};

TEST_F(HandoverGraceTest, AHolderWaitingForItsOwnWorkGetsASecond) {
  const auto a = add("a", 50), b = add("b", 50);
  grant_to(a);
  enter(a);  // in its drain, or a synchronize: no thread leaves
  want(b);
  const std::uint64_t taken = taken_after(a, b);
  EXPECT_GE(taken, 1'000 * kMs);
  EXPECT_LE(taken, 1'002 * kMs);
}

TEST_F(HandoverGraceTest, AHolderUsingCudaIpcGetsFiftyMilliseconds) {
  const auto consumer = add("consumer", 50), producer = add("producer", 50);
  grant_to(consumer);
  ComputeGate(*state_, consumer).note_depends_on_other_processes();
  enter(consumer);  // its work waits for the producer's: it will not finish
  want(producer);
  const std::uint64_t taken = taken_after(consumer, producer);
  EXPECT_GE(taken, 50 * kMs);
  EXPECT_LE(taken, 52 * kMs);
}

TEST_F(HandoverGraceTest, AHolderWhoseTenantWaitsForAnotherGpuGetsFiftyMilliseconds) {
  const auto a = add("a", 50), b = add("b", 50);
  const auto a_on_gpu1 = add("a", 50);  // another process of tenant a
  grant_to(a);
  enter(a);
  s().slots[a_on_gpu1].compute[1].waiting_since_ns.store(now_);
  want(b);
  const std::uint64_t taken = taken_after(a, b);
  EXPECT_GE(taken, 50 * kMs);
  EXPECT_LE(taken, 52 * kMs);
  s().slots[a_on_gpu1].compute[1].waiting_since_ns.store(0);
}

// A process's own handover asks for itself first, so its other launching threads go to acquire and
// hand over too, each with a drain of its own. The slower drain must not end the slice the process
// was granted again meanwhile (it did: the process lost a slice nobody asked for, and the next
// holder started while its threads still launched).
TEST_F(ArbiterTest, ALateSiblingDrainDoesNotEndTheNextSlice) {
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

// Virtual times are compared within a class. A tenant moved to another class by `quota set`
// while it keeps wanting the GPU must join its new class where that class is: not far behind it (a
// starved `low` tenant promoted took the GPU for seconds) nor far ahead (a demoted one starved).
TEST_F(ArbiterTest, AChangeOfClassStartsTheTenantAtItsNewClassClock) {
  const auto a = add("a", 50), b = add("b", 50), x = add("x", 50, 0, Priority::kLow);
  const auto set_priority = [&](const char* tenant, Priority priority) {
    ComputePolicyChange change;
    change.priority = priority;
    EXPECT_TRUE(set_tenant_compute_policy(*state_, tenant, change).ok());
  };
  // What x gets of 3 s while all of `busy` saturate the GPU.
  const auto share_of_x = [&](const std::vector<std::uint32_t>& busy) {
    std::vector<std::uint64_t> before;
    for (auto slot : busy) before.push_back(gpu_ns(slot));
    const std::uint64_t x_before = gpu_ns(x);
    run_saturated(busy, 3'000 * kMs);
    double total = 0;
    for (std::size_t i = 0; i < busy.size(); ++i) total += static_cast<double>(gpu_ns(busy[i]) - before[i]);
    return static_cast<double>(gpu_ns(x) - x_before) / total;
  };
  run_saturated({a, b, x}, 60'000 * kMs);  // a and b share the GPU for a minute; x (low) gets none
  ASSERT_EQ(gpu_ns(x), 0u);
  set_priority("x", Priority::kNormal);
  EXPECT_NEAR(share_of_x({a, b, x}), 1.0 / 3, 0.03) << "promoted: one of three equals";

  run_saturated({a, b, x}, 60'000 * kMs);          // a minute as three equals
  const auto y = add("y", 50, 0, Priority::kLow);  // a low tenant that has never run
  run_saturated({a, b, x, y}, 1'000 * kMs);
  for (const char* tenant : {"a", "b", "x"}) set_priority(tenant, Priority::kLow);
  EXPECT_NEAR(share_of_x({a, b, x, y}), 1.0 / 4, 0.03) << "demoted: one of four equals";
}

TEST_F(ArbiterTest, ASlotReusedAfterItsHolderDiedDoesNotInheritTheSlice) {
  const auto a = add("a", 50);
  want(a);
  decide();
  ASSERT_EQ(holder(), a);
  members_[0]->abandon();  // the holder dies: its liveness lock goes with its descriptor
  ASSERT_EQ(reclaim_dead_processes(*state_).processes, 1u);
  EXPECT_EQ(s().schedules[kGpu].holder_word.load(), 0u) << "the GPU is free again";
  auto next = TenantMembership::join(*state_, "b");  // may get the same slot
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(ComputeGate(*state_, next.value()->slot_index()).holds(kGpu));
}

// A waiter granted the slice while it was not running (a CPU limit, a busy host, SIGSTOP): its
// waiting thread counts as inside, so it never looked idle and the others waited out the whole
// handover grace (~1 s) once its slice had run out. The grant is withdrawn after the idle threshold.
TEST_F(ArbiterTest, AGrantNobodyTakesUpIsWithdrawnAfterTheIdleThreshold) {
  const auto sleeper = add("sleeper", 50), other = add("other", 50);
  want(sleeper);
  enter_to_wait(sleeper);  // its thread is inside the gated launch, waiting in acquire
  ASSERT_TRUE(arbitrate(s(), kGpu, now_, kNoRequester, timing_).changed);
  ASSERT_EQ(holder(), sleeper);  // granted, but its thread does not run to take the grant up
  const std::uint64_t granted_at = now_;
  want(other);
  while (holder() == sleeper && now_ - granted_at < 2'000 * kMs) {
    now_ += kMs;
    arbitrate(s(), kGpu, now_, other, timing_);
  }
  EXPECT_EQ(holder(), other);
  EXPECT_LE(now_ - granted_at, static_cast<std::uint64_t>(timing_.idle_after.count()) + kMs)
      << "the GPU stood idle for " << (now_ - granted_at) / kMs << " ms";
  EXPECT_EQ(gpu_ns(sleeper), 0u) << "a grant never used is not charged";
  EXPECT_EQ(s().slots[sleeper].compute[kGpu].waiting_since_ns.load(), 0u)
      << "no waiter until its thread runs and asks again";
}

TEST_F(ArbiterTest, AGrantTakenUpOrUsedBySiblingsIsKept) {
  const auto taker = add("taker", 50), other = add("other", 50);
  want(taker);
  enter_to_wait(taker);
  arbitrate(s(), kGpu, now_, kNoRequester, timing_);
  ASSERT_EQ(holder(), taker);
  want(other);
  // Another thread of the process launches on the grant while the waiting thread sleeps on.
  for (int i = 0; i < 5; ++i) {
    now_ += kMs;
    launch(taker);
    arbitrate(s(), kGpu, now_, other, timing_);
    ASSERT_EQ(holder(), taker) << "its process uses the slice (" << i + 1 << " ms)";
  }
  // The waiting thread takes the grant up: its mark goes, and the ordinary rules apply.
  s().slots[taker].compute[kGpu].waiting_since_ns.store(0);
  for (int i = 0; i < 5; ++i) {
    now_ += kMs;
    arbitrate(s(), kGpu, now_, other, timing_);
    ASSERT_EQ(holder(), taker) << "inside, taken up: not idle (" << i + 1 << " ms)";
  }
}

// A sibling thread that entered its launch just before the grant (so the grant's activity counts
// it) and is stalled inside it uses the grant: withdrawing it let that launch run on a slice the
// process no longer held.
TEST_F(ArbiterTest, AGrantASiblingIsLaunchingOnIsNotWithdrawn) {
  const auto p = add("p", 50), q = add("q", 50);
  want(p);
  enter_to_wait(p);  // thread A waits in acquire
  enter(p);          // thread B has begun a launch; it will see the grant and go on
  arbitrate(s(), kGpu, now_, kNoRequester, timing_);
  ASSERT_EQ(holder(), p);
  want(q);
  for (int i = 0; i < 5; ++i) {
    now_ += kMs;
    arbitrate(s(), kGpu, now_, q, timing_);
    ASSERT_EQ(holder(), p) << "B is inside a launch on the grant (" << i + 1 << " ms)";
  }
}

// A gate's thread waiting in acquire whose process is granted the slice, and asked to hand over
// before that thread runs again (its slice ran out meanwhile), hands over as soon as it runs: it
// waited for the holder's grace (1 s) before, since only acquire's entry looked for the request.
TEST_F(ArbiterTest, AWaiterFindingItsGrantAlreadyAskedForHandsOverAtOnce) {
  const auto late = add("late", 50), other = add("other", 50);
  auto& schedule = s().schedules[kGpu];
  auto& other_since = s().slots[other].compute[kGpu].waiting_since_ns;
  other_since.store(monotonic_now_ns());
  arbitrate(s(), kGpu, monotonic_now_ns(), kNoRequester, timing_);
  ASSERT_EQ(holder(), other);
  other_since.store(0);
  launch(other);
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
  while (s().slots[late].compute[kGpu].waiting_since_ns.load() == 0) std::this_thread::yield();
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

// Garbage written into the holder word (any process can write the file) must not crash a waiter:
// an index read from the shared state is checked before use.
TEST_F(ArbiterTest, AGarbageHolderWordIsTakenAwayWithoutACrash) {
  const auto a = add("a", 50);
  for (std::uint32_t garbage : {0x12345678u, 0xffffffffu, layout::kHandoverBit | 0x7000u, 0x7fffffffu}) {
    s().schedules[kGpu].holder_word.store(garbage);
    want(a);
    now_ += kMs;
    decide(a);
    EXPECT_EQ(holder(), a) << std::hex << garbage;
    end_slice(s(), kGpu, now_);
  }
}

// A slice end written into the file (2^64 - 1) let its holder keep the GPU for good: no slice is
// believed to last longer than the longest a tenant may ask for.
TEST_F(ArbiterTest, ASliceEndWrittenIntoTheFileIsBoundedByTheLongestSlice) {
  const auto a = add("a", 50), b = add("b", 50);
  grant_to(a);
  s().schedules[kGpu].slice_end_ns.store(UINT64_MAX);
  want(b);
  const std::uint64_t granted_at = now_;
  while (holder() == a && now_ - granted_at < 10'000 * kMs) {
    now_ += kMs;
    launch(a);  // busy all along: it would never be idle
    decide(b);
  }
  EXPECT_EQ(holder(), b);
  EXPECT_LE(now_ - granted_at, 1'000 * kMs + static_cast<std::uint64_t>(timing_.handover_grace.count()) + 2 * kMs);
}

// A waiter whose own slot was made to say another tenant, or not in use, was never granted the GPU
// (its launches hung): its gate puts the slot right.
TEST_F(ArbiterTest, AGateRestoresItsOwnSlotWhereTheFileWasChanged) {
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
TEST_F(ArbiterTest, ARenewedSliceIsNotWithdrawnForASiblingsOldMark) {
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

// The arbiter runs in every waiting process, on numbers any other process may change at any moment:
// a cap toggled between 50 and 0 (a division), a tenant index toggled out of range (an index),
// checked and then read again, crashed it (SIGFPE, SIGSEGV).
TEST_F(ArbiterTest, NumbersChangingUnderTheArbiterNeverCrashIt) {
  const auto a = add("a", 50, 50), b = add("b", 50);
  auto& limit = s().tenants[s().slots[a].tenant_index.load()].compute_policy.limit_pct;
  auto& index = s().slots[b].tenant_index;
  const std::uint32_t b_tenant = index.load();
  std::atomic<bool> stop{false};
  std::thread vandal([&] {
    for (std::uint32_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
      limit.store((i & 1) != 0 ? 50 : 0, std::memory_order_relaxed);
      index.store((i & 2) != 0 ? b_tenant : 0x7fffffff, std::memory_order_relaxed);
    }
  });
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  std::uint64_t rounds = 0;
  while (std::chrono::steady_clock::now() < until) {
    want(a);
    want(b);
    s().tenants[s().slots[a].tenant_index.load()].compute[kGpu].budget_ns.store(0);
    s().tenants[s().slots[a].tenant_index.load()].compute[kGpu].budget_at_ns.store(now_);
    now_ += kMs;
    arbitrate(s(), kGpu, now_, b, timing_);
    end_slice(s(), kGpu, now_);
    ++rounds;
  }
  stop = true;
  vandal.join();
  EXPECT_GT(rounds, 100u);
}

TEST(ComputeSettings, PercentagesPrioritiesAndSlices) {
  EXPECT_EQ(parse_percent("30").value(), 30u);
  EXPECT_EQ(parse_percent("100%").value(), 100u);
  for (const char* bad : {"0", "101", "", "-5", "3.5", "abc", "1000"}) EXPECT_FALSE(parse_percent(bad).ok()) << bad;
  EXPECT_EQ(parse_priority("high").value(), Priority::kHigh);
  EXPECT_FALSE(parse_priority("urgent").ok());
  EXPECT_EQ(parse_slice_ms("20").value(), std::chrono::milliseconds(20));
  EXPECT_FALSE(parse_slice_ms("0").ok());
  EXPECT_FALSE(parse_slice_ms("5000").ok());
}

// Settings loaded from an environment where only `variable` is set.
LoadedSettings load_only(const char* variable, const char* value) {
  return load_settings([variable, value](const char* name) -> const char* {
    return std::string_view(name) == variable ? value : nullptr;
  });
}

// Each bad value is one error naming the variable, and leaves `field` at its default.
template <typename Field>
void expect_refused(const char* variable, std::initializer_list<const char*> bad, Field Settings::*field) {
  const Settings defaults;
  for (const char* value : bad) {
    const auto loaded = load_only(variable, value);
    ASSERT_EQ(loaded.errors.size(), 1u) << value;
    EXPECT_NE(loaded.errors[0].find(variable), std::string::npos) << loaded.errors[0];
    EXPECT_EQ(loaded.settings.*field, defaults.*field) << "a bad value keeps the default";
  }
}

TEST(ComputeSettings, InflightLaunchesFromTheEnvironment) {
  EXPECT_EQ(Settings{}.inflight_launches, 64u);
  EXPECT_EQ(load_only("GPUSHARE_INFLIGHT_LAUNCHES", "128").settings.inflight_launches, 128u);
  EXPECT_EQ(load_only("GPUSHARE_INFLIGHT_LAUNCHES", "0").settings.inflight_launches, 0u);
  expect_refused("GPUSHARE_INFLIGHT_LAUNCHES", {"33", "-2", "8192", "many", ""}, &Settings::inflight_launches);
}

TEST(ComputeSettings, InflightMillisecondsFromTheEnvironment) {
  EXPECT_EQ(Settings{}.inflight_ms, 2u);
  EXPECT_EQ(load_only("GPUSHARE_INFLIGHT_MS", "5").settings.inflight_ms, 5u);
  EXPECT_EQ(load_only("GPUSHARE_INFLIGHT_MS", "0").settings.inflight_ms, 0u);
  expect_refused("GPUSHARE_INFLIGHT_MS", {"1001", "-1", "1.5", "2ms", ""}, &Settings::inflight_ms);
}

// The options table (--help, docs/configuration.md) states the defaults Settings has.
TEST(ComputeSettings, TheOptionsTableStatesTheNumericDefaults) {
  const auto stated = [](std::string_view name) {
    for (const OptionSpec& option : option_specs()) {
      if (option.env == name) return load_only(option.env.data(), option.default_value.data()).settings;
    }
    ADD_FAILURE() << name << " is not in the table";
    return Settings{};
  };
  EXPECT_EQ(stated("GPUSHARE_INFLIGHT_LAUNCHES").inflight_launches, Settings{}.inflight_launches);
  EXPECT_EQ(stated("GPUSHARE_INFLIGHT_MS").inflight_ms, Settings{}.inflight_ms);
  EXPECT_EQ(stated("GPUSHARE_SLICE_MS").compute.slice, Settings{}.compute.slice);
}

}  // namespace
}  // namespace gpushare
