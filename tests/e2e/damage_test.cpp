// End-to-end: tenants on a state file another process has filled up or damaged (any participant
// can write it). The test prepares the state with the core library itself, then runs real tenants
// through the real preload library on the fake driver.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/compute_slot_release.hpp"
#include "core/registry.hpp"
#include "core/shared_state.hpp"
#include "process.hpp"
#include "scratch.hpp"

namespace gpushare::testing {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;

class Damage : public ScratchTest {
 protected:
  Env tenant_env(Env extra = {}) const {
    extra.insert({{"LD_PRELOAD", GPUSHARE_TEST_PRELOAD},
                  {"GPUSHARE_STATE", state_},
                  {"GPUSHARE_TENANT", "victim"},
                  {"GPUSHARE_MEMORY_LIMIT", "64MiB"},
                  {"FAKE_CUDA_DEVICE_MEMORY", std::to_string(kGiB)}});
    return fake_driver_env(GPUSHARE_TEST_FAKE_DIR, std::move(extra));
  }
  // alloc_probe: allocate 1 MiB chunks until refused, through the linked driver symbols.
  ProcessResult fill(const Env& extra = {}) const {
    return run({GPUSHARE_TEST_PROBE, "linked", "fill", std::to_string(kMiB)}, tenant_env(extra));
  }
  std::unique_ptr<SharedState> open_state() const {
    auto opened = SharedState::open(state_, SharedState::Mode::kCreateIfMissing);
    EXPECT_TRUE(opened.ok()) << opened.error().message;
    return opened.ok() ? std::move(opened).value() : nullptr;
  }
  static std::size_t lines_containing(const std::string& text, const std::string& needle) {
    std::size_t count = 0;
    for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++count;
    return count;
  }
};

// With 16 GPUs already recorded, an allocation on a new one is never uncounted: GPUSHARE_ON_ERROR
// decides, with one log line, cuMemGetInfo shows no free memory where allocations are refused, and
// the record of a GPU no live process uses is given to the new one.
TEST_F(Damage, ASeventeenthGpuIsNeverUnlimited) {
  auto state = open_state();
  ASSERT_NE(state, nullptr);
  install_compute_slot_release();
  auto filler = TenantMembership::join(*state, "filler");
  ASSERT_TRUE(filler.ok()) << filler.error().message;
  for (std::uint8_t i = 0; i < layout::kMaxGpus; ++i) {
    GpuUuid uuid{};
    uuid.fill(0xee);
    uuid[15] = i;  // not a fake GPU's UUID
    ASSERT_TRUE(filler.value()->attach_gpu(uuid, kGiB, kGiB).ok());
  }
  ProcessResult closed = fill();
  ASSERT_EQ(closed.exit_code, 0) << closed.err;
  EXPECT_EQ(output_u64(closed.out, "allocated"), 0u) << "closed: refused";
  EXPECT_EQ(output_u64(closed.out, "free", "meminfo"), 0u) << "no room shown where allocations are refused";
  EXPECT_EQ(lines_containing(closed.err, "cannot track device"), 1u) << closed.err;

  ProcessResult open = fill({{"GPUSHARE_ON_ERROR", "open"}});
  ASSERT_EQ(open.exit_code, 0) << open.err;
  EXPECT_GT(output_u64(open.out, "allocated").value_or(0), 64 * kMiB) << "open: runs without the quota";

  filler.value().reset();  // the 16 GPUs' process leaves: their records are free to take
  ProcessResult tracked = fill();
  ASSERT_EQ(tracked.exit_code, 0) << tracked.err;
  EXPECT_EQ(output_u64(tracked.out, "allocated"), 64 * kMiB);
  EXPECT_EQ(tracked.err, "");
}

// A process stopped inside the ledger lock (SIGSTOP, docker pause, a frozen cgroup), or a forged
// lock word, blocked every allocation on that GPU for good. The wait is bounded, then
// GPUSHARE_ON_ERROR applies, with one line; `gpushare status` still answers.
TEST_F(Damage, ALedgerLockNobodyReleasesCostsABoundedWait) {
  {
    ProcessResult first = fill();  // records the fake GPU 0 in the state
    ASSERT_EQ(output_u64(first.out, "allocated"), 64 * kMiB) << first.err;
  }
  auto state = open_state();
  ASSERT_NE(state, nullptr);
  pthread_mutex_t* ledger = &state->state().gpus[0].ledger_mutex;
  ASSERT_TRUE(shared_mutex::lock(ledger).ok());  // held, as by a process that stopped right there
  const auto started = std::chrono::steady_clock::now();
  ProcessResult stalled = fill();
  const auto took = std::chrono::steady_clock::now() - started;
  ASSERT_EQ(stalled.exit_code, 0) << stalled.err;
  EXPECT_EQ(output_u64(stalled.out, "allocated"), 0u);
  EXPECT_EQ(lines_containing(stalled.err, "not free within"), 1u) << stalled.err;
  EXPECT_LT(took, std::chrono::seconds(30));
  ProcessResult status = run({GPUSHARE_TEST_TOOL, "status", "--state", state_}, {});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  shared_mutex::unlock(ledger);
  ProcessResult resumed = fill();
  EXPECT_EQ(output_u64(resumed.out, "allocated"), 64 * kMiB) << resumed.err;
}

// Garbage in a mutex made every new process abort in glibc. Now it is refused with a message, and
// GPUSHARE_ON_ERROR applies.
TEST_F(Damage, GarbageInALockIsRefusedNotACrash) {
  auto state = open_state();
  ASSERT_NE(state, nullptr);
  std::memset(static_cast<void*>(&state->state().registry_mutex), 0xa5, sizeof(pthread_mutex_t));
  ProcessResult r = fill();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(output_u64(r.out, "allocated"), 0u);
  EXPECT_EQ(lines_containing(r.err, "damaged lock"), 1u) << r.err;
  ProcessResult status = run({GPUSHARE_TEST_TOOL, "status", "--state", state_}, {});
  EXPECT_EQ(status.exit_code, 1) << status.err;
  EXPECT_EQ(lines_containing(status.err, "damaged lock"), 1u) << status.err;
}

}  // namespace
}  // namespace gpushare::testing
