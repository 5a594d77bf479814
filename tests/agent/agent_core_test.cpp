// The node agent's parts in one process, without sockets or other users: the tenants' sessions
// (slots, private pages, memory leases), the agent's slice arbiter with the tenants' brokered
// gates, and a restarted agent's recovery. Peers are made by hand; each "tenant process" is what
// the agent sees of it (a connection id and credentials) plus what it writes into its page.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "core/compute_gate.hpp"
#include "core/registry.hpp"
#include "core/size.hpp"
#include "protocol.hpp"
#include "recovery.hpp"
#include "slice_service.hpp"
#include "tenant_sessions.hpp"
#include "test_support.hpp"

namespace gpushare::agent {
namespace {

using namespace std::chrono_literals;
constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint32_t kGpu = 0;

// Polls `done` until it holds or `limit` passes: waits for an event, never for a fixed time.
bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// A tenant's private page as the process sees it: the passed descriptor mapped again.
class PageMapping {
 public:
  explicit PageMapping(int fd)
      : base_(::mmap(nullptr, layout::kSlotPageBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) {}
  ~PageMapping() {
    if (base_ != MAP_FAILED) ::munmap(base_, layout::kSlotPageBytes);
  }
  PageMapping(const PageMapping&) = delete;
  PageMapping& operator=(const PageMapping&) = delete;
  bool ok() const { return base_ != MAP_FAILED; }
  // The field of the owner's page that `agent_view` is in the agent's mapping of `slot`.
  template <typename T>
  T& same_as(layout::ProcessSlot& slot, T& agent_view) {
    const auto offset = reinterpret_cast<char*>(&agent_view) - reinterpret_cast<char*>(&slot.compute);
    return *reinterpret_cast<T*>(static_cast<char*>(base_) + offset);
  }

 private:
  void* base_;
};

class TenantSessionsTest : public testing::StateTest {
 protected:
  static constexpr std::uint64_t kQuota = 1024 * kMiB;
  static constexpr std::uint64_t kChunk = lease_chunk_bytes(kQuota);

  void SetUp() override {
    StateTest::SetUp();
    if (HasFatalFailure()) return;
    sessions_ = std::make_unique<TenantSessions>(*state_);
  }
  void TearDown() override {
    sessions_.reset();
    StateTest::TearDown();
  }
  layout::StateLayout& s() { return state_->state(); }

  SocketPeer connect(std::uint64_t connection_id, const std::string& tenant, std::uint64_t quota = kQuota) {
    SocketPeer peer{PeerCredentials{static_cast<std::int32_t>(1000 + connection_id), 4242, 4242}, {4242},
                    connection_id};
    TenantLimits limits;
    limits.memory_bytes = quota;
    sessions_->assigned(peer, Assignment{tenant, limits, "test"});
    return peer;
  }
  // Every request leaves the slot's lease sequence even: no move is left half done.
  Result<std::vector<Outgoing>> call(const SocketPeer& peer, const Message& request) {
    std::vector<int> passed;
    auto answer = sessions_->handle(peer, request, passed);
    if (const auto slot = sessions_->slot_of(peer.connection_id)) {
      EXPECT_EQ(s().slots[*slot].lease_seq.load() % 2, 0u) << "lease_seq odd after a request";
    }
    return answer;
  }
  // Join and attach GPU record 0; returns the slot and the page's descriptor (the agent's own).
  std::pair<std::uint32_t, int> join_and_attach(const SocketPeer& peer) {
    auto joined = call(peer, Join{});
    EXPECT_TRUE(joined.ok()) << joined.error().message;
    if (!joined.ok() || joined->size() != 1) return {layout::kMaxSlots, -1};
    const auto& reply = std::get<Joined>(joined->front().message);
    AttachGpu attach;
    attach.uuid = testing::make_uuid(1);
    attach.physical_bytes = 80 * 1024 * kMiB;
    attach.wanted_limit_bytes = kUnlimited;
    attach.name = "Fake GPU";
    auto attached = call(peer, attach);
    EXPECT_TRUE(attached.ok()) << attached.error().message;
    if (attached.ok()) {
      EXPECT_EQ(std::get<GpuAttached>(attached->front().message).gpu, kGpu);
    }
    return {reply.slot, joined->front().fds.at(0)};
  }
  bool lease(const SocketPeer& peer, std::uint64_t bytes) {
    auto answer = call(peer, Lease{kGpu, bytes});
    EXPECT_TRUE(answer.ok()) << answer.error().message;
    return answer.ok() && std::get<LeaseReply>(answer->front().message).granted;
  }
  std::uint64_t used(std::uint32_t slot) {
    return s().tenants[s().slots[slot].tenant_index.load()].ledger[kGpu].used_bytes.load();
  }
  std::uint64_t held(std::uint32_t slot) { return s().slots[slot].held_bytes[kGpu].load(); }
  std::int64_t lease_left(std::uint32_t slot) { return s().slots[slot].lease_left_bytes[kGpu].load(); }

  std::unique_ptr<TenantSessions> sessions_;
};

TEST_F(TenantSessionsTest, JoinedPassesASealedOnePageMemfdAndTheStateReadOnly) {
  const SocketPeer peer = connect(1, "alpha");
  std::vector<int> passed;
  auto joined = sessions_->handle(peer, Join{}, passed);
  ASSERT_TRUE(joined.ok()) << joined.error().message;
  ASSERT_EQ(joined->size(), 1u);
  const auto& reply = std::get<Joined>(joined->front().message);
  EXPECT_EQ(reply.tenant, "alpha");
  ASSERT_LT(reply.slot, layout::kMaxSlots);
  ASSERT_EQ(joined->front().fds.size(), 2u);
  const int page = joined->front().fds[0], state_fd = joined->front().fds[1];

  struct stat info {};
  ASSERT_EQ(::fstat(page, &info), 0);
  EXPECT_EQ(info.st_size, static_cast<off_t>(layout::kSlotPageBytes));
  const int seals = ::fcntl(page, F_GET_SEALS);
  ASSERT_GE(seals, 0);
  EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW), F_SEAL_SHRINK | F_SEAL_GROW);
  EXPECT_NE(::ftruncate(page, 2 * layout::kSlotPageBytes), 0) << "the page cannot grow";

  EXPECT_EQ(::fcntl(state_fd, F_GETFL) & O_ACCMODE, O_RDONLY);
  struct stat state_info {}, file_info {};
  ASSERT_EQ(::fstat(state_fd, &state_info), 0);
  ASSERT_EQ(::stat(path_.str().c_str(), &file_info), 0);
  EXPECT_EQ(state_info.st_ino, file_info.st_ino) << "the descriptor is of the state file";

  // The slot's owner page in the agent's view is the memfd, both ways.
  layout::ProcessSlot& slot = s().slots[reply.slot];
  PageMapping mapping(page);
  ASSERT_TRUE(mapping.ok());
  mapping.same_as(slot, slot.compute[kGpu].waiting_since_ns).store(12345);
  EXPECT_EQ(slot.compute[kGpu].waiting_since_ns.load(), 12345u);
  slot.lease_left_bytes[3].store(777);
  EXPECT_EQ(mapping.same_as(slot, slot.lease_left_bytes[3]).load(), 777);

  // Leaving puts the file's own page back: what the process wrote there is gone with it.
  sessions_->disconnected(peer.connection_id);
  EXPECT_EQ(slot.compute[kGpu].waiting_since_ns.load(), 0u);
  EXPECT_NE(slot.state.load(), layout::kInUse);
  EXPECT_FALSE(sessions_->slot_live(reply.slot));
  EXPECT_EQ(sessions_->session_count(), 0u);
}

TEST_F(TenantSessionsTest, RequestsNeedATenantAJoinAndAnAttachedGpu) {
  const SocketPeer stranger{PeerCredentials{1, 2, 3}, {}, 99};
  EXPECT_FALSE(call(stranger, Join{}).ok()) << "no tenant was assigned";
  const SocketPeer peer = connect(1, "alpha");
  EXPECT_FALSE(call(peer, Lease{kGpu, kMiB}).ok()) << "Join first";
  ASSERT_TRUE(call(peer, Join{}).ok());
  EXPECT_FALSE(call(peer, Join{}).ok()) << "joined already";
  EXPECT_FALSE(call(peer, Lease{kGpu, kMiB}).ok()) << "GPU not attached";
  EXPECT_FALSE(call(peer, Lease{layout::kMaxGpus + 5, kMiB}).ok()) << "GPU out of range";
}

TEST_F(TenantSessionsTest, ALeaseChargesTheBytesAndAChunkBesideThem) {
  const SocketPeer peer = connect(1, "alpha");
  const auto [slot, page] = join_and_attach(peer);
  ASSERT_LT(slot, layout::kMaxSlots);
  ASSERT_TRUE(lease(peer, 100 * kMiB));
  EXPECT_EQ(used(slot), 100 * kMiB + kChunk);
  EXPECT_EQ(held(slot), 100 * kMiB + kChunk);
  EXPECT_EQ(lease_left(slot), static_cast<std::int64_t>(kChunk));
  // The next lease first takes back the unspent one: the ledger charges it once.
  ASSERT_TRUE(lease(peer, 50 * kMiB));
  EXPECT_EQ(held(slot), 150 * kMiB + kChunk);
  EXPECT_EQ(used(slot), held(slot));
  EXPECT_EQ(lease_left(slot), static_cast<std::int64_t>(kChunk));
}

TEST_F(TenantSessionsTest, NearTheQuotaTheBytesAloneAreGranted) {
  const SocketPeer peer = connect(1, "alpha");
  const auto [slot, page] = join_and_attach(peer);
  ASSERT_TRUE(lease(peer, kQuota - kChunk / 2));
  EXPECT_EQ(used(slot), kQuota - kChunk / 2);
  EXPECT_EQ(lease_left(slot), 0);
  EXPECT_FALSE(lease(peer, kChunk)) << "over the quota";
  EXPECT_EQ(used(slot), kQuota - kChunk / 2) << "a refusal charges nothing";
}

// Two processes of one tenant: the second asks for exactly what the first left. The first's
// unspent lease goes back before anyone is refused, and the refusal counted on the way is withdrawn.
TEST_F(TenantSessionsTest, OtherSessionsLeasesAreTakenBackBeforeARefusal) {
  const SocketPeer first = connect(1, "alpha"), second = connect(2, "alpha");
  const auto [first_slot, first_page] = join_and_attach(first);
  const auto [second_slot, second_page] = join_and_attach(second);
  ASSERT_TRUE(lease(first, 100 * kMiB));
  ASSERT_EQ(held(first_slot), 100 * kMiB + kChunk);
  ASSERT_TRUE(lease(second, kQuota - 100 * kMiB));
  EXPECT_EQ(held(first_slot), 100 * kMiB) << "its unspent lease was taken back";
  EXPECT_EQ(lease_left(first_slot), 0);
  EXPECT_EQ(held(second_slot), kQuota - 100 * kMiB);
  EXPECT_EQ(used(first_slot), kQuota);
  const auto tenant = s().slots[first_slot].tenant_index.load();
  EXPECT_EQ(s().tenants[tenant].ledger[kGpu].oom_refusals.load(), 0u) << "nobody was refused";

  EXPECT_FALSE(lease(second, 1)) << "the quota is spent";
  EXPECT_EQ(s().tenants[tenant].ledger[kGpu].oom_refusals.load(), 1u);
  EXPECT_EQ(used(first_slot), kQuota);
}

// Another tenant's unspent lease is not this tenant's to take.
TEST_F(TenantSessionsTest, AnotherTenantsLeaseStaysWhereItIs) {
  const SocketPeer alpha = connect(1, "alpha"), beta = connect(2, "beta");
  const std::uint32_t alpha_slot = join_and_attach(alpha).first;
  const std::uint32_t beta_slot = join_and_attach(beta).first;
  ASSERT_TRUE(lease(beta, kMiB));
  ASSERT_TRUE(lease(alpha, kQuota));
  EXPECT_EQ(held(alpha_slot), kQuota);
  EXPECT_FALSE(lease(alpha, 1));
  EXPECT_EQ(lease_left(beta_slot), static_cast<std::int64_t>(kChunk));
  EXPECT_EQ(held(beta_slot), kMiB + kChunk);
}

// The process writes its lease; the agent clamps what it takes back to what the slot holds.
TEST_F(TenantSessionsTest, AHostileLeaseIsClampedOnTakeBack) {
  const SocketPeer peer = connect(1, "alpha");
  const auto [slot, page] = join_and_attach(peer);
  PageMapping mapping(page);
  ASSERT_TRUE(mapping.ok());
  auto& written = mapping.same_as(s().slots[slot], s().slots[slot].lease_left_bytes[kGpu]);
  ASSERT_TRUE(lease(peer, 100 * kMiB));

  written.store(-5 * static_cast<std::int64_t>(kMiB));
  ASSERT_TRUE(call(peer, LeaseTrim{kGpu}).ok());
  EXPECT_EQ(held(slot), 100 * kMiB + kChunk) << "a negative lease gives nothing back";
  EXPECT_EQ(used(slot), held(slot));

  written.store(INT64_MIN);
  ASSERT_TRUE(lease(peer, kMiB));
  EXPECT_EQ(held(slot), 101 * kMiB + 2 * kChunk) << "the lease it claims to have overspent stays charged";
  EXPECT_EQ(used(slot), held(slot));

  // More than the slot holds: all it holds goes back, never more.
  written.store(static_cast<std::int64_t>(10 * kQuota));
  ASSERT_TRUE(lease(peer, 10 * kMiB));
  EXPECT_EQ(held(slot), 10 * kMiB + kChunk);
  EXPECT_EQ(used(slot), held(slot));
  written.store(INT64_MAX);
  ASSERT_TRUE(call(peer, LeaseTrim{kGpu}).ok());
  EXPECT_EQ(held(slot), kChunk) << "a chunk is kept";
  EXPECT_EQ(used(slot), held(slot));
  EXPECT_EQ(lease_left(slot), static_cast<std::int64_t>(kChunk));
}

TEST_F(TenantSessionsTest, TrimKeepsOneChunk) {
  const SocketPeer peer = connect(1, "alpha");
  const auto [slot, page] = join_and_attach(peer);
  ASSERT_TRUE(lease(peer, 100 * kMiB));
  // The process freed 60 MiB of its allocations: they are unspent lease again.
  s().slots[slot].lease_left_bytes[kGpu].fetch_add(static_cast<std::int64_t>(60 * kMiB));
  auto trimmed = call(peer, LeaseTrim{kGpu});
  ASSERT_TRUE(trimmed.ok());
  EXPECT_TRUE(trimmed->empty()) << "LeaseTrim has no answer";
  EXPECT_EQ(lease_left(slot), static_cast<std::int64_t>(kChunk));
  EXPECT_EQ(held(slot), 40 * kMiB + kChunk);
  EXPECT_EQ(used(slot), held(slot));
}

TEST_F(TenantSessionsTest, ADisconnectReturnsEveryByteAndTheSlot) {
  const SocketPeer first = connect(1, "alpha"), second = connect(2, "alpha");
  const auto [first_slot, first_page] = join_and_attach(first);
  const auto [second_slot, second_page] = join_and_attach(second);
  ASSERT_TRUE(lease(first, 100 * kMiB));
  ASSERT_TRUE(lease(second, 30 * kMiB));
  ASSERT_EQ(sessions_->slot_of(first.connection_id), first_slot);
  sessions_->disconnected(first.connection_id);
  EXPECT_EQ(used(second_slot), 30 * kMiB + kChunk) << "the first's bytes, lease and all, went back at once";
  EXPECT_EQ(s().slots[first_slot].held_bytes[kGpu].load(), 0u);
  EXPECT_NE(s().slots[first_slot].state.load(), layout::kInUse);
  EXPECT_FALSE(sessions_->slot_live(first_slot));
  EXPECT_TRUE(sessions_->slot_live(second_slot));
  EXPECT_FALSE(sessions_->slot_of(first.connection_id).has_value());
  EXPECT_EQ(sessions_->session_count(), 1u);
  EXPECT_EQ(s().slots[first_slot].lease_seq.load() % 2, 0u);
}

// --- Time slices: the agent's arbiter and the tenants' brokered gates in one process ---

// A tenant's messages to the agent as direct calls. The agent serves one message at a time (its one
// loop): `agent_loop` serializes them; a test holds it to keep the agent from deciding meanwhile.
class DirectBroker : public SliceBroker {
 public:
  DirectBroker(SliceService& service, std::recursive_mutex& agent_loop, std::uint32_t slot)
      : service_(service), agent_loop_(agent_loop), slot_(slot) {}
  void wanted(std::uint32_t gpu) override {
    if (!usable()) return;
    const std::lock_guard lock(agent_loop_);
    ++wanted_;
    service_.wanted(slot_, gpu);
  }
  void done(std::uint32_t gpu, std::uint32_t slice_seen, std::uint64_t drained_at_ns) override {
    if (!usable()) return;
    const std::lock_guard lock(agent_loop_);
    ++done_;
    service_.done(slot_, gpu, slice_seen, drained_at_ns);
  }
  void renew(std::uint32_t gpu) override {
    if (!usable()) return;
    const std::lock_guard lock(agent_loop_);
    ++renewals_;
    service_.renew(slot_, gpu);
  }
  bool usable() const override { return usable_.load(); }

  std::atomic<bool> usable_{true};
  std::atomic<int> wanted_{0}, done_{0}, renewals_{0};

 private:
  SliceService& service_;
  std::recursive_mutex& agent_loop_;
  std::uint32_t slot_;
};

class SliceServiceTest : public testing::StateTest {
 protected:
  void SetUp() override {
    StateTest::SetUp();
    if (HasFatalFailure()) return;
    // Holders are never idle and handovers never late here: every change of holder is one the test
    // makes happen.
    timing_.idle_after = 60s;
    timing_.handover_grace = 60s;
    timing_.short_handover_grace = 60s;
    service_ = std::make_unique<SliceService>(
        *state_, [](std::uint32_t) { return true; }, timing_);
    a_ = add("a");
    b_ = add("b");
  }
  void TearDown() override {
    gates_.clear();
    brokers_.clear();
    service_.reset();
    members_.clear();
    StateTest::TearDown();
  }
  std::uint32_t add(const std::string& tenant) {
    auto joined = TenantMembership::join(*state_, tenant);
    EXPECT_TRUE(joined.ok());
    ComputePolicyValues policy;
    policy.share_pct = 50;
    EXPECT_TRUE(joined.value()->adopt_compute_policy(policy).ok());
    members_.push_back(std::move(joined).value());
    return members_.back()->slot_index();
  }
  ComputeGate& gate_of(std::uint32_t slot, SliceService& service) {
    brokers_.push_back(std::make_unique<DirectBroker>(service, agent_loop_, slot));
    gates_.push_back(std::make_unique<ComputeGate>(*state_, slot, timing_, brokers_.back().get()));
    return *gates_.back();
  }
  ComputeGate& gate_of(std::uint32_t slot) { return gate_of(slot, *service_); }
  DirectBroker& broker_of(const ComputeGate& gate) {
    for (std::size_t i = 0; i < gates_.size(); ++i) {
      if (gates_[i].get() == &gate) return *brokers_[i];
    }
    ADD_FAILURE() << "no such gate";
    return *brokers_.front();
  }
  layout::GpuSchedule& schedule() { return state_->state().schedules[kGpu]; }
  std::uint32_t holder_word() { return schedule().holder_word.load(); }
  bool waits(std::uint32_t slot) { return state_->state().slots[slot].compute[kGpu].waiting_since_ns.load() != 0; }
  // The slice in force is over (the gates and the agent read the real clock).
  void end_the_slice_now() { schedule().slice_end_ns.store(1); }

  ArbiterTiming timing_;
  std::recursive_mutex agent_loop_;
  std::unique_ptr<SliceService> service_;
  std::vector<std::unique_ptr<TenantMembership>> members_;
  std::vector<std::unique_ptr<DirectBroker>> brokers_;
  std::vector<std::unique_ptr<ComputeGate>> gates_;
  std::uint32_t a_ = 0, b_ = 0;
};

TEST_F(SliceServiceTest, AWaiterIsGrantedAFreeGpu) {
  const testing::Deadline deadline(20);
  ComputeGate& gate = gate_of(a_);
  ASSERT_TRUE(gate.acquire(kGpu, nullptr).ok());
  EXPECT_TRUE(gate.holds(kGpu));
  EXPECT_EQ(holder_word(), layout::holder_token(a_));
  EXPECT_FALSE(waits(a_)) << "the grant was taken up";
  EXPECT_GE(broker_of(gate).wanted_.load(), 1);
}

// The holder's slice is over and another waits: its checkpoint asks for renewal, the agent asks it
// to hand over instead; its next acquire drains and hands over, and the waiter is granted.
TEST_F(SliceServiceTest, AnOverSliceIsHandedOverToTheWaiter) {
  const testing::Deadline deadline(30);
  ComputeGate& gate_a = gate_of(a_);
  ComputeGate& gate_b = gate_of(b_);
  ASSERT_TRUE(gate_a.acquire(kGpu, nullptr).ok());
  // A long slice, so that the waiter's own messages do not end it before the test does.
  schedule().slice_end_ns.store(UINT64_MAX);

  std::atomic<bool> b_granted{false};
  Status b_status = Ok{};
  std::thread waiter([&] {
    b_status = gate_b.acquire(kGpu, nullptr);
    b_granted = true;
  });
  ASSERT_TRUE(wait_for([&] { return waits(b_) && broker_of(gate_b).wanted_.load() >= 1; }));
  EXPECT_TRUE(gate_a.holds(kGpu)) << "a busy holder keeps its slice while it lasts";
  EXPECT_FALSE(b_granted.load());

  std::atomic<int> drains{0};
  const auto drain = [&](std::uint32_t gpu) {
    EXPECT_EQ(gpu, kGpu);
    ++drains;
  };
  {
    const std::lock_guard agent(agent_loop_);  // the agent decides nothing but the renewal now
    ASSERT_EQ(holder_word(), layout::holder_token(a_)) << "nothing asked A to hand over yet";
    end_the_slice_now();
    ASSERT_TRUE(gate_a.checkpoint(kGpu, drain).ok());
  }
  EXPECT_EQ(broker_of(gate_a).renewals_.load(), 1);
  EXPECT_EQ(holder_word(), layout::holder_token(a_) | layout::kHandoverBit) << "asked to hand over";
  EXPECT_FALSE(gate_a.holds(kGpu));
  EXPECT_EQ(drains.load(), 0);

  // A's next launch: it drains, says done, and waits for its next turn, which B's slice ends.
  std::atomic<bool> a_again{false};
  Status a_status = Ok{};
  std::thread holder([&] {
    a_status = gate_a.acquire(kGpu, drain);
    a_again = true;
  });
  ASSERT_TRUE(wait_for([&] { return b_granted.load(); }));
  waiter.join();
  EXPECT_TRUE(b_status.ok());
  EXPECT_EQ(drains.load(), 1);
  EXPECT_GE(broker_of(gate_a).done_.load(), 1);
  schedule().slice_end_ns.store(UINT64_MAX);
  EXPECT_TRUE(gate_b.holds(kGpu));
  EXPECT_FALSE(a_again.load());

  // B's slice ends with A waiting: B hands over at once and A is granted.
  ASSERT_TRUE(wait_for([&] { return waits(a_); }));
  {
    const std::lock_guard agent(agent_loop_);
    ASSERT_EQ(holder_word(), layout::holder_token(b_)) << "nothing asked B to hand over yet";
    end_the_slice_now();
    ASSERT_TRUE(gate_b.checkpoint(kGpu, nullptr).ok());
  }
  EXPECT_EQ(holder_word(), layout::holder_token(b_) | layout::kHandoverBit);
  ASSERT_TRUE(gate_b.release_if_wanted(kGpu, nullptr).ok());
  ASSERT_TRUE(wait_for([&] { return a_again.load(); }));
  holder.join();
  EXPECT_TRUE(a_status.ok());
  EXPECT_TRUE(gate_a.holds(kGpu));
}

// Nobody waits: the over slice rolls over to the same holder, a new grant, no drain.
TEST_F(SliceServiceTest, ARenewalWithNobodyWaitingRollsTheSliceOver) {
  const testing::Deadline deadline(20);
  ComputeGate& gate = gate_of(a_);
  ASSERT_TRUE(gate.acquire(kGpu, nullptr).ok());
  const std::uint32_t before = schedule().grant_seq.load();
  end_the_slice_now();
  int drains = 0;
  ASSERT_TRUE(gate.checkpoint(kGpu, [&](std::uint32_t) { ++drains; }).ok());
  EXPECT_EQ(broker_of(gate).renewals_.load(), 1);
  EXPECT_EQ(holder_word(), layout::holder_token(a_));
  EXPECT_NE(schedule().grant_seq.load(), before) << "a new slice";
  EXPECT_GT(schedule().slice_end_ns.load(), monotonic_now_ns());
  EXPECT_EQ(drains, 0);
  // Once per slice: a second checkpoint within the new slice asks nothing.
  ASSERT_TRUE(gate.checkpoint(kGpu, nullptr).ok());
  EXPECT_EQ(broker_of(gate).renewals_.load(), 1);
}

// A grant made to a process whose thread never comes for it (stopped, starved) is withdrawn once
// the idle threshold passes: the GPU goes to the next waiter instead of staying with it.
TEST_F(SliceServiceTest, AnUntakenGrantDoesNotWedgeTheGpu) {
  const testing::Deadline deadline(30);
  ArbiterTiming quick;  // the default idle threshold: withdrawals happen
  SliceService service(*state_, [](std::uint32_t) { return true; }, quick);
  // B marks itself waiting and says so, then never runs again.
  state_->state().slots[b_].compute[kGpu].waiting_since_ns.store(monotonic_now_ns());
  {
    const std::lock_guard agent(agent_loop_);
    service.wanted(b_, kGpu);
  }
  ASSERT_EQ(holder_word(), layout::holder_token(b_)) << "granted on its mark";

  ComputeGate& gate_a = gate_of(a_, service);
  std::atomic<bool> a_granted{false};
  Status a_status = Ok{};
  std::thread waiter([&] {
    a_status = gate_a.acquire(kGpu, nullptr);
    a_granted = true;
  });
  // The agent's loop looks again when the arbiter asked it to.
  ASSERT_TRUE(wait_for([&] {
    const std::lock_guard agent(agent_loop_);
    (void)service.tick();
    return a_granted.load();
  }));
  waiter.join();
  EXPECT_TRUE(a_status.ok());
  EXPECT_TRUE(gate_a.holds(kGpu));
  EXPECT_FALSE(waits(b_)) << "the withdrawn grant took B's mark: it asks again when it runs";
}

// The agent is gone: a waiter is told at once instead of waiting for good.
TEST_F(SliceServiceTest, AnUnusableBrokerFailsAcquireAtOnce) {
  const testing::Deadline deadline(20);
  ComputeGate& gate = gate_of(a_);
  broker_of(gate).usable_ = false;
  const auto started = std::chrono::steady_clock::now();
  const Status acquired = gate.acquire(kGpu, nullptr);
  EXPECT_FALSE(acquired.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);
  EXPECT_FALSE(waits(a_)) << "its mark is taken away";
  EXPECT_EQ(state_->state().slots[a_].compute[kGpu].threads_waiting.load(), 0u);
  EXPECT_FALSE(gate.checkpoint(kGpu, nullptr).ok());
}

// --- A restarted agent ---

class RecoveryTest : public testing::StateTest {
 protected:
  // Processes of the previous agent: their slots in use with these bytes held, their liveness
  // locks free (the agent that held them for the processes died). All join before any is orphaned:
  // a join sweeps, and would take an orphan's slot.
  std::vector<std::uint32_t> orphans(const std::string& tenant, const std::vector<std::uint64_t>& bytes) {
    std::vector<std::unique_ptr<TenantMembership>> members;
    std::vector<std::uint32_t> slots;
    for (const std::uint64_t held : bytes) {
      auto joined = TenantMembership::join(*state_, tenant);
      EXPECT_TRUE(joined.ok());
      if (!joined.ok()) return {};
      auto attached = joined.value()->attach_gpu(testing::make_uuid(1), 80 * 1024 * kMiB, kUnlimited);
      EXPECT_TRUE(attached.ok() && attached->gpu == kGpu);
      auto reserved = joined.value()->try_reserve(kGpu, held);
      EXPECT_TRUE(reserved.ok() && reserved.value() == Reservation::kGranted);
      slots.push_back(joined.value()->slot_index());
      members.push_back(std::move(joined).value());
    }
    for (auto& member : members) member->abandon();
    return slots;
  }
  std::uint64_t held(std::uint32_t slot) { return state_->state().slots[slot].held_bytes[kGpu].load(); }
  bool in_use(std::uint32_t slot) { return state_->state().slots[slot].state.load() == layout::kInUse; }
};

TEST_F(RecoveryTest, SlotsWaitForTheirProcessesUntilTheGrace) {
  const auto slots = orphans("alpha", {10 * kMiB, 20 * kMiB});
  ASSERT_EQ(slots.size(), 2u);
  const std::uint32_t kept = slots[0], lost = slots[1];
  constexpr auto kGrace = 100ms;
  const auto began = std::chrono::steady_clock::now();
  auto recovery = Recovery::begin(*state_, kGrace);
  ASSERT_TRUE(recovery.ok()) << recovery.error().message;
  EXPECT_EQ(recovery.value()->pending(), 2u);

  // The agent holds their locks: a sweep takes neither.
  const ReclaimReport early = reclaim_dead_processes(*state_);
  EXPECT_EQ(early.processes, 0u);
  EXPECT_TRUE(in_use(kept));
  EXPECT_TRUE(in_use(lost));
  EXPECT_EQ(testing::used_of(*state_, "alpha", kGpu), 30 * kMiB);

  // One process comes back: it adopts its slot with its bytes.
  EXPECT_FALSE(recovery.value()->release_for_adoption(layout::kMaxSlots));
  ASSERT_TRUE(recovery.value()->release_for_adoption(kept));
  EXPECT_FALSE(recovery.value()->release_for_adoption(kept)) << "once";
  auto adopted = TenantMembership::adopt(*state_, kept);
  ASSERT_TRUE(adopted.ok()) << adopted.error().message;
  EXPECT_EQ(adopted.value()->slot_index(), kept);
  EXPECT_EQ(held(kept), 10 * kMiB);
  EXPECT_EQ(recovery.value()->pending(), 1u);

  // Before the grace ends nothing expires; after it, the rest is swept.
  EXPECT_EQ(recovery.value()->expire_if_due(began), 0u);
  EXPECT_GT(recovery.value()->time_left(began), 0ms);
  EXPECT_EQ(recovery.value()->expire_if_due(began + kGrace + 1s), 1u);
  EXPECT_EQ(recovery.value()->pending(), 0u);
  EXPECT_EQ(recovery.value()->time_left(began), 0ms);
  const ReclaimReport swept = reclaim_dead_processes(*state_);
  EXPECT_EQ(swept.processes, 1u);
  EXPECT_EQ(swept.bytes, 20 * kMiB);
  EXPECT_FALSE(in_use(lost));
  EXPECT_TRUE(in_use(kept)) << "the adopted slot is its process's";
  EXPECT_EQ(testing::used_of(*state_, "alpha", kGpu), 10 * kMiB);
}

TEST_F(RecoveryTest, ASecondAgentOnTheSameStateIsRefused) {
  auto first = Recovery::begin(*state_, 100ms);
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto second = Recovery::begin(*state_, 100ms);
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(testing::Contains(second.error().message, "another agent"));
  first.value().reset();
  EXPECT_TRUE(Recovery::begin(*state_, 100ms).ok()) << "free again once the first is gone";
}

// A slot whose process still holds its own lock is no orphan: the agent neither waits for it nor
// takes it.
TEST_F(RecoveryTest, ALiveProcessesSlotIsNotTaken) {
  auto joined = TenantMembership::join(*state_, "alpha");
  ASSERT_TRUE(joined.ok());
  auto recovery = Recovery::begin(*state_, 100ms);
  ASSERT_TRUE(recovery.ok());
  EXPECT_EQ(recovery.value()->pending(), 0u);
  EXPECT_FALSE(recovery.value()->release_for_adoption(joined.value()->slot_index()));
}

// The whole rejoin through the sessions: the process proves itself by pid and tenant and hands its
// sealed page back; its bytes stay.
TEST_F(RecoveryTest, ARejoiningProcessGetsItsSlotBackThroughTheSessions) {
  const auto slots = orphans("alpha", {10 * kMiB});
  ASSERT_EQ(slots.size(), 1u);
  const std::uint32_t slot = slots[0];
  const auto tenant = state_->state().slots[slot].tenant_index.load();
  state_->state().slots[slot].pid.store(4321);
  auto recovery = Recovery::begin(*state_, 10s);
  ASSERT_TRUE(recovery.ok());
  TenantSessions sessions(*state_);
  sessions.set_recovery(recovery.value().get());

  const SocketPeer impostor{PeerCredentials{4322, 1000, 1000}, {}, 1};
  sessions.assigned(impostor, Assignment{"alpha", TenantLimits{}, "test"});
  const SocketPeer peer{PeerCredentials{4321, 1000, 1000}, {}, 2};
  sessions.assigned(peer, Assignment{"alpha", TenantLimits{}, "test"});

  const int page = ::memfd_create("rejoin-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(page, 0);
  std::vector<int> passed{page};
  EXPECT_FALSE(sessions.handle(impostor, Rejoin{slot, tenant}, passed).ok()) << "another pid";
  EXPECT_FALSE(sessions.handle(peer, Rejoin{slot, tenant}, passed).ok()) << "an unsealed page";
  ASSERT_EQ(::ftruncate(page, layout::kSlotPageBytes), 0);
  ASSERT_EQ(::fcntl(page, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  auto rejoined = sessions.handle(peer, Rejoin{slot, tenant}, passed);
  ASSERT_TRUE(rejoined.ok()) << rejoined.error().message;
  EXPECT_TRUE(passed.empty()) << "the page was kept";
  EXPECT_EQ(std::get<Joined>(rejoined->front().message).slot, slot);
  EXPECT_TRUE(sessions.slot_live(slot));
  EXPECT_EQ(held(slot), 10 * kMiB);
  EXPECT_EQ(reclaim_dead_processes(*state_).processes, 0u);
  sessions.disconnected(peer.connection_id);
  EXPECT_FALSE(in_use(slot));
  EXPECT_EQ(testing::used_of(*state_, "alpha", kGpu), 0u);
}

}  // namespace
}  // namespace gpushare::agent
