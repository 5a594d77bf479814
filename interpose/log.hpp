// One-line messages on stderr, "gpushare: ...", filtered by GPUSHARE_LOG.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "core/settings.hpp"

namespace gpushare::interpose {

bool log_enabled(LogLevel level);
void log_line(std::string_view line);  // a single write(2), so lines of concurrent threads never interleave

template <typename... Args>
void log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
  if (!log_enabled(level)) return;
  log_line(fmt::format(format, std::forward<Args>(args)...));
}

// Faults that can repeat at every call (a damaged state, an untracked GPU): one line per kind every
// kLimitedLogIntervalNs at most, never a line per call; the next line says how many were left out.
enum class Repeated : unsigned { kLedger, kArbiter, kUntrackedGpu, kContextCharge, kCount };
inline constexpr std::uint64_t kLimitedLogIntervalNs = 10'000'000'000;
// Whether a line of this kind may be written now; `*left_out` is set to the lines held back since.
bool may_log_repeated(Repeated kind, std::uint64_t* left_out);

template <typename... Args>
void log_repeated(Repeated kind, LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
  if (!log_enabled(level)) return;
  std::uint64_t left_out = 0;
  if (!may_log_repeated(kind, &left_out)) return;
  std::string line = fmt::format(format, std::forward<Args>(args)...);
  if (left_out != 0) line += fmt::format(" ({} more like it since the last line)", left_out);
  log_line(line);
}

}  // namespace gpushare::interpose
