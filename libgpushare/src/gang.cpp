// See gang.hpp.
#include "core/gang.hpp"

namespace gpushare {
namespace {
constexpr auto kRelaxed = std::memory_order_relaxed;
}

GangView::GangView(const layout::StateLayout& state) {
  holders_.fill(layout::kMaxTenants);
  for (std::uint32_t gpu = 0; gpu < layout::kMaxGpus; ++gpu) {
    const std::uint32_t word = state.schedules[gpu].holder_word.load(std::memory_order_acquire);
    const std::uint32_t slot = layout::holder_slot(word);
    if (slot >= layout::kMaxSlots) continue;
    const std::uint32_t tenant = state.slots[slot].tenant_index.load(kRelaxed);
    if (tenant >= layout::kMaxTenants) continue;
    holders_[gpu] = tenant;
    asked_[gpu] = (word & layout::kHandoverBit) != 0;
    wanted_[tenant] |= 1U << gpu;
  }
  std::array<std::uint32_t, layout::kMaxTenants> used{};  // GPUs the tenant's processes have attached
  for (const auto& slot : state.slots) {
    if (slot.state.load(std::memory_order_acquire) != layout::kInUse) continue;
    const std::uint32_t tenant = slot.tenant_index.load(kRelaxed);
    if (tenant >= layout::kMaxTenants) continue;
    used[tenant] |= slot.gpus_attached.load(kRelaxed) & ((1U << layout::kMaxGpus) - 1);
    for (std::uint32_t gpu = 0; gpu < layout::kMaxGpus; ++gpu) {
      if (slot.compute[gpu].waiting_since_ns.load(kRelaxed) == 0) continue;
      wanted_[tenant] |= 1U << gpu;
      if (holders_[gpu] != tenant) contested_[gpu] = true;
    }
  }
  awaited_by_.fill(layout::kMaxTenants);
  for (std::uint32_t tenant = 0; tenant < layout::kMaxTenants; ++tenant) {
    if (std::popcount(used[tenant]) < 2) continue;
    const auto home = static_cast<std::uint32_t>(std::countr_zero(used[tenant]));
    if (holders_[home] != tenant || asked_[home]) continue;
    for (std::uint32_t gpu = home + 1; gpu < layout::kMaxGpus; ++gpu) {
      if ((used[tenant] & (1U << gpu)) != 0 && holders_[gpu] != tenant) awaited_by_[gpu] = tenant;
    }
  }
}

}  // namespace gpushare
