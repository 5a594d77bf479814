// See collective_kinds.hpp.
#include "collective_kinds.hpp"

#include <cstring>
#include <string_view>

namespace gpushare::interpose {

std::array<std::atomic<std::uintptr_t>, 256> g_kernel_kinds{};

bool names_a_collective(const RealDriver& driver, CUfunction function) {
  const char* name = nullptr;
  if (driver.cuFuncGetName == nullptr || driver.cuFuncGetName(&name, function) != CUDA_SUCCESS || name == nullptr) {
    return false;
  }
  const std::string_view text(name, ::strnlen(name, 256));
  return text.find("nccl") != std::string_view::npos || text.find("cross_device_reduce") != std::string_view::npos;
}

}  // namespace gpushare::interpose
