// The C boundary of libgpushare-preload.so. Nothing here has behaviour of its own: each export
// forwards to hooks:: inside a guard, so no C++ exception can reach the program that called the
// driver. The version script (generated from hooks.def) exports exactly these names.
#include <dlfcn.h>

#include "driver.hpp"
#include "hooks.hpp"

#define GPUSHARE_EXPORT extern "C" __attribute__((visibility("default")))

namespace {
template <typename Body>
CUresult guarded(Body&& body) noexcept {
  try {
    return body();
  } catch (...) {
    // Allocation failure inside the hook's own bookkeeping: report it as the driver would.
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
}
}  // namespace

#define GPUSHARE_HOOK(name, params, args) \
  GPUSHARE_EXPORT CUresult name params { return guarded([&] { return gpushare::interpose::hooks::name args; }); }
#define GPUSHARE_USES(name, params)
#include "hooks.def"
#undef GPUSHARE_HOOK
#undef GPUSHARE_USES

// cuBLASLt, cuDNN, Triton and JAX look driver functions up with dlsym on their own handle of
// libcuda, which never sees a preloaded library's exports; so dlsym itself is interposed.
GPUSHARE_EXPORT void* dlsym(void* handle, const char* symbol) {
  gpushare::interpose::DlsymFn real = gpushare::interpose::real_dlsym();
  if (real == nullptr) return nullptr;
  // RTLD_NEXT is relative to the caller's return address. This is a tail call (checked by the
  // dlsym_next test), so the C library still sees the original caller.
  if (handle == RTLD_NEXT) return real(handle, symbol);
  void* address = real(handle, symbol);
  // (glibc declares symbol nonnull, so it is not tested for null here.)
  if (address == nullptr || symbol[0] != 'c' || symbol[1] != 'u') return address;
  try {
    return gpushare::interpose::hooks::map_dlsym_result(symbol, address);
  } catch (...) {
    return address;
  }
}
