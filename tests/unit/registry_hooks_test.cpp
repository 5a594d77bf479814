// The registry's hooks: who is told when a slot is given up, a GPU record is reused or a sweep
// runs, and the arbiter's hooks doing their part without any ComputeGate in the process.
#include "core/registry.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "core/arbiter.hpp"
#include "core/platform.hpp"
#include "core/compute_slot_release.hpp"
#include "core/size.hpp"
#include "core/snapshot.hpp"
#include "test_support.hpp"

namespace gpushare {
namespace {

using testing::make_uuid;

constexpr std::uint64_t kMs = 1'000'000;

// What the recording hooks saw, and what the slot looked like when they saw it.
struct Released {
  std::uint32_t slot;
  SlotRelease why;
  std::uint64_t held_bytes;  // still held by the slot when the hook ran
  std::uint32_t slot_state;
};
struct Recorded {
  std::vector<Released> released;
  std::vector<std::uint32_t> forgotten;
  std::vector<std::uint32_t> swept;
};
Recorded recorded;

void record_release(layout::StateLayout& state, std::uint32_t slot, SlotRelease why) {
  std::uint64_t held = 0;
  for (const auto& bytes : state.slots[slot].held_bytes) held += bytes.load();
  recorded.released.push_back({slot, why, held, state.slots[slot].state.load()});
}
void record_forgotten(layout::StateLayout&, std::uint32_t gpu) { recorded.forgotten.push_back(gpu); }
void record_swept(layout::StateLayout&, std::uint32_t gpu) { recorded.swept.push_back(gpu); }

constinit const RegistryHooks kRecordingHooks{
    .slot_released = record_release,
    .gpu_forgotten = record_forgotten,
    .gpu_swept = record_swept,
};

class RegistryHooksTest : public testing::StateTest {
 protected:
  void SetUp() override {
    StateTest::SetUp();
    recorded = {};
    ASSERT_TRUE(add_registry_hooks(kRecordingHooks));
  }
  void TearDown() override {
    remove_registry_hooks(kRecordingHooks);
    install_compute_slot_release();  // a test may have taken it away
    StateTest::TearDown();
  }
  std::unique_ptr<TenantMembership> join(std::string_view name) {
    auto joined = TenantMembership::join(*state_, name);
    if (!joined.ok()) {
      ADD_FAILURE() << joined.error().message;
      return nullptr;
    }
    return std::move(joined).value();
  }
  std::uint32_t attach(TenantMembership& member, std::uint8_t uuid_seed) {
    auto attached = member.attach_gpu(make_uuid(uuid_seed), 80_GiB, 1_GiB);
    EXPECT_TRUE(attached.ok()) << attached.error().message;
    return attached.ok() ? attached.value().gpu : 0;
  }
  std::vector<Released> released_of(std::uint32_t slot) const {
    std::vector<Released> found;
    for (const auto& release : recorded.released) {
      if (release.slot == slot) found.push_back(release);
    }
    return found;
  }
  layout::StateLayout& s() { return state_->state(); }
};

TEST_F(RegistryHooksTest, TheHookIsToldWhenTheOwnerLeavesAfterItsBytesWentBack) {
  auto member = join("team-a");
  ASSERT_NE(member, nullptr);
  const std::uint32_t gpu = attach(*member, 1);
  ASSERT_EQ(member->try_reserve(gpu, 4_MiB).value(), Reservation::kGranted);
  const std::uint32_t slot = member->slot_index();
  EXPECT_TRUE(released_of(slot).empty());
  member.reset();
  const auto released = released_of(slot);
  ASSERT_EQ(released.size(), 1u);
  EXPECT_EQ(released[0].why, SlotRelease::kOwnerLeaving);
  EXPECT_EQ(released[0].held_bytes, 0u) << "the bytes go back before the hooks run";
  EXPECT_NE(released[0].slot_state, layout::kFree) << "the slot is freed after the hooks ran";
  EXPECT_EQ(s().slots[slot].state.load(), layout::kFree);
}

TEST_F(RegistryHooksTest, TheHookIsToldWhenASweepFreesTheSlotOfADeadOwner) {
  auto member = join("team-a");
  ASSERT_NE(member, nullptr);
  const std::uint32_t gpu = attach(*member, 1);
  ASSERT_EQ(member->try_reserve(gpu, 4_MiB).value(), Reservation::kGranted);
  const std::uint32_t slot = member->slot_index();
  member->abandon();  // the owner dies: its liveness lock goes with its descriptor
  member.reset();
  EXPECT_TRUE(released_of(slot).empty()) << "nobody has noticed yet";

  const ReclaimReport report = reclaim_dead_processes(*state_);
  EXPECT_EQ(report.processes, 1u);
  EXPECT_EQ(report.bytes, 4_MiB);
  const auto released = released_of(slot);
  ASSERT_EQ(released.size(), 1u);
  EXPECT_EQ(released[0].why, SlotRelease::kOwnerGone);
  EXPECT_EQ(released[0].held_bytes, 0u);
  EXPECT_EQ(released[0].slot_state, layout::kReclaiming);
  EXPECT_EQ(recorded.swept, std::vector<std::uint32_t>{gpu}) << "one call per GPU record in use";

  reclaim_dead_processes(*state_);
  EXPECT_EQ(released_of(slot).size(), 1u) << "a freed slot is released once";
}

TEST_F(RegistryHooksTest, ALiveSlotIsNeverReleasedByASweep) {
  auto member = join("team-a");
  ASSERT_NE(member, nullptr);
  auto other = open_again();
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(reclaim_dead_processes(*other).processes, 0u);
  EXPECT_TRUE(released_of(member->slot_index()).empty());
}

TEST_F(RegistryHooksTest, AReusedGpuRecordIsForgottenThroughTheHooks) {
  auto filler = join("filler");
  ASSERT_NE(filler, nullptr);
  for (std::uint8_t g = 0; g < layout::kMaxGpus; ++g) attach(*filler, g);
  filler.reset();  // no live process has any of the records attached now
  ASSERT_TRUE(recorded.forgotten.empty());

  auto member = join("team-a");
  ASSERT_NE(member, nullptr);
  s().schedules[0].virtual_clock_ns[1].store(123 * kMs);
  const std::uint32_t gpu = attach(*member, 200);
  ASSERT_EQ(recorded.forgotten, std::vector<std::uint32_t>{gpu});
  EXPECT_EQ(gpu, 0u) << "the first record no live process uses";
  EXPECT_EQ(s().schedules[gpu].virtual_clock_ns[1].load(), 0u) << "the arbiter's hook cleared the schedule";
}

// `gpushare status` and `quota set` sweep from a process that has no ComputeGate: the arbiter's
// hooks still free the slice a dead holder kept and take its waiting marks away.
TEST_F(RegistryHooksTest, ASweepWithoutAnyGateFreesTheSliceOfADeadHolder) {
  auto holder = join("team-a");
  ASSERT_NE(holder, nullptr);
  const std::uint32_t gpu = attach(*holder, 1);
  const std::uint32_t other_gpu = attach(*holder, 2);
  const std::uint32_t slot = holder->slot_index();
  const std::uint64_t now = monotonic_now_ns();
  {
    auto lock = lock_schedule(s(), gpu);
    ASSERT_TRUE(lock.ok());
    auto& schedule = s().schedules[gpu];
    schedule.slice_start_ns.store(now - 10 * kMs);
    schedule.slice_end_ns.store(now + 10 * kMs);
    schedule.observed_at_ns.store(now - 4 * kMs);  // its last launch seen
    schedule.holder_word.store(layout::holder_token(slot));
  }
  // It also waited for another GPU when it died.
  s().slots[slot].compute[other_gpu].waiting_since_ns.store(now - kMs);
  s().schedules[other_gpu].waiting.store(1);
  holder->abandon();
  holder.reset();

  auto status = open_again();  // another process's view, as `gpushare status` has it
  ASSERT_NE(status, nullptr);
  ASSERT_EQ(reclaim_dead_processes(*status).processes, 1u);
  EXPECT_EQ(s().schedules[gpu].holder_word.load(), 0u) << "the GPU is free again";
  EXPECT_EQ(s().slots[slot].compute[other_gpu].waiting_since_ns.load(), 0u);
  EXPECT_EQ(s().schedules[other_gpu].waiting.load(), 0u);
  const auto tenants = snapshot_tenants(*state_);
  ASSERT_EQ(tenants.size(), 1u);
  std::uint64_t charged_ns = 0;
  for (const auto& ledger : tenants[0].gpus) {
    if (ledger.gpu == gpu) charged_ns = ledger.gpu_ns;
  }
  EXPECT_EQ(charged_ns, 6 * kMs) << "charged up to its last observed launch";
}

TEST_F(RegistryHooksTest, NothingIsJoinedOrSweptWhileNoHooksAreInstalled) {
  auto dying = join("team-a");
  ASSERT_NE(dying, nullptr);
  const std::uint32_t slot = dying->slot_index();
  dying->abandon();
  dying.reset();

  remove_registry_hooks(kRecordingHooks);
  remove_registry_hooks(compute_registry_hooks());
  ASSERT_FALSE(registry_hooks_installed());
  auto refused = TenantMembership::join(*state_, "team-b");
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(testing::Contains(refused.error().message, "install_compute_slot_release"));
  EXPECT_EQ(reclaim_dead_processes(*state_).processes, 0u);
  EXPECT_NE(s().slots[slot].state.load(), layout::kFree) << "left whole for a sweep that can release it";

  install_compute_slot_release();
  install_compute_slot_release();  // a second install adds nothing
  EXPECT_EQ(reclaim_dead_processes(*state_).processes, 1u);
  EXPECT_EQ(s().slots[slot].state.load(), layout::kFree);
}

TEST_F(RegistryHooksTest, HooksAreListedOnceAndTheListIsBounded) {
  EXPECT_TRUE(add_registry_hooks(kRecordingHooks));  // already there
  auto member = join("team-a");
  ASSERT_NE(member, nullptr);
  const std::uint32_t slot = member->slot_index();
  member.reset();
  EXPECT_EQ(released_of(slot).size(), 1u) << "added twice, called once";

  static constinit const RegistryHooks kSpare[4]{};
  std::size_t added = 0;
  for (const auto& spare : kSpare) added += add_registry_hooks(spare) ? 1 : 0;
  EXPECT_LT(added, std::size(kSpare)) << "a full list says so";
  for (const auto& spare : kSpare) remove_registry_hooks(spare);
}

}  // namespace
}  // namespace gpushare
