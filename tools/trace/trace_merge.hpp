// `gpushare trace merge`: a trace directory as one Chrome Trace Event Format file (the object form,
// "traceEvents"), which Perfetto and chrome://tracing load. A process track per GPU, per tenant a
// thread track of its kernels, memcpys and memsets, one of its gpushare slices and one of its
// request ranges. Two streaming passes: the first (load_trace without kernels) learns the tracks,
// slices and ranges; the second writes each kernel, memcpy and memset as it is read. Output order
// is fixed: metadata, slices and instants, ranges and notes, then records in file and line order.
#pragma once

#include <cstdio>
#include <filesystem>
#include <vector>

#include "trace_model.hpp"

namespace gpushare::trace {

// Times in the output are microseconds (three decimals) after `model.origin`, which is written as
// otherData.origin_ns.
Status write_chrome_trace(const TraceModel& model, std::FILE* out, const NoteSink& note);

}  // namespace gpushare::trace
