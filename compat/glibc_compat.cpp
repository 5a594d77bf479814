// Keeps what gpushare ships loadable on glibc 2.34 (Ubuntu 22.04 has 2.35: the base of most
// PyTorch and NGC images; RHEL 9 has 2.34), although it is built on Debian 12's glibc 2.36.
//
// The static libstdc++ and libgcc we link (so that nothing we inject brings a C++ runtime of its
// own) were built against glibc 2.36 and refer to two newer functions: arc4random (2.36, from
// std::random_device, which gpushare never uses but libstdc++'s string code pulls in) and
// _dl_find_object (2.35, the unwinder's fast path). Defined here, hidden, the link resolves those
// references to these definitions instead of to versioned glibc symbols, so the loader never asks
// for GLIBC_2.35 or GLIBC_2.36. Each does what the glibc function does, with older interfaces:
// getrandom (2.25) and dl_iterate_phdr (2.2.4). tests/e2e/check_glibc_version.sh checks the result.
#include <dlfcn.h>
#include <link.h>
#include <sys/random.h>

#include <cerrno>
#include <cstdint>

extern "C" {

__attribute__((visibility("hidden"))) std::uint32_t arc4random(void) noexcept {
  std::uint32_t value = 0;
  while (::getrandom(&value, sizeof value, 0) != static_cast<ssize_t>(sizeof value)) {
    if (errno != EINTR) break;  // no entropy source at all: like glibc, do not fail the caller
  }
  return value;
}

namespace {
struct FindObject {
  std::uintptr_t address;
  dl_find_object* result;
  bool found;
};

int find_in_object(dl_phdr_info* info, std::size_t /*size*/, void* data) noexcept {
  auto* search = static_cast<FindObject*>(data);
  std::uintptr_t start = UINTPTR_MAX;
  std::uintptr_t end = 0;
  bool contains = false;
  void* eh_frame = nullptr;
  for (ElfW(Half) i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& segment = info->dlpi_phdr[i];
    const std::uintptr_t segment_start = info->dlpi_addr + segment.p_vaddr;
    if (segment.p_type == PT_LOAD) {
      const std::uintptr_t segment_end = segment_start + segment.p_memsz;
      if (segment_start < start) start = segment_start;
      if (segment_end > end) end = segment_end;
      contains = contains || (search->address >= segment_start && search->address < segment_end);
    } else if (segment.p_type == PT_GNU_EH_FRAME) {
      eh_frame = reinterpret_cast<void*>(segment_start);
    }
  }
  if (!contains) return 0;
  dl_find_object& out = *search->result;
  out = {};
  out.dlfo_map_start = reinterpret_cast<void*>(start);
  out.dlfo_map_end = reinterpret_cast<void*>(end);
  out.dlfo_eh_frame = eh_frame;
  // dlfo_link_map stays null: finding it (dladdr1) would take the loader's lock inside
  // dl_iterate_phdr's and deadlock against a concurrent dlopen. libgcc's unwinder reads only the
  // return value and dlfo_eh_frame (and dlfo_eh_dbase on i386).
  search->found = true;
  return 1;
}
}  // namespace

__attribute__((visibility("hidden"))) int _dl_find_object(void* address, dl_find_object* result) noexcept {
  FindObject search{reinterpret_cast<std::uintptr_t>(address), result, false};
  ::dl_iterate_phdr(find_in_object, &search);
  return search.found ? 0 : -1;
}

}  // extern "C"
