#include "core/report.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <thread>

#include "core/arbiter.hpp"
#include "core/gang.hpp"
#include "core/platform.hpp"

namespace gpushare {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
constexpr auto kAcquire = std::memory_order_acquire;

// A tenant's GPU time and launches on one GPU: what has been charged, plus the slice in progress
// when one of its processes holds it. The slice in progress counts only up to the holder's last
// observed launch (never beyond what end_slice will charge), and the charged counters and the slice
// are read under the schedule's charge sequence, so that successive reports never go down (the
// exporter's counters must not).
struct ComputeUse {
  std::uint64_t gpu_ns = 0;
  std::uint64_t launches = 0;
  bool holds_slice = false;
};
ComputeUse compute_use(const layout::StateLayout& state, std::uint32_t gpu, const TenantSnapshot& tenant,
                       std::uint64_t now) {
  const auto& schedule = state.schedules[gpu];
  const auto& entry = state.tenants[tenant.index].compute[gpu];
  ComputeUse use;
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::uint32_t seq = schedule.charge_seq.load(kAcquire);
    if ((seq & 1) != 0) {  // end_slice is moving the slice into the counters right now
      std::this_thread::yield();
      continue;
    }
    use = {entry.gpu_ns.load(kAcquire), entry.launches.load(kAcquire), false};
    const std::uint32_t word = schedule.holder_word.load(kAcquire);
    const std::uint32_t holder = layout::holder_slot(word);
    if (holder < layout::kMaxSlots && state.slots[holder].tenant_index.load(kRelaxed) == tenant.index) {
      const std::uint64_t start = schedule.slice_start_ns.load(kAcquire);
      const std::uint64_t until = gone_holder_used_until(schedule, now);
      use.gpu_ns += until > start ? until - start : 0;
      // The two words of one slice only grow apart; a huge difference means a slot reset between
      // them (its process left as another thread of it was granted): nothing to add then.
      const std::uint64_t calls =
          layout::calls_between(schedule.activity_at_grant.load(kAcquire), schedule.observed_activity.load(kAcquire));
      if (calls < (std::uint64_t{1} << 32)) use.launches += calls;
      for (const ProcessSnapshot& process : tenant.processes) {
        use.holds_slice = use.holds_slice || (process.slot == holder && process.alive);
      }
    }
    if (schedule.charge_seq.load(kAcquire) == seq) return use;
  }
  // The sequence never settled (a writer stuck mid-charge): what is charged is still right.
  return {entry.gpu_ns.load(kAcquire), entry.launches.load(kAcquire), false};
}

template <std::size_t N>
std::string text_of(const std::atomic<char> (&chars)[N]) {
  std::string text;
  for (const auto& c : chars) {
    const char value = c.load(kAcquire);
    if (value == '\0') break;
    text += value;
  }
  return text;
}

std::optional<std::uint64_t> known_bytes(std::uint64_t bytes) {
  return bytes == layout::kUnknownBytes ? std::nullopt : std::optional<std::uint64_t>(bytes);
}

// The escape watch's table as the agent last wrote it whole; nothing when the agent kept rewriting
// it through every attempt.
struct UnaccountedRead {
  std::vector<UnaccountedReport> findings;
  std::uint32_t omitted = 0;
};
UnaccountedRead read_unaccounted(const layout::UnaccountedTable& table) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::uint32_t seq = table.seq.load(kAcquire);
    if ((seq & 1) != 0) {
      std::this_thread::yield();
      continue;
    }
    UnaccountedRead read;
    read.omitted = table.omitted.load(kAcquire);
    for (const layout::UnaccountedProcess& entry : table.entries) {
      if (entry.state.load(kAcquire) != layout::kInUse) continue;
      UnaccountedReport finding;
      finding.pid = entry.pid.load(kAcquire);
      finding.gpu_uuid = text_of(entry.gpu_uuid);
      finding.used_bytes = known_bytes(entry.used_bytes.load(kAcquire));
      finding.accounted_bytes = entry.accounted_bytes.load(kAcquire);
      finding.unaccounted_bytes = known_bytes(entry.unaccounted_bytes.load(kAcquire));
      finding.known_to_agent = entry.known_to_agent.load(kAcquire) != 0;
      finding.kill_sent = entry.kill_sent.load(kAcquire) != 0;
      finding.first_seen_unix_ns = entry.first_seen_unix_ns.load(kAcquire);
      finding.cgroup = text_of(entry.cgroup);
      read.findings.push_back(std::move(finding));
    }
    // Every load above is an acquire: none moves after this second look at the sequence.
    if (table.seq.load(kAcquire) == seq) return read;
  }
  return {};
}

// Marks `use` as a gang's when the view finds its tenant wanting two GPUs or more. The view's
// masks only hold GPUs below kMaxGpus, whatever the state says.
void mark_gang(const GangView& gangs, std::uint32_t tenant, TenantOnGpu& use) {
  if (!gangs.gang(tenant)) return;
  const std::uint32_t gpus = gangs.gpus_of(tenant);
  for (std::uint32_t gpu = 0; gpu < layout::kMaxGpus; ++gpu) {
    if (((gpus >> gpu) & 1U) != 0) use.gang_gpus.push_back(gpu);
  }
  use.anchor = gangs.anchor(tenant);
}

}  // namespace

Report build_report(SharedState& shared) {
  Report report;
  report.state_path = shared.path();
  report.time_unix_ns = unix_now_ns();
  report.monotonic_ns = monotonic_now_ns();
  const std::vector<TenantSnapshot> tenants = snapshot_tenants(shared);
  layout::StateLayout& state = shared.state();
  // One view of who wants which GPU for the whole report, so that a gang's GPUs agree everywhere.
  const GangView gangs(state);

  std::map<std::uint32_t, std::size_t> gpu_position;
  for (std::uint32_t g = 0; g < layout::kMaxGpus; ++g) {
    const auto& record = state.gpus[g];
    if (record.state.load(kAcquire) != layout::kInUse) continue;
    GpuReport gpu;
    gpu.index = g;
    std::copy(std::begin(record.uuid), std::end(record.uuid), gpu.uuid.begin());
    gpu.name.assign(record.name, ::strnlen(record.name, layout::kGpuNameBytes));
    gpu.memory_total_bytes = record.physical_bytes.load(kRelaxed);
    gpu_position[g] = report.gpus.size();
    report.gpus.push_back(std::move(gpu));
  }

  for (const TenantSnapshot& tenant : tenants) {
    TenantReport summary;
    summary.name = tenant.name;
    summary.compute = tenant.compute;
    summary.memory_limit_override_bytes = tenant.override_limit_bytes;
    for (const ProcessSnapshot& process : tenant.processes) {
      summary.processes.push_back({process.slot, process.pid, process.started_unix_ns, process.alive});
      summary.live = summary.live || process.alive;
    }
    for (const LedgerSnapshot& ledger : tenant.gpus) {
      auto position = gpu_position.find(ledger.gpu);
      if (position == gpu_position.end()) continue;
      GpuReport& gpu = report.gpus[position->second];
      TenantOnGpu use;
      use.tenant = tenant.name;
      use.live = summary.live;
      use.memory_used_bytes = ledger.used_bytes;
      use.memory_limit_bytes = ledger.limit_bytes;
      use.memory_peak_bytes = ledger.peak_bytes;
      use.oom_refusals = ledger.oom_refusals;
      use.gpu_ns = ledger.gpu_ns;
      use.launches = ledger.launches;
      use.wait_ns = ledger.wait_ns;
      use.peer_wait_ns = ledger.peer_wait_ns;
      for (const ProcessSnapshot& process : tenant.processes) {
        if (process.held_bytes[ledger.gpu] != 0) {
          use.processes.push_back({process.slot, process.pid, process.alive, process.held_bytes[ledger.gpu]});
        }
      }
      // The slice in progress has not been charged yet: add it, so that a tenant alone on the GPU
      // does not look idle between renewals.
      const ComputeUse compute = compute_use(state, ledger.gpu, tenant, report.monotonic_ns);
      use.gpu_ns = compute.gpu_ns;
      use.launches = compute.launches;
      use.holds_slice = compute.holds_slice;
      if (compute.holds_slice) gpu.slice_holder = tenant.name;
      mark_gang(gangs, tenant.index, use);
      gpu.tenants.push_back(std::move(use));
    }
    report.tenants.push_back(std::move(summary));
  }
  UnaccountedRead unaccounted = read_unaccounted(state.unaccounted);
  report.unaccounted = std::move(unaccounted.findings);
  report.unaccounted_omitted = unaccounted.omitted;
  return report;
}

}  // namespace gpushare
