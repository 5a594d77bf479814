/* The C API from C, built with `pkg-config --cflags --libs gpushare` against an installed tree:
 * bad input comes back as an error with a message, a good join enforces the quota. */
#define _GNU_SOURCE
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <gpushare/gpushare.h>

int main(void) {
  /* Before joining: asking for usage starts nothing, and neither does a library probing for the
   * driver with dlsym; the join that follows still applies its options. */
  gpushare_usage usage;
  gpushare_usage_init(&usage);
  printf("usage_before_join result=%d\n", (int)gpushare_get_usage(0, &usage));
  printf("probe_before_join found=%d\n", dlsym(RTLD_DEFAULT, "cuMemAlloc_v2") != NULL);

  gpushare_options options;
  gpushare_options_init(&options);
  options.compute_share_pct = 250; /* not a percentage */
  gpushare_result result = gpushare_join(&options);
  printf("bad_share result=%d message=%s\n", (int)result, gpushare_last_error());

  gpushare_options_init(&options);
  options.tenant = "c-api";
  options.memory_limit_bytes = 32ull << 20;
  result = gpushare_join(&options);
  printf("join result=%d tenant=%s\n", (int)result, gpushare_tenant_name());
  if (result != GPUSHARE_OK) return 1;
  result = gpushare_join(&options);
  printf("second_join result=%d\n", (int)result);

  result = gpushare_get_usage(0, &usage);
  printf("usage_before_cuinit result=%d\n", (int)result);

  CUdevice device = 0;
  CUcontext context = NULL;
  if (cuInit(0) != CUDA_SUCCESS || cuDeviceGet(&device, 0) != CUDA_SUCCESS ||
      cuDevicePrimaryCtxRetain(&context, device) != CUDA_SUCCESS || cuCtxSetCurrent(context) != CUDA_SUCCESS) {
    return 1;
  }
  CUdeviceptr block = 0;
  const CUresult big = cuMemAlloc(&block, 48ull << 20);
  const CUresult small = cuMemAlloc(&block, 16ull << 20);
  result = gpushare_get_usage(0, &usage);
  printf("alloc48=%d alloc16=%d usage result=%d used=%llu limit=%llu refusals=%llu total=%llu\n", (int)big, (int)small,
         (int)result, (unsigned long long)usage.memory_used_bytes, (unsigned long long)usage.memory_limit_bytes,
         (unsigned long long)usage.oom_refusals, (unsigned long long)usage.device_total_bytes);
  return 0;
}
