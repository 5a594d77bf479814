#include "core/shared_state.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>

#include <boost/interprocess/file_mapping.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <fmt/format.h>

#include "core/platform.hpp"
#include "core/size.hpp"

namespace gpushare {
namespace bip = boost::interprocess;
using layout::StateLayout;

struct SharedState::Mapping {
  bip::file_mapping file;
  bip::mapped_region region;
};

std::optional<std::string> agent_socket_path() {
  if (const char* named = std::getenv("GPUSHARE_AGENT")) {
    if (*named == '\0') return std::nullopt;
    return std::string(named);
  }
  struct stat info {};
  if (::stat(kAgentSocketPath, &info) == 0 && S_ISSOCK(info.st_mode)) return std::string(kAgentSocketPath);
  return std::nullopt;
}

std::string default_state_path() {
  // Where a node agent runs (isolation mode), its state is the node's: root's file beside its socket.
  struct stat agent_state {};
  if (::lstat(kAgentStatePath, &agent_state) == 0 && S_ISREG(agent_state.st_mode) && agent_state.st_uid == 0 &&
      ::access(kAgentSocketPath, F_OK) == 0) {
    return kAgentStatePath;
  }
  // HAMi's device plugin mounts one host folder, /tmp/vgpulock, into every container it manages:
  // when it is there, it is the place where all tenants of a GPU can meet. Only a real folder of
  // root's: any user may create /tmp/vgpulock and would then own everyone's default state.
  struct stat info {};
  if (::lstat("/tmp/vgpulock", &info) == 0 && S_ISDIR(info.st_mode) && info.st_uid == 0) {
    return "/tmp/vgpulock/gpushare.state";
  }
  return "/dev/shm/gpushare.state";
}

namespace ofd_lock {
namespace {
struct flock one_byte(short type, std::int64_t offset) {
  struct flock request {};
  request.l_type = type;
  request.l_whence = SEEK_SET;
  request.l_start = offset;
  request.l_len = 1;
  request.l_pid = 0;  // required to be 0 for OFD locks
  return request;
}
}  // namespace

bool try_lock(int fd, std::int64_t offset) {
  struct flock request = one_byte(F_WRLCK, offset);
  return ::fcntl(fd, F_OFD_SETLK, &request) == 0;
}

Status lock_wait(int fd, std::int64_t offset, bool shared, std::chrono::nanoseconds wait) {
  // Polled rather than F_OFD_SETLKW: that one cannot be given a timeout.
  struct flock request = one_byte(shared ? F_RDLCK : F_WRLCK, offset);
  const std::uint64_t deadline =
      monotonic_now_ns() + static_cast<std::uint64_t>(std::max<std::int64_t>(wait.count(), 0));
  std::uint64_t pause_ns = 50'000;
  while (::fcntl(fd, F_OFD_SETLK, &request) != 0) {
    if (errno != EAGAIN && errno != EACCES && errno != EINTR) {
      return Error{fmt::format("cannot lock the state file: {}", std::strerror(errno))};
    }
    if (monotonic_now_ns() >= deadline) {
      return Error{fmt::format("another process has held the state file's lock for over {} ms (stopped while "
                               "creating it?)",
                               std::chrono::duration_cast<std::chrono::milliseconds>(wait).count())};
    }
    sleep_ns(pause_ns);
    pause_ns = std::min<std::uint64_t>(pause_ns * 2, 1'000'000);
  }
  return Ok{};
}

void unlock(int fd, std::int64_t offset) {
  struct flock request = one_byte(F_UNLCK, offset);
  ::fcntl(fd, F_OFD_SETLK, &request);
}

bool held_elsewhere(int fd, std::int64_t offset, std::int64_t length) {
  struct flock request = one_byte(F_WRLCK, offset);
  request.l_len = length;
  if (::fcntl(fd, F_OFD_GETLK, &request) != 0) return true;  // cannot tell: never call a process dead
  return request.l_type != F_UNLCK;
}
}  // namespace ofd_lock


namespace {

std::uint64_t header_checksum(const layout::StateHeader& header) {
  // Over the header bytes before the checksum field.
  return layout::fnv1a(reinterpret_cast<const unsigned char*>(&header), offsetof(layout::StateHeader, checksum));
}

void initialise(StateLayout* state) {
  // The file was just truncated from 0, so it reads as zeros: every counter, state and flag below
  // starts at 0 (= free). Only non-zero starting values and the mutexes need writing.
  shared_mutex::init(&state->registry_mutex);
  for (auto& gpu : state->gpus) shared_mutex::init(&gpu.ledger_mutex);
  for (auto& schedule : state->schedules) shared_mutex::init(&schedule.mutex);
  for (auto& tenant : state->tenants) tenant.override_limit_bytes.store(layout::kNoOverride);
  auto& header = state->header;
  header.abi_version = layout::kStateAbiVersion;
  header.header_bytes = sizeof(layout::StateHeader);
  header.total_bytes = sizeof(StateLayout);
  header.max_gpus = layout::kMaxGpus;
  header.max_tenants = layout::kMaxTenants;
  header.max_slots = layout::kMaxSlots;
  header.tenant_name_bytes = layout::kTenantNameBytes;
  header.created_unix_ns = unix_now_ns();
  header.magic = layout::kStateMagic;
  header.checksum = header_checksum(header);
}

Status validate(const StateLayout& state, const std::string& path) {
  const auto& header = state.header;
  if (header.magic != layout::kStateMagic) {
    return Error{fmt::format("{} is not a gpushare state file (bad magic number); point GPUSHARE_STATE "
                             "elsewhere or remove the file once no gpushare process uses it",
                             path)};
  }
  if (header.abi_version != layout::kStateAbiVersion) {
    return Error{fmt::format("{} was made by a gpushare with state ABI version {}, this one uses {}; stop "
                             "every process using it and remove the file, or set GPUSHARE_STATE to a new "
                             "path (see docs/operations.md, Upgrading)",
                             path, header.abi_version, layout::kStateAbiVersion)};
  }
  if (header.checksum != header_checksum(header) || header.header_bytes != sizeof(layout::StateHeader) ||
      header.total_bytes != sizeof(StateLayout) || header.max_gpus != layout::kMaxGpus ||
      header.max_tenants != layout::kMaxTenants || header.max_slots != layout::kMaxSlots ||
      header.tenant_name_bytes != layout::kTenantNameBytes) {
    return Error{fmt::format("{} has a damaged or foreign header; remove it once no gpushare process uses it",
                             path)};
  }
  return Ok{};
}

}  // namespace

namespace {

// How long a newcomer waits for a process that is creating or checking the file.
constexpr std::chrono::seconds kInitLockWait{5};

// What kind of thing a path names, for messages.
const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

Status check_file(const std::string& path, const struct stat& info, SharedState::Origin origin) {
  if (!S_ISREG(info.st_mode)) {
    return Error{fmt::format("{} is {}, not a gpushare state file; name a file in an existing folder", path,
                             file_kind(info.st_mode))};
  }
  if (origin == SharedState::Origin::kDefault && info.st_uid != ::geteuid() && info.st_uid != 0) {
    // The uid alone: looking its name up may ask a directory service, inside a driver call.
    return Error{fmt::format("{} belongs to uid {}, not to you or root: refusing the default state file another "
                             "user may have planted; to share it with that user's processes on purpose, name it "
                             "in GPUSHARE_STATE (or --state)",
                             path, info.st_uid)};
  }
  return Ok{};
}

// Whether some other process has the file open as a state (its users lock) or holds a slot in it.
bool in_use(int fd) {
  return ofd_lock::held_elsewhere(fd, layout::kUsersLockOffset) ||
         ofd_lock::held_elsewhere(fd, layout::kSlotLockBase, layout::kMaxSlots);
}

Status validate_locks(StateLayout& state, const std::string& path) {
  bool damaged = !shared_mutex::plausible(&state.registry_mutex);
  for (const auto& gpu : state.gpus) damaged = damaged || !shared_mutex::plausible(&gpu.ledger_mutex);
  for (const auto& schedule : state.schedules) damaged = damaged || !shared_mutex::plausible(&schedule.mutex);
  if (!damaged) return Ok{};
  return Error{fmt::format("{} has a damaged lock (something wrote into the file); stop the processes using it "
                           "and remove it",
                           path)};
}

}  // namespace

Result<std::unique_ptr<SharedState>> SharedState::open(const std::string& path, Mode mode, Origin origin) {
  std::unique_ptr<SharedState> self(new SharedState());
  self->path_ = path;
  const bool read_only = mode == Mode::kReadOnly;
  const bool may_create = mode == Mode::kCreateIfMissing;
  // O_NOFOLLOW: a link planted at the path must not make us create or grow a file elsewhere.
  // O_NONBLOCK: opening a FIFO must not block (it is refused below).
  const int flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | (may_create ? O_CREAT : 0);
  // 0666 (less the umask): tenants of one GPU may run as different users; access to the state is
  // controlled by the permissions of the folder it lives in (docs/configuration.md).
  self->fd_ = ::open(path.c_str(), flags, 0666);
  if (self->fd_ < 0) {
    if (errno == ELOOP) {
      return Error{fmt::format("{} is a symbolic link: gpushare does not follow links to its state file; name "
                               "the file itself",
                               path)};
    }
    return Error{fmt::format("cannot open state file {}: {}", path, std::strerror(errno))};
  }
  return open_opened(std::move(self), mode, origin);
}

Result<std::unique_ptr<SharedState>> SharedState::open_descriptor(int fd, const std::string& shown_path) {
  std::unique_ptr<SharedState> self(new SharedState());
  self->path_ = shown_path;
  self->fd_ = fd;
  return open_opened(std::move(self), Mode::kReadOnly, Origin::kConfigured);
}

Result<std::unique_ptr<SharedState>> SharedState::open_opened(std::unique_ptr<SharedState> self, Mode mode,
                                                              Origin origin) {
  const std::string& path = self->path_;
  const bool read_only = mode == Mode::kReadOnly;
  const bool may_create = mode == Mode::kCreateIfMissing;
  struct stat info {};
  if (::fstat(self->fd_, &info) != 0) {
    return Error{fmt::format("cannot stat state file {}: {}", path, std::strerror(errno))};
  }
  if (auto ok = check_file(path, info, origin); !ok) return ok.error();
  // Creation and validation happen under an exclusive lock, so a second process never maps a file
  // that the first is still initialising (a reader takes it shared: it only waits for a creator).
  if (auto locked = ofd_lock::lock_wait(self->fd_, layout::kInitLockOffset, read_only, kInitLockWait); !locked) {
    return locked.error();
  }
  struct Unlock {
    int fd;
    ~Unlock() { ofd_lock::unlock(fd, layout::kInitLockOffset); }
  } unlock_on_exit{self->fd_};

  if (::fstat(self->fd_, &info) != 0) {
    return Error{fmt::format("cannot stat state file {}: {}", path, std::strerror(errno))};
  }
  bool fresh = info.st_size == 0;
  if (fresh && !may_create) return Error{fmt::format("{} is empty: no tenant has used it yet", path)};
  if (fresh && in_use(self->fd_)) {
    return Error{fmt::format("{} was emptied while processes still use it; stop them and remove the file", path)};
  }
  if (fresh) {
    if (::ftruncate(self->fd_, static_cast<off_t>(sizeof(StateLayout))) != 0) {
      return Error{fmt::format("cannot size state file {}: {}", path, std::strerror(errno))};
    }
  } else if (static_cast<std::uint64_t>(info.st_size) < sizeof(layout::StateHeader)) {
    return Error{fmt::format("{} is too short to be a gpushare state file ({} bytes); remove it once no "
                             "gpushare process uses it",
                             path, info.st_size)};
  }
  try {
    auto mapping = std::make_unique<Mapping>();
    // Map the file this descriptor has open, not whatever the path names by now: someone may have
    // replaced the file, and the liveness locks are taken on this descriptor's file.
    const auto access = read_only ? bip::read_only : bip::read_write;
    mapping->file = bip::file_mapping(self->descriptor_path().c_str(), access);
    mapping->region = bip::mapped_region(mapping->file, access);
    if (mapping->region.get_size() < sizeof(layout::StateHeader)) {
      return Error{fmt::format("{} is too short to be a gpushare state file", path)};
    }
    self->mapping_ = std::move(mapping);
  } catch (const std::exception& e) {
    return Error{fmt::format("cannot map state file {}: {}", path, e.what())};
  }
  auto* state = static_cast<StateLayout*>(self->mapping_->region.get_address());
  // A creator killed between sizing the file and writing the magic number leaves zeros behind;
  // nobody can have validated such a file, so it is safe to initialise it now. Unless some process
  // uses it: then the zeros are damage (someone wrote them), and initialising would pull the
  // mutexes and the ledger out from under that process.
  if (!fresh && state->header.magic == 0 && state->header.abi_version == 0 &&
      self->mapping_->region.get_size() == sizeof(StateLayout)) {
    if (in_use(self->fd_)) {
      return Error{fmt::format("{} has a zeroed header but processes still use it: it was damaged, and is never "
                               "initialised again under them; stop them and remove the file",
                               path)};
    }
    if (!may_create) return Error{fmt::format("{} is not initialised yet: no tenant has used it", path)};
    fresh = true;
  }
  if (fresh) {
    initialise(state);
  } else {
    // Validate the header first: only then are the sizes known to be ours and the rest safe to touch.
    if (auto valid = validate(*state, path); !valid) return valid.error();
    if (self->mapping_->region.get_size() < sizeof(StateLayout)) {
      return Error{fmt::format("{} is shorter than its header says; remove it once no gpushare process uses it",
                               path)};
    }
    if (auto valid = validate_locks(*state, path); !valid) return valid.error();
  }
  // Held until this object closes the file (the kernel drops it if the process dies).
  if (auto users = ofd_lock::lock_wait(self->fd_, layout::kUsersLockOffset, /*shared=*/true, kInitLockWait); !users) {
    return users.error();
  }
  self->layout_ = state;
  return self;
}

SharedState::~SharedState() {
  mapping_.reset();
  if (fd_ >= 0) ::close(fd_);
}

std::string SharedState::descriptor_path() const { return fmt::format("/proc/self/fd/{}", fd_); }

bool SharedState::try_lock_slot(std::uint32_t slot_index) {
  return ofd_lock::try_lock(fd_, layout::kSlotLockBase + slot_index);
}

void SharedState::unlock_slot(std::uint32_t slot_index) { ofd_lock::unlock(fd_, layout::kSlotLockBase + slot_index); }

bool SharedState::slot_locked(std::uint32_t slot_index) const {
  return ofd_lock::held_elsewhere(fd_, layout::kSlotLockBase + slot_index);
}

}  // namespace gpushare
