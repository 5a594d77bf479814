// Checks that a driver library exports every name it is given: dlopens it as programs open
// libcuda.so.1 and dlsym's each name on that handle, as cuBLASLt and the preload library do.
//
//   fake_cuda_exports_check LIBRARY NAME...
//
// Prints each missing name; exit status 1 if any is missing (or the library does not load).
#include <dlfcn.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: fake_cuda_exports_check LIBRARY NAME...\n");
    return 2;
  }
  void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    std::fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
    return 1;
  }
  int missing = 0;
  for (int i = 2; i < argc; ++i) {
    if (dlsym(library, argv[i]) == nullptr) {
      std::printf("missing: %s\n", argv[i]);
      ++missing;
    }
  }
  const int names = argc - 2;
  std::printf("%d of %d names exported by %s\n", names - missing, names, argv[1]);
  return missing == 0 ? 0 : 1;
}
