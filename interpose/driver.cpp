#include "driver.hpp"

#include <dlfcn.h>

#include <array>
#include <atomic>
#include <mutex>

#include "log.hpp"
#include "tenancy.hpp"

// The exported wrappers (exports.cpp), to map real addresses onto.
extern "C" {
#define GPUSHARE_HOOK(name, params, args) CUresult name params;
#define GPUSHARE_USES(name, params)
#include "hooks.def"
#undef GPUSHARE_HOOK
#undef GPUSHARE_USES
}

namespace gpushare::interpose {
namespace {

struct AddressPair {
  void* real;
  void* wrapper;
};

constexpr std::size_t kHookCount = 0
#define GPUSHARE_HOOK(name, params, args) +1
#define GPUSHARE_USES(name, params)
#include "hooks.def"
#undef GPUSHARE_HOOK
#undef GPUSHARE_USES
    ;

// All constant-initialised: loading the library runs no code.
RealDriver g_table;
std::array<AddressPair, kHookCount> g_pairs{};
std::mutex g_load_mutex;
thread_local bool t_loading = false;  // the driver's own initialisation may call dlsym
bool g_open_failure_logged = false;

}  // namespace

std::atomic<const RealDriver*> detail::g_real_driver{nullptr};
const RealDriver detail::kEmptyDriver{};

const RealDriver* detail::load_real_driver(bool may_load_library) {
  if (const RealDriver* driver = g_real_driver.load(std::memory_order_acquire)) return driver;
  if (t_loading) return nullptr;
  std::lock_guard lock(g_load_mutex);
  if (const RealDriver* driver = g_real_driver.load(std::memory_order_acquire)) return driver;
  DlsymFn lookup = real_dlsym();
  if (lookup == nullptr) return nullptr;
  t_loading = true;
  const std::string& path = process_settings().settings.real_libcuda;
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | (may_load_library ? 0 : RTLD_NOLOAD));
  if (handle == nullptr) {
    t_loading = false;
    if (may_load_library && !g_open_failure_logged) {
      g_open_failure_logged = true;
      const char* why = ::dlerror();
      log(LogLevel::kError, "cannot open the CUDA driver '{}': {}", path, why != nullptr ? why : "unknown error");
    }
    return nullptr;
  }
  std::size_t pair = 0;
#define GPUSHARE_HOOK(name, params, args)                                         \
  g_table.name = reinterpret_cast<decltype(g_table.name)>(lookup(handle, #name)); \
  g_pairs[pair++] = {reinterpret_cast<void*>(g_table.name), reinterpret_cast<void*>(&::name)};
#define GPUSHARE_USES(name, params) g_table.name = reinterpret_cast<decltype(g_table.name)>(lookup(handle, #name));
#include "hooks.def"
#undef GPUSHARE_HOOK
#undef GPUSHARE_USES
  // Every CUDA driver has cuInit and cuDriverGetVersion (and, since CUDA 11.3, cuGetProcAddress).
  // Without them GPUSHARE_REAL_LIBCUDA names some other library: every call would fail with
  // CUDA_ERROR_NOT_FOUND and no word, so say why once (the table is filled only once).
  const bool is_driver = lookup(handle, "cuInit") != nullptr && lookup(handle, "cuDriverGetVersion") != nullptr;
  t_loading = false;
  if (!is_driver) {
    log(LogLevel::kError,
        "GPUSHARE_REAL_LIBCUDA: '{}' is not a CUDA driver (it has no cuInit or cuDriverGetVersion); every CUDA call "
        "will fail with CUDA_ERROR_NOT_FOUND. Point GPUSHARE_REAL_LIBCUDA at libcuda.so.1 or unset it",
        path);
  }
  g_real_driver.store(&g_table, std::memory_order_release);
  return &g_table;
}

const RealDriver* real_driver_if_loaded() { return detail::load_real_driver(false); }

void* wrapper_for(void* address) {
  if (address == nullptr) return nullptr;
  for (const AddressPair& pair : g_pairs) {
    if (pair.real == address) return pair.wrapper;
  }
  return address;
}

DlsymFn real_dlsym() {
  static std::atomic<DlsymFn> cached{nullptr};
  if (DlsymFn fn = cached.load(std::memory_order_acquire)) return fn;
  // dlvsym is not interposed, so this cannot recurse into our own dlsym.
  void* fn = ::dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
  if (fn == nullptr) fn = ::dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
  cached.store(reinterpret_cast<DlsymFn>(fn), std::memory_order_release);
  return reinterpret_cast<DlsymFn>(fn);
}

}  // namespace gpushare::interpose
