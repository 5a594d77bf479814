// See cupti_library.hpp.
#include "cupti_library.hpp"

#include <dlfcn.h>

#include <fmt/format.h>

#include "driver.hpp"

namespace gpushare::interpose {
namespace {

// Where a toolkit or a PyTorch wheel leaves CUPTI, by soname: newest first. The toolkit's own
// folder is not on the loader's path by default.
constexpr const char* kDefaultNames[] = {"libcupti.so",
                                         "libcupti.so.13",
                                         "libcupti.so.12",
                                         "libcupti.so.11.8",
                                         "libcupti.so.11.7",
                                         "libcupti.so.11.6",
                                         "/usr/local/cuda/extras/CUPTI/lib64/libcupti.so",
                                         "/usr/local/cuda/lib64/libcupti.so"};

// A subscriber that asks for no callback: it only holds CUPTI for this process.
void ignore_callback(void*, int, std::uint32_t, const void*) {}

}  // namespace

std::string CuptiLibrary::describe(cupti::Result result) const {
  const char* text = nullptr;
  if (cuptiGetResultString != nullptr && cuptiGetResultString(result, &text) == cupti::kSuccess && text != nullptr) {
    return fmt::format("{} ({})", text, result);
  }
  return fmt::format("error {}", result);
}

CuptiOpened open_cupti(const std::string& configured) {
  CuptiOpened opened;
  try {
    void* handle = nullptr;
    std::string tried;
    std::string last_error;
    auto try_open = [&](const char* name) {
      handle = ::dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (handle != nullptr) {
        opened.library.path = name;
      } else if (const char* error = ::dlerror(); error != nullptr) {
        last_error = error;
      }
      tried += (tried.empty() ? "" : ", ") + std::string(name);
    };
    if (!configured.empty()) {
      try_open(configured.c_str());
    } else {
      for (const char* name : kDefaultNames) {
        if (try_open(name); handle != nullptr) break;
      }
    }
    if (handle == nullptr) {
      opened.why_not = fmt::format("CUPTI not found (tried {}; {}); set GPUSHARE_CUPTI", tried, last_error);
      return opened;
    }
    CuptiLibrary& cupti = opened.library;
    const DlsymFn lookup = real_dlsym();
#define GPUSHARE_CUPTI_RESOLVE(name, type)                                                                \
  cupti.name = reinterpret_cast<std::add_pointer_t<type>>(lookup(handle, #name));                         \
  if (cupti.name == nullptr) {                                                                            \
    opened.why_not = fmt::format("{} has no {}: not a CUPTI library, or one too old", cupti.path, #name); \
    return opened;                                                                                        \
  }
    GPUSHARE_CUPTI_FUNCTIONS(GPUSHARE_CUPTI_RESOLVE)
#undef GPUSHARE_CUPTI_RESOLVE
    if (const cupti::Result result = cupti.cuptiGetVersion(&cupti.version); result != cupti::kSuccess) {
      opened.why_not = fmt::format("{}: cuptiGetVersion failed: {}", cupti.path, cupti.describe(result));
      return opened;
    }
    if (cupti.version < cupti::kOldestVersion) {
      opened.why_not = fmt::format("{} is CUPTI API version {}, older than {} (CUDA 11.0)", cupti.path, cupti.version,
                                   cupti::kOldestVersion);
      return opened;
    }
    if (const cupti::Result result = cupti.cuptiSubscribe(&cupti.subscriber, &ignore_callback, nullptr);
        result != cupti::kSuccess) {
      opened.why_not = result == cupti::kErrorMultipleSubscribers
                           ? std::string(
                                 "CUPTI is held by another subscriber (a profiler: Nsight Systems, the "
                                 "PyTorch profiler, ...)")
                           : fmt::format("{}: cuptiSubscribe failed: {}", cupti.path, cupti.describe(result));
      return opened;
    }
    opened.ok = true;
  } catch (...) {
    opened.ok = false;
    opened.why_not = "CUPTI could not be opened (out of memory)";
  }
  return opened;
}

}  // namespace gpushare::interpose
