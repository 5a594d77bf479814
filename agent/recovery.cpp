#include "recovery.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace gpushare::agent {
namespace {
// Held by the running agent for as long as it lives: past the data, like every lock of the file.
constexpr std::int64_t kAgentLockOffset = layout::kInitLockOffset - 2;
}  // namespace

Result<std::unique_ptr<Recovery>> Recovery::begin(SharedState& state, std::chrono::milliseconds grace) {
  const int fd = ::open(state.descriptor_path().c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Error{fmt::format("cannot reopen {}: {}", state.path(), std::strerror(errno))};
  if (!ofd_lock::try_lock(fd, kAgentLockOffset)) {
    ::close(fd);
    return Error{fmt::format("another agent serves {}", state.path())};
  }
  std::unique_ptr<Recovery> recovery(new Recovery(fd, std::chrono::steady_clock::now() + grace));
  for (std::uint32_t slot = 0; slot < layout::kMaxSlots; ++slot) {
    if (state.state().slots[slot].state.load(std::memory_order_acquire) != layout::kInUse) continue;
    // A slot whose lock someone else holds is no process of ours to wait for (and not ours to take).
    if (ofd_lock::try_lock(fd, layout::kSlotLockBase + slot)) recovery->pending_.set(slot);
  }
  return recovery;
}

Recovery::~Recovery() { ::close(fd_); }

bool Recovery::release_for_adoption(std::uint32_t slot) {
  if (slot >= layout::kMaxSlots || !pending_.test(slot)) return false;
  ofd_lock::unlock(fd_, layout::kSlotLockBase + slot);
  pending_.reset(slot);
  return true;
}

std::size_t Recovery::expire_if_due(std::chrono::steady_clock::time_point now) {
  if (pending_.none() || now < deadline_) return 0;
  const std::size_t expired = pending_.count();
  for (std::uint32_t slot = 0; slot < layout::kMaxSlots; ++slot) {
    if (pending_.test(slot)) ofd_lock::unlock(fd_, layout::kSlotLockBase + slot);
  }
  pending_.reset();
  return expired;
}

std::chrono::milliseconds Recovery::time_left(std::chrono::steady_clock::time_point now) const {
  if (pending_.none()) return std::chrono::milliseconds(0);
  return std::max(std::chrono::milliseconds(0),
                  std::chrono::ceil<std::chrono::milliseconds>(deadline_ - now));
}

}  // namespace gpushare::agent
