// The real CUDA driver, opened at run time (the preload library never links libcuda).
#pragma once

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

// Opens the real driver (GPUSHARE_REAL_LIBCUDA, default libcuda.so.1) on first use and fills the
// table. Returns null when it cannot be opened; the reason has been logged once.
const RealDriver* real_driver();

// The real driver's table, or an all-null one when the driver cannot be opened: wrappers then see a
// missing function and answer kMissing, never call through a null pointer.
const RealDriver& real_driver_or_empty();
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
