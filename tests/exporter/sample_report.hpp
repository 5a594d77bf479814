// A hand-built report with every kind of figure the exporter shows, for the tests of its text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/compute_policy.hpp"
#include "core/report.hpp"
#include "core/size.hpp"

namespace gpushare::testing {

inline TenantOnGpu use_of(std::string tenant) {
  TenantOnGpu use;
  use.tenant = std::move(tenant);
  return use;
}

inline TenantReport tenant_named(std::string name, std::vector<bool> processes_alive) {
  TenantReport tenant;
  tenant.name = std::move(name);
  tenant.compute = default_compute_policy();  // as the report shows a tenant that stated none
  std::uint32_t slot = 0;
  for (const bool alive : processes_alive) {
    tenant.processes.push_back(ProcessReport{slot, 1000 + slot, 0, alive});
    ++slot;
  }
  return tenant;
}

// One GPU; "train" with a quota, a share, a cap and the time slice; "serve" with no limits at all.
inline Report two_tenants() {
  constexpr std::uint64_t kMiB = 1ull << 20;
  constexpr std::uint64_t kGiB = 1ull << 30;
  Report report;
  GpuReport gpu;
  for (std::uint8_t i = 0; i < 16; ++i) gpu.uuid[i] = i;
  gpu.name = "NVIDIA H100 80GB HBM3";
  gpu.memory_total_bytes = 80 * kGiB;
  gpu.slice_holder = "train";

  TenantOnGpu train = use_of("train");
  train.live = true;
  train.memory_used_bytes = 40 * kMiB;
  train.memory_limit_bytes = 64 * kMiB;
  train.memory_peak_bytes = 48 * kMiB;
  train.oom_refusals = 2;
  train.gpu_ns = 1'500'000'000;
  train.launches = 1234;
  train.wait_ns = 250'000'000;
  train.peer_wait_ns = 100'000'000;  // of wait_ns: while it held another GPU
  train.holds_slice = true;
  gpu.tenants.push_back(train);

  TenantOnGpu serve = use_of("serve");
  serve.live = true;
  serve.memory_used_bytes = kGiB;
  serve.memory_limit_bytes = kUnlimited;
  serve.memory_peak_bytes = kGiB;
  gpu.tenants.push_back(serve);
  report.gpus.push_back(gpu);

  TenantReport train_policy = tenant_named("train", {true, false});
  train_policy.compute.share_pct = 30;
  train_policy.compute.limit_pct = 50;
  train_policy.compute.priority = Priority::kHigh;
  report.tenants.push_back(train_policy);
  report.tenants.push_back(tenant_named("serve", {true, true}));
  return report;
}

}  // namespace gpushare::testing
