// One rank of a ring job (tensor- or data-parallel) on the fake driver: each step is a compute
// kernel of COMPUTE_US, then this rank's part of the group's collective (fake_cuda_collective) of
// COLLECTIVE_US, which spins on the GPU until every rank has launched its part.
//
//   ring_workload RANK WORLD GROUP SECONDS COMPUTE_US COLLECTIVE_US
//     RANK 0..WORLD-1, WORLD 2..8, GROUP the collective group (not 0; one job per group and engine
//     file). Runs steps for SECONDS, synchronizing every RING_SYNC_EVERY steps (default 4), then
//     prints
//       steps=<n> wall_us=<start to end> first_us=<start to the first step's completion>
//   Ranks stop together: rank 0 decides when SECONDS are over and writes the last step count to the
//   stop file (RING_STOP_FILE, default FAKE_CUDA_ENGINE's path + ".ring<GROUP>.stop"); the other
//   ranks read it before each step.
//   Environment: PROBE_DEVICE (ordinal, default RANK); RING_STARTED_FILE (created just before the
//   first collective part is launched); RING_READY_FILE (gets "ready" once the first step is
//   complete). Any launch or sync error: error=<code> on stderr, exit status 3.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <cuda.h>
#include <dlfcn.h>
#include <unistd.h>

#include "driver_api.hpp"

const char* const driver_api::kProgramName = "ring_workload";

namespace {

using driver_api::die;
using Clock = std::chrono::steady_clock;

void check(CUresult result) {
  if (result == CUDA_SUCCESS) return;
  std::fprintf(stderr, "error=%d\n", static_cast<int>(result));
  std::exit(3);
}

int64_t micros(Clock::duration d) { return std::chrono::duration_cast<std::chrono::microseconds>(d).count(); }

unsigned number(const char* text) { return static_cast<unsigned>(std::strtoul(text, nullptr, 0)); }

// The fake driver accepts any non-null function handle for an ordinary kernel.
char g_compute_image;
CUfunction compute_kernel() { return reinterpret_cast<CUfunction>(&g_compute_image); }

CUfunction collective_kernel(uint32_t group, uint32_t world) {
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  auto* make = driver != nullptr ? reinterpret_cast<CUfunction (*)(uint32_t, uint32_t)>(dlsym(driver, "fake_cuda_collective"))
                                 : nullptr;
  if (make == nullptr) die("collectives need the fake driver (no fake_cuda_collective)");
  CUfunction f = make(group, world);
  if (f == nullptr) die("fake_cuda_collective refused the group");
  return f;
}

void create_file(const char* path, const char* text) {
  std::FILE* file = std::fopen(path, "w");
  if (file == nullptr) die("cannot create a ready file");
  std::fputs(text, file);
  std::fclose(file);
}

// Rank 0's decision: the ranks run exactly `steps` steps. Written whole (rename) before rank 0
// launches its last part, so a peer that completes that step sees it before its next one.
void write_stop(const std::string& path, uint64_t steps) {
  const std::string temporary = path + ".tmp";
  create_file(temporary.c_str(), std::to_string(steps).c_str());
  if (std::rename(temporary.c_str(), path.c_str()) != 0) die("cannot write the stop file");
}

// The step count rank 0 decided, or UINT64_MAX while it has not.
uint64_t read_stop(const std::string& path) {
  if (access(path.c_str(), F_OK) != 0) return UINT64_MAX;
  std::ifstream in(path);
  uint64_t steps = UINT64_MAX;
  in >> steps;
  return in ? steps : UINT64_MAX;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) die("usage: ring_workload RANK WORLD GROUP SECONDS COMPUTE_US COLLECTIVE_US");
  const unsigned rank = number(argv[1]);
  const unsigned world = number(argv[2]);
  const unsigned group = number(argv[3]);
  const auto duration = std::chrono::duration<double>(std::strtod(argv[4], nullptr));
  const unsigned compute_us = number(argv[5]);
  const unsigned collective_us = number(argv[6]);
  if (world < 2 || world > 8 || rank >= world || group == 0 || compute_us == 0 || collective_us == 0)
    die("bad RANK, WORLD, GROUP or durations");
  const char* sync_text = std::getenv("RING_SYNC_EVERY");
  const uint64_t sync_every = sync_text != nullptr && number(sync_text) > 0 ? number(sync_text) : 4;
  std::string stop_file;
  if (const char* path = std::getenv("RING_STOP_FILE")) stop_file = path;
  else if (const char* engine = std::getenv("FAKE_CUDA_ENGINE")) stop_file = std::string(engine) + ".ring" + argv[3] + ".stop";
  else die("no RING_STOP_FILE and no FAKE_CUDA_ENGINE: the ranks could not stop together");
  if (std::getenv("PROBE_DEVICE") == nullptr) setenv("PROBE_DEVICE", argv[1], 1);
  std::setvbuf(stdout, nullptr, _IONBF, 0);

  const driver_api::PrimaryContext context = driver_api::primary_context(driver_api::linked_context_api());
  (void)context;
  const CUfunction collective = collective_kernel(group, world);
  CUstream stream = nullptr;
  check(cuStreamCreate(&stream, 0));
  const char* started_file = std::getenv("RING_STARTED_FILE");
  const char* ready_file = std::getenv("RING_READY_FILE");

  const auto begin = Clock::now();
  int64_t first_us = -1;
  uint64_t steps = 0;
  uint64_t last_step = UINT64_MAX;  // the step count all ranks stop at, once known
  for (;;) {
    if (rank == 0) {
      if (last_step == UINT64_MAX && Clock::now() - begin >= duration) {
        last_step = steps + 1;
        write_stop(stop_file, last_step);
      }
    } else if (last_step == UINT64_MAX) {
      last_step = read_stop(stop_file);
    }
    if (steps >= last_step) break;
    check(cuLaunchKernel(compute_kernel(), compute_us, 1, 1, 1, 1, 1, 0, stream, nullptr, nullptr));
    if (steps == 0 && started_file != nullptr) create_file(started_file, "");
    check(cuLaunchKernel(collective, collective_us, 1, 1, 1, 1, 1, 0, stream, nullptr, nullptr));
    ++steps;
    if (steps == 1) {
      check(cuStreamSynchronize(stream));
      first_us = micros(Clock::now() - begin);
      if (ready_file != nullptr) create_file(ready_file, "ready\n");
    } else if (steps % sync_every == 0) {
      check(cuStreamSynchronize(stream));
    }
  }
  check(cuStreamSynchronize(stream));
  std::printf("steps=%llu wall_us=%lld first_us=%lld\n", static_cast<unsigned long long>(steps),
              static_cast<long long>(micros(Clock::now() - begin)), static_cast<long long>(first_us));
  check(cuStreamDestroy(stream));
  return 0;
}
