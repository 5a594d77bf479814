// A gpushare report in the Prometheus text exposition format, version 0.0.4. Pure functions of a
// report, so that the exact text is tested without a server or a state file; docs/metrics.md
// lists every metric and what it means.
#pragma once

#include <string>
#include <string_view>

#include "core/report.hpp"

namespace gpushare::exporter {

inline constexpr std::string_view kExpositionContentType = "text/plain; version=0.0.4; charset=utf-8";

// Every metric of `report`, and gpushare_up 1. A limit that does not exist (no memory quota, no
// share given, no cap) has no sample rather than a made-up value.
std::string render_prometheus(const Report& report);

// A scrape that found no state to read (none yet, or one that cannot be opened): the exporter's
// own metrics with gpushare_up 0, and `why` as a comment for whoever reads the text.
std::string render_prometheus_without_state(std::string_view why);

// `value` as the inside of a quoted label value: backslash, double quote and line feed escaped.
std::string escape_label_value(std::string_view value);

}  // namespace gpushare::exporter
