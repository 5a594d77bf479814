// Gang slices (issue 16): the processes of one tenant on several GPUs of a node form a gang, whose
// slices should start and end together on all of them. A collective (NCCL's all-reduce) waits on
// the GPU for its peers: a rank holding one GPU while its peer waits for another GPU's slice only
// spins. So a tenant that wants several GPUs is anchored at the lowest of them: there it is
// scheduled like any tenant, and on its other GPUs it is preferred only while it holds its anchor
// (it follows the anchor), and asked to hand over as soon as it no longer does.
//
// A GangView is a snapshot of who wants which GPU, taken from the shared state without any lock
// (each word is read once; a decision made on a stale view is corrected at the next look).
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <optional>

#include "core/state_layout.hpp"

namespace gpushare {

// A gang's handover (gang_handover.cpp: ask_gang_to_hand_over) stops its ranks at one agreed point:
// after asking every GPU the gang holds, the asker reads the most collectives any of its ranks has
// launched on one GPU and publishes that count (TenantRecord::gang_stop), tagged with the request's
// time. A rank counts a collective before it looks at its gate: a count the asker missed was made
// after the ask, so that rank sees itself asked, finds its count past the stop and withdraws the part;
// a rank below the stop goes on until it reaches it (ComputeGate::goes_on_to_gang_stop). No rank's
// part is then left waiting on its GPU for a sibling's part that is never launched.
inline constexpr std::uint64_t gang_stop_word(std::uint64_t asked_ns, std::uint64_t most_collectives) {
  return (asked_ns << 32) | (most_collectives & 0xffffffffu);
}
// The stop count published for the request made at `asked_ns`, if it is the one published (its
// low 32 bits, to compare with a rank's count modulo 2^32).
std::optional<std::uint32_t> gang_stop_count(const layout::StateLayout& state, std::uint32_t tenant,
                                             std::uint64_t asked_ns);

// The GPUs whose slice a process of `tenant` holds now (bit h: GPU h), asked to hand over or not.
std::uint32_t gpus_held_by(const layout::StateLayout& state, std::uint32_t tenant);
// Of a wait for `gpu` by a process of `tenant` from `waited_from_ns` to `now_ns`: how long another
// GPU was held by the tenant meanwhile (the longest such overlap), as its slice's start says. Where a
// gang's collectives wait on the GPU for their peers, that is time its ranks spun for this one.
std::uint64_t peer_wait_ns(const layout::StateLayout& state, std::uint32_t tenant, std::uint32_t gpu,
                           std::uint64_t waited_from_ns, std::uint64_t now_ns);
// Adds a wait for `gpu` (from `waited_from_ns` to `now_ns`) to the tenant's counters: wait_ns, and
// the part of it peer_wait_ns finds to peer_wait_ns.
void charge_wait(layout::StateLayout& state, std::uint32_t tenant, std::uint32_t gpu, std::uint64_t waited_from_ns,
                 std::uint64_t now_ns);

class GangView {
 public:
  // Scans the slots once: a tenant wants a GPU it holds, or for which a live process of it waits.
  explicit GangView(const layout::StateLayout& state);

  // Bit h set: the tenant holds or waits for GPU h. 0 for an index out of range.
  std::uint32_t gpus_of(std::uint32_t tenant) const { return tenant < layout::kMaxTenants ? wanted_[tenant] : 0; }
  // The tenant wants two GPUs or more.
  bool gang(std::uint32_t tenant) const { return std::popcount(gpus_of(tenant)) >= 2; }
  // The GPUs wanted by the gangs anchored at `gpu`.
  std::uint32_t gpus_of_gangs_anchored_at(std::uint32_t gpu) const {
    std::uint32_t gpus = 0;
    for (std::uint32_t tenant = 0; tenant < layout::kMaxTenants; ++tenant) {
      if (gang(tenant) && anchor(tenant) == gpu) gpus |= wanted_[tenant];
    }
    return gpus;
  }
  // The lowest GPU the tenant wants (kMaxGpus when none).
  std::uint32_t anchor(std::uint32_t tenant) const {
    const std::uint32_t gpus = gpus_of(tenant);
    return gpus == 0 ? layout::kMaxGpus : static_cast<std::uint32_t>(std::countr_zero(gpus));
  }
  // The tenant holding `gpu`'s slice (kMaxTenants when none or unknown).
  std::uint32_t holder_tenant(std::uint32_t gpu) const {
    return gpu < layout::kMaxGpus ? holders_[gpu] : layout::kMaxTenants;
  }
  // Whether the tenant, on `gpu`, should be granted the slice before tenants that may not: it is
  // no gang, or `gpu` is its anchor, or it holds its anchor and will keep it: it was not asked to
  // hand it over, or nobody else wants it (a gang asked everywhere because another tenant waits on
  // one of its followers keeps an anchor nobody else wants, where a rank may be stuck in a
  // collective that waits for that follower's rank).
  bool may_lead(std::uint32_t tenant, std::uint32_t gpu) const {
    if (!gang(tenant)) return true;
    const std::uint32_t home = anchor(tenant);
    return home == gpu || (holder_tenant(home) == tenant && !(asked_[home] && contested(home)));
  }
  // Whether a tenant other than the holder wants `gpu`.
  bool contested(std::uint32_t gpu) const { return gpu < layout::kMaxGpus && contested_[gpu]; }
  // Whether the tenant's anchor is changing hands: nobody holds it, or its holder was asked to hand
  // it over and someone else wants it. Who gets it next is not known yet (the leaving holder may
  // win it back on virtual time), and granting the tenant `gpu` first may let it hold a follower
  // without its anchor (its ranks there would wait for the anchor's, and could not hand over); the
  // anchor's grant wakes the waiters of every gang anchored there (wake_gpus).
  bool anchor_in_transit(std::uint32_t tenant, std::uint32_t gpu) const {
    if (!gang(tenant)) return false;
    const std::uint32_t home = anchor(tenant);
    return home != gpu && (holder_tenant(home) == layout::kMaxTenants || (asked_[home] && contested(home)));
  }
  // Whether another tenant, holding (unasked) the lowest GPU its processes use, has a process that
  // uses `gpu` too and does not hold it: a rank of that gang will want `gpu` as soon as it is out of
  // the collective it may be blocked in (waiting for its sibling on the anchor), and leads there.
  // A follower of `tenant` that may not lead is then not granted `gpu`: it would only spin there.
  bool awaited_by_another_leader(std::uint32_t tenant, std::uint32_t gpu) const {
    return gpu < layout::kMaxGpus && awaited_by_[gpu] != layout::kMaxTenants && awaited_by_[gpu] != tenant;
  }
  // Whether the tenant holds `gpu` only as a follower that has lost its anchor: it should hand
  // `gpu` over to someone who may lead there.
  bool lost_its_anchor(std::uint32_t tenant, std::uint32_t gpu) const { return !may_lead(tenant, gpu); }

 private:
  std::array<std::uint32_t, layout::kMaxTenants> wanted_{};
  std::array<std::uint32_t, layout::kMaxGpus> holders_{};
  std::array<bool, layout::kMaxGpus> asked_{};                // the holder was asked to hand over
  std::array<bool, layout::kMaxGpus> contested_{};            // a tenant other than the holder wants it
  std::array<std::uint32_t, layout::kMaxGpus> awaited_by_{};  // see awaited_by_another_leader
};

}  // namespace gpushare
