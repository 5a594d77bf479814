// The driver side of the fake's kernel activity (fake_activity.cpp), called by fake_cuda.cpp's
// launches; the reading side is the C hooks in fake_activity.hpp.
#pragma once

#include <cstdint>

namespace fake_activity {

// Whether fake_cuda_record_activity turned recording on (cheap: launches check it first).
bool recording();

// Appends one kernel (or graph) that runs from start_ns to end_ns; counted as dropped if the
// queue is full.
void record(uint64_t start_ns, uint64_t end_ns, int device, uint32_t stream, bool graph) noexcept;

}  // namespace fake_activity
