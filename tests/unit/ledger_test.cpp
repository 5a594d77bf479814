// The registry and the memory ledger within one process (and its threads).
#include "core/registry.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "core/administration.hpp"
#include "core/memory_ledger.hpp"
#include "core/size.hpp"
#include "core/snapshot.hpp"
#include "test_support.hpp"

namespace gpushare {
namespace {

using testing::Contains;
using testing::make_uuid;
using testing::used_of;

class LedgerTest : public testing::StateTest {
 protected:
  std::unique_ptr<TenantMembership> join(std::string_view name) {
    auto joined = TenantMembership::join(*state_, name);
    if (!joined.ok()) {
      ADD_FAILURE() << joined.error().message;
      return nullptr;
    }
    return std::move(joined).value();
  }
  TenantMembership::Attached attach(TenantMembership& m, std::uint8_t uuid_seed, std::uint64_t limit) {
    auto attached = m.attach_gpu(make_uuid(uuid_seed), 80_GiB, limit);
    if (!attached.ok()) {
      ADD_FAILURE() << attached.error().message;
      return {};
    }
    return attached.value();
  }
  static Reservation reserve(TenantMembership& m, std::uint32_t gpu, std::uint64_t bytes) {
    auto result = m.try_reserve(gpu, bytes);
    if (!result.ok()) {
      ADD_FAILURE() << result.error().message;
      return Reservation::kOverQuota;
    }
    return result.value();
  }
  const TenantSnapshot* find(const std::vector<TenantSnapshot>& snaps, std::string_view name) {
    for (const auto& snap : snaps) {
      if (snap.name == name) return &snap;
    }
    ADD_FAILURE() << "no tenant " << name << " in the snapshot";
    return nullptr;
  }
};

// The memory ledger on its own: accounts named by slot and tenant index, no registry involved.
class SlotLedgerTest : public testing::StateTest {
 protected:
  layout::LedgerEntry& entry(std::uint32_t tenant, std::uint32_t gpu) {
    return state_->state().tenants[tenant].ledger[gpu];
  }
  std::atomic<std::uint64_t>& held(std::uint32_t slot, std::uint32_t gpu) {
    return state_->state().slots[slot].held_bytes[gpu];
  }
};

TEST_F(SlotLedgerTest, ReservesReleasesAndViewsWithoutTheRegistry) {
  constexpr std::uint32_t kSlot = 3, kTenant = 5, kGpu = 2;
  entry(kTenant, kGpu).limit_bytes.store(100);
  SlotLedger ledger(state_->state(), kSlot, kTenant);
  EXPECT_EQ(ledger.try_reserve(kGpu, 60).value(), Reservation::kGranted);
  EXPECT_EQ(ledger.try_reserve(kGpu, 41).value(), Reservation::kOverQuota);
  EXPECT_EQ(entry(kTenant, kGpu).oom_refusals.load(), 0u) << "a refusal is counted by whoever decides on it";
  EXPECT_EQ(ledger.try_reserve(kGpu, 40).value(), Reservation::kGranted);
  EXPECT_EQ(ledger.view(kGpu).limit_bytes, 100u);
  EXPECT_EQ(ledger.view(kGpu).used_bytes, 100u);
  EXPECT_EQ(held(kSlot, kGpu).load(), 100u);
  EXPECT_EQ(entry(kTenant, kGpu).peak_bytes.load(), 100u);
  EXPECT_TRUE(ledger.release(kGpu, 30).ok());
  EXPECT_EQ(ledger.view(kGpu).used_bytes, 70u);
  EXPECT_EQ(held(kSlot, kGpu).load(), 70u);
  EXPECT_FALSE(ledger.release(kGpu, 71).ok()) << "more than the slot holds";
  EXPECT_EQ(ledger.view(kGpu).used_bytes, 0u) << "what it held went back";
  EXPECT_EQ(held(kSlot, kGpu).load(), 0u);
  EXPECT_EQ(entry(kTenant, kGpu).peak_bytes.load(), 100u);
  ledger.count_refusal(kGpu);
  EXPECT_EQ(entry(kTenant, kGpu).oom_refusals.load(), 1u);
}

TEST_F(SlotLedgerTest, AGpuOutOfRangeIsRefusedWithoutTouchingTheState) {
  SlotLedger ledger(state_->state(), 0, 0);
  EXPECT_FALSE(ledger.try_reserve(layout::kMaxGpus, 1).ok());
  EXPECT_FALSE(ledger.release(layout::kMaxGpus, 1).ok());
  EXPECT_EQ(ledger.view(layout::kMaxGpus).limit_bytes, 0u);
  ledger.count_refusal(layout::kMaxGpus);  // nothing to count, nothing written past the table
  EXPECT_EQ(state_->state().slots[0].state.load(), layout::kFree);
}

TEST_F(SlotLedgerTest, SlotsOfATenantShareItsQuotaAndTheInvariantHolds) {
  constexpr std::uint32_t kGpu = 1;
  entry(0, kGpu).limit_bytes.store(1000);
  entry(1, kGpu).limit_bytes.store(10);
  SlotLedger first(state_->state(), 4, 0), second(state_->state(), 9, 0), other(state_->state(), 11, 1);
  EXPECT_EQ(first.try_reserve(kGpu, 600).value(), Reservation::kGranted);
  EXPECT_EQ(second.try_reserve(kGpu, 401).value(), Reservation::kOverQuota);
  EXPECT_EQ(second.try_reserve(kGpu, 400).value(), Reservation::kGranted);
  EXPECT_EQ(other.try_reserve(kGpu, 10).value(), Reservation::kGranted) << "another tenant, its own quota";
  EXPECT_EQ(entry(0, kGpu).used_bytes.load(), held(4, kGpu).load() + held(9, kGpu).load());
  EXPECT_EQ(entry(1, kGpu).used_bytes.load(), held(11, kGpu).load());
  auto lock = lock_ledger(state_->state(), kGpu);
  ASSERT_TRUE(lock.ok());
  EXPECT_FALSE(rebuild_gpu_ledger(state_->state(), kGpu)) << "the ledger already agrees with its slots";
}

TEST_F(SlotLedgerTest, AReservationPutsBackTheSlotItFindsWrittenOver) {
  constexpr std::uint32_t kSlot = 6, kTenant = 2, kGpu = 3;
  entry(kTenant, kGpu).limit_bytes.store(kUnlimited);
  auto& slot = state_->state().slots[kSlot];
  slot.tenant_index.store(77);
  slot.gpus_attached.store(0);
  SlotLedger ledger(state_->state(), kSlot, kTenant);
  EXPECT_EQ(ledger.try_reserve(kGpu, 5).value(), Reservation::kGranted);
  EXPECT_EQ(slot.tenant_index.load(), kTenant);
  EXPECT_EQ(slot.state.load(), layout::kInUse);
  EXPECT_NE(slot.gpus_attached.load() & (1u << kGpu), 0u);
}

// The ledger refuses on the figures it finds; the registry's forwarder sweeps before refusing.
TEST_F(SlotLedgerTest, OnlyTheMembershipSweepsBeforeARefusal) {
  auto joined = TenantMembership::join(*state_, "team-a");
  ASSERT_TRUE(joined.ok()) << joined.error().message;
  auto& member = *joined.value();
  const auto gpu = member.attach_gpu(make_uuid(1), 80_GiB, 1_GiB);
  ASSERT_TRUE(gpu.ok());
  const std::uint32_t g = gpu.value().gpu;
  ASSERT_EQ(member.try_reserve(g, 100_MiB).value(), Reservation::kGranted);
  auto& used = entry(member.tenant_index(), g).used_bytes;
  used.store(UINT64_MAX - 4);  // written into the file
  SlotLedger ledger(state_->state(), member.slot_index(), member.tenant_index());
  EXPECT_EQ(ledger.try_reserve(g, 1_MiB).value(), Reservation::kOverQuota);
  EXPECT_EQ(used.load(), UINT64_MAX - 4);
  EXPECT_EQ(member.try_reserve(g, 1_MiB).value(), Reservation::kGranted);
  EXPECT_EQ(used.load(), 101_MiB);
  EXPECT_EQ(entry(member.tenant_index(), g).oom_refusals.load(), 0u);
}

TEST(FormatGpuUuid, NvidiaSmiForm) {
  GpuUuid uuid{0x8f, 0x1c, 0x2a, 0x3b, 0x4c, 0x5d, 0x6e, 0x7f, 0x80, 0x91, 0xa2, 0xb3, 0xc4, 0xd5, 0xe6, 0xf7};
  EXPECT_EQ(format_gpu_uuid(uuid), "GPU-8f1c2a3b-4c5d-6e7f-8091-a2b3c4d5e6f7");
}

TEST_F(LedgerTest, JoinClaimsASlotAndNamesTheTenant) {
  auto m = join("team-a");
  ASSERT_NE(m, nullptr);
  auto& slot = state_->state().slots[m->slot_index()];
  EXPECT_EQ(slot.state.load(), layout::kInUse);
  EXPECT_EQ(slot.tenant_index.load(), m->tenant_index());
  EXPECT_EQ(slot.pid.load(), static_cast<std::uint64_t>(::getpid()));
  auto snaps = snapshot_tenants(*state_);
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0].name, "team-a");
  EXPECT_FALSE(snaps[0].override_limit_bytes.has_value());
  ASSERT_EQ(snaps[0].processes.size(), 1u);
  EXPECT_TRUE(snaps[0].processes[0].alive);  // our own slot, probed through another description
  EXPECT_EQ(snaps[0].processes[0].slot, m->slot_index());
}

TEST_F(LedgerTest, JoinRefusesBadTenantNames) {
  EXPECT_FALSE(TenantMembership::join(*state_, "").ok());
  EXPECT_FALSE(TenantMembership::join(*state_, "has space").ok());
  EXPECT_FALSE(TenantMembership::join(*state_, std::string(layout::kTenantNameBytes, 'n')).ok());
  EXPECT_TRUE(snapshot_tenants(*state_).empty());
}

TEST_F(LedgerTest, ReservationIsExactToTheByte) {
  auto m = join("team-a");
  ASSERT_NE(m, nullptr);
  const std::uint64_t limit = 1_GiB + 7;
  const auto attached = attach(*m, 1, limit);
  EXPECT_EQ(attached.effective_limit_bytes, limit);
  EXPECT_FALSE(attached.limit_differs);
  const std::uint32_t g = attached.gpu;

  EXPECT_EQ(reserve(*m, g, limit - 1), Reservation::kGranted);
  EXPECT_EQ(m->view(g).used_bytes, limit - 1);
  EXPECT_EQ(reserve(*m, g, 2), Reservation::kOverQuota);
  EXPECT_EQ(reserve(*m, g, 1), Reservation::kGranted);
  EXPECT_EQ(m->view(g).used_bytes, limit);
  EXPECT_EQ(m->view(g).limit_bytes, limit);
  EXPECT_EQ(reserve(*m, g, 1), Reservation::kOverQuota);
  EXPECT_EQ(reserve(*m, g, kUnlimited - 1), Reservation::kOverQuota);  // no overflow in the check
  EXPECT_EQ(reserve(*m, g, 0), Reservation::kGranted);

  ASSERT_TRUE(m->release(g, 1).ok());
  EXPECT_EQ(m->view(g).used_bytes, limit - 1);
  EXPECT_EQ(reserve(*m, g, 1), Reservation::kGranted);
  ASSERT_TRUE(m->release(g, limit).ok());
  EXPECT_EQ(m->view(g).used_bytes, 0u);

  auto snaps = snapshot_tenants(*state_);
  const TenantSnapshot* snap = find(snaps, "team-a");
  ASSERT_NE(snap, nullptr);
  ASSERT_EQ(snap->gpus.size(), 1u);
  EXPECT_EQ(snap->gpus[0].gpu, g);
  EXPECT_EQ(snap->gpus[0].uuid, make_uuid(1));
  EXPECT_EQ(snap->gpus[0].physical_bytes, 80_GiB);
  EXPECT_EQ(snap->gpus[0].limit_bytes, limit);
  EXPECT_EQ(snap->gpus[0].used_bytes, 0u);
  EXPECT_EQ(snap->gpus[0].peak_bytes, limit);
  EXPECT_EQ(snap->gpus[0].oom_refusals, 3u);
}

TEST_F(LedgerTest, ASingleRequestOverTheLimitIsRefused) {
  auto m = join("team-a");
  ASSERT_NE(m, nullptr);
  const std::uint32_t g = attach(*m, 1, 100_MiB).gpu;
  EXPECT_EQ(reserve(*m, g, 100_MiB + 1), Reservation::kOverQuota);
  EXPECT_EQ(m->view(g).used_bytes, 0u);
  EXPECT_EQ(reserve(*m, g, 100_MiB), Reservation::kGranted);
}

TEST_F(LedgerTest, UnlimitedQuota) {
  auto m = join("team-a");
  ASSERT_NE(m, nullptr);
  const std::uint32_t g = attach(*m, 1, kUnlimited).gpu;
  EXPECT_EQ(m->view(g).limit_bytes, kUnlimited);
  EXPECT_EQ(reserve(*m, g, 1ull << 62), Reservation::kGranted);
  EXPECT_EQ(reserve(*m, g, 1ull << 62), Reservation::kGranted);
  ASSERT_TRUE(m->release(g, 1ull << 63).ok());
  EXPECT_EQ(m->view(g).used_bytes, 0u);
}

TEST_F(LedgerTest, ReleasingMoreThanHeldIsAnErrorAndReturnsOnlyWhatIsHeld) {
  auto a = join("team-a");
  auto b = join("team-a");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  const std::uint32_t g = attach(*a, 1, 1_GiB).gpu;
  ASSERT_EQ(attach(*b, 1, 1_GiB).gpu, g);
  EXPECT_EQ(reserve(*a, g, 100), Reservation::kGranted);
  EXPECT_EQ(reserve(*b, g, 50), Reservation::kGranted);
  // b cannot release a's bytes: the tenant's total keeps a's 100.
  auto released = b->release(g, 120);
  EXPECT_FALSE(released.ok());
  EXPECT_EQ(a->view(g).used_bytes, 100u);
  EXPECT_EQ(state_->state().slots[b->slot_index()].held_bytes[g].load(), 0u);
  EXPECT_EQ(state_->state().slots[a->slot_index()].held_bytes[g].load(), 100u);
}

TEST_F(LedgerTest, OutOfRangeGpuIsAnError) {
  auto m = join("team-a");
  ASSERT_NE(m, nullptr);
  EXPECT_FALSE(m->try_reserve(layout::kMaxGpus, 1).ok());
  EXPECT_FALSE(m->release(layout::kMaxGpus, 1).ok());
  EXPECT_EQ(m->view(layout::kMaxGpus).limit_bytes, 0u);
}

TEST_F(LedgerTest, MembershipsOfOneTenantShareTheQuotaAndTheFirstLimit) {
  auto first = join("team-a");
  auto second = join("team-a");
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(first->tenant_index(), second->tenant_index());
  EXPECT_NE(first->slot_index(), second->slot_index());

  const auto a1 = attach(*first, 1, 1_GiB);
  const auto a2 = attach(*second, 1, 4_GiB);
  EXPECT_EQ(a1.gpu, a2.gpu);
  EXPECT_TRUE(a2.limit_differs);
  EXPECT_EQ(a2.effective_limit_bytes, 1_GiB);
  const auto a3 = attach(*second, 1, 1_GiB);  // asking for the same limit again: no difference
  EXPECT_FALSE(a3.limit_differs);
  const std::uint32_t g = a1.gpu;

  EXPECT_EQ(reserve(*first, g, 600_MiB), Reservation::kGranted);
  EXPECT_EQ(reserve(*second, g, 500_MiB), Reservation::kOverQuota);
  EXPECT_EQ(reserve(*second, g, 424_MiB), Reservation::kGranted);
  EXPECT_EQ(first->view(g).used_bytes, 1_GiB);
  EXPECT_EQ(second->view(g).used_bytes, 1_GiB);
  EXPECT_EQ(reserve(*first, g, 1), Reservation::kOverQuota);

  auto snaps = snapshot_tenants(*state_);
  const TenantSnapshot* snap = find(snaps, "team-a");
  ASSERT_NE(snap, nullptr);
  ASSERT_EQ(snap->processes.size(), 2u);
  std::uint64_t held = 0;
  for (const auto& p : snap->processes) held += p.held_bytes[g];
  EXPECT_EQ(held, 1_GiB);
  EXPECT_EQ(snap->gpus[0].oom_refusals, 2u);

  // Destroying a membership returns its bytes, and only its bytes.
  second.reset();
  EXPECT_EQ(first->view(g).used_bytes, 600_MiB);
  EXPECT_EQ(reserve(*first, g, 424_MiB), Reservation::kGranted);
  first.reset();
  EXPECT_EQ(used_of(*state_, "team-a", g), 0u);
  for (const auto& slot : state_->state().slots) EXPECT_EQ(slot.state.load(), layout::kFree);
}

TEST_F(LedgerTest, DifferentTenantsHaveTheirOwnQuotas) {
  auto a = join("team-a");
  auto b = join("team-b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a->tenant_index(), b->tenant_index());
  const std::uint32_t g = attach(*a, 1, 1_GiB).gpu;
  const auto attached_b = attach(*b, 1, 2_GiB);
  EXPECT_EQ(attached_b.gpu, g);  // same physical GPU
  EXPECT_FALSE(attached_b.limit_differs);
  EXPECT_EQ(attached_b.effective_limit_bytes, 2_GiB);

  EXPECT_EQ(reserve(*a, g, 1_GiB), Reservation::kGranted);
  EXPECT_EQ(reserve(*b, g, 2_GiB), Reservation::kGranted);
  EXPECT_EQ(reserve(*a, g, 1), Reservation::kOverQuota);
  EXPECT_EQ(reserve(*b, g, 1), Reservation::kOverQuota);
  EXPECT_EQ(a->view(g).used_bytes, 1_GiB);
  EXPECT_EQ(b->view(g).used_bytes, 2_GiB);
  ASSERT_TRUE(a->release(g, 1_GiB).ok());
  EXPECT_EQ(b->view(g).used_bytes, 2_GiB);
  EXPECT_EQ(reserve(*b, g, 1), Reservation::kOverQuota);
}

TEST_F(LedgerTest, GpusAreKeyedByUuid) {
  auto a = join("team-a");
  auto b = join("team-b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  const auto g1 = attach(*a, 1, 1_GiB);
  const auto g2 = attach(*a, 2, 1_GiB);
  EXPECT_NE(g1.gpu, g2.gpu);
  EXPECT_EQ(attach(*b, 2, 1_GiB).gpu, g2.gpu);  // the same UUID is the same GPU for everyone
  EXPECT_EQ(attach(*a, 1, 1_GiB).gpu, g1.gpu);  // attaching again finds it

  EXPECT_EQ(reserve(*a, g1.gpu, 1_GiB), Reservation::kGranted);
  EXPECT_EQ(reserve(*a, g2.gpu, 1_GiB), Reservation::kGranted);  // separate quota per GPU
  EXPECT_EQ(a->view(g1.gpu).used_bytes, 1_GiB);
  EXPECT_EQ(a->view(g2.gpu).used_bytes, 1_GiB);

  auto snaps = snapshot_tenants(*state_);
  const TenantSnapshot* snap = find(snaps, "team-a");
  ASSERT_NE(snap, nullptr);
  ASSERT_EQ(snap->gpus.size(), 2u);
  EXPECT_EQ(state_->state().gpus[g2.gpu].state.load(), layout::kInUse);
  EXPECT_TRUE(std::equal(std::begin(state_->state().gpus[g2.gpu].uuid), std::end(state_->state().gpus[g2.gpu].uuid),
                         make_uuid(2).begin()));
}

TEST_F(LedgerTest, GpuTableFullOfGpusLiveProcessesUseIsAnError) {
  auto m = join("team-a");
  ASSERT_NE(m, nullptr);
  for (std::uint32_t i = 0; i < layout::kMaxGpus; ++i) {
    auto attached = m->attach_gpu(make_uuid(static_cast<std::uint8_t>(i)), 1_GiB, 1_GiB);
    ASSERT_TRUE(attached.ok()) << attached.error().message;
    EXPECT_EQ(attached.value().gpu, i);
  }
  auto extra = m->attach_gpu(make_uuid(200), 1_GiB, 1_GiB);
  ASSERT_FALSE(extra.ok());
  EXPECT_TRUE(Contains(extra.error().message, std::to_string(layout::kMaxGpus)));
  EXPECT_TRUE(m->attach_gpu(make_uuid(3), 1_GiB, 1_GiB).ok());  // a known one still works
}

// A long-lived file must never fill up with GPUs nobody uses any more: a 17th GPU takes the record
// of one that no live process has attached (a process that left, or died and is swept), with a
// clean ledger; records live processes use are never taken.
TEST_F(LedgerTest, ANewGpuTakesTheRecordOfAGpuNoLiveProcessUses) {
  auto keeper = join("keeper");
  auto leaver = join("leaver");
  auto dying = join("dying");
  ASSERT_NE(keeper, nullptr);
  for (std::uint32_t i = 0; i < layout::kMaxGpus; ++i) {
    TenantMembership& owner = i == 4 ? *leaver : i == 9 ? *dying : *keeper;
    const auto attached = attach(owner, static_cast<std::uint8_t>(i), 1_GiB);
    ASSERT_EQ(attached.gpu, i);
  }
  ASSERT_EQ(reserve(*leaver, 4, 100_MiB), Reservation::kGranted);
  ASSERT_EQ(reserve(*dying, 9, 200_MiB), Reservation::kGranted);
  EXPECT_FALSE(keeper->attach_gpu(make_uuid(100), 1_GiB, 1_GiB).ok()) << "all 16 in use";
  leaver.reset();  // leaves: GPU record 4 is used by nobody now
  const auto taken = attach(*keeper, 100, 512_MiB);
  EXPECT_EQ(taken.gpu, 4u);
  EXPECT_EQ(taken.effective_limit_bytes, 512_MiB) << "the new GPU's ledger starts clean";
  EXPECT_EQ(used_of(*state_, "keeper", 4), 0u);
  dying->abandon();  // dies with 200 MiB charged on GPU 9: the sweep before the next take frees it
  dying.reset();
  auto newcomer = join("newcomer");
  ASSERT_NE(newcomer, nullptr);
  const auto second = attach(*newcomer, 101, 1_GiB);
  EXPECT_EQ(second.gpu, 9u);
  for (const auto& tenant : snapshot_tenants(*state_)) {
    for (const auto& gpu : tenant.gpus) {
      if (gpu.gpu == 9) {
        EXPECT_EQ(gpu.uuid, make_uuid(101)) << tenant.name << " keeps the old GPU's ledger";
      }
    }
  }
  EXPECT_TRUE(keeper->attach_gpu(make_uuid(3), 1_GiB, 1_GiB).ok()) << "a live one's record is kept";
  EXPECT_EQ(attach(*keeper, 3, 1_GiB).gpu, 3u);
}

// Numbers written into the file (`used` = 2^64 - 5) refused the tenant for good and kept bytes
// charged after every process had exited: each sweep re-derives the ledger from the slots.
TEST_F(LedgerTest, ASweepHealsALedgerThatDisagreesWithItsSlots) {
  auto m = join("team-a");
  ASSERT_NE(m, nullptr);
  const auto g = attach(*m, 1, 1_GiB);
  ASSERT_EQ(reserve(*m, g.gpu, 100_MiB), Reservation::kGranted);
  auto& used = state_->state().tenants[m->tenant_index()].ledger[g.gpu].used_bytes;
  used.store(UINT64_MAX - 4);
  EXPECT_EQ(reserve(*m, g.gpu, 1_MiB), Reservation::kGranted) << "the refusal path sweeps, and heals";
  EXPECT_EQ(used.load(), 101_MiB);
  used.store(UINT64_MAX - 4);
  const ReclaimReport report = reclaim_dead_processes(*state_);
  EXPECT_EQ(report.ledgers_healed, 1u);
  EXPECT_EQ(used.load(), 101_MiB);
  const std::uint32_t tenant = m->tenant_index();
  m.reset();
  state_->state().tenants[tenant].ledger[g.gpu].used_bytes.store(UINT64_MAX - 4);  // nobody left
  reclaim_dead_processes(*state_);
  EXPECT_EQ(state_->state().tenants[tenant].ledger[g.gpu].used_bytes.load(), 0u);
}

TEST_F(LedgerTest, SetTenantMemoryLimitLowersAndRaises) {
  auto m = join("team-a");
  ASSERT_NE(m, nullptr);
  const std::uint32_t g = attach(*m, 1, 1_GiB).gpu;
  EXPECT_EQ(reserve(*m, g, 800_MiB), Reservation::kGranted);

  ASSERT_TRUE(set_tenant_memory_limit(*state_, "team-a", 500_MiB).ok());
  EXPECT_EQ(m->view(g).limit_bytes, 500_MiB);
  EXPECT_EQ(m->view(g).used_bytes, 800_MiB);  // nothing is taken away
  EXPECT_EQ(reserve(*m, g, 1), Reservation::kOverQuota);
  ASSERT_TRUE(m->release(g, 200_MiB).ok());
  EXPECT_EQ(reserve(*m, g, 1), Reservation::kOverQuota);  // 600 MiB used: still over
  ASSERT_TRUE(m->release(g, 100_MiB).ok());               // 500 MiB used: exactly at the limit
  EXPECT_EQ(reserve(*m, g, 1), Reservation::kOverQuota);
  ASSERT_TRUE(m->release(g, 1_MiB).ok());
  EXPECT_EQ(reserve(*m, g, 1_MiB + 1), Reservation::kOverQuota);
  EXPECT_EQ(reserve(*m, g, 1_MiB), Reservation::kGranted);

  ASSERT_TRUE(set_tenant_memory_limit(*state_, "team-a", 2_GiB).ok());
  EXPECT_EQ(m->view(g).limit_bytes, 2_GiB);
  EXPECT_EQ(reserve(*m, g, 2_GiB - 500_MiB), Reservation::kGranted);
  EXPECT_EQ(reserve(*m, g, 1), Reservation::kOverQuota);

  auto snaps = snapshot_tenants(*state_);
  const TenantSnapshot* snap = find(snaps, "team-a");
  ASSERT_NE(snap, nullptr);
  ASSERT_TRUE(snap->override_limit_bytes.has_value());
  EXPECT_EQ(*snap->override_limit_bytes, 2_GiB);
}

TEST_F(LedgerTest, SetTenantMemoryLimitAppliesToGpusAttachedLater) {
  auto m = join("team-a");
  ASSERT_NE(m, nullptr);
  ASSERT_TRUE(set_tenant_memory_limit(*state_, "team-a", 300_MiB).ok());
  const auto attached = attach(*m, 5, 1_GiB);
  EXPECT_EQ(attached.effective_limit_bytes, 300_MiB);
  EXPECT_TRUE(attached.limit_differs);
  EXPECT_EQ(reserve(*m, attached.gpu, 300_MiB), Reservation::kGranted);
  EXPECT_EQ(reserve(*m, attached.gpu, 1), Reservation::kOverQuota);
}

TEST_F(LedgerTest, SetTenantMemoryLimitOnlyAffectsThatTenant) {
  auto a = join("team-a");
  auto b = join("team-b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  const std::uint32_t g = attach(*a, 1, 1_GiB).gpu;
  attach(*b, 1, 1_GiB);
  ASSERT_TRUE(set_tenant_memory_limit(*state_, "team-a", 1_MiB).ok());
  EXPECT_EQ(a->view(g).limit_bytes, 1_MiB);
  EXPECT_EQ(b->view(g).limit_bytes, 1_GiB);
}

TEST_F(LedgerTest, SetTenantMemoryLimitOnAnUnknownTenantIsAnError) {
  auto status = set_tenant_memory_limit(*state_, "nobody", 1_GiB);
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(Contains(status.error().message, "nobody"));
  EXPECT_TRUE(snapshot_tenants(*state_).empty()) << "setting a limit must not create a tenant";
}

TEST_F(LedgerTest, OwnLiveSlotSurvivesASweepInTheSameProcess) {
  auto m = join("team-a");
  ASSERT_NE(m, nullptr);
  const std::uint32_t g = attach(*m, 1, 1_GiB).gpu;
  EXPECT_EQ(reserve(*m, g, 123), Reservation::kGranted);
  const ReclaimReport report = reclaim_dead_processes(*state_);
  EXPECT_EQ(report.processes, 0u);
  EXPECT_EQ(report.bytes, 0u);
  EXPECT_EQ(m->view(g).used_bytes, 123u);
  auto other = open_again();  // another mapping of the same file sweeps too
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(reclaim_dead_processes(*other).processes, 0u);
  EXPECT_EQ(m->view(g).used_bytes, 123u);
}

TEST_F(LedgerTest, AbandonedMembershipLeavesItsSlotAndBytes) {
  auto m = join("team-a");
  ASSERT_NE(m, nullptr);
  const std::uint32_t g = attach(*m, 1, 1_GiB).gpu;
  const std::uint32_t slot = m->slot_index();
  EXPECT_EQ(reserve(*m, g, 1000), Reservation::kGranted);
  m->abandon();
  m.reset();
  // Nothing was returned, and with its liveness lock gone the slot is now reclaimable.
  EXPECT_EQ(state_->state().slots[slot].state.load(), layout::kInUse);
  EXPECT_EQ(used_of(*state_, "team-a", g), 1000u);
  const ReclaimReport report = reclaim_dead_processes(*state_);
  EXPECT_EQ(report.processes, 1u);
  EXPECT_EQ(report.bytes, 1000u);
  EXPECT_EQ(used_of(*state_, "team-a", g), 0u);
}

TEST_F(LedgerTest, SlotLeftHalfReclaimedByADeadReclaimerIsFinished) {
  auto m = join("team-a");
  ASSERT_NE(m, nullptr);
  const std::uint32_t g1 = attach(*m, 1, 1_GiB).gpu;
  const std::uint32_t g2 = attach(*m, 2, 1_GiB).gpu;
  const std::uint32_t slot = m->slot_index();
  EXPECT_EQ(reserve(*m, g1, 1000), Reservation::kGranted);
  EXPECT_EQ(reserve(*m, g2, 2000), Reservation::kGranted);
  m->abandon();
  m.reset();
  // A reclaimer marked the slot and died before returning anything (its lock went with it).
  state_->state().slots[slot].state.store(layout::kReclaiming);
  const ReclaimReport report = reclaim_dead_processes(*state_);
  EXPECT_EQ(report.processes, 1u);
  EXPECT_EQ(report.bytes, 3000u);
  EXPECT_EQ(used_of(*state_, "team-a", g1), 0u);
  EXPECT_EQ(used_of(*state_, "team-a", g2), 0u);
  EXPECT_EQ(state_->state().slots[slot].state.load(), layout::kFree);
  EXPECT_EQ(reclaim_dead_processes(*state_).processes, 0u);
}

TEST_F(LedgerTest, StateSurvivesReopeningByAnotherMapping) {
  auto m = join("team-a");
  ASSERT_NE(m, nullptr);
  const std::uint32_t g = attach(*m, 1, 1_GiB).gpu;
  EXPECT_EQ(reserve(*m, g, 4096), Reservation::kGranted);
  auto other = open_again();
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(used_of(*other, "team-a", g), 4096u);
  auto joined = TenantMembership::join(*other, "team-a");
  ASSERT_TRUE(joined.ok());
  EXPECT_EQ(joined.value()->tenant_index(), m->tenant_index());
  EXPECT_EQ(joined.value()->view(g).used_bytes, 4096u);
}

// 8. Full tables are errors, not crashes.
TEST_F(LedgerTest, FullProcessSlotTableIsAnError) {
  std::vector<std::unique_ptr<TenantMembership>> members;
  members.reserve(layout::kMaxSlots);
  for (std::uint32_t i = 0; i < layout::kMaxSlots; ++i) {
    auto joined = TenantMembership::join(*state_, "team-a");
    ASSERT_TRUE(joined.ok()) << i << ": " << joined.error().message;
    members.push_back(std::move(joined).value());
  }
  auto extra = TenantMembership::join(*state_, "team-a");
  ASSERT_FALSE(extra.ok());
  EXPECT_TRUE(Contains(extra.error().message, std::to_string(layout::kMaxSlots)));
  // A membership that leaves makes room again.
  const std::uint32_t freed = members[100]->slot_index();
  members[100].reset();
  auto again = TenantMembership::join(*state_, "team-a");
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again.value()->slot_index(), freed);
}

TEST_F(LedgerTest, FullTenantTableIsAnErrorAndUnusedTenantsAreRecycled) {
  std::vector<std::unique_ptr<TenantMembership>> members;
  for (std::uint32_t i = 0; i < layout::kMaxTenants; ++i) {
    auto joined = TenantMembership::join(*state_, "tenant-" + std::to_string(i));
    ASSERT_TRUE(joined.ok()) << i << ": " << joined.error().message;
    members.push_back(std::move(joined).value());
  }
  auto extra = TenantMembership::join(*state_, "one-too-many");
  ASSERT_FALSE(extra.ok());
  EXPECT_TRUE(Contains(extra.error().message, std::to_string(layout::kMaxTenants)));
  // An existing tenant can still be joined.
  EXPECT_TRUE(TenantMembership::join(*state_, "tenant-5").ok());

  // A tenant whose processes left but which still has bytes charged is not recycled...
  const std::uint32_t g = attach(*members[7], 1, 1_GiB).gpu;
  EXPECT_EQ(reserve(*members[7], g, 10), Reservation::kGranted);
  const std::uint32_t old_index = members[7]->tenant_index();
  members[7]->abandon();  // as if the process died: the slot stays in use, the bytes stay charged
  members[7].reset();     // and its liveness lock goes with its descriptor
  EXPECT_EQ(state_->state().tenants[old_index].ledger[g].used_bytes.load(), 10u);
  // ...but it is once the sweep at the start of join returns them.
  auto recycled = TenantMembership::join(*state_, "one-too-many");
  ASSERT_TRUE(recycled.ok()) << recycled.error().message;
  EXPECT_EQ(recycled.value()->tenant_index(), old_index);
  auto snaps = snapshot_tenants(*state_);
  EXPECT_EQ(snaps.size(), layout::kMaxTenants);
  bool found_old = false;
  for (const auto& snap : snaps) found_old = found_old || snap.name == "tenant-7";
  EXPECT_FALSE(found_old);
  // The recycled record starts clean.
  const auto attached = attach(*recycled.value(), 1, 5_MiB);
  EXPECT_EQ(attached.effective_limit_bytes, 5_MiB);
  EXPECT_FALSE(attached.limit_differs);
  EXPECT_EQ(recycled.value()->view(g).used_bytes, 0u);
}

// 5. Threads of one process hammering one tenant's quota.
TEST_F(LedgerTest, ThreadsNeverExceedTheQuota) {
  constexpr int kThreads = 8;
  constexpr std::uint64_t kLimit = 64_MiB + 12345;  // not a round number, to catch off-by-ones
  auto owner = join("team-a");
  ASSERT_NE(owner, nullptr);
  const std::uint32_t g = attach(*owner, 1, kLimit).gpu;

  std::atomic<std::uint64_t> in_flight{0};  // granted and not yet released, counted by the test
  std::atomic<bool> violated{false};
  std::atomic<std::uint64_t> grants{0};
  std::atomic<std::uint64_t> refusals{0};
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Half the threads share the owner's membership (one slot), half have their own.
      std::unique_ptr<TenantMembership> own;
      if (t % 2 == 1) {
        auto joined = TenantMembership::join(*state_, "team-a");
        if (!joined.ok()) {
          errors.fetch_add(1);
          return;
        }
        own = std::move(joined).value();
        if (!own->attach_gpu(make_uuid(1), 80_GiB, kLimit).ok()) errors.fetch_add(1);
      }
      TenantMembership& m = own ? *own : *owner;
      std::mt19937_64 rng(static_cast<std::uint64_t>(t) * 7919u + 1u);
      std::vector<std::uint64_t> held;
      for (int i = 0; i < 20000; ++i) {
        if (held.empty() || (rng() % 3 != 0 && held.size() < 16)) {
          const std::uint64_t n = 1 + rng() % (8_MiB);
          auto r = m.try_reserve(g, n);
          if (!r.ok()) {
            errors.fetch_add(1);
            continue;
          }
          if (r.value() == Reservation::kGranted) {
            if (in_flight.fetch_add(n) + n > kLimit) violated = true;
            if (m.view(g).used_bytes > kLimit) violated = true;
            held.push_back(n);
            grants.fetch_add(1);
          } else {
            refusals.fetch_add(1);
          }
        } else {
          const std::size_t k = rng() % held.size();
          const std::uint64_t n = held[k];
          held[k] = held.back();
          held.pop_back();
          in_flight.fetch_sub(n);
          if (!m.release(g, n).ok()) errors.fetch_add(1);
        }
      }
      for (std::uint64_t n : held) {
        in_flight.fetch_sub(n);
        if (!m.release(g, n).ok()) errors.fetch_add(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_FALSE(violated.load());
  EXPECT_GT(grants.load(), 0u);
  EXPECT_GT(refusals.load(), 0u) << "the test never reached the quota";
  EXPECT_EQ(owner->view(g).used_bytes, 0u);
  EXPECT_EQ(in_flight.load(), 0u);
  auto snaps = snapshot_tenants(*state_);
  const TenantSnapshot* snap = find(snaps, "team-a");
  ASSERT_NE(snap, nullptr);
  EXPECT_LE(snap->gpus[0].peak_bytes, kLimit);
  EXPECT_GT(snap->gpus[0].peak_bytes, kLimit - 8_MiB);
  EXPECT_EQ(snap->gpus[0].oom_refusals, refusals.load());
  EXPECT_EQ(state_->state().slots[owner->slot_index()].held_bytes[g].load(), 0u);
}

// Regression test. Liveness probes are OFD locks taken through the SharedState's one open file
// description, which every thread of the process shares. Before probes were serialised by
// SharedState::probe_mutex(), two threads sweeping at once could both "get" a dead slot's lock;
// the first freed the slot and unlocked (for both), another process joined into the slot, and the
// second sweeper then reclaimed the new *live* owner's slot and marked it free (its bytes leaked
// for good once it died). That hit about once a second here on 2 cores; the loop runs 1.5 s.
TEST_F(LedgerTest, ConcurrentSweepsInOneProcessNeverFreeALiveSlot) {
  auto other = open_again();  // the joiner's own mapping, as if it were another process
  ASSERT_NE(other, nullptr);
  std::barrier sync(3);
  std::atomic<bool> stop{false};
  auto sweeper = [&] {
    while (true) {
      sync.arrive_and_wait();
      if (stop) return;
      reclaim_dead_processes(*state_);
      sync.arrive_and_wait();
    }
  };
  std::thread a(sweeper);
  std::thread b(sweeper);
  long rounds = 0;
  long freed_live = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
  while (std::chrono::steady_clock::now() < end && freed_live == 0) {
    {
      auto dying = TenantMembership::join(*other, "team-a");  // a dead slot to sweep
      ASSERT_TRUE(dying.ok());
      dying.value()->abandon();
    }
    sync.arrive_and_wait();  // the two sweepers start...
    auto live = TenantMembership::join(*other, "team-a");  // ...while a process joins
    ASSERT_TRUE(live.ok());
    sync.arrive_and_wait();
    if (state_->state().slots[live.value()->slot_index()].state.load() != layout::kInUse) ++freed_live;
    live.value().reset();
    reclaim_dead_processes(*state_);
    ++rounds;
  }
  stop = true;
  sync.arrive_and_wait();
  a.join();
  b.join();
  EXPECT_EQ(freed_live, 0) << "a concurrent sweep marked a live member's slot free (after " << rounds << " rounds)";
}

}  // namespace
}  // namespace gpushare

namespace gpushare {
namespace {

TEST_F(LedgerTest, ARestartedTenantTakesTheNewLimitButALiveOneKeepsItsOwn) {
  {
    auto first = join("job");
    ASSERT_NE(first, nullptr);
    EXPECT_EQ(attach(*first, 1, 8_GiB).effective_limit_bytes, 8_GiB);
    auto second = join("job");  // joins while the first still runs: the tenant's limit stands
    ASSERT_NE(second, nullptr);
    const auto attached = attach(*second, 1, 4_GiB);
    EXPECT_EQ(attached.effective_limit_bytes, 8_GiB);
    EXPECT_TRUE(attached.limit_differs);
  }
  // Every process of "job" has left and it holds nothing: a new run starts with its own limit.
  auto restarted = join("job");
  ASSERT_NE(restarted, nullptr);
  const auto attached = attach(*restarted, 1, 4_GiB);
  EXPECT_EQ(attached.effective_limit_bytes, 4_GiB);
  EXPECT_FALSE(attached.limit_differs);
}

TEST_F(LedgerTest, AReplacedStateFileDoesNotSplitAProcessFromItsLocks) {
  // The file is removed and a new one appears at the same path after this process mapped it...
  ASSERT_EQ(::unlink(path_.str().c_str()), 0);
  auto fresh = SharedState::open(path_.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message;
  // ...then it joins: its slot's liveness lock must be taken on the file it mapped, or a sweep
  // of that mapping would find the lock free and reclaim a live slot.
  auto m = join("team-a");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(reclaim_dead_processes(*state_).processes, 0u);
  EXPECT_EQ(state_->state().slots[m->slot_index()].state.load(), layout::kInUse);
}

}  // namespace
}  // namespace gpushare
