// A gang's handover (gang.hpp): asked on one of its GPUs, a gang is asked on all of them at once,
// with one request time, and the stop count its ranks go on to is published under that time.
#include <algorithm>

#include "core/arbiter.hpp"
#include "core/gang.hpp"

namespace gpushare {
using layout::GpuSchedule;
using layout::kHandoverBit;
using layout::kMaxSlots;
using layout::kMaxTenants;
using layout::StateLayout;

namespace {
constexpr auto kRelaxed = std::memory_order_relaxed;
constexpr auto kSeqCst = std::memory_order_seq_cst;

// Asks the holder of `gpu`, if it is a process of `tenant`, to hand over, as asked at `asked_ns`.
// Returns the request time in force (an earlier one when `keep_earlier` and it was asked already),
// or 0 when the tenant does not hold the GPU or its mutex was not had in time.
std::uint64_t ask_holder(StateLayout& state, std::uint32_t gpu, std::uint32_t tenant, std::uint64_t asked_ns,
                         bool keep_earlier) {
  auto lock = lock_schedule(state, gpu);
  if (!lock) return 0;
  GpuSchedule& schedule = state.schedules[gpu];
  const std::uint32_t word = schedule.holder_word.load(kSeqCst);
  const std::uint32_t slot = layout::holder_slot(word);
  if (slot >= kMaxSlots || state.slots[slot].tenant_index.load(kRelaxed) != tenant) return 0;
  if ((word & kHandoverBit) != 0 && keep_earlier) return schedule.handover_asked_ns.load(kRelaxed);
  // The time first: a rank that sees the bit reads the time of this request (the stop count's tag).
  schedule.handover_asked_ns.store(asked_ns, kSeqCst);
  schedule.holder_word.store(word | kHandoverBit, kSeqCst);
  return asked_ns;
}

// Publishes the most collectives a live process of `tenant` has launched on one GPU as the stop
// count of the request made at `asked_ns`, unless one was published for it already (the first
// asker's count stands: every rank compares against the same one). Read after every GPU of the gang
// was asked (sequentially consistent, as the ranks' counts and their gate checks are).
void publish_stop_count(StateLayout& state, std::uint32_t tenant, std::uint64_t asked_ns) {
  std::uint64_t most = 0;
  for (const layout::ProcessSlot& slot : state.slots) {
    if (slot.state.load(kSeqCst) != layout::kInUse || slot.tenant_index.load(kSeqCst) != tenant) continue;
    for (const auto& count : slot.collectives) most = std::max(most, count.load(kSeqCst));
  }
  const std::uint64_t word = gang_stop_word(asked_ns, most);
  std::atomic<std::uint64_t>& stop = state.tenants[tenant].gang_stop;
  std::uint64_t old = stop.load(kSeqCst);
  while ((old >> 32) != (word >> 32) && !stop.compare_exchange_weak(old, word, kSeqCst)) {
  }
}

}  // namespace

std::optional<std::uint32_t> gang_stop_count(const StateLayout& state, std::uint32_t tenant, std::uint64_t asked_ns) {
  if (tenant >= kMaxTenants || asked_ns == 0) return std::nullopt;
  const std::uint64_t word = state.tenants[tenant].gang_stop.load(kSeqCst);
  if ((word >> 32) != (asked_ns & 0xffffffffu)) return std::nullopt;
  return static_cast<std::uint32_t>(word);
}

void ask_gang_to_hand_over(StateLayout& state, std::uint32_t gpu, std::uint32_t tenant, std::uint64_t now) {
  if (tenant >= kMaxTenants) return;
  const GangView gangs(state);
  if (!gangs.gang(tenant)) return;
  // The anchor's request time is the gang's: an earlier request there stands.
  const std::uint32_t anchor = gangs.anchor(tenant);
  std::uint64_t asked_ns = ask_holder(state, anchor, tenant, now, /*keep_earlier=*/true);
  if (asked_ns == 0) asked_ns = now;  // the tenant does not hold its anchor
  for (std::uint32_t other = 0; other < layout::kMaxGpus; ++other) {
    if (other != anchor && (other == gpu || gangs.holder_tenant(other) == tenant)) {
      (void)ask_holder(state, other, tenant, asked_ns, /*keep_earlier=*/false);
    }
  }
  publish_stop_count(state, tenant, asked_ns);
}

std::uint32_t gpus_held_by(const StateLayout& state, std::uint32_t tenant) {
  std::uint32_t held = 0;
  for (std::uint32_t gpu = 0; gpu < layout::kMaxGpus; ++gpu) {
    const std::uint32_t slot = layout::holder_slot(state.schedules[gpu].holder_word.load(std::memory_order_acquire));
    if (slot < kMaxSlots && state.slots[slot].tenant_index.load(kRelaxed) == tenant) held |= 1U << gpu;
  }
  return held;
}

std::uint64_t peer_wait_ns(const StateLayout& state, std::uint32_t tenant, std::uint32_t gpu,
                           std::uint64_t waited_from_ns, std::uint64_t now_ns) {
  std::uint64_t longest = 0;
  const std::uint32_t others = gpus_held_by(state, tenant) & ~(1U << gpu);
  for (std::uint32_t other = 0; other < layout::kMaxGpus; ++other) {
    if ((others & (1U << other)) == 0) continue;
    const std::uint64_t since = std::max(waited_from_ns, state.schedules[other].slice_start_ns.load(kRelaxed));
    if (since < now_ns) longest = std::max(longest, now_ns - since);
  }
  return longest;
}

void charge_wait(StateLayout& state, std::uint32_t tenant, std::uint32_t gpu, std::uint64_t waited_from_ns,
                 std::uint64_t now_ns) {
  if (tenant >= kMaxTenants || gpu >= layout::kMaxGpus || waited_from_ns > now_ns) return;
  layout::ComputeEntry& entry = state.tenants[tenant].compute[gpu];
  entry.wait_ns.fetch_add(now_ns - waited_from_ns, kRelaxed);
  const std::uint64_t peers = peer_wait_ns(state, tenant, gpu, waited_from_ns, now_ns);
  if (peers != 0) entry.peer_wait_ns.fetch_add(peers, kRelaxed);
}

void wake_gang(StateLayout& state, std::uint32_t gpu, std::uint32_t tenant) {
  const GangView gangs(state);
  if (gangs.gang(tenant)) wake_waiters_on(state, gangs.gpus_of(tenant) & ~(1U << gpu));
}

}  // namespace gpushare
