// state_damage: writes garbage into one named field of a live gpushare state file, as a buggy or
// hostile participant could (every participant maps the file writable). Used by
// scripts/torture.sh to check that the other participants survive it, and to look at what a
// stopped process was doing (peek).
//
//   state_damage FILE KIND ARGS...
//     holder GPU VALUE            schedules[GPU].holder_word (the time slice's holder token)
//     waiting GPU VALUE           schedules[GPU].waiting (count of waiting processes)
//     slice-end GPU VALUE         schedules[GPU].slice_end_ns
//     mutex WHICH garbage|ghost[=TID]
//                                 WHICH = registry | ledger:GPU | schedule:GPU. garbage: every byte
//                                 0xA5; ghost: locked by a thread that does not exist (default
//                                 TID 4194000: below the kernel's PID limit, above this machine's
//                                 pid_max), as a holder that is stopped or gone without the
//                                 kernel's robust-list cleanup would leave it
//     used TENANT GPU VALUE       tenants[TENANT].ledger[GPU].used_bytes
//     limit TENANT GPU VALUE      tenants[TENANT].ledger[GPU].limit_bytes
//     tenant-state TENANT VALUE   tenants[TENANT].state
//     held SLOT GPU VALUE         slots[SLOT].held_bytes[GPU]
//     tenant-index SLOT VALUE     slots[SLOT].tenant_index
//     slot-state SLOT VALUE       slots[SLOT].state
//     activity SLOT GPU VALUE     slots[SLOT].compute[GPU].activity[0] (low 24 bits: threads inside)
//     header-zero [BYTES]         zeroes the first BYTES bytes of the file, by default the whole
//                                 header (which looks like a file whose creator died before
//                                 writing it)
//     peek SLOT GPU               changes nothing: prints "holds=0|1 waiting=0|1 untaken=0|1 inside=N",
//                                 whether the slot holds GPU's time slice, waits for it, holds a grant
//                                 it has not taken up yet, and how many of
//                                 its threads are inside a launch or synchronize (for a process that
//                                 is stopped, what it was doing)
//   TENANT: a tenant's name, or #INDEX. SLOT: pid:PID (the busy slot of that process, as
//   `gpushare status --json` shows it), or an index. Numbers: decimal or 0x hex.
// Prints what it changed (old -> new) on one line. Exit status: 0 done, 1 target not found or file
// unusable, 2 bad arguments.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "core/state_layout.hpp"

namespace {

namespace layout = gpushare::layout;

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "state_damage: %s\n(see the comment at the top of tests/torture/state_damage.cpp)\n", why);
  std::exit(2);
}

[[noreturn]] void fail(const std::string& why) {
  std::fprintf(stderr, "state_damage: %s\n", why.c_str());
  std::exit(1);
}

std::uint64_t number(const std::string& text) {
  if (text.empty()) usage("empty number");
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text.c_str(), &end, 0);
  if (errno != 0 || *end != '\0') usage(("not a number: " + text).c_str());
  return value;
}

std::uint32_t index_below(const std::string& text, std::uint32_t bound, const char* what) {
  const std::uint64_t value = number(text);
  if (value >= bound) usage((std::string(what) + " out of range: " + text).c_str());
  return static_cast<std::uint32_t>(value);
}

// The file, mapped shared: what is written here is what every participant sees.
struct Mapped {
  void* base = nullptr;
  std::size_t bytes = 0;
};

Mapped map_file(const std::string& path, std::size_t at_least) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) fail("cannot open " + path + ": " + std::strerror(errno));
  struct stat info {};
  if (::fstat(fd, &info) != 0) fail("cannot stat " + path + ": " + std::strerror(errno));
  const auto size = static_cast<std::size_t>(info.st_size);
  if (size < at_least) fail(path + " is shorter (" + std::to_string(size) + " bytes) than needed");
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) fail("cannot map " + path + ": " + std::strerror(errno));
  return {base, size};
}

std::uint32_t find_tenant(const layout::StateLayout& state, const std::string& text) {
  if (text.starts_with("#")) return index_below(text.substr(1), layout::kMaxTenants, "tenant index");
  for (std::uint32_t t = 0; t < layout::kMaxTenants; ++t) {
    const auto& tenant = state.tenants[t];
    if (tenant.state.load() == layout::kInUse && ::strncmp(tenant.name, text.c_str(), sizeof tenant.name) == 0) {
      return t;
    }
  }
  fail("no tenant named '" + text + "' in use");
}

std::uint32_t find_slot(const layout::StateLayout& state, const std::string& text) {
  if (!text.starts_with("pid:")) return index_below(text, layout::kMaxSlots, "slot");
  const std::uint64_t pid = number(text.substr(4));
  for (std::uint32_t s = 0; s < layout::kMaxSlots; ++s) {
    if (state.slots[s].state.load() != layout::kFree && state.slots[s].pid.load() == pid) return s;
  }
  fail("no busy slot of pid " + std::to_string(pid));
}

template <typename T>
void set(std::atomic<T>& field, std::uint64_t value, const std::string& name) {
  const T old = field.exchange(static_cast<T>(value));
  std::printf("%s: %#llx -> %#llx\n", name.c_str(), static_cast<unsigned long long>(old),
              static_cast<unsigned long long>(static_cast<T>(value)));
}

pthread_mutex_t* find_mutex(layout::StateLayout& state, const std::string& which) {
  if (which == "registry") return &state.registry_mutex;
  const auto colon = which.find(':');
  if (colon == std::string::npos) usage(("unknown mutex: " + which).c_str());
  const std::uint32_t gpu = index_below(which.substr(colon + 1), layout::kMaxGpus, "GPU");
  if (which.substr(0, colon) == "ledger") return &state.gpus[gpu].ledger_mutex;
  if (which.substr(0, colon) == "schedule") return &state.schedules[gpu].mutex;
  usage(("unknown mutex: " + which).c_str());
}

void damage_mutex(pthread_mutex_t* mutex, const std::string& which, const std::string& how) {
  if (how == "garbage") {
    std::memset(static_cast<void*>(mutex), 0xA5, sizeof *mutex);
    std::printf("mutex %s: every byte 0xa5\n", which.c_str());
  } else if (how.starts_with("ghost")) {
    const std::uint64_t tid = how.size() > 6 && how[5] == '=' ? number(how.substr(6)) : 4194000;
    // glibc's robust mutex: the lock word holds the owner's thread id, and __owner repeats it.
    // Nobody will ever unlock it, and the kernel never marks it as left by a dead owner.
    mutex->__data.__lock = static_cast<int>(tid);
    mutex->__data.__owner = static_cast<int>(tid);
    std::printf("mutex %s: locked by thread %llu, which does not exist\n", which.c_str(),
                static_cast<unsigned long long>(tid));
  } else {
    usage(("unknown mutex damage: " + how).c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) usage("usage: state_damage FILE KIND ARGS...");
  const std::string path = argv[1];
  const std::string kind = argv[2];
  const std::vector<std::string> args(argv + 3, argv + argc);
  auto need = [&](std::size_t count) {
    if (args.size() != count) usage((kind + " takes " + std::to_string(count) + " arguments").c_str());
  };

  if (kind == "header-zero") {
    if (args.size() > 1) usage("header-zero takes at most 1 argument");
    const std::uint64_t bytes = args.empty() ? sizeof(layout::StateHeader) : number(args[0]);
    if (bytes == 0 || bytes > sizeof(layout::StateHeader)) usage("header-zero: 1 to the header's size");
    const Mapped mapped = map_file(path, sizeof(layout::StateHeader));
    std::memset(mapped.base, 0, bytes);
    std::printf("header: first %llu bytes zeroed\n", static_cast<unsigned long long>(bytes));
    return 0;
  }
  const Mapped mapped = map_file(path, sizeof(layout::StateLayout));
  auto& state = *static_cast<layout::StateLayout*>(mapped.base);
  auto gpu_at = [&](std::size_t i) { return index_below(args.at(i), layout::kMaxGpus, "GPU"); };

  if (kind == "holder" || kind == "waiting" || kind == "slice-end") {
    need(2);
    auto& schedule = state.schedules[gpu_at(0)];
    const std::string name = "schedules[" + args[0] + "].";
    if (kind == "holder") set(schedule.holder_word, number(args[1]), name + "holder_word");
    if (kind == "waiting") set(schedule.waiting, number(args[1]), name + "waiting");
    if (kind == "slice-end") set(schedule.slice_end_ns, number(args[1]), name + "slice_end_ns");
  } else if (kind == "mutex") {
    need(2);
    damage_mutex(find_mutex(state, args[0]), args[0], args[1]);
  } else if (kind == "used" || kind == "limit") {
    need(3);
    const std::uint32_t t = find_tenant(state, args[0]);
    auto& entry = state.tenants[t].ledger[gpu_at(1)];
    const std::string name = "tenants[" + std::to_string(t) + "].ledger[" + args[1] + "].";
    if (kind == "used") set(entry.used_bytes, number(args[2]), name + "used_bytes");
    if (kind == "limit") set(entry.limit_bytes, number(args[2]), name + "limit_bytes");
  } else if (kind == "tenant-state") {
    need(2);
    const std::uint32_t t = find_tenant(state, args[0]);
    set(state.tenants[t].state, number(args[1]), "tenants[" + std::to_string(t) + "].state");
  } else if (kind == "held" || kind == "activity") {
    need(3);
    const std::uint32_t s = find_slot(state, args[0]);
    const std::uint32_t gpu = gpu_at(1);
    const std::string name = "slots[" + std::to_string(s) + "].";
    if (kind == "held") set(state.slots[s].held_bytes[gpu], number(args[2]), name + "held_bytes[" + args[1] + "]");
    if (kind == "activity") {
      set(state.slots[s].compute[gpu].activity[0], number(args[2]), name + "compute[" + args[1] + "].activity[0]");
    }
  } else if (kind == "peek") {
    need(2);
    const std::uint32_t s = find_slot(state, args[0]);
    const auto& schedule = state.schedules[gpu_at(1)];
    const auto& compute = state.slots[s].compute[gpu_at(1)];
    const std::uint32_t holder = layout::holder_slot(schedule.holder_word.load());
    // untaken: it holds a grant made on the waiting mark it still has (granted while it waited, not
    // taken up yet), as against a holder that marked itself waiting as it hands over.
    const std::uint64_t mark = compute.waiting_since_ns.load();
    std::printf("holds=%d waiting=%d untaken=%d inside=%llu\n", holder == s ? 1 : 0, mark != 0 ? 1 : 0,
                mark != 0 && mark == schedule.granted_mark.load() ? 1 : 0,
                static_cast<unsigned long long>(layout::threads_inside(layout::activity_of(compute))));
  } else if (kind == "tenant-index" || kind == "slot-state") {
    need(2);
    const std::uint32_t s = find_slot(state, args[0]);
    const std::string name = "slots[" + std::to_string(s) + "].";
    if (kind == "tenant-index") set(state.slots[s].tenant_index, number(args[1]), name + "tenant_index");
    if (kind == "slot-state") set(state.slots[s].state, number(args[1]), name + "state");
  } else {
    usage(("unknown kind: " + kind).c_str());
  }
  return 0;
}
