// The real CUDA driver, opened at run time (the preload library never links libcuda).
#pragma once

#include <atomic>

#include "cuda_api.hpp"

namespace gpushare::interpose {

// Typed pointers to the real driver's entry points, null where this driver lacks one.
struct RealDriver {
#define GPUSHARE_HOOK(name, params, args) CUresult(*name) params = nullptr;
#define GPUSHARE_USES(name, params) CUresult(*name) params = nullptr;
#include "hooks.def"
#undef GPUSHARE_HOOK
#undef GPUSHARE_USES
};

namespace detail {
// The filled table, once the real driver is open (driver.cpp).
extern std::atomic<const RealDriver*> g_real_driver;
// All null: what wrappers see when the driver cannot be opened.
extern const RealDriver kEmptyDriver;
const RealDriver* load_real_driver(bool may_load_library);
}  // namespace detail

// Opens the real driver (GPUSHARE_REAL_LIBCUDA, default libcuda.so.1) on first use and fills the
// table. Returns null when it cannot be opened; the reason has been logged once. Inline: every
// wrapper calls it, and once the driver is open it is one load.
inline const RealDriver* real_driver() {
  if (const RealDriver* driver = detail::g_real_driver.load(std::memory_order_acquire)) [[likely]] {
    return driver;
  }
  return detail::load_real_driver(true);
}

// The real driver's table, or an all-null one when the driver cannot be opened: wrappers then see a
// missing function and answer kMissing, never call through a null pointer.
inline const RealDriver& real_driver_or_empty() {
  const RealDriver* driver = real_driver();
  return driver != nullptr ? *driver : detail::kEmptyDriver;
}
// What a wrapper returns when the real driver lacks the function (an older driver).
inline constexpr CUresult kMissing = CUDA_ERROR_NOT_FOUND;

// Like real_driver(), but never loads a library: returns null unless the real driver is already
// in the process. Used by the dlsym hook, which must not pull CUDA into programs that do not use it.
const RealDriver* real_driver_if_loaded();

// The wrapper that stands for a real entry point, or `address` itself when it is not hooked.
// REQUIRES: the real driver is loaded.
void* wrapper_for(void* address);

// dlsym as the C library implements it.
using DlsymFn = void* (*)(void*, const char*);
DlsymFn real_dlsym();

}  // namespace gpushare::interpose
