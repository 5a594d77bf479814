// Asks NVML about a device's memory the way nvidia-smi and PyTorch do: dlopen("libnvidia-ml.so.1")
// by name, then dlsym on that handle. Built with NVML_PROBE_LINKED, it calls the functions through
// its own links instead (a program built with -lnvidia-ml).
//   nvml_probe [DEVICE_INDEX [V2_VERSION]]
// One line per call, "name rc=N key=value ... from=PATH", PATH being the library that answered;
// "missing=NAME" for a function that cannot be found. Exit status 1 only when NVML cannot be opened.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include "nvml_types.hpp"

namespace nvml = gpushare::nvml;

using InitFn = nvml::Return (*)();
using GetHandleFn = nvml::Return (*)(unsigned int, nvml::Device*);
using GetDriverVersionFn = nvml::Return (*)(char*, unsigned int);

#ifdef NVML_PROBE_LINKED
extern "C" {
nvml::Return nvmlInit_v2();
nvml::Return nvmlDeviceGetHandleByIndex_v2(unsigned int, nvml::Device*);
nvml::Return nvmlDeviceGetMemoryInfo(nvml::Device, nvml::Memory*);
nvml::Return nvmlDeviceGetMemoryInfo_v2(nvml::Device, nvml::MemoryV2*);
nvml::Return nvmlSystemGetDriverVersion(char*, unsigned int);
}
#endif

namespace {

struct Functions {
  InitFn init = nullptr;
  GetHandleFn get_handle = nullptr;
  nvml::GetMemoryInfoFn memory = nullptr;
  nvml::GetMemoryInfoV2Fn memory_v2 = nullptr;
  GetDriverVersionFn driver_version = nullptr;
};

const char* library_of(const void* function) {
  Dl_info info{};
  return ::dladdr(function, &info) != 0 && info.dli_fname != nullptr ? info.dli_fname : "?";
}

template <typename Fn>
bool present(Fn function, const char* name) {
  if (function == nullptr) std::printf("missing=%s\n", name);
  return function != nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  const unsigned int index = argc > 1 ? static_cast<unsigned int>(std::strtoul(argv[1], nullptr, 0)) : 0;
  const unsigned int version = argc > 2 ? static_cast<unsigned int>(std::strtoul(argv[2], nullptr, 0))
                                        : nvml::kMemoryV2Version;
  Functions nvml_api;
#ifdef NVML_PROBE_LINKED
  nvml_api = {nvmlInit_v2, nvmlDeviceGetHandleByIndex_v2, nvmlDeviceGetMemoryInfo, nvmlDeviceGetMemoryInfo_v2,
              nvmlSystemGetDriverVersion};
#else
  void* library = ::dlopen("libnvidia-ml.so.1", RTLD_LAZY);
  if (library == nullptr) {
    std::printf("dlopen_error=%s\n", ::dlerror());
    return 1;
  }
  const auto find = [&](const char* name) { return ::dlsym(library, name); };
  nvml_api.init = reinterpret_cast<InitFn>(find("nvmlInit_v2"));
  nvml_api.get_handle = reinterpret_cast<GetHandleFn>(find("nvmlDeviceGetHandleByIndex_v2"));
  nvml_api.memory = reinterpret_cast<nvml::GetMemoryInfoFn>(find("nvmlDeviceGetMemoryInfo"));
  nvml_api.memory_v2 = reinterpret_cast<nvml::GetMemoryInfoV2Fn>(find("nvmlDeviceGetMemoryInfo_v2"));
  nvml_api.driver_version = reinterpret_cast<GetDriverVersionFn>(find("nvmlSystemGetDriverVersion"));
#endif

  nvml::Device device = nullptr;
  if (present(nvml_api.init, "nvmlInit_v2")) std::printf("init rc=%d\n", nvml_api.init());
  if (present(nvml_api.get_handle, "nvmlDeviceGetHandleByIndex_v2")) {
    std::printf("handle rc=%d\n", nvml_api.get_handle(index, &device));
  }
  if (present(nvml_api.memory, "nvmlDeviceGetMemoryInfo")) {
    nvml::Memory memory{};
    const int rc = nvml_api.memory(device, &memory);
    std::printf("memory rc=%d total=%llu free=%llu used=%llu from=%s\n", rc, memory.total, memory.free, memory.used,
                library_of(reinterpret_cast<void*>(nvml_api.memory)));
  }
  if (present(nvml_api.memory_v2, "nvmlDeviceGetMemoryInfo_v2")) {
    nvml::MemoryV2 memory{};
    memory.version = version;
    const int rc = nvml_api.memory_v2(device, &memory);
    std::printf("memory_v2 rc=%d version=%u total=%llu reserved=%llu free=%llu used=%llu from=%s\n", rc,
                memory.version, memory.total, memory.reserved, memory.free, memory.used,
                library_of(reinterpret_cast<void*>(nvml_api.memory_v2)));
  }
  if (present(nvml_api.driver_version, "nvmlSystemGetDriverVersion")) {
    char text[80] = {};
    const int rc = nvml_api.driver_version(text, sizeof text);
    std::printf("driver rc=%d version=%s from=%s\n", rc, text,
                library_of(reinterpret_cast<void*>(nvml_api.driver_version)));
  }
  return 0;
}
