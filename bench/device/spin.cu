// A compute-bound kernel loop for the time-slicing checks on a real GPU (through libcudart, so the
// launches reach the driver via cuGetProcAddress, as PyTorch's do).
//
//   spin saturate SECONDS KERNEL_US    back-to-back kernels that keep every SM busy for ~KERNEL_US;
//                                      prints kernels=<completed> wall_us=<..>
//   spin latency SECONDS INTERVAL_US   one tiny kernel, synchronize, sleep; prints p50_us p99_us
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

__global__ void spin(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: spin saturate SECONDS KERNEL_US | latency SECONDS INTERVAL_US\n");
    return 2;
  }
  const std::string mode = argv[1];
  const double seconds = std::atof(argv[2]);
  const long long arg = std::atoll(argv[3]);
  int clock_khz = 0, sms = 0;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  if (mode == "saturate") {
    const long long cycles = arg * clock_khz / 1000;
    long long launched = 0;
    cudaEvent_t marks[64];
    for (auto& mark : marks) cudaEventCreateWithFlags(&mark, cudaEventDisableTiming);
    while (clock::now() < end) {
      spin<<<sms, 32, 0, stream>>>(cycles);
      // Keep at most 64 kernels queued, like a training loop that syncs now and then.
      cudaEventRecord(marks[launched % 64], stream);
      if (++launched >= 64) cudaEventSynchronize(marks[launched % 64]);
    }
    cudaStreamSynchronize(stream);
    const auto wall = std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - start).count();
    std::printf("kernels=%lld wall_us=%lld\n", launched, static_cast<long long>(wall));
  } else {
    std::vector<double> latencies;
    while (clock::now() < end) {
      const auto t0 = clock::now();
      spin<<<1, 32, 0, stream>>>(1000);
      cudaStreamSynchronize(stream);
      latencies.push_back(std::chrono::duration<double, std::micro>(clock::now() - t0).count());
      std::this_thread::sleep_for(std::chrono::microseconds(arg));
    }
    std::sort(latencies.begin(), latencies.end());
    auto at = [&](double q) { return latencies[static_cast<size_t>(q * (latencies.size() - 1))]; };
    std::printf("count=%zu p50_us=%.1f p99_us=%.1f\n", latencies.size(), at(0.5), at(0.99));
  }
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    std::fprintf(stderr, "spin: %s\n", cudaGetErrorString(error));
    return 3;
  }
  return 0;
}
