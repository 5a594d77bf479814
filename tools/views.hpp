// Text renderings of a Report for people: `gpushare status` and one frame of `gpushare top`.
#pragma once

#include <string>

#include "core/report.hpp"

namespace gpushare::tools {

std::string render_status(const Report& report);

// One frame of `top`, at most `width` columns. `previous` (an earlier report, or null) turns the
// counters into rates: GPU % is the share of wall time each tenant held the GPU since then.
std::string render_top(const Report& report, const Report* previous, int width, double interval_s);

}  // namespace gpushare::tools
