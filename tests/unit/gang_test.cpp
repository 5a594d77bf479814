// Gang slices (core/gang.hpp): a tenant that wants several GPUs leads only on its anchor (the lowest)
// and follows it elsewhere; the arbiter prefers leaders, asks a follower that lost its anchor to hand
// over, and names the GPUs whose waiters must look again.
#include "core/gang.hpp"

#include <gtest/gtest.h>

#include "arbiter_fixture.hpp"
#include "core/arbiter.hpp"
#include "core/compute_gate.hpp"

namespace gpushare {
namespace {

class GangTest : public testing::ArbiterTest {
 protected:
  static constexpr std::uint32_t kA = 0, kB = 1;
  void want_on(std::uint32_t slot, std::uint32_t gpu) {
    auto& since = s().slots[slot].compute[gpu].waiting_since_ns;
    if (since.load() == 0) since.store(now_ + 1);
  }
  std::uint32_t holder_of(std::uint32_t gpu) { return layout::holder_slot(s().schedules[gpu].holder_word.load()); }
  std::uint32_t tenant_of(std::uint32_t slot) { return s().slots[slot].tenant_index.load(); }
  // Grants `gpu` to `slot` (it asked), as a waiter taking its grant up would.
  void give(std::uint32_t slot, std::uint32_t gpu) {
    want_on(slot, gpu);
    arbitrate(s(), gpu, now_, slot, timing_);
    ASSERT_EQ(holder_of(gpu), slot);
    s().slots[slot].compute[gpu].waiting_since_ns.store(0);
  }
  void end_on(std::uint32_t gpu) { end_slice(s(), gpu, now_); }
};

TEST_F(GangTest, ATenantOnTwoGpusIsAGangAnchoredAtTheLowest) {
  const auto rank0 = add("job", 50), rank1 = add("job", 50), solo = add("solo", 50);
  want_on(rank1, kB);
  GangView one(s());
  EXPECT_FALSE(one.gang(tenant_of(rank1))) << "one GPU wanted so far";
  EXPECT_TRUE(one.may_lead(tenant_of(rank1), kB));
  want_on(rank0, kA);
  want_on(solo, kB);
  GangView two(s());
  const std::uint32_t job = tenant_of(rank0);
  EXPECT_TRUE(two.gang(job));
  EXPECT_EQ(two.gpus_of(job), 0b11u);
  EXPECT_EQ(two.anchor(job), kA);
  EXPECT_TRUE(two.may_lead(job, kA)) << "its anchor";
  EXPECT_FALSE(two.may_lead(job, kB)) << "it does not hold its anchor yet";
  EXPECT_TRUE(two.may_lead(tenant_of(solo), kB)) << "a one-GPU tenant always may";
  give(rank0, kA);
  GangView held(s());
  EXPECT_TRUE(held.may_lead(job, kB));
  EXPECT_EQ(held.holder_tenant(kA), job);
  EXPECT_EQ(held.holder_tenant(kB), layout::kMaxTenants);
}

// Two jobs on the same two GPUs: the second GPU goes to the job that holds the first, whatever the
// virtual times say there, and waiters elsewhere are told to look again.
TEST_F(GangTest, TheSecondGpuFollowsTheAnchor) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50), a2 = add("j2", 50), b2 = add("j2", 50);
  // j2 is far behind on B: by virtual time alone it would go first there.
  s().tenants[tenant_of(b1)].compute[kB].virtual_ns.store(1'000 * kMs);
  s().tenants[tenant_of(b1)].compute[kB].active.store(1);
  want_on(a2, kA);
  give(a1, kA);
  want_on(b1, kB);
  want_on(b2, kB);
  const Arbitration decided = arbitrate(s(), kB, now_, b2, timing_);
  EXPECT_EQ(holder_of(kB), b1) << "j1 holds the anchor: it leads on B";
  EXPECT_TRUE(decided.changed);
  EXPECT_EQ(decided.wake_gpus, 1u << kA) << "j1's other GPU";
}

// The anchor changes hands: the follower still holding B is asked to hand over at once (its slice
// is far from over), and B goes to the new anchor holder.
TEST_F(GangTest, AFollowerThatLostItsAnchorHandsOverAtOnce) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50), a2 = add("j2", 50), b2 = add("j2", 50);
  give(a1, kA);
  give(b1, kB);
  want_on(a2, kA);
  want_on(b2, kB);
  // j1's slice on A ends (its rank there handed over, having used A for longer than j2 did) and j2
  // is granted A; j1's rank waits again.
  s().tenants[tenant_of(a1)].compute[kA].virtual_ns.store(1'000 * kMs);
  end_on(kA);
  want_on(a1, kA);
  const Arbitration on_a = arbitrate(s(), kA, now_, a2, timing_);
  ASSERT_EQ(holder_of(kA), a2);
  EXPECT_EQ(on_a.wake_gpus, 1u << kB) << "B must look again";
  s().slots[a2].compute[kA].waiting_since_ns.store(0);
  now_ += 1 * kMs;  // far inside j1's 10 ms slice on B
  arbitrate(s(), kB, now_, b2, timing_);
  const std::uint32_t word = s().schedules[kB].holder_word.load();
  EXPECT_EQ(layout::holder_slot(word), b1);
  EXPECT_NE(word & layout::kHandoverBit, 0u) << "asked to hand over before its slice ends";
  // It drains and ends its slice: j2 gets B.
  end_on(kB);
  want_on(b1, kB);
  arbitrate(s(), kB, now_, b2, timing_);
  EXPECT_EQ(holder_of(kB), b2);
}

// A one-GPU tenant beside a gang's follower keeps its fair turn: both may lead there.
TEST_F(GangTest, AOneGpuTenantKeepsItsShareBesideAGang) {
  const auto a1 = add("job", 50), b1 = add("job", 50), solo = add("solo", 50);
  give(a1, kA);  // the job alone on A holds it all along
  std::uint64_t solo_turns = 0, job_turns = 0;
  for (int turn = 0; turn < 200; ++turn) {
    want_on(b1, kB);
    want_on(solo, kB);
    arbitrate(s(), kB, now_, kNoRequester, timing_);
    const std::uint32_t h = holder_of(kB);
    ASSERT_TRUE(h == b1 || h == solo);
    (h == solo ? solo_turns : job_turns) += 1;
    s().slots[h].compute[kB].waiting_since_ns.store(0);
    s().slots[h].compute[kB].activity[0].fetch_add(layout::kCallBegun - layout::kCallEnded);
    now_ = s().schedules[kB].slice_end_ns.load();
    end_on(kB);
  }
  EXPECT_NEAR(static_cast<double>(solo_turns) / 200.0, 0.5, 0.03) << solo_turns << " of 200";
  EXPECT_EQ(holder_of(kA), a1);
}

// A follower whose anchor someone else holds still gets a GPU nobody else wants: it is never idled
// for the gang.
TEST_F(GangTest, AFollowerGetsAGpuNobodyElseWants) {
  const auto a1 = add("job", 50), b1 = add("job", 50), solo = add("solo", 50);
  give(solo, kA);
  want_on(a1, kA);
  want_on(b1, kB);
  arbitrate(s(), kB, now_, b1, timing_);
  EXPECT_EQ(holder_of(kB), b1);
  // ... and is not asked to leave while no leader wants it.
  s().slots[b1].compute[kB].waiting_since_ns.store(0);
  s().slots[b1].compute[kB].activity[0].fetch_add(layout::kCallBegun);  // inside a launch
  now_ += 1 * kMs;
  arbitrate(s(), kB, now_, kNoRequester, timing_);
  EXPECT_EQ(s().schedules[kB].holder_word.load() & layout::kHandoverBit, 0u);
}

}  // namespace
}  // namespace gpushare

namespace gpushare {
namespace {

// The same fixture, for the rules that keep a gang's ranks together.
using GangRulesTest = GangTest;

// While a gang's anchor changes hands (nobody holds it for a moment), its follower GPU is granted
// to nobody of a gang waiting for that anchor: the old holder would take it back without its anchor.
TEST_F(GangRulesTest, NoFollowerIsGrantedWhileItsAnchorIsInTransit) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50), a2 = add("j2", 50), b2 = add("j2", 50);
  want_on(a1, kA);
  want_on(a2, kA);
  want_on(b1, kB);
  want_on(b2, kB);
  const Arbitration on_b = arbitrate(s(), kB, now_, b2, timing_);
  EXPECT_EQ(holder_of(kB), layout::kNoHolder) << "both wait for their anchor, which nobody holds";
  EXPECT_FALSE(on_b.changed);
  const Arbitration on_a = arbitrate(s(), kA, now_, a1, timing_);
  const std::uint32_t anchor_holder = holder_of(kA);
  ASSERT_TRUE(anchor_holder == a1 || anchor_holder == a2);
  EXPECT_EQ(on_a.wake_gpus, 1u << kB);
  s().slots[anchor_holder].compute[kA].waiting_since_ns.store(0);
  arbitrate(s(), kB, now_, b2, timing_);
  EXPECT_EQ(holder_of(kB), anchor_holder == a1 ? b1 : b2) << "the anchor's holder follows it";
}

// While a gang's anchor is being handed over (its holder asked, another tenant waiting for it), a
// follower GPU freed meanwhile goes to no gang waiting for that anchor, the leaving one included:
// the anchor's grant decides, and wakes the followers' waiters of every gang anchored there.
TEST_F(GangRulesTest, NoFollowerIsGrantedWhileItsAnchorIsBeingHandedOver) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50), a2 = add("j2", 50), b2 = add("j2", 50);
  give(a1, kA);
  give(b1, kB);
  want_on(a2, kA);
  want_on(b2, kB);
  ask_gang_to_hand_over(s(), kA, tenant_of(a1), now_);
  end_on(kB);  // j1's rank on B drained first, and waits again
  want_on(b1, kB);
  arbitrate(s(), kB, now_, b1, timing_);
  EXPECT_EQ(holder_of(kB), layout::kNoHolder) << "who gets the anchor is not known yet";
  s().slots[b2].compute[kB].waiting_since_ns.store(0);  // j2's rank on B has not come back yet
  end_on(kA);
  want_on(a1, kA);                                                         // j1 waits again
  s().tenants[tenant_of(a1)].compute[kA].virtual_ns.store(1'000'000'000);  // and just had its turn
  const Arbitration on_a = arbitrate(s(), kA, now_, a2, timing_);
  ASSERT_EQ(holder_of(kA), a2);
  EXPECT_NE(on_a.wake_gpus & (1u << kB), 0u) << "B's waiters look again";
}

// A gang holding its anchor whose rank on B is out of sight (blocked in a collective that waits for
// the anchor's rank: neither holding nor waiting) will want B at once: another gang's follower, which
// may not lead there, is not granted B meanwhile; nobody's is when no leader uses B.
TEST_F(GangRulesTest, AFollowerIsNotGrantedAGpuALeadersRankWillWant) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50), a2 = add("j2", 50), b2 = add("j2", 50);
  s().slots[a1].gpus_attached.store(1u << kA);
  s().slots[b1].gpus_attached.store(1u << kB);
  give(a1, kA);
  want_on(a2, kA);
  want_on(b2, kB);
  arbitrate(s(), kB, now_, b2, timing_);
  EXPECT_EQ(holder_of(kB), layout::kNoHolder) << "j1's rank on B will want it";
  want_on(b1, kB);
  arbitrate(s(), kB, now_, b1, timing_);
  EXPECT_EQ(holder_of(kB), b1);
  end_on(kB);
  s().slots[b1].gpus_attached.store(0);  // j1 no longer uses B
  s().slots[b1].compute[kB].waiting_since_ns.store(0);
  arbitrate(s(), kB, now_, b2, timing_);
  EXPECT_EQ(holder_of(kB), b2) << "a GPU no leader uses is never left idle";
}

// On its follower GPU, a gang that holds its anchor is not asked to hand over at the end of its
// slice for another gang that does not: that one would only wait there for its own anchor.
TEST_F(GangRulesTest, AFollowerWithoutItsAnchorIsNoContender) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50), a2 = add("j2", 50), b2 = add("j2", 50);
  give(a1, kA);
  give(b1, kB);
  want_on(a2, kA);
  want_on(b2, kB);
  now_ = s().schedules[kB].slice_end_ns.load() + 1;
  s().slots[b1].compute[kB].activity[0].fetch_add(layout::kCallBegun);  // inside a launch: busy
  EXPECT_FALSE(contender_waits(s(), kB, b1, now_));
  arbitrate(s(), kB, now_, b2, timing_);
  EXPECT_EQ(s().schedules[kB].holder_word.load(), layout::holder_token(b1)) << "not asked";
  EXPECT_TRUE(contender_waits(s(), kA, a1, now_)) << "on the anchor, j2 is a contender";
}

// A follower that lost its anchor and stays inside a launch (its collective waits for the anchor's
// ranks) loses the GPU after the idle threshold, not after the handover grace.
TEST_F(GangRulesTest, AStuckFollowerWithoutItsAnchorLosesTheGpuQuickly) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50), a2 = add("j2", 50), b2 = add("j2", 50);
  give(a2, kA);  // j2 holds the anchor
  give(b1, kB);  // j1 holds B without it
  want_on(a1, kA);
  want_on(b2, kB);
  s().slots[b1].compute[kB].activity[0].fetch_add(layout::kCallBegun);  // stuck inside its launch
  arbitrate(s(), kB, now_, b2, timing_);
  ASSERT_NE(s().schedules[kB].holder_word.load() & layout::kHandoverBit, 0u) << "asked at once";
  now_ += timing_.idle_after.count() / 2;
  arbitrate(s(), kB, now_, b2, timing_);
  EXPECT_EQ(holder_of(kB), b1) << "within the idle threshold it may still hand over itself";
  now_ += timing_.idle_after.count();
  arbitrate(s(), kB, now_, b2, timing_);
  EXPECT_EQ(holder_of(kB), b2) << "then it loses B, far sooner than the handover grace";
  EXPECT_LT(static_cast<std::uint64_t>(2 * timing_.idle_after.count()),
            static_cast<std::uint64_t>(timing_.short_handover_grace.count()));
}

}  // namespace
}  // namespace gpushare

namespace gpushare {
namespace {

// One decision for a gang: asked on any of its GPUs, it is asked on all of them, with its anchor's
// request time (an earlier one there stands). Other tenants' slices are left alone.
TEST_F(GangRulesTest, AGangAskedAnywhereIsAskedEverywhereAtTheAnchorsTime) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50), c = add("solo", 50);
  give(a1, kA);
  give(b1, kB);
  give(c, 2);
  ask_gang_to_hand_over(s(), kB, tenant_of(b1), now_);
  EXPECT_NE(s().schedules[kA].holder_word.load() & layout::kHandoverBit, 0u) << "its anchor too";
  EXPECT_NE(s().schedules[kB].holder_word.load() & layout::kHandoverBit, 0u);
  EXPECT_EQ(s().schedules[kA].handover_asked_ns.load(), now_);
  EXPECT_EQ(s().schedules[2].holder_word.load() & layout::kHandoverBit, 0u) << "another tenant's GPU";
  const std::uint64_t first = now_;
  now_ += 1000;
  ask_gang_to_hand_over(s(), kB, tenant_of(b1), now_);
  EXPECT_EQ(s().schedules[kA].handover_asked_ns.load(), first) << "the anchor's earlier request stands";
  EXPECT_EQ(s().schedules[kB].handover_asked_ns.load(), first) << "and is the gang's";
  ask_gang_to_hand_over(s(), 2, tenant_of(c), now_);
  EXPECT_EQ(s().schedules[2].holder_word.load() & layout::kHandoverBit, 0u) << "no gang: nothing asked";
}

// The stop count is the most collectives a rank of the gang had launched when it was asked, under
// the request's time; the first count published for a request stands, another tenant's do not count.
TEST_F(GangRulesTest, TheStopCountIsTheGangsMostCollectivesWhenAsked) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50), other = add("j2", 50);
  give(a1, kA);
  give(b1, kB);
  const std::uint32_t job = tenant_of(a1);
  s().slots[a1].collectives[kA].store(7);
  s().slots[b1].collectives[kB].store(9);
  s().slots[other].collectives[2].store(40);
  EXPECT_FALSE(gang_stop_count(s(), job, now_)) << "nothing published yet";
  ask_gang_to_hand_over(s(), kA, job, now_);
  EXPECT_EQ(gang_stop_count(s(), job, now_), 9u);
  EXPECT_FALSE(gang_stop_count(s(), job, now_ + 1)) << "another request's";
  s().slots[a1].collectives[kA].store(12);  // counted after the request: that rank finds itself asked
  ask_gang_to_hand_over(s(), kB, job, now_ + 5);
  EXPECT_EQ(gang_stop_count(s(), job, now_), 9u) << "the same request (the anchor's time): the first count stands";
  EXPECT_FALSE(gang_stop_count(s(), tenant_of(other), now_)) << "no gang, no stop count";
}

// At a gang's handover, a rank below the stop count goes on (up to it, a collective included);
// a rank at it stops, and so does one whose collective was counted past it; after kGangCatchUpNs
// everyone stops. A process that was not asked is not concerned.
TEST_F(GangRulesTest, ARankGoesOnToTheStopCountAndNoFurther) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50);
  ComputeGate rank0(*state_, a1), rank1(*state_, b1);
  give(a1, kA);
  give(b1, kB);
  EXPECT_FALSE(rank0.goes_on_to_gang_stop(kA, false, now_)) << "not asked";
  rank1.note_collective(kB);
  rank1.note_collective(kB);
  rank0.note_collective(kA);
  ask_gang_to_hand_over(s(), kA, tenant_of(a1), now_);
  EXPECT_TRUE(rank0.goes_on_to_gang_stop(kA, false, now_)) << "one collective behind: its kernels go on";
  rank0.note_collective(kA);
  EXPECT_TRUE(rank0.goes_on_to_gang_stop(kA, true, now_)) << "the collective that reaches the stop";
  EXPECT_FALSE(rank0.goes_on_to_gang_stop(kA, false, now_)) << "at the stop: nothing more";
  rank0.note_collective(kA);
  EXPECT_FALSE(rank0.goes_on_to_gang_stop(kA, true, now_)) << "a collective counted past the stop";
  rank0.withdraw_collective(kA);
  EXPECT_FALSE(rank1.goes_on_to_gang_stop(kB, false, now_)) << "rank 1 is at the stop";
  s().slots[a1].collectives[kA].store(0);
  EXPECT_TRUE(rank0.goes_on_to_gang_stop(kA, false, now_ + kGangCatchUpNs - 1));
  EXPECT_FALSE(rank0.goes_on_to_gang_stop(kA, false, now_ + kGangCatchUpNs)) << "too long after the request";
}

// A gang asked everywhere because another tenant waited on its follower keeps an anchor nobody else
// wants (a rank there may be stuck in a collective waiting for the follower's rank): on the
// follower it is still a contender, so the other tenant hands the follower back at its slice's end.
TEST_F(GangRulesTest, AnAskedAnchorNobodyElseWantsStillLeads) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50), solo = add("solo", 50), a2 = add("j2", 50);
  give(a1, kA);
  give(solo, kB);
  want_on(b1, kB);
  ask_gang_to_hand_over(s(), kA, tenant_of(a1), now_);
  ASSERT_NE(s().schedules[kA].holder_word.load() & layout::kHandoverBit, 0u);
  GangView view(s());
  EXPECT_TRUE(view.may_lead(tenant_of(b1), kB)) << "asked at its anchor, which nobody else wants";
  now_ = s().schedules[kB].slice_end_ns.load() + 1;
  s().slots[solo].compute[kB].activity[0].fetch_add(layout::kCallBegun);  // busy
  EXPECT_TRUE(contender_waits(s(), kB, solo, now_));
  want_on(a2, kA);
  GangView contested(s());
  EXPECT_FALSE(contested.may_lead(tenant_of(b1), kB)) << "another tenant wants the anchor: it is leaving";
  EXPECT_FALSE(contender_waits(s(), kB, solo, now_));
}

// A rank's wait counts as waiting for a peer for as long as its tenant held another GPU meanwhile:
// from the later of the wait's start and that slice's start. Another tenant's GPUs do not count.
TEST_F(GangRulesTest, AWaitWhileASiblingHoldsAGpuIsPeerWait) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50), other = add("j2", 50);
  const std::uint32_t job = tenant_of(a1);
  give(other, 2);
  EXPECT_EQ(peer_wait_ns(s(), job, kB, now_, now_ + 500), 0u) << "the tenant holds nothing";
  give(a1, kA);  // its slice starts at now_
  EXPECT_EQ(peer_wait_ns(s(), job, kB, now_ - 300, now_ + 500), 500u) << "from the sibling's slice start";
  EXPECT_EQ(peer_wait_ns(s(), job, kB, now_ + 200, now_ + 500), 300u) << "from the wait's start";
  EXPECT_EQ(peer_wait_ns(s(), job, kA, now_, now_ + 500), 0u) << "its own GPU is no peer";
  charge_wait(s(), tenant_of(b1), kB, now_ - 300, now_ + 500);
  EXPECT_EQ(s().tenants[job].compute[kB].wait_ns.load(), 800u);
  EXPECT_EQ(s().tenants[job].compute[kB].peer_wait_ns.load(), 500u);
  charge_wait(s(), tenant_of(other), kB, now_, now_ + 500);
  EXPECT_EQ(s().tenants[tenant_of(other)].compute[kB].peer_wait_ns.load(), 500u)
      << "j2 holds GPU 2: waiting for a second GPU, it waits for a peer too (gpushare cannot tell a gang apart)";
}

// A rank that dies leaves its gang: its GPU goes to a waiter once it has stood still for the idle
// threshold, inside a launch or not and well within its slice, and its sibling is then a one-GPU
// tenant, waiting for nobody.
TEST_F(GangRulesTest, ARankThatDiesLeavesTheGangAndItsGpuGoesBack) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50), b2 = add("j2", 50);
  give(a1, kA);
  give(b1, kB);
  want_on(b2, kB);
  ASSERT_TRUE(GangView(s()).gang(tenant_of(a1)));
  s().slots[b1].compute[kB].activity[0].fetch_add(layout::kCallBegun);  // died inside a collective
  const HolderProbes b1_dead{[&](std::uint32_t slot) { return slot != b1; }, {}};
  arbitrate(s(), kB, now_, b2, timing_, b1_dead);
  now_ += timing_.idle_after.count();
  ASSERT_LT(now_, s().schedules[kB].slice_end_ns.load());
  arbitrate(s(), kB, now_, b2, timing_, b1_dead);
  EXPECT_EQ(holder_of(kB), b2);
  const GangView after(s());
  EXPECT_FALSE(after.gang(tenant_of(a1))) << "one GPU left";
  EXPECT_TRUE(after.may_lead(tenant_of(a1), kA));
}

// A rank asked by a waiter's arbitration (whose process has not asked the gang yet) asks the gang
// itself in the daemonless mode: its siblings are asked and the stop count published.
TEST_F(GangRulesTest, ARankAskedByAnArbitrationAsksItsGang) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50), solo = add("solo", 50);
  ComputeGate rank1(*state_, b1);
  give(a1, kA);
  give(b1, kB);
  s().slots[a1].collectives[kA].store(3);
  s().slots[b1].collectives[kB].store(2);
  want_on(solo, kB);
  now_ = s().schedules[kB].slice_end_ns.load() + 1;
  s().slots[b1].compute[kB].activity[0].fetch_add(layout::kCallBegun);  // busy
  const Arbitration decided = arbitrate(s(), kB, now_, solo, timing_);
  ASSERT_NE(s().schedules[kB].holder_word.load() & layout::kHandoverBit, 0u) << "the solo tenant contends on B";
  EXPECT_EQ(decided.gang_to_ask, tenant_of(b1)) << "a follower's handover is the gang's";
  EXPECT_TRUE(rank1.goes_on_to_gang_stop(kB, false, now_)) << "behind its sibling";
  EXPECT_NE(s().schedules[kA].holder_word.load() & layout::kHandoverBit, 0u) << "the anchor was asked by the rank";
  EXPECT_EQ(gang_stop_count(s(), tenant_of(b1), s().schedules[kA].handover_asked_ns.load()), 3u);
}

}  // namespace
}  // namespace gpushare
