// Simulated GPU engine of the fake CUDA driver: one virtual timeline per
// physical device, shared by every process that maps the same engine file.
// No threads: a kernel "runs" during the interval it reserved on the timeline,
// and callers that wait simply sleep until the time they wait for.
#pragma once

#include <atomic>
#include <cstdint>

namespace fake_collective {
struct Table;
}

namespace fake_engine {

constexpr int kDevices = 16;  // physical devices, as in fake_cuda.cpp

// Maps the timelines: the file named by FAKE_CUDA_ENGINE (created and sized if
// needed, all zero = idle devices), or process-private memory if unset.
// Idempotent; false (after a message on stderr) if the file cannot be used.
bool open();

// CLOCK_MONOTONIC in nanoseconds: system-wide, comparable across processes.
uint64_t now_ns();

// Sleeps (never spins) until now_ns() >= t.
void sleep_until(uint64_t t);

// Reserves `duration` ns on physical device `phys`, starting no earlier than
// `earliest` (the stream's tail), after everything reserved before on that
// device by any process. While the kernel would start more than `max_queue`
// ns from now, sleeps first, like a host blocked on a full launch queue.
// Returns the kernel's end time; *queued is how long it waits to start, from now.
// On a device whose collective waits for its peers (fake_collective), waits for it first, at
// most `timeslice` ns (the hardware's time slice between contexts), then runs beside it.
uint64_t launch(int phys, uint64_t earliest, uint64_t duration, uint64_t max_queue, uint64_t timeslice,
                uint64_t* queued);

// The shared state, for fake_collective: a device's end of the last reserved kernel (or a
// pending collective), and the collective groups' table. Valid once open() succeeded.
std::atomic<uint64_t>& busy_until(int phys);
std::atomic<uint64_t>& beside_until(int phys);  // end of what ran beside a pending collective
fake_collective::Table& collective_table();

}  // namespace fake_engine
