// The ledger across processes: several processes on one state file, kill -9, and a process that
// dies inside a critical section. Children are forked; they report through exit codes and pipes
// and never return into the test framework.
#include "core/registry.hpp"

#include <gtest/gtest.h>

#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "core/administration.hpp"
#include "core/size.hpp"
#include "test_support.hpp"

namespace gpushare {
namespace {

using testing::Deadline;
using testing::ChildProcess;
using testing::make_uuid;
using testing::Pipe;
using testing::used_of;

// Exit codes of the children, so that a failure says where it happened.
enum ChildExit : int {
  kChildOk = 0,
  kOpenFailed = 10,
  kJoinFailed = 11,
  kAttachFailed = 12,
  kReserveFailed = 13,
  kReleaseFailed = 14,
  kOverLimit = 15,
  kHeldMismatch = 16,
  kPipeFailed = 17,
  kWrongGpu = 18,
};

// What a child of a test needs: its own mapping (its own open file description), a membership
// and the GPU attached.
struct ChildSession {
  std::unique_ptr<SharedState> state;
  std::unique_ptr<TenantMembership> member;
  std::uint32_t gpu = 0;
  int failure = kChildOk;
};

ChildSession child_session(const std::string& path, std::string_view tenant, std::uint64_t limit) {
  ChildSession session;
  auto opened = SharedState::open(path, SharedState::Mode::kExistingOnly);
  if (!opened.ok()) {
    session.failure = kOpenFailed;
    return session;
  }
  session.state = std::move(opened).value();
  auto joined = TenantMembership::join(*session.state, tenant);
  if (!joined.ok()) {
    session.failure = kJoinFailed;
    return session;
  }
  session.member = std::move(joined).value();
  auto attached = session.member->attach_gpu(make_uuid(1), 80_GiB, limit);
  if (!attached.ok()) {
    session.failure = kAttachFailed;
    return session;
  }
  session.gpu = attached.value().gpu;
  return session;
}

// In a child: child_session() on "team-a" with a 1 GiB limit, then `bytes` reserved on its GPU.
ChildSession child_holding(const std::string& path, std::uint64_t bytes) {
  ChildSession s = child_session(path, "team-a", 1_GiB);
  if (s.failure != kChildOk) return s;
  auto r = s.member->try_reserve(s.gpu, bytes);
  if (!r.ok() || r.value() != Reservation::kGranted) s.failure = kReserveFailed;
  return s;
}

[[noreturn]] void sleep_forever() {
  while (true) ::pause();
}

// Handed to the body of a held child (LedgerProcessTest::start_held_child). The body calls it
// once it holds what the test needs, from its own frame so that what it holds stays alive: it
// reports `value` to the parent, then sleeps until the parent kills the child.
class Hold {
 public:
  explicit Hold(Pipe& ready) : ready_(ready) {}
  int operator()(std::uint32_t value = 0) const {
    if (!ready_.write_value(value)) return kPipeFailed;
    sleep_forever();
  }

 private:
  Pipe& ready_;
};

// A child started by LedgerProcessTest::start_held_child, alive and holding.
struct HeldChild {
  std::optional<ChildProcess> process;
  std::uint32_t report = 0;  // the value the child passed to Hold
};

// An atomic counter in memory shared with the forked children.
class SharedCounter {
 public:
  SharedCounter() {
    void* memory = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) {
      ADD_FAILURE() << "mmap failed";
      memory = nullptr;
    }
    memory_ = memory;
    counter_ = new (memory) std::atomic<std::uint64_t>(0);
  }
  ~SharedCounter() {
    if (memory_ != nullptr) ::munmap(memory_, 4096);
  }
  SharedCounter(const SharedCounter&) = delete;
  SharedCounter& operator=(const SharedCounter&) = delete;
  std::atomic<std::uint64_t>& operator*() { return *counter_; }

 private:
  void* memory_ = nullptr;
  std::atomic<std::uint64_t>* counter_ = nullptr;
};

class LedgerProcessTest : public testing::StateTest {
 protected:
  void SetUp() override {
    StateTest::SetUp();
    if (HasFatalFailure()) return;
    auto joined = TenantMembership::join(*state_, "team-a");
    ASSERT_TRUE(joined.ok()) << joined.error().message;
    parent_ = std::move(joined).value();
  }
  void TearDown() override {
    parent_.reset();
    StateTest::TearDown();
  }
  std::uint32_t attach(std::uint64_t limit) {
    auto attached = parent_->attach_gpu(make_uuid(1), 80_GiB, limit);
    if (!attached.ok()) {
      ADD_FAILURE() << attached.error().message;
      return 0;
    }
    return attached.value().gpu;
  }
  std::uint64_t used(std::uint32_t gpu) const { return parent_->view(gpu).used_bytes; }

  // Forks a child running `body` and returns once it has called its Hold, with the child still
  // alive: a test that kills a process holding something (bytes, a slot, a mutex) starts it here.
  // A body that returns instead fails the test with the body's code as the child's exit status.
  // Call through ASSERT_NO_FATAL_FAILURE.
  void start_held_child(HeldChild& child, const std::function<int(const Hold&)>& body) {
    Pipe ready;
    child.process.emplace([&]() -> int {
      ready.close_read();
      return body(Hold(ready));
    });
    ready.close_write();
    Deadline deadline(20);
    ASSERT_TRUE(ready.read_value(child.report)) << "child exit " << child.process->wait();
  }

  // start_held_child, then kill -9 while it holds.
  void kill_held_child(const std::function<int(const Hold&)>& body) {
    HeldChild child;
    ASSERT_NO_FATAL_FAILURE(start_held_child(child, body));
    EXPECT_EQ(child.process->kill_and_wait(), 128 + SIGKILL);
  }

  // The common case: a child of "team-a" killed while it holds `bytes` of its 1 GiB.
  void kill_child_holding(std::uint64_t bytes) {
    kill_held_child([&](const Hold& hold) -> int {
      ChildSession s = child_holding(path_.str(), bytes);
      if (s.failure != kChildOk) return s.failure;
      return hold();
    });
  }

  std::unique_ptr<TenantMembership> parent_;
};

// 6. N processes allocate and free at random on one tenant's quota; the quota holds at every
// moment, each process's slot always shows exactly what it holds, and nothing is left behind.
TEST_F(LedgerProcessTest, ProcessesShareOneQuotaAndLeaveNothingBehind) {
  constexpr int kChildren = 4;
  constexpr std::uint64_t kLimit = 32_MiB + 777;
  const std::uint32_t g = attach(kLimit);
  SharedCounter in_flight;  // bytes granted and not yet released, over all children
  Pipe go;
  std::vector<ChildProcess> children;
  for (int c = 0; c < kChildren; ++c) {
    children.emplace_back(ChildProcess([&, c]() -> int {
      go.close_write();
      ChildSession s = child_session(path_.str(), "team-a", kLimit);
      if (s.failure != kChildOk) return s.failure;
      if (s.gpu != g) return kWrongGpu;
      auto& slot_held = s.state->state().slots[s.member->slot_index()].held_bytes[g];
      go.wait_eof();
      std::mt19937_64 rng(static_cast<std::uint64_t>(c) + 1);
      std::vector<std::uint64_t> held;
      std::uint64_t total_held = 0;
      std::uint64_t grants = 0;
      const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
      while (std::chrono::steady_clock::now() < end) {
        if (held.empty() || (rng() % 2 == 0 && held.size() < 8)) {
          const std::uint64_t n = 1 + rng() % 4_MiB;
          auto r = s.member->try_reserve(g, n);
          if (!r.ok()) return kReserveFailed;
          if (r.value() == Reservation::kGranted) {
            if ((*in_flight).fetch_add(n) + n > kLimit) return kOverLimit;
            held.push_back(n);
            total_held += n;
            ++grants;
          }
        } else {
          const std::size_t k = rng() % held.size();
          const std::uint64_t n = held[k];
          held[k] = held.back();
          held.pop_back();
          total_held -= n;
          (*in_flight).fetch_sub(n);
          if (!s.member->release(g, n).ok()) return kReleaseFailed;
        }
        if (slot_held.load() != total_held) return kHeldMismatch;
        if (s.member->view(g).used_bytes > kLimit) return kOverLimit;
      }
      if (grants == 0) return kReserveFailed;
      // Release half explicitly; leaving returns the rest.
      for (std::size_t k = 0; k < held.size() / 2; ++k) {
        total_held -= held[k];
        (*in_flight).fetch_sub(held[k]);
        if (!s.member->release(g, held[k]).ok()) return kReleaseFailed;
      }
      if (slot_held.load() != total_held) return kHeldMismatch;
      (*in_flight).fetch_sub(total_held);
      s.member.reset();
      return kChildOk;
    }));
  }
  go.close_write();
  // The parent watches the shared ledger while the children run.
  std::uint64_t max_seen = 0;
  const auto watch_end = std::chrono::steady_clock::now() + std::chrono::milliseconds(400);
  while (std::chrono::steady_clock::now() < watch_end) max_seen = std::max(max_seen, used(g));
  EXPECT_LE(max_seen, kLimit);
  for (auto& child : children) EXPECT_EQ(child.wait(), kChildOk);
  EXPECT_GT(max_seen, 0u);
  EXPECT_EQ(used(g), 0u);
  EXPECT_EQ((*in_flight).load(), 0u);
  // Only the parent's slot is left in use.
  for (std::uint32_t s = 0; s < layout::kMaxSlots; ++s) {
    const auto& slot = state_->state().slots[s];
    EXPECT_EQ(slot.state.load(), s == parent_->slot_index() ? layout::kInUse : layout::kFree) << "slot " << s;
    EXPECT_EQ(slot.held_bytes[g].load(), 0u) << "slot " << s;
  }
  const ReclaimReport report = reclaim_dead_processes(*state_);
  EXPECT_EQ(report.processes, 0u);
  EXPECT_EQ(report.bytes, 0u);
  auto snaps = snapshot_tenants(*state_);
  ASSERT_EQ(snaps.size(), 1u);
  ASSERT_EQ(snaps[0].gpus.size(), 1u);
  EXPECT_LE(snaps[0].gpus[0].peak_bytes, kLimit);
  EXPECT_GT(snaps[0].gpus[0].oom_refusals, 0u) << "the children never reached the quota";
}

// 6. Processes racing for the last bytes: exactly limit / chunk reservations are granted.
TEST_F(LedgerProcessTest, RacingProcessesGetExactlyTheQuota) {
  constexpr int kChildren = 4;
  constexpr std::uint64_t kLimit = 100_MiB;
  const std::uint32_t g = attach(kLimit);
  Pipe ready;    // each child writes one byte once it has joined
  Pipe go;       // closed by the parent: start
  Pipe results;  // each child writes how many 1 MiB chunks it got
  Pipe done;     // closed by the parent: everyone has reported, leave
  std::vector<ChildProcess> children;
  for (int c = 0; c < kChildren; ++c) {
    children.emplace_back(ChildProcess([&]() -> int {
      go.close_write();
      done.close_write();
      ready.close_read();
      results.close_read();
      ChildSession s = child_session(path_.str(), "team-a", kLimit);
      if (s.failure != kChildOk) return s.failure;
      if (!ready.write_value(char{1})) return kPipeFailed;
      go.wait_eof();
      std::uint32_t count = 0;
      while (true) {
        auto r = s.member->try_reserve(s.gpu, 1_MiB);
        if (!r.ok()) return kReserveFailed;
        if (r.value() != Reservation::kGranted) break;
        ++count;
      }
      if (!results.write_value(count)) return kPipeFailed;
      done.wait_eof();  // keep the chunks until every child has been refused
      return kChildOk;
    }));
  }
  ready.close_write();
  results.close_write();
  for (int c = 0; c < kChildren; ++c) {
    char byte = 0;
    ASSERT_TRUE(ready.read_value(byte)) << "a child failed before joining";
  }
  go.close_write();
  std::uint32_t sum = 0;
  for (int c = 0; c < kChildren; ++c) {
    std::uint32_t count = 0;
    ASSERT_TRUE(results.read_value(count)) << "a child failed while reserving";
    sum += count;
  }
  EXPECT_EQ(sum, 100u);
  EXPECT_EQ(used(g), kLimit);
  auto snaps = snapshot_tenants(*state_);
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0].gpus[0].oom_refusals, static_cast<std::uint64_t>(kChildren));
  EXPECT_EQ(snaps[0].processes.size(), static_cast<std::size_t>(kChildren + 1));
  done.close_write();
  for (auto& child : children) EXPECT_EQ(child.wait(), kChildOk);
  EXPECT_EQ(used(g), 0u);
}

// 7. A process killed with -9 leaves its slot; a sweep returns its bytes, exactly once. A live
// process's slot is never taken by a sweep.
TEST_F(LedgerProcessTest, KilledProcessIsReclaimedOnceAndLiveOnesAreNot) {
  const std::uint32_t g = attach(1_GiB);
  HeldChild held;
  ASSERT_NO_FATAL_FAILURE(start_held_child(held, [&](const Hold& hold) -> int {
    ChildSession s = child_holding(path_.str(), 300_MiB);
    if (s.failure != kChildOk) return s.failure;
    return hold(s.member->slot_index());
  }));
  ChildProcess& child = *held.process;
  const std::uint32_t child_slot = held.report;
  EXPECT_EQ(used(g), 300_MiB);

  // Alive: sweeps from this process, through either mapping, leave it alone.
  ReclaimReport live = reclaim_dead_processes(*state_);
  EXPECT_EQ(live.processes, 0u);
  EXPECT_EQ(live.bytes, 0u);
  auto other = open_again();
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(reclaim_dead_processes(*other).processes, 0u);
  EXPECT_EQ(used(g), 300_MiB);
  EXPECT_EQ(state_->state().slots[child_slot].state.load(), layout::kInUse);
  auto snaps = snapshot_tenants(*state_);
  ASSERT_EQ(snaps.size(), 1u);
  ASSERT_EQ(snaps[0].processes.size(), 2u);
  for (const auto& p : snaps[0].processes) {
    EXPECT_TRUE(p.alive) << "slot " << p.slot;
    if (p.slot == child_slot) {
      EXPECT_EQ(p.pid, static_cast<std::uint64_t>(child.pid()));
      EXPECT_EQ(p.held_bytes[g], 300_MiB);
    }
  }

  EXPECT_EQ(child.kill_and_wait(), 128 + SIGKILL);
  snaps = snapshot_tenants(*state_);
  ASSERT_EQ(snaps[0].processes.size(), 2u);
  for (const auto& p : snaps[0].processes) EXPECT_EQ(p.alive, p.slot != child_slot) << "slot " << p.slot;
  EXPECT_EQ(used(g), 300_MiB);  // nothing happens until someone sweeps

  const ReclaimReport first = reclaim_dead_processes(*state_);
  EXPECT_EQ(first.processes, 1u);
  EXPECT_EQ(first.bytes, 300_MiB);
  EXPECT_EQ(used(g), 0u);
  EXPECT_EQ(state_->state().slots[child_slot].state.load(), layout::kFree);
  EXPECT_EQ(state_->state().slots[child_slot].held_bytes[g].load(), 0u);

  const ReclaimReport second = reclaim_dead_processes(*state_);
  EXPECT_EQ(second.processes, 0u);
  EXPECT_EQ(second.bytes, 0u);
  EXPECT_EQ(state_->state().slots[parent_->slot_index()].state.load(), layout::kInUse);
}

// Quota held by a killed process never causes a refusal: try_reserve sweeps before refusing.
TEST_F(LedgerProcessTest, ReserveSweepsDeadProcessesBeforeRefusing) {
  const std::uint32_t g = attach(1_GiB);
  ASSERT_NO_FATAL_FAILURE(kill_child_holding(900_MiB));
  auto r = parent_->try_reserve(g, 500_MiB);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r.value(), Reservation::kGranted);
  EXPECT_EQ(used(g), 500_MiB);
  auto snaps = snapshot_tenants(*state_);
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0].gpus[0].oom_refusals, 0u);
  EXPECT_EQ(snaps[0].processes.size(), 1u);
}

// A killed process's slot is also reclaimed by the next join, of any tenant.
TEST_F(LedgerProcessTest, JoinReclaimsDeadProcesses) {
  const std::uint32_t g = attach(1_GiB);
  ASSERT_NO_FATAL_FAILURE(kill_child_holding(64_MiB));
  EXPECT_EQ(used(g), 64_MiB);
  auto other = TenantMembership::join(*state_, "team-b");
  ASSERT_TRUE(other.ok()) << other.error().message;
  EXPECT_EQ(used(g), 0u);
  EXPECT_EQ(reclaim_dead_processes(*state_).processes, 0u);
}

// 7. A process killed while holding a GPU's ledger mutex, with the two sides of the invariant
// disagreeing: the next locker inherits the mutex (EOWNERDEAD) and rebuilds used_bytes from the
// slots, exactly.
struct HalfDoneUpdate {
  std::uint64_t reserved;       // done properly before taking the mutex
  std::int64_t held_delta;      // applied to the dying process's slot under the mutex
  std::int64_t used_delta;      // applied to the tenant's used_bytes under the mutex
};

void PrintTo(const HalfDoneUpdate& u, std::ostream* out) {
  *out << "{reserved " << u.reserved << ", held " << u.held_delta << ", used " << u.used_delta << "}";
}

std::string half_done_name(const ::testing::TestParamInfo<HalfDoneUpdate>& param) {
  const HalfDoneUpdate& u = param.param;
  if (u.held_delta > 0) return "HeldBumpedNotUsed";
  if (u.used_delta > 0) return "UsedBumpedNotHeld";
  if (u.held_delta < 0) return "HalfReleased";
  return "Consistent";
}

class LedgerOwnerDiedTest : public LedgerProcessTest, public ::testing::WithParamInterface<HalfDoneUpdate> {};

TEST_P(LedgerOwnerDiedTest, NextReserveDoesNotBlockAndRebuildsFromTheSlots) {
  const HalfDoneUpdate update = GetParam();
  const std::uint32_t g = attach(1_GiB);
  ASSERT_NO_FATAL_FAILURE(kill_held_child([&](const Hold& hold) -> int {
    ChildSession s = child_holding(path_.str(), update.reserved);
    if (s.failure != kChildOk) return s.failure;
    auto& state = s.state->state();
    auto acquired = shared_mutex::lock(&state.gpus[s.gpu].ledger_mutex);
    if (!acquired.ok()) return kReserveFailed;
    auto& held = state.slots[s.member->slot_index()].held_bytes[s.gpu];
    auto& used = state.tenants[s.member->tenant_index()].ledger[s.gpu].used_bytes;
    held.store(held.load() + static_cast<std::uint64_t>(update.held_delta));
    used.store(used.load() + static_cast<std::uint64_t>(update.used_delta));
    return hold();  // dies holding the mutex
  }));
  const std::uint64_t child_held = update.reserved + static_cast<std::uint64_t>(update.held_delta);
  {
    Deadline deadline(10);  // blocking here would end the test binary with SIGALRM
    auto r = parent_->try_reserve(g, 10_MiB);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r.value(), Reservation::kGranted);
  }
  // Rebuilt from the slots: the dead child's held bytes plus our 10 MiB, whatever used_bytes said.
  EXPECT_EQ(used(g), child_held + 10_MiB);
  // The mutex is consistent again: it keeps working, cleanly.
  auto relock = shared_mutex::lock(&state_->state().gpus[g].ledger_mutex);
  ASSERT_TRUE(relock.ok()) << relock.error().message;
  EXPECT_EQ(relock.value(), shared_mutex::Acquired::kClean);
  shared_mutex::unlock(&state_->state().gpus[g].ledger_mutex);
  ASSERT_TRUE(parent_->release(g, 10_MiB).ok());
  EXPECT_EQ(used(g), child_held);

  const ReclaimReport report = reclaim_dead_processes(*state_);
  EXPECT_EQ(report.processes, 1u);
  EXPECT_EQ(report.bytes, child_held);
  EXPECT_EQ(used(g), 0u);
}

INSTANTIATE_TEST_SUITE_P(HalfDoneUpdates, LedgerOwnerDiedTest,
                         ::testing::Values(HalfDoneUpdate{100_MiB, 50 << 20, 0},    // held bumped, not used
                                           HalfDoneUpdate{100_MiB, 0, 70 << 20},    // used bumped, not held
                                           HalfDoneUpdate{100_MiB, -(40 << 20), 0},  // half a release
                                           HalfDoneUpdate{100_MiB, 0, 0}),          // consistent
                         half_done_name);

// A process killed while holding the registry mutex, having claimed a tenant record without
// naming it yet: the next join neither blocks nor keeps the half-made record.
TEST_F(LedgerProcessTest, KilledWhileHoldingTheRegistryMutex) {
  constexpr std::uint32_t kHalfMade = 77;
  ASSERT_EQ(state_->state().tenants[kHalfMade].state.load(), layout::kFree);
  ASSERT_NO_FATAL_FAILURE(kill_held_child([&](const Hold& hold) -> int {
    auto opened = SharedState::open(path_.str(), SharedState::Mode::kExistingOnly);
    if (!opened.ok()) return kOpenFailed;
    auto& state = opened.value()->state();
    auto acquired = shared_mutex::lock(&state.registry_mutex);
    if (!acquired.ok()) return kJoinFailed;
    auto& tenant = state.tenants[kHalfMade];
    tenant.state.store(layout::kInUse);
    std::memset(tenant.name, 'x', sizeof tenant.name);  // no terminating NUL yet
    return hold();
  }));
  {
    Deadline deadline(10);
    auto joined = TenantMembership::join(*state_, "team-b");
    ASSERT_TRUE(joined.ok()) << joined.error().message;
    EXPECT_NE(joined.value()->tenant_index(), kHalfMade);
    EXPECT_TRUE(set_tenant_memory_limit(*state_, "team-b", 1_GiB).ok());
  }
  EXPECT_EQ(state_->state().tenants[kHalfMade].state.load(), layout::kFree);
  for (const auto& snap : snapshot_tenants(*state_)) EXPECT_TRUE(snap.name == "team-a" || snap.name == "team-b");
}

// A process killed in the middle of reclaiming a dead slot: it held the slot's liveness lock, had
// marked it kReclaiming and, under the GPU's ledger mutex, had taken the slot's bytes without yet
// taking them off the tenant's total. While it lives nobody else touches the slot; once it is
// gone the slot is freed by the next sweep and the next locker of the GPU's mutex rebuilds the
// tenant's total exactly.
TEST_F(LedgerProcessTest, ReclaimerKilledHalfWay) {
  const std::uint32_t g = attach(1_GiB);
  ASSERT_EQ(parent_->try_reserve(g, 1_MiB).value(), Reservation::kGranted);
  std::uint32_t dead_slot = 0;
  {
    auto dead = TenantMembership::join(*state_, "team-a");
    ASSERT_TRUE(dead.ok());
    ASSERT_EQ(dead.value()->try_reserve(g, 200_MiB).value(), Reservation::kGranted);
    dead_slot = dead.value()->slot_index();
    dead.value()->abandon();  // as if killed: slot in use, bytes charged, no liveness lock
  }
  EXPECT_EQ(used(g), 201_MiB);
  HeldChild held;
  ASSERT_NO_FATAL_FAILURE(start_held_child(held, [&](const Hold& hold) -> int {
    auto opened = SharedState::open(path_.str(), SharedState::Mode::kExistingOnly);
    if (!opened.ok()) return kOpenFailed;
    SharedState& shared = *opened.value();
    auto& state = shared.state();
    std::lock_guard probing(shared.probe_mutex());
    if (!shared.try_lock_slot(dead_slot)) return kPipeFailed;
    auto& slot = state.slots[dead_slot];
    slot.state.store(layout::kReclaiming);
    if (!shared_mutex::lock(&state.gpus[g].ledger_mutex).ok()) return kReserveFailed;
    slot.held_bytes[g].exchange(0);  // ...and dies before lowering used_bytes
    return hold();
  }));
  ChildProcess& reclaimer = *held.process;
  // The reclaimer is alive and holds the slot: sweeps leave it alone.
  EXPECT_EQ(reclaim_dead_processes(*state_).processes, 0u);
  EXPECT_EQ(state_->state().slots[dead_slot].state.load(), layout::kReclaiming);
  EXPECT_EQ(reclaimer.kill_and_wait(), 128 + SIGKILL);
  {
    Deadline deadline(10);
    const ReclaimReport report = reclaim_dead_processes(*state_);
    EXPECT_EQ(report.processes, 1u);
    EXPECT_EQ(report.bytes, 0u);  // the dead reclaimer had already taken them off the slot
    EXPECT_EQ(state_->state().slots[dead_slot].state.load(), layout::kFree);
    auto r = parent_->try_reserve(g, 10_MiB);  // inherits the ledger mutex and rebuilds
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r.value(), Reservation::kGranted);
  }
  EXPECT_EQ(used(g), 11_MiB);
}

// A forked child that abandons its copy of the parent's membership leaves the parent's slot and
// bytes alone, and the parent stays alive to the sweeps after the child is gone.
TEST_F(LedgerProcessTest, ForkedChildAbandoningTheParentsMembershipLeavesItIntact) {
  const std::uint32_t g = attach(1_GiB);
  ASSERT_EQ(parent_->try_reserve(g, 5_MiB).value(), Reservation::kGranted);
  TenantMembership* inherited = parent_.get();
  ChildProcess child([&]() -> int {
    inherited->abandon();
    delete inherited;  // the child's copy: closes only the child's descriptor
    return kChildOk;
  });
  EXPECT_EQ(child.wait(), kChildOk);
  EXPECT_EQ(used(g), 5_MiB);
  EXPECT_EQ(reclaim_dead_processes(*state_).processes, 0u);
  EXPECT_EQ(state_->state().slots[parent_->slot_index()].state.load(), layout::kInUse);
  EXPECT_EQ(used(g), 5_MiB);
}

}  // namespace
}  // namespace gpushare
