// quota_demo [QUOTA_MIB]: joins the tenant "cpp-linked" with a memory quota, then allocates 16 MiB
// blocks with the CUDA driver API until the quota refuses one, and prints what gpushare saw.
#include <cuda.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include <gpushare/gpushare.hpp>

namespace {
constexpr unsigned long long kMiB = 1ull << 20;

bool check(CUresult result, const char* what) {
  if (result == CUDA_SUCCESS) return true;
  const char* name = nullptr;
  cuGetErrorName(result, &name);
  std::fprintf(stderr, "%s failed: %s\n", what, name != nullptr ? name : "unknown error");
  return false;
}
}  // namespace

int main(int argc, char** argv) {
  const unsigned long long quota_mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 256;

  // 1. Join before the first CUDA call, so that the device already looks quota-sized to the runtime.
  gpushare::Options options;
  options.tenant = "cpp-linked";
  options.memory_limit_bytes = quota_mib * kMiB;
  if (auto joined = gpushare::join(options); !joined) {
    std::fprintf(stderr, "gpushare: %s\n", joined.error().message.c_str());
    return 1;
  }
  std::printf("gpushare %s: tenant %s, quota %llu MiB\n", gpushare::version().c_str(), gpushare::tenant_name().c_str(),
              quota_mib);

  // 2. Ordinary driver API code.
  CUdevice device = 0;
  CUcontext context = nullptr;
  if (!check(cuInit(0), "cuInit") || !check(cuDeviceGet(&device, 0), "cuDeviceGet") ||
      !check(cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain") ||
      !check(cuCtxSetCurrent(context), "cuCtxSetCurrent")) {
    return 1;
  }
  size_t device_total = 0;
  check(cuDeviceTotalMem(&device_total, device), "cuDeviceTotalMem");
  std::printf("device_total_mib=%llu\n", static_cast<unsigned long long>(device_total) / kMiB);

  std::vector<CUdeviceptr> blocks;
  CUresult refused = CUDA_SUCCESS;
  while (refused == CUDA_SUCCESS && blocks.size() < 4096) {
    CUdeviceptr block = 0;
    refused = cuMemAlloc(&block, 16 * kMiB);
    if (refused == CUDA_SUCCESS) blocks.push_back(block);
  }
  const char* refusal = nullptr;
  cuGetErrorName(refused, &refusal);
  std::printf("allocated_mib=%llu refused_with=%s\n", static_cast<unsigned long long>(blocks.size()) * 16,
              refusal != nullptr ? refusal : "?");

  // 3. What the tenant's ledger says.
  if (auto usage = gpushare::usage(0)) {
    std::printf("usage used_mib=%llu limit_mib=%llu peak_mib=%llu oom_refusals=%llu\n",
                static_cast<unsigned long long>(usage->memory_used_bytes / kMiB),
                static_cast<unsigned long long>(usage->memory_limit_bytes / kMiB),
                static_cast<unsigned long long>(usage->memory_peak_bytes / kMiB),
                static_cast<unsigned long long>(usage->oom_refusals));
  } else {
    std::fprintf(stderr, "gpushare: %s\n", usage.error().message.c_str());
    return 1;
  }
  for (CUdeviceptr block : blocks) cuMemFree(block);
  if (auto usage = gpushare::usage(0)) {
    std::printf("after_free used_mib=%llu\n", static_cast<unsigned long long>(usage->memory_used_bytes / kMiB));
  }
  cuDevicePrimaryCtxRelease(device);
  return 0;
}
