// The time-slice arbiter's decisions (arbitrate, end_slice), driven by a fake clock: no sleeping,
// no real GPU.
#include "core/arbiter.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "arbiter_fixture.hpp"
#include "core/administration.hpp"
#include "core/compute_gate.hpp"
#include "core/registry.hpp"

namespace gpushare {
namespace {
using testing::ArbiterTest;

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
  const HolderProbes alive{[&](std::uint32_t slot) { return slot != high || high_alive; }, {}};
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
// its activity stands still (counting threads by parity would make two inside look idle).
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

// The arbiter's question whether a holder stands still, asked right after it stores the handover
// bit, goes to the probe passed in: the probe's answer alone decides, so the decision takes no real
// time and makes no system call of its own.
struct RecordingStandsStill {
  struct Call {
    const layout::ProcessSlot* holder;
    std::uint32_t gpu;
    std::uint64_t seen;
  };
  std::vector<Call> calls;
  bool answer = true;
  HolderProbes probes() {
    return {{}, [this](const layout::ProcessSlot& holder, std::uint32_t gpu, std::uint64_t seen) {
              calls.push_back({&holder, gpu, seen});
              return answer;
            }};
  }
};

TEST_F(ArbiterTest, AnIdleHolderIsTakenOnlyWhenTheProbeSaysItStandsStill) {
  const auto a = add("a", 50), b = add("b", 50);
  grant_to(a);
  launch(a);
  want(b);
  RecordingStandsStill probe;
  const HolderProbes probes = probe.probes();
  arbitrate(s(), kGpu, now_, b, timing_, probes);
  EXPECT_TRUE(probe.calls.empty()) << "it has just launched: nothing to ask";
  now_ += 3 * kMs;       // past idle_after
  probe.answer = false;  // a launch came in as the handover bit was stored
  arbitrate(s(), kGpu, now_, b, timing_, probes);
  ASSERT_EQ(probe.calls.size(), 1u);
  EXPECT_EQ(probe.calls[0].holder, &s().slots[a]);
  EXPECT_EQ(probe.calls[0].gpu, kGpu);
  EXPECT_EQ(probe.calls[0].seen, layout::activity_of(s().slots[a].compute[kGpu]));
  EXPECT_EQ(s().schedules[kGpu].holder_word.load(), holder_token(a)) << "kept, and the handover bit taken back";
  now_ += kMs;
  probe.answer = true;
  EXPECT_TRUE(arbitrate(s(), kGpu, now_, b, timing_, probes).granted_to_requester);
  EXPECT_EQ(probe.calls.size(), 2u);
}

TEST_F(ArbiterTest, AnUntakenGrantIsWithdrawnOnlyWhenTheProbeSaysItStandsStill) {
  const auto sleeper = add("sleeper", 50), other = add("other", 50);
  RecordingStandsStill probe;
  const HolderProbes probes = probe.probes();
  want(sleeper);
  enter_to_wait(sleeper);
  arbitrate(s(), kGpu, now_, kNoRequester, timing_, probes);
  ASSERT_EQ(holder(), sleeper);
  want(other);
  now_ += 3 * kMs;  // past idle_after, the grant not taken up
  probe.answer = false;
  arbitrate(s(), kGpu, now_, other, timing_, probes);
  ASSERT_EQ(probe.calls.size(), 1u);
  EXPECT_EQ(probe.calls[0].holder, &s().slots[sleeper]);
  EXPECT_EQ(s().schedules[kGpu].holder_word.load(), holder_token(sleeper));
  EXPECT_NE(s().slots[sleeper].compute[kGpu].waiting_since_ns.load(), 0u) << "the grant stands, mark and all";
  now_ += kMs;
  probe.answer = true;
  EXPECT_TRUE(arbitrate(s(), kGpu, now_, other, timing_, probes).granted_to_requester);
  EXPECT_EQ(probe.calls.size(), 2u);
  EXPECT_EQ(s().slots[sleeper].compute[kGpu].waiting_since_ns.load(), 0u) << "withdrawn";
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

}  // namespace
}  // namespace gpushare
