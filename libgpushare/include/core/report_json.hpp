// The stable, machine-readable form of a report (`gpushare status --json`), schema in
// docs/operations.md: one line of JSON, keys in the documented order.
//
// Text read from the state or the system (the state path, GPU and tenant names) is not checked to
// be UTF-8; each byte sequence that is not valid UTF-8 becomes U+FFFD, so the output is always
// valid JSON. Everything else is written as it is.
#pragma once

#include <string>

#include "core/report.hpp"

namespace gpushare {

// Bumped when a field of the JSON form changes meaning or disappears; new fields may be added
// without a bump.
inline constexpr int kReportSchemaVersion = 1;

// The report as one line of JSON, newline included.
std::string report_to_json(const Report& report);

}  // namespace gpushare
