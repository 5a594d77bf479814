#include "escape_rounds.hpp"

#include <algorithm>
#include <array>
#include <atomic>

#include <fmt/format.h>

#include "core/platform.hpp"
#include "core/registry.hpp"

namespace gpushare::agent {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

template <std::size_t N>
void store_text(std::atomic<char> (&chars)[N], std::string_view text) {
  const std::size_t length = std::min(text.size(), N - 1);  // cut when longer, always NUL-terminated
  for (std::size_t i = 0; i < N; ++i) chars[i].store(i < length ? text[i] : '\0', kRelaxed);
}

std::uint64_t bytes_or_unknown(const std::optional<std::uint64_t>& bytes) {
  return bytes ? std::min(*bytes, layout::kUnknownBytes - 1) : layout::kUnknownBytes;
}

}  // namespace

Accounted accounted_from_state(const layout::StateLayout& state,
                               const std::vector<std::pair<pid_t, std::uint32_t>>& joined) {
  std::array<std::optional<std::string>, layout::kMaxGpus> uuids;
  for (std::uint32_t g = 0; g < layout::kMaxGpus; ++g) {
    if (state.gpus[g].state.load(std::memory_order_acquire) != layout::kInUse) continue;
    GpuUuid uuid{};
    std::copy(std::begin(state.gpus[g].uuid), std::end(state.gpus[g].uuid), uuid.begin());
    uuids[g] = format_gpu_uuid(uuid);
  }
  Accounted accounted;
  for (const auto& [pid, slot] : joined) {
    auto& on_gpus = accounted[pid];
    if (slot >= layout::kMaxSlots) continue;
    for (std::uint32_t g = 0; g < layout::kMaxGpus; ++g) {
      const std::uint64_t held = state.slots[slot].held_bytes[g].load(kRelaxed);
      if (uuids[g] && held != 0) on_gpus[*uuids[g]] += held;
    }
  }
  return accounted;
}

void publish_unaccounted(layout::UnaccountedTable& table, const std::vector<TrackedEscape>& tracked,
                         std::uint64_t unix_now_ns, std::chrono::steady_clock::time_point steady_now) {
  // Odd while the entries change: readers retry. The add's acquire keeps the stores below after it.
  const std::uint32_t seq = table.seq.fetch_add(1, std::memory_order_acq_rel);
  const std::size_t shown = std::min<std::size_t>(tracked.size(), layout::kMaxUnaccounted);
  for (std::size_t i = 0; i < layout::kMaxUnaccounted; ++i) {
    layout::UnaccountedProcess& entry = table.entries[i];
    if (i >= shown) {
      entry.state.store(layout::kFree, kRelaxed);
      continue;
    }
    const TrackedEscape& escape = tracked[i];
    const auto standing = std::chrono::duration_cast<std::chrono::nanoseconds>(steady_now - escape.first_seen);
    const auto standing_ns = static_cast<std::uint64_t>(std::max<std::int64_t>(0, standing.count()));
    entry.pid.store(static_cast<std::uint32_t>(escape.finding.pid), kRelaxed);
    store_text(entry.gpu_uuid, escape.finding.gpu_uuid);
    entry.used_bytes.store(bytes_or_unknown(escape.finding.used_bytes), kRelaxed);
    entry.accounted_bytes.store(escape.finding.accounted_bytes, kRelaxed);
    entry.unaccounted_bytes.store(bytes_or_unknown(escape.finding.unaccounted_bytes), kRelaxed);
    entry.known_to_agent.store(escape.finding.known_to_agent ? 1 : 0, kRelaxed);
    entry.kill_sent.store(escape.kill_sent ? 1 : 0, kRelaxed);
    entry.first_seen_unix_ns.store(unix_now_ns > standing_ns ? unix_now_ns - standing_ns : 0, kRelaxed);
    store_text(entry.cgroup, escape.cgroup);
    entry.state.store(layout::kInUse, kRelaxed);
  }
  table.omitted.store(static_cast<std::uint32_t>(tracked.size() - shown), kRelaxed);
  table.written_unix_ns.store(unix_now_ns, kRelaxed);
  table.seq.store(seq + 2, std::memory_order_release);
}

std::unique_ptr<EscapeRounds> EscapeRounds::start(layout::StateLayout& state, EscapeWatchConfig config, Log log,
                                                  const std::string& nvml_library) {
  publish_unaccounted(state.unaccounted, {}, 0, std::chrono::steady_clock::now());
  if (config.interval.count() <= 0) {
    log("escape watch off (--nvml-interval 0)");
    return nullptr;
  }
  auto nvml = NvmlProcesses::open(nvml_library);
  if (!nvml) {
    log(fmt::format("escape watch off: {}", nvml.error().message));
    return nullptr;
  }
  const bool kill = config.enforcement.enforce == EnforcementConfig::Enforce::kKill;
  log(fmt::format("escape watch every {} ms through {} ({}, context allowance {} bytes)", config.interval.count(),
                  nvml.value().listing_function(),
                  kill ? fmt::format("kill after {} ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                                             config.enforcement.grace)
                                                             .count())
                       : std::string("report only"),
                  config.context_allowance_bytes));
  return std::unique_ptr<EscapeRounds>(new EscapeRounds(state, std::move(nvml).value(), config, std::move(log)));
}

EscapeRounds::EscapeRounds(layout::StateLayout& state, NvmlProcesses nvml, EscapeWatchConfig config, Log log)
    : state_(state), nvml_(std::move(nvml)), config_(config), log_(std::move(log)), enforcer_(config.enforcement) {}

std::chrono::milliseconds EscapeRounds::run_if_due(std::chrono::steady_clock::time_point now,
                                                   const std::vector<std::pair<pid_t, std::uint32_t>>& joined) {
  if (!next_round_ || now >= *next_round_) {
    round(now, joined);
    next_round_ = now + config_.interval;
  }
  return std::chrono::ceil<std::chrono::milliseconds>(*next_round_ - now);
}

void EscapeRounds::round(std::chrono::steady_clock::time_point now,
                         const std::vector<std::pair<pid_t, std::uint32_t>>& joined) {
  auto seen = nvml_.list();
  if (!seen) {
    // The findings already published stay: a failed listing shows nothing new either way.
    if (seen.error().message != last_error_) log_(fmt::format("escape watch: {}", seen.error().message));
    last_error_ = seen.error().message;
    return;
  }
  if (!last_error_.empty()) log_("escape watch: NVML answers again");
  last_error_.clear();
  const auto findings =
      find_unaccounted(seen.value(), accounted_from_state(state_, joined), config_.context_allowance_bytes);
  for (const EscapeEvent& event : enforcer_.round(findings, now)) log_(fmt::format("escape watch: {}", event.log_line));
  publish_unaccounted(state_.unaccounted, enforcer_.tracked(), unix_now_ns(), now);
}

}  // namespace gpushare::agent
