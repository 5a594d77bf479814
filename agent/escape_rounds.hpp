// The agent's escape watch (escape_watch.hpp) run on its loop: every interval, NVML's processes are
// compared with the ledger of the processes connected to the agent, the enforcer follows (and under
// `--enforce kill` ends) what stands out, each event is logged, and the findings are published in
// the state's unaccounted table for `gpushare status` and the exporter.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/state_layout.hpp"
#include "escape_watch.hpp"

namespace gpushare::agent {

struct EscapeWatchConfig {
  EnforcementConfig enforcement;
  std::uint64_t context_allowance_bytes = kDefaultContextAllowanceBytes;
  std::chrono::milliseconds interval = std::chrono::seconds(5);  // zero: no watch
};

// The ledger's word on the joined processes (pid, slot): the bytes each slot holds on each GPU
// record in use, by the record's UUID. A process with no bytes anywhere is present with none.
Accounted accounted_from_state(const layout::StateLayout& state,
                               const std::vector<std::pair<pid_t, std::uint32_t>>& joined);

// Rewrites the state's unaccounted table with `tracked` (the first kMaxUnaccounted; the rest are
// counted as omitted). `unix_now` and `steady_now` are the same instant, to date each finding.
void publish_unaccounted(layout::UnaccountedTable& table, const std::vector<TrackedEscape>& tracked,
                         std::uint64_t unix_now_ns, std::chrono::steady_clock::time_point steady_now);

class EscapeRounds {
 public:
  using Log = std::function<void(std::string_view)>;

  // Empties the table a previous agent may have left, then opens NVML. Null (after one log line)
  // when the watch is off (a zero interval) or NVML cannot be loaded: the agent serves without it.
  static std::unique_ptr<EscapeRounds> start(layout::StateLayout& state, EscapeWatchConfig config, Log log,
                                             const std::string& nvml_library = "libnvidia-ml.so.1");

  // A round when one is due (the first at once); how long until the next one.
  std::chrono::milliseconds run_if_due(std::chrono::steady_clock::time_point now,
                                       const std::vector<std::pair<pid_t, std::uint32_t>>& joined);

 private:
  EscapeRounds(layout::StateLayout& state, NvmlProcesses nvml, EscapeWatchConfig config, Log log);
  void round(std::chrono::steady_clock::time_point now, const std::vector<std::pair<pid_t, std::uint32_t>>& joined);

  layout::StateLayout& state_;
  NvmlProcesses nvml_;
  EscapeWatchConfig config_;
  Log log_;
  EscapeEnforcer enforcer_;
  std::optional<std::chrono::steady_clock::time_point> next_round_;
  std::string last_error_;  // NVML's last failure, logged once until it changes or clears
};

}  // namespace gpushare::agent
