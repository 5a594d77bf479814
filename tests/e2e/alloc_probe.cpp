// A small CUDA driver program for the end-to-end tests: it reaches the driver through one of the
// three paths real programs use, then allocates and reports what it saw as key=value lines.
//
//   alloc_probe LOOKUP COMMAND [ARGS]   LOOKUP = linked | procaddress | dlsym
//   COMMANDS
//     fill CHUNK [HOLD_UNTIL_FILE [FILLED_FILE]]
//                                    allocate CHUNK bytes until refused; report; optionally create
//                                    FILLED_FILE, then wait for HOLD_UNTIL_FILE to exist before
//                                    freeing (keeps memory for races)
//     hold BYTES READY_FILE          allocate, create READY_FILE, then sleep until killed
//     hold-with-child BYTES READY_FILE   the same, after forking a child that lives on for 5 s
//                                    (a DataLoader worker outliving its killed parent)
//     threads N CHUNK                N threads fill at once
//     vmm CHUNK                      cuMemCreate until refused (after a fabric-handle probe)
//     async CHUNK                    cuMemAllocAsync until refused
//     pitch WIDTH HEIGHT             one cuMemAllocPitch_v2; reports the pitch and the tenant's view
//     info                           report the device view only
//     nvml BYTES                     allocate BYTES, then ask NVML (dlopen libnvidia-ml.so.1, as PyTorch
//                                    does) for device 0's memory: nvml rc= total= free= used=
//   Environment: PROBE_DEVICE (ordinal, default 0).
#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <cuda.h>

#include "driver_api.hpp"

const char* const driver_api::kProgramName = "alloc_probe";

namespace {

using driver_api::die;
using driver_api::resolve;

struct Api : driver_api::ContextApi {
  decltype(&::cuMemAlloc_v2) mem_alloc;
  decltype(&::cuMemFree_v2) mem_free;
  decltype(&::cuMemAllocPitch_v2) mem_alloc_pitch;
  decltype(&::cuMemGetInfo_v2) mem_get_info;
  decltype(&::cuDeviceTotalMem_v2) device_total_mem;
  decltype(&::cuMemCreate) mem_create;
  decltype(&::cuMemRelease) mem_release;
  decltype(&::cuMemAddressReserve) mem_address_reserve;
  decltype(&::cuMemAllocAsync) mem_alloc_async;
  decltype(&::cuMemFreeAsync) mem_free_async;
};

Api linked_api() {
  return Api{driver_api::linked_context_api(),
             &::cuMemAlloc_v2, &::cuMemFree_v2,        &::cuMemAllocPitch_v2,       &::cuMemGetInfo_v2,
             &::cuDeviceTotalMem_v2, &::cuMemCreate,   &::cuMemRelease,             &::cuMemAddressReserve,
             &::cuMemAllocAsync, &::cuMemFreeAsync};
}

// As cuBLASLt, cuDNN and JAX do: dlsym on a handle of libcuda.
Api dlsym_api() {
  void* handle = driver_api::open_libcuda();
  Api api{};
  resolve(api.init, dlsym(handle, "cuInit"), "cuInit");
  resolve(api.device_get, dlsym(handle, "cuDeviceGet"), "cuDeviceGet");
  resolve(api.primary_ctx_retain, dlsym(handle, "cuDevicePrimaryCtxRetain"), "cuDevicePrimaryCtxRetain");
  resolve(api.ctx_set_current, dlsym(handle, "cuCtxSetCurrent"), "cuCtxSetCurrent");
  resolve(api.mem_alloc, dlsym(handle, "cuMemAlloc_v2"), "cuMemAlloc_v2");
  resolve(api.mem_free, dlsym(handle, "cuMemFree_v2"), "cuMemFree_v2");
  resolve(api.mem_alloc_pitch, dlsym(handle, "cuMemAllocPitch_v2"), "cuMemAllocPitch_v2");
  resolve(api.mem_get_info, dlsym(handle, "cuMemGetInfo_v2"), "cuMemGetInfo_v2");
  resolve(api.device_total_mem, dlsym(handle, "cuDeviceTotalMem_v2"), "cuDeviceTotalMem_v2");
  resolve(api.mem_create, dlsym(handle, "cuMemCreate"), "cuMemCreate");
  resolve(api.mem_release, dlsym(handle, "cuMemRelease"), "cuMemRelease");
  resolve(api.mem_address_reserve, dlsym(handle, "cuMemAddressReserve"), "cuMemAddressReserve");
  resolve(api.mem_alloc_async, dlsym(handle, "cuMemAllocAsync"), "cuMemAllocAsync");
  resolve(api.mem_free_async, dlsym(handle, "cuMemFreeAsync"), "cuMemFreeAsync");
  return api;
}

// As libcudart does (see driver_api::ProcAddress).
Api procaddress_api() {
  const driver_api::ProcAddress get;
  Api api{};
  static_cast<driver_api::ContextApi&>(api) = driver_api::procaddress_context_api(get);
  resolve(api.mem_alloc, get("cuMemAlloc", 3020), "cuMemAlloc");
  resolve(api.mem_free, get("cuMemFree", 3020), "cuMemFree");
  resolve(api.mem_alloc_pitch, get("cuMemAllocPitch", 3020), "cuMemAllocPitch");
  resolve(api.mem_get_info, get("cuMemGetInfo", 3020), "cuMemGetInfo");
  resolve(api.device_total_mem, get("cuDeviceTotalMem", 3020), "cuDeviceTotalMem");
  resolve(api.mem_create, get("cuMemCreate", 10020), "cuMemCreate");
  resolve(api.mem_release, get("cuMemRelease", 10020), "cuMemRelease");
  resolve(api.mem_address_reserve, get("cuMemAddressReserve", 10020), "cuMemAddressReserve");
  // PyTorch's per-thread default stream build asks with flags = 2 and gets the _ptsz variant.
  resolve(api.mem_alloc_async, get("cuMemAllocAsync", 11020, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM),
          "cuMemAllocAsync");
  resolve(api.mem_free_async, get("cuMemFreeAsync", 11020, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM),
          "cuMemFreeAsync");
  return api;
}

std::size_t number(const char* text) { return static_cast<std::size_t>(std::strtoull(text, nullptr, 0)); }

void report_view(const Api& api, CUdevice device) {
  size_t free = 0, total = 0, device_total = 0;
  const CUresult info = api.mem_get_info(&free, &total);
  api.device_total_mem(&device_total, device);
  std::printf("meminfo_rc=%d free=%zu total=%zu device_total=%zu\n", info, free, total, device_total);
}

// Device 0's memory as NVML tells it to a process that has used CUDA (the shadow, when it is first).
void report_nvml() {
  void* nvml = ::dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (nvml == nullptr) die("cannot open libnvidia-ml.so.1");
  using Init = int (*)();
  using Handle = int (*)(unsigned int, void**);
  using MemoryInfo = int (*)(void*, unsigned long long*);
  const auto init = reinterpret_cast<Init>(::dlsym(nvml, "nvmlInit_v2"));
  const auto handle_of = reinterpret_cast<Handle>(::dlsym(nvml, "nvmlDeviceGetHandleByIndex_v2"));
  const auto memory_info = reinterpret_cast<MemoryInfo>(::dlsym(nvml, "nvmlDeviceGetMemoryInfo"));
  if (init == nullptr || handle_of == nullptr || memory_info == nullptr) die("NVML lacks a function");
  void* device = nullptr;
  unsigned long long memory[3] = {};  // nvmlMemory_t: total, free, used
  int rc = init();
  if (rc == 0) rc = handle_of(0, &device);
  if (rc == 0) rc = memory_info(device, memory);
  std::printf("nvml rc=%d total=%llu free=%llu used=%llu\n", rc, memory[0], memory[1], memory[2]);
}

void wait_for_file(const std::string& path) {
  while (access(path.c_str(), F_OK) != 0) usleep(2000);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) die("usage: alloc_probe linked|procaddress|dlsym COMMAND [ARGS]");
  const std::string lookup = argv[1];
  const std::string command = argv[2];
  const Api api = lookup == "linked" ? linked_api() : lookup == "dlsym" ? dlsym_api() : lookup == "procaddress" ? procaddress_api() : (die("unknown lookup"), Api{});
  const driver_api::PrimaryContext primary = driver_api::primary_context(api);
  const CUdevice device = primary.device;
  const CUcontext context = primary.context;
  std::setvbuf(stdout, nullptr, _IONBF, 0);

  if (command == "info") {
    report_view(api, device);
  } else if (command == "nvml" && argc >= 4) {
    CUdeviceptr pointer = 0;
    std::printf("alloc_rc=%d\n", api.mem_alloc(&pointer, number(argv[3])));
    report_nvml();
  } else if (command == "fill" && argc >= 4) {
    const std::size_t chunk = number(argv[3]);
    std::vector<CUdeviceptr> pointers;
    CUresult last = CUDA_SUCCESS;
    while (true) {
      CUdeviceptr pointer = 0;
      last = api.mem_alloc(&pointer, chunk);
      if (last != CUDA_SUCCESS) break;
      pointers.push_back(pointer);
    }
    std::printf("allocated=%zu error=%d\n", pointers.size() * chunk, last);
    report_view(api, device);
    if (argc >= 6) std::ofstream(argv[5]) << "filled\n";
    if (argc >= 5) wait_for_file(argv[4]);
    for (CUdeviceptr pointer : pointers) {
      if (api.mem_free(pointer) != CUDA_SUCCESS) die("free failed");
    }
    size_t free = 0, total = 0;
    api.mem_get_info(&free, &total);
    std::printf("after_free free=%zu total=%zu\n", free, total);
  } else if (command == "hold" && argc >= 5) {
    CUdeviceptr pointer = 0;
    const CUresult result = api.mem_alloc(&pointer, number(argv[3]));
    std::printf("hold_rc=%d\n", result);
    std::ofstream(argv[4]) << "ready\n";
    while (true) pause();
  } else if (command == "hold-with-child" && argc >= 5) {
    CUdeviceptr pointer = 0;
    const CUresult result = api.mem_alloc(&pointer, number(argv[3]));
    const pid_t child = fork();
    if (child == 0) {
      close(STDOUT_FILENO);  // so the test sees the parent's output end when the parent dies
      close(STDERR_FILENO);
      sleep(5);
      _exit(0);
    }
    std::printf("hold_rc=%d child=%d\n", result, static_cast<int>(child));
    std::ofstream(argv[4]) << "ready\n";
    while (true) pause();
  } else if (command == "threads" && argc >= 5) {
    const int threads = std::atoi(argv[3]);
    const std::size_t chunk = number(argv[4]);
    std::atomic<std::size_t> granted{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        // The driver's current context is per thread.
        api.ctx_set_current(context);
        CUdeviceptr pointer = 0;
        while (api.mem_alloc(&pointer, chunk) == CUDA_SUCCESS) granted += chunk;
      });
    }
    for (auto& worker : workers) worker.join();
    std::printf("allocated=%zu\n", granted.load());
    report_view(api, device);
  } else if (command == "vmm" && argc >= 4) {
    const std::size_t chunk = number(argv[3]);
    CUdeviceptr base = 0;
    // PyTorch's expandable segments reserve 1.125 x the device: address space is not memory.
    const CUresult reserve = api.mem_address_reserve(&base, std::size_t{90} << 30, 0, 0, 0);
    CUmemAllocationProp prop{};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = device;
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_FABRIC;
    CUmemGenericAllocationHandle handle = 0;
    const CUresult fabric = api.mem_create(&handle, chunk, &prop, 0);
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    std::size_t created = 0;
    CUresult last = CUDA_SUCCESS;
    std::vector<CUmemGenericAllocationHandle> handles;
    while ((last = api.mem_create(&handle, chunk, &prop, 0)) == CUDA_SUCCESS) {
      handles.push_back(handle);
      created += chunk;
    }
    std::printf("reserve_rc=%d fabric_rc=%d allocated=%zu error=%d\n", reserve, fabric, created, last);
    report_view(api, device);
    for (auto h : handles) api.mem_release(h);
    size_t free = 0, total = 0;
    api.mem_get_info(&free, &total);
    std::printf("after_free free=%zu total=%zu\n", free, total);
  } else if (command == "async" && argc >= 4) {
    const std::size_t chunk = number(argv[3]);
    std::vector<CUdeviceptr> pointers;
    CUresult last = CUDA_SUCCESS;
    CUdeviceptr pointer = 0;
    while ((last = api.mem_alloc_async(&pointer, chunk, nullptr)) == CUDA_SUCCESS) pointers.push_back(pointer);
    std::printf("allocated=%zu error=%d\n", pointers.size() * chunk, last);
    for (auto p : pointers) api.mem_free_async(p, nullptr);
    size_t free = 0, total = 0;
    api.mem_get_info(&free, &total);
    std::printf("after_free free=%zu total=%zu\n", free, total);
  } else if (command == "pitch" && argc >= 5) {
    CUdeviceptr pointer = 0;
    size_t pitch = 0;
    const CUresult result = api.mem_alloc_pitch(&pointer, &pitch, number(argv[3]), number(argv[4]), 4);
    std::printf("pitch_rc=%d pitch=%zu\n", result, pitch);
    report_view(api, device);
    api.mem_free(pointer);
    report_view(api, device);
  } else {
    die("unknown command or missing arguments");
  }
  return 0;
}
