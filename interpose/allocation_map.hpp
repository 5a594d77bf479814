// What this process has allocated, keyed by device pointer or handle: the free path needs the
// GPU and the byte count that were charged, and the driver's own answer (cuMemGetAddressRange)
// can be rounded differently from what was reserved. Sharded so threads allocating at once rarely
// share a (process-local, uncontended) mutex.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>

namespace gpushare::interpose {

struct Allocation {
  std::uint32_t gpu = 0;
  std::uint64_t bytes = 0;
};

class AllocationMap {
 public:
  void insert(std::uint64_t key, Allocation allocation) {
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    shard.entries[key] = allocation;
  }
  std::optional<Allocation> erase(std::uint64_t key) {
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    auto it = shard.entries.find(key);
    if (it == shard.entries.end()) return std::nullopt;
    Allocation allocation = it->second;
    shard.entries.erase(it);
    return allocation;
  }

 private:
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::uint64_t, Allocation> entries;
  };
  Shard& shard_for(std::uint64_t key) {
    // Device pointers are at least 256-byte aligned: drop the low bits before picking a shard.
    return shards_[(key >> 9 ^ key >> 21) % shards_.size()];
  }
  std::array<Shard, 32> shards_;
};

}  // namespace gpushare::interpose
