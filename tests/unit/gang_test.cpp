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

// One decision for a gang: asked at its anchor, it is asked on its other GPUs too; asked elsewhere,
// only there. Other tenants' slices are left alone.
TEST_F(GangRulesTest, AGangAskedAtItsAnchorIsAskedEverywhere) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50), c = add("solo", 50);
  give(a1, kA);
  give(b1, kB);
  give(c, 2);
  ask_gang_to_hand_over(s(), kB, s().slots[b1].tenant_index.load(), now_);
  EXPECT_EQ(s().schedules[kA].holder_word.load() & layout::kHandoverBit, 0u) << "B is no anchor";
  ask_gang_to_hand_over(s(), kA, s().slots[a1].tenant_index.load(), now_);
  EXPECT_NE(s().schedules[kB].holder_word.load() & layout::kHandoverBit, 0u);
  EXPECT_EQ(s().schedules[kB].handover_asked_ns.load(), now_);
  EXPECT_EQ(s().schedules[2].holder_word.load() & layout::kHandoverBit, 0u) << "another tenant's GPU";
}

// A rank that launched fewer collectives than a sibling of its tenant is behind; other tenants'
// counts do not matter, nor a sibling's count on the same GPU.
TEST_F(GangRulesTest, ARankBehindItsSiblingsCollectivesKnowsIt) {
  const auto a1 = add("j1", 50), b1 = add("j1", 50), other = add("j2", 50);
  ComputeGate rank0(*state_, a1), rank1(*state_, b1);
  EXPECT_FALSE(rank0.behind_in_gang(kA));
  rank1.note_collective(kB);
  EXPECT_TRUE(rank0.behind_in_gang(kA));
  EXPECT_FALSE(rank1.behind_in_gang(kB));
  rank0.note_collective(kA);
  EXPECT_FALSE(rank0.behind_in_gang(kA)) << "level again";
  ComputeGate stranger(*state_, other);
  for (int i = 0; i < 5; ++i) stranger.note_collective(kB);
  EXPECT_FALSE(rank0.behind_in_gang(kA)) << "another tenant's collectives";
  EXPECT_EQ(s().slots[a1].collectives[kA].load(), 1u);
}

}  // namespace
}  // namespace gpushare
