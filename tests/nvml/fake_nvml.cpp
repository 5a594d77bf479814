// A fake "real" libnvidia-ml.so.1 for the shadow library's tests: two devices whose UUIDs are
// those the fake CUDA driver gives its physical devices 0 and 1 ("FAKEGPU-" + the index), so
// both drivers name the same GPU. Configured through the environment:
//   FAKE_NVML_TOTAL, FAKE_NVML_USED, FAKE_NVML_RESERVED   bytes (8 GiB, 1 GiB, 256 MiB)
//   FAKE_NVML_UUID    another UUID for device 0 (e.g. a MIG instance's)
//   FAKE_NVML_FAIL    a status every memory query returns
//   FAKE_NVML_PROCESSES  the compute processes listed, "PID:DEVICE:BYTES,..." (BYTES "NA": the
//                        driver cannot tell); built with FAKE_NVML_WITHOUT_V3, only the unversioned
//                        listing function of older drivers is exported
// nvmlSystemGetDriverVersion stands for the hundreds of functions the shadow does not define.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "nvml_types.hpp"

#define FAKE_NVML_EXPORT extern "C" __attribute__((visibility("default")))

namespace nvml = gpushare::nvml;

struct gpushare::nvml::DeviceRecord {
  unsigned int index;
};

namespace {

nvml::DeviceRecord g_devices[] = {{0}, {1}};
constexpr unsigned int kDeviceCount = 2;
bool g_initialized = false;

unsigned long long env_number(const char* name, unsigned long long fallback) {
  const char* text = std::getenv(name);
  return text != nullptr && *text != '\0' ? std::strtoull(text, nullptr, 0) : fallback;
}

struct Figures {
  unsigned long long total, reserved, free;
};
Figures figures() {
  const unsigned long long total = env_number("FAKE_NVML_TOTAL", 8ull << 30);
  const unsigned long long used = env_number("FAKE_NVML_USED", 1ull << 30);
  const unsigned long long reserved = env_number("FAKE_NVML_RESERVED", 256ull << 20);
  return {total, reserved, total - used - reserved};
}

// What every memory query checks first, as the real library does.
nvml::Return check(nvml::Device device, const void* out) {
  if (!g_initialized) return nvml::kErrorUninitialized;
  if (device == nullptr || device->index >= kDeviceCount || out == nullptr) return nvml::kErrorInvalidArgument;
  return static_cast<nvml::Return>(env_number("FAKE_NVML_FAIL", nvml::kSuccess));
}

nvml::Return copy_text(const std::string& text, char* out, unsigned int length) {
  if (out == nullptr || length <= text.size()) return nvml::kErrorInvalidArgument;
  std::memcpy(out, text.c_str(), text.size() + 1);
  return nvml::kSuccess;
}

struct ListedProcess {
  unsigned int pid, device;
  unsigned long long bytes;
};

// FAKE_NVML_PROCESSES, read at each call; a malformed entry is left out.
std::vector<ListedProcess> listed_processes() {
  std::vector<ListedProcess> processes;
  const char* text = std::getenv("FAKE_NVML_PROCESSES");
  std::string rest = text != nullptr ? text : "";
  while (!rest.empty()) {
    const std::size_t comma = rest.find(',');
    const std::string entry = rest.substr(0, comma);
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    const std::size_t first = entry.find(':');
    const std::size_t second = first == std::string::npos ? first : entry.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string bytes = entry.substr(second + 1);
    processes.push_back({static_cast<unsigned int>(std::strtoul(entry.c_str(), nullptr, 10)),
                         static_cast<unsigned int>(std::strtoul(entry.c_str() + first + 1, nullptr, 10)),
                         bytes == "NA" ? nvml::kValueNotAvailable : std::strtoull(bytes.c_str(), nullptr, 0)});
  }
  return processes;
}

// NVML's protocol: *count is the room in, the count out; kErrorInsufficientSize when it is short.
template <typename Record>
nvml::Return list_processes(nvml::Device device, unsigned int* count, Record* records) {
  if (!g_initialized) return nvml::kErrorUninitialized;
  if (device == nullptr || device->index >= kDeviceCount || count == nullptr) return nvml::kErrorInvalidArgument;
  std::vector<ListedProcess> on_device;
  for (const ListedProcess& process : listed_processes()) {
    if (process.device == device->index) on_device.push_back(process);
  }
  const unsigned int room = *count;
  *count = static_cast<unsigned int>(on_device.size());
  if (room < on_device.size()) return nvml::kErrorInsufficientSize;
  if (records == nullptr && !on_device.empty()) return nvml::kErrorInvalidArgument;
  for (std::size_t i = 0; i < on_device.size(); ++i) {
    records[i] = Record{};
    records[i].pid = on_device[i].pid;
    records[i].used_gpu_memory = on_device[i].bytes;
  }
  return nvml::kSuccess;
}

}  // namespace

FAKE_NVML_EXPORT nvml::Return nvmlInit_v2() {
  g_initialized = true;
  return nvml::kSuccess;
}

FAKE_NVML_EXPORT nvml::Return nvmlShutdown() {
  g_initialized = false;
  return nvml::kSuccess;
}

FAKE_NVML_EXPORT nvml::Return nvmlDeviceGetCount_v2(unsigned int* count) {
  if (!g_initialized) return nvml::kErrorUninitialized;
  *count = kDeviceCount;
  return nvml::kSuccess;
}

FAKE_NVML_EXPORT nvml::Return nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvml::Device* device) {
  if (!g_initialized) return nvml::kErrorUninitialized;
  if (index >= kDeviceCount || device == nullptr) return nvml::kErrorInvalidArgument;
  *device = &g_devices[index];
  return nvml::kSuccess;
}

FAKE_NVML_EXPORT nvml::Return nvmlDeviceGetUUID(nvml::Device device, char* uuid, unsigned int length) {
  if (!g_initialized) return nvml::kErrorUninitialized;
  if (device == nullptr || device->index >= kDeviceCount) return nvml::kErrorInvalidArgument;
  const char* replaced = std::getenv("FAKE_NVML_UUID");
  if (device->index == 0 && replaced != nullptr) return copy_text(replaced, uuid, length);
  // "FAKEGPU-" in hex, then the physical index in 8 big-endian bytes.
  return copy_text("GPU-46414b45-4750-552d-0000-00000000000" + std::to_string(device->index), uuid, length);
}

FAKE_NVML_EXPORT nvml::Return nvmlDeviceGetMemoryInfo(nvml::Device device, nvml::Memory* memory) {
  if (const nvml::Return refused = check(device, memory); refused != nvml::kSuccess) return refused;
  const Figures now = figures();
  *memory = {now.total, now.free, now.total - now.free};
  return nvml::kSuccess;
}

FAKE_NVML_EXPORT nvml::Return nvmlDeviceGetMemoryInfo_v2(nvml::Device device, nvml::MemoryV2* memory) {
  if (const nvml::Return refused = check(device, memory); refused != nvml::kSuccess) return refused;
  if (memory->version != nvml::kMemoryV2Version) return nvml::kErrorArgumentVersionMismatch;
  const Figures now = figures();
  memory->total = now.total;
  memory->reserved = now.reserved;
  memory->free = now.free;
  memory->used = now.total - now.free - now.reserved;
  return nvml::kSuccess;
}

FAKE_NVML_EXPORT nvml::Return nvmlSystemGetDriverVersion(char* version, unsigned int length) {
  return copy_text("999.99-fake", version, length);
}

#ifndef FAKE_NVML_WITHOUT_V3
FAKE_NVML_EXPORT nvml::Return nvmlDeviceGetComputeRunningProcesses_v3(nvml::Device device, unsigned int* count,
                                                                      nvml::ProcessInfo* processes) {
  return list_processes(device, count, processes);
}
#endif

FAKE_NVML_EXPORT nvml::Return nvmlDeviceGetComputeRunningProcesses(nvml::Device device, unsigned int* count,
                                                                   nvml::ProcessInfoV1* processes) {
  return list_processes(device, count, processes);
}
