// What the end-to-end driver programs (alloc_probe, gpu_workload) share: reaching the driver API
// the ways real programs do, and the context every command runs in. Header-only, inline, because
// each program is a single source file with no library of its own; a program includes this and
// keeps only the entry points that are its own.
#pragma once

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include <cuda.h>

namespace driver_api {

// Defined by each program ("alloc_probe", "gpu_workload"): the prefix of its error messages, so
// that a test's output says which program failed.
extern const char* const kProgramName;

// Every failure to reach the driver ends the program with status 3, which the tests read as "the
// setup failed" rather than as a result.
[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "%s: %s\n", kProgramName, what);
  std::exit(3);
}

template <typename Fn>
void resolve(Fn& slot, void* address, const char* name) {
  if (address == nullptr) {
    std::fprintf(stderr, "%s: cannot resolve %s\n", kProgramName, name);
    std::exit(3);
  }
  slot = reinterpret_cast<Fn>(address);
}

// The entry points that set up a context; each program's Api derives from this and adds the
// calls it exercises.
struct ContextApi {
  decltype(&::cuInit) init;
  decltype(&::cuDeviceGet) device_get;
  decltype(&::cuDevicePrimaryCtxRetain) primary_ctx_retain;
  decltype(&::cuCtxSetCurrent) ctx_set_current;
};

// As a program built with -lcuda: the symbols the linker bound.
inline ContextApi linked_context_api() {
  return ContextApi{&::cuInit, &::cuDeviceGet, &::cuDevicePrimaryCtxRetain, &::cuCtxSetCurrent};
}

// libcuda.so.1 opened by name, as every runtime that does not link it does.
inline void* open_libcuda() {
  void* handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) die("cannot dlopen libcuda.so.1");
  return handle;
}

// As libcudart does: dlopen, dlsym("cuGetProcAddress_v2"), then everything by base name and the
// version that introduced the ABI it expects. Calling it returns the address, or null when the
// driver has none for that name, version and flags.
class ProcAddress {
 public:
  ProcAddress() {
    get_proc_ = reinterpret_cast<GetProc>(dlsym(open_libcuda(), "cuGetProcAddress_v2"));
    if (get_proc_ == nullptr) die("no cuGetProcAddress_v2");
  }
  void* operator()(const char* name, int version, cuuint64_t flags = CU_GET_PROC_ADDRESS_DEFAULT) const {
    void* address = nullptr;
    CUdriverProcAddressQueryResult status{};
    if (get_proc_(name, &address, version, flags, &status) != CUDA_SUCCESS) return nullptr;
    return address;
  }

 private:
  using GetProc = CUresult (*)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);
  GetProc get_proc_ = nullptr;
};

inline ContextApi procaddress_context_api(const ProcAddress& get) {
  ContextApi api{};
  resolve(api.init, get("cuInit", 2000), "cuInit");
  resolve(api.device_get, get("cuDeviceGet", 2000), "cuDeviceGet");
  resolve(api.primary_ctx_retain, get("cuDevicePrimaryCtxRetain", 7000), "cuDevicePrimaryCtxRetain");
  resolve(api.ctx_set_current, get("cuCtxSetCurrent", 4000), "cuCtxSetCurrent");
  return api;
}

struct PrimaryContext {
  CUdevice device = 0;
  CUcontext context = nullptr;
};

// cuInit, the device PROBE_DEVICE names (ordinal, default 0) and its primary context, made
// current on this thread; any failure ends the program.
inline PrimaryContext primary_context(const ContextApi& api) {
  const int ordinal = std::getenv("PROBE_DEVICE") ? std::atoi(std::getenv("PROBE_DEVICE")) : 0;
  PrimaryContext primary;
  if (api.init(0) != CUDA_SUCCESS || api.device_get(&primary.device, ordinal) != CUDA_SUCCESS ||
      api.primary_ctx_retain(&primary.context, primary.device) != CUDA_SUCCESS ||
      api.ctx_set_current(primary.context) != CUDA_SUCCESS) {
    die("cannot set up a context");
  }
  return primary;
}

}  // namespace driver_api
