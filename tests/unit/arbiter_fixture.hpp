// The fixture of the arbiter's unit tests (arbiter_test.cpp, compute_gate_test.cpp): processes
// joined into tenants on one state file, and a fake clock. Each "process" is a slot joined into a
// tenant; wanting the GPU is its waiting_since flag, holding it is the schedule's holder word,
// using it is time passing on the fake clock.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/arbiter.hpp"
#include "core/compute_policy.hpp"
#include "core/registry.hpp"
#include "test_support.hpp"

namespace gpushare::testing {

class ArbiterTest : public StateTest {
 protected:
  static constexpr std::uint32_t kGpu = 0;
  static constexpr std::uint64_t kMs = 1'000'000;

  void TearDown() override {
    members_.clear();  // before the state they point into
    StateTest::TearDown();
  }
  // Joins a tenant with a compute policy; returns the process's slot.
  std::uint32_t add(const std::string& tenant, std::uint32_t share, std::uint32_t limit = 0,
                    Priority priority = Priority::kNormal) {
    auto joined = TenantMembership::join(*state_, tenant);
    EXPECT_TRUE(joined.ok());
    ComputePolicyValues policy;
    policy.share_pct = share;
    policy.limit_pct = limit;
    policy.priority = priority;
    EXPECT_TRUE(joined.value()->adopt_compute_policy(policy).ok());
    const std::uint32_t slot = joined.value()->slot_index();
    members_.push_back(std::move(joined).value());
    return slot;
  }
  layout::StateLayout& s() { return state_->state(); }
  void want(std::uint32_t slot) {
    auto& since = s().slots[slot].compute[kGpu].waiting_since_ns;
    if (since.load() == 0) since.store(now_);
  }
  std::uint32_t holder() { return layout::holder_slot(s().schedules[kGpu].holder_word.load()); }
  Arbitration decide(std::uint32_t requester = kNoRequester) {
    Arbitration result = arbitrate(s(), kGpu, now_, requester, timing_);
    if (holder() != layout::kNoHolder) s().slots[holder()].compute[kGpu].waiting_since_ns.store(0);
    return result;
  }
  // One whole launch: in and out again.
  void launch(std::uint32_t slot) {
    s().slots[slot].compute[kGpu].activity[0].fetch_add(layout::kCallBegun - layout::kCallEnded);
  }
  // A thread of the slot's process enters a launch or a synchronize and stays there.
  void enter(std::uint32_t slot) { s().slots[slot].compute[kGpu].activity[0].fetch_add(layout::kCallBegun); }
  // ... and waits there for the slice, as ComputeGate::acquire counts it.
  void enter_to_wait(std::uint32_t slot) {
    enter(slot);
    s().slots[slot].compute[kGpu].threads_waiting.fetch_add(1);
  }
  std::uint64_t gpu_ns(std::uint32_t slot) {
    return s().tenants[s().slots[slot].tenant_index.load()].compute[kGpu].gpu_ns.load();
  }
  // Every slot in `busy` always wants the GPU; the holder uses its slice fully, then hands over.
  void run_saturated(const std::vector<std::uint32_t>& busy, std::uint64_t duration) {
    const std::uint64_t end = now_ + duration;
    while (now_ < end) {
      for (auto slot : busy) want(slot);
      decide();
      const std::uint32_t h = holder();
      ASSERT_NE(h, layout::kNoHolder);
      launch(h);
      now_ = std::max(now_ + 1, s().schedules[kGpu].slice_end_ns.load());
      want(h);
      end_slice(s(), kGpu, now_);
    }
  }

  // Whether `waiter` gets the GPU from `holder` after the holder pauses 3 ms (past idle_after).
  bool taken_after_a_short_pause(std::uint32_t holder_slot, std::uint32_t waiter) {
    want(holder_slot);
    decide();
    EXPECT_EQ(holder(), holder_slot);
    launch(holder_slot);
    want(waiter);
    decide(waiter);
    now_ += 3 * kMs;
    return decide(waiter).granted_to_requester;
  }
  // `slot` asks for the free GPU and gets it.
  void grant_to(std::uint32_t slot) {
    want(slot);
    decide();
    EXPECT_EQ(holder(), slot);
  }
  // `waiter` looks every millisecond for `ms` milliseconds; `kept` holds the GPU all along.
  void look_for(int ms, std::uint32_t waiter, std::uint32_t kept) {
    for (int i = 0; i < ms; ++i) {
      now_ += kMs;
      decide(waiter);
      ASSERT_EQ(holder(), kept) << "after " << i + 1 << " ms";
    }
  }

  // The last thread of `kept` has just left its call: it keeps the GPU for now (its activity just
  // moved), and loses it to `waiter` once that has stood still for the idle threshold.
  void expect_idle_once_still(std::uint32_t kept, std::uint32_t waiter) {
    now_ += kMs;
    decide(waiter);
    EXPECT_EQ(holder(), kept) << "it just moved";
    for (int i = 0; i < 3; ++i) {
      now_ += kMs;
      decide(waiter);
    }
    EXPECT_EQ(holder(), waiter) << "idle once it stands still with nobody inside";
  }

  std::vector<std::unique_ptr<TenantMembership>> members_;
  std::uint64_t now_ = 1'000 * kMs;
  ArbiterTiming timing_;
};

}  // namespace gpushare::testing
