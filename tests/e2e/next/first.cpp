// A library loaded after the preload library that looks up the *next* definition of a symbol it
// defines itself, as interposers (profilers, allocators) do. dlsym(RTLD_NEXT) is relative to the
// caller; if gpushare's dlsym hook broke that, this would find its own definition.
#include <dlfcn.h>

extern "C" int next_probe_value() { return 1; }

extern "C" int next_probe_call_next() {
  auto next = reinterpret_cast<int (*)()>(dlsym(RTLD_NEXT, "next_probe_value"));
  return next == nullptr ? -1 : next();
}
