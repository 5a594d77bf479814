// One-line messages on stderr, "gpushare: ...", filtered by GPUSHARE_LOG.
#pragma once

#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "gpushare/settings.hpp"

namespace gpushare::interpose {

bool log_enabled(LogLevel level);
void log_line(std::string_view line);  // a single write(2), so lines of concurrent threads never interleave

template <typename... Args>
void log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
  if (!log_enabled(level)) return;
  log_line(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace gpushare::interpose
