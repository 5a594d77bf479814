#include "core/shared_state.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/state_layout.hpp"
#include "test_support.hpp"

namespace gpushare {
namespace {

using layout::StateHeader;
using layout::StateLayout;
using testing::Contains;
using testing::TempStatePath;

std::uint64_t file_size(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return UINT64_MAX;
  return static_cast<std::uint64_t>(info.st_size);
}

void write_file(const std::string& path, const std::vector<unsigned char>& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

std::vector<unsigned char> read_file(const std::string& path) {
  std::vector<unsigned char> bytes(file_size(path));
  const int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::read(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
  return bytes;
}

StateHeader read_header(const std::string& path) {
  StateHeader header{};
  const int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::pread(fd, &header, sizeof header, 0), static_cast<ssize_t>(sizeof header));
  ::close(fd);
  return header;
}

void write_header(const std::string& path, const StateHeader& header) {
  const int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, &header, sizeof header, 0), static_cast<ssize_t>(sizeof header));
  ::close(fd);
}

// The library's header checksum, so a test can forge a header that is consistent but foreign.
std::uint64_t checksum_of(const StateHeader& header) {
  return layout::fnv1a(reinterpret_cast<const unsigned char*>(&header), offsetof(StateHeader, checksum));
}

void create_valid(const std::string& path) {
  auto opened = SharedState::open(path, SharedState::Mode::kCreateIfMissing);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
}

TEST(SharedStateOpen, CreatesAFreshFileOfTheLayoutSize) {
  TempStatePath path;
  auto opened = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(file_size(path.str()), sizeof(StateLayout));
  auto& state = opened.value()->state();
  EXPECT_EQ(state.header.magic, layout::kStateMagic);
  EXPECT_EQ(state.header.abi_version, layout::kStateAbiVersion);
  EXPECT_EQ(state.header.total_bytes, sizeof(StateLayout));
  EXPECT_EQ(state.header.max_slots, layout::kMaxSlots);
  EXPECT_EQ(state.header.checksum, checksum_of(state.header));
  EXPECT_EQ(opened.value()->path(), path.str());
  for (const auto& tenant : state.tenants) {
    EXPECT_EQ(tenant.state.load(), layout::kFree);
    EXPECT_EQ(tenant.override_limit_bytes.load(), layout::kNoOverride);
  }
  for (const auto& slot : state.slots) EXPECT_EQ(slot.state.load(), layout::kFree);
}

TEST(SharedStateOpen, ReopeningValidatesAndSeesTheSameData) {
  TempStatePath path;
  auto first = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_TRUE(first.ok()) << first.error().message;
  const std::uint64_t created = first.value()->state().header.created_unix_ns;
  first.value()->state().slots[7].pid.store(4242);

  auto second = SharedState::open(path.str(), SharedState::Mode::kExistingOnly);
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_EQ(second.value()->state().header.created_unix_ns, created);  // not re-initialised
  EXPECT_EQ(second.value()->state().slots[7].pid.load(), 4242u);        // one shared mapping
  second.value()->state().slots[8].pid.store(17);
  EXPECT_EQ(first.value()->state().slots[8].pid.load(), 17u);

  auto third = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_TRUE(third.ok()) << third.error().message;
  EXPECT_EQ(third.value()->state().header.created_unix_ns, created);
}

TEST(SharedStateOpen, ExistingOnlyOnAMissingPathFailsWithoutCreating) {
  TempStatePath path;
  auto opened = SharedState::open(path.str(), SharedState::Mode::kExistingOnly);
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(Contains(opened.error().message, path.str()));
  EXPECT_EQ(file_size(path.str()), UINT64_MAX) << "the file was created";
}

TEST(SharedStateOpen, UnopenablePathFailsWithAMessage) {
  auto opened = SharedState::open("/nonexistent-dir-gpushare/x.state", SharedState::Mode::kCreateIfMissing);
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(Contains(opened.error().message, "/nonexistent-dir-gpushare/x.state"));
}

TEST(SharedStateOpen, GarbageOfTheRightSizeIsRefusedNamingThePath) {
  TempStatePath path;
  std::vector<unsigned char> garbage(sizeof(StateLayout));
  std::mt19937 rng(1234);
  for (auto& b : garbage) b = static_cast<unsigned char>(rng() | 1u);  // never all zeros
  write_file(path.str(), garbage);
  for (auto mode : {SharedState::Mode::kCreateIfMissing, SharedState::Mode::kExistingOnly}) {
    auto opened = SharedState::open(path.str(), mode);
    ASSERT_FALSE(opened.ok());
    EXPECT_TRUE(Contains(opened.error().message, path.str()));
    EXPECT_TRUE(Contains(opened.error().message, "not a gpushare state file"));
  }
  EXPECT_EQ(read_file(path.str()), garbage) << "a refused file must be left untouched";
}

TEST(SharedStateOpen, AnotherAbiVersionIsRefusedMentioningIt) {
  TempStatePath path;
  create_valid(path.str());
  StateHeader header = read_header(path.str());
  header.abi_version = layout::kStateAbiVersion + 1;
  header.checksum = checksum_of(header);  // a well-formed file of another version
  write_header(path.str(), header);
  auto opened = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(Contains(opened.error().message, path.str()));
  EXPECT_TRUE(Contains(opened.error().message, "ABI version " + std::to_string(layout::kStateAbiVersion + 1)));
}

TEST(SharedStateOpen, AbiVersionChangedWithoutChecksumIsStillReportedAsAbi) {
  TempStatePath path;
  create_valid(path.str());
  StateHeader header = read_header(path.str());
  header.abi_version = layout::kStateAbiVersion - 1;
  write_header(path.str(), header);
  auto opened = SharedState::open(path.str(), SharedState::Mode::kExistingOnly);
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(Contains(opened.error().message, "ABI version " + std::to_string(layout::kStateAbiVersion - 1)));
}

TEST(SharedStateOpen, TruncatedFileIsRefused) {
  TempStatePath path;
  create_valid(path.str());
  ASSERT_EQ(::truncate(path.str().c_str(), 10), 0);
  auto opened = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(Contains(opened.error().message, path.str()));
  EXPECT_TRUE(Contains(opened.error().message, "too short"));
  EXPECT_EQ(file_size(path.str()), 10u) << "a refused file must be left untouched";
}

TEST(SharedStateOpen, FileWithAValidHeaderButCutShortIsRefused) {
  TempStatePath path;
  create_valid(path.str());
  ASSERT_EQ(::truncate(path.str().c_str(), 4096), 0);
  auto opened = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(Contains(opened.error().message, path.str()));
  EXPECT_TRUE(Contains(opened.error().message, "shorter"));
}

TEST(SharedStateOpen, ZerosOfHeaderSizeAreRefused) {
  TempStatePath path;
  write_file(path.str(), std::vector<unsigned char>(sizeof(StateHeader), 0));
  auto opened = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(Contains(opened.error().message, path.str()));
}

TEST(SharedStateOpen, HalfMadeFileOfZerosIsInitialised) {
  // What a creator killed between ftruncate and writing the header leaves behind.
  TempStatePath path;
  write_file(path.str(), std::vector<unsigned char>(sizeof(StateLayout), 0));
  auto looked = SharedState::open(path.str(), SharedState::Mode::kExistingOnly);
  ASSERT_FALSE(looked.ok()) << "only a tenant's process initialises";
  EXPECT_TRUE(Contains(looked.error().message, "not initialised"));
  auto opened = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(opened.value()->state().header.magic, layout::kStateMagic);
  EXPECT_EQ(opened.value()->state().tenants[0].override_limit_bytes.load(), layout::kNoOverride);
}

TEST(SharedStateOpen, ScribbledHeaderFieldsAreRefusedAsDamaged) {
  // Each field after magic and abi_version, changed alone, breaks the checksum.
  const std::vector<std::size_t> offsets{
      offsetof(StateHeader, header_bytes), offsetof(StateHeader, total_bytes),
      offsetof(StateHeader, max_gpus),     offsetof(StateHeader, max_tenants),
      offsetof(StateHeader, max_slots),    offsetof(StateHeader, tenant_name_bytes),
      offsetof(StateHeader, created_unix_ns), offsetof(StateHeader, checksum)};
  for (std::size_t offset : offsets) {
    TempStatePath path;
    create_valid(path.str());
    StateHeader header = read_header(path.str());
    reinterpret_cast<unsigned char*>(&header)[offset] ^= 0x40;
    write_header(path.str(), header);
    auto opened = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
    ASSERT_FALSE(opened.ok()) << "offset " << offset;
    EXPECT_TRUE(Contains(opened.error().message, path.str()));
    EXPECT_TRUE(Contains(opened.error().message, "damaged")) << "offset " << offset;
  }
}

TEST(SharedStateOpen, ForeignSizesWithAConsistentChecksumAreRefused) {
  TempStatePath path;
  create_valid(path.str());
  StateHeader header = read_header(path.str());
  header.max_slots = layout::kMaxSlots * 2;
  header.total_bytes = sizeof(StateLayout) * 2;
  header.checksum = checksum_of(header);
  write_header(path.str(), header);
  auto opened = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(Contains(opened.error().message, path.str()));
}

TEST(SharedStateOpen, LongerFileWithAValidHeaderIsAccepted) {
  TempStatePath path;
  create_valid(path.str());
  ASSERT_EQ(::truncate(path.str().c_str(), static_cast<off_t>(sizeof(StateLayout) + 4096)), 0);
  auto opened = SharedState::open(path.str(), SharedState::Mode::kExistingOnly);
  EXPECT_TRUE(opened.ok()) << opened.error().message;
}

// Zeroing the first 16 header bytes made the next process take a live file for one its creator
// died making, and initialise it again under the running processes (their `quota set` overrides
// lost, their mutexes re-made while held).
TEST(SharedStateOpen, AFileInUseIsNeverInitialisedAgain) {
  TempStatePath path;
  auto user = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_TRUE(user.ok());
  user.value()->state().tenants[3].override_limit_bytes.store(123);
  StateHeader zeroed = read_header(path.str());
  std::memset(&zeroed, 0, 16);
  write_header(path.str(), zeroed);
  auto newcomer = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_FALSE(newcomer.ok());
  EXPECT_TRUE(Contains(newcomer.error().message, "still use"));
  EXPECT_EQ(user.value()->state().tenants[3].override_limit_bytes.load(), 123u);
  EXPECT_EQ(user.value()->state().header.magic, 0u) << "left as found";
  // A process that holds only a slot (its liveness lock) counts as a user too.
  user.value().reset();
  const int slot_holder = ::open(path.str().c_str(), O_RDWR);
  ASSERT_GE(slot_holder, 0);
  ASSERT_TRUE(ofd_lock::try_lock(slot_holder, layout::kSlotLockBase + 9));
  EXPECT_FALSE(SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing).ok());
  ::close(slot_holder);
  EXPECT_TRUE(SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing).ok()) << "nobody uses it now";
}

TEST(SharedStateOpen, AFileEmptiedUnderItsUsersIsRefused) {
  TempStatePath path;
  auto user = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_TRUE(user.ok());
  ASSERT_EQ(::truncate(path.str().c_str(), 0), 0);  // the user must not touch its mapping now
  auto newcomer = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_FALSE(newcomer.ok());
  EXPECT_TRUE(Contains(newcomer.error().message, "emptied"));
  EXPECT_EQ(file_size(path.str()), 0u);
}

// `status --state <empty file>` made it a state file: only a tenant's process creates or initialises.
TEST(SharedStateOpen, OnlyATenantProcessInitialisesAnEmptyFile) {
  TempStatePath path;
  write_file(path.str(), {});
  for (auto mode : {SharedState::Mode::kExistingOnly, SharedState::Mode::kReadOnly}) {
    auto opened = SharedState::open(path.str(), mode);
    ASSERT_FALSE(opened.ok());
    EXPECT_TRUE(Contains(opened.error().message, "empty"));
    EXPECT_EQ(file_size(path.str()), 0u);
  }
  EXPECT_TRUE(SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing).ok());
}

TEST(SharedStateOpen, ASymbolicLinkIsNotFollowed) {
  TempStatePath path, target;
  ASSERT_EQ(::symlink(target.str().c_str(), path.str().c_str()), 0);
  for (auto mode : {SharedState::Mode::kCreateIfMissing, SharedState::Mode::kReadOnly}) {
    auto opened = SharedState::open(path.str(), mode);
    ASSERT_FALSE(opened.ok());
    EXPECT_TRUE(Contains(opened.error().message, "symbolic link"));
  }
  EXPECT_EQ(file_size(target.str()), UINT64_MAX) << "the link's target was created";
}

// A FIFO made `top --state FIFO` hang in open(2); a directory or a device ran every tenant closed.
TEST(SharedStateOpen, AnythingButARegularFileIsRefusedAtOnce) {
  TempStatePath fifo, directory;
  ASSERT_EQ(::mkfifo(fifo.str().c_str(), 0600), 0);
  ASSERT_EQ(::mkdir(directory.str().c_str(), 0700), 0);
  const std::vector<std::pair<std::string, std::string>> cases{
      {fifo.str(), "a FIFO"}, {directory.str(), "a directory"}, {"/dev/null", "a device"}};
  for (const auto& [path, kind] : cases) {
    for (auto mode : {SharedState::Mode::kCreateIfMissing, SharedState::Mode::kExistingOnly,
                      SharedState::Mode::kReadOnly}) {
      auto opened = SharedState::open(path, mode);
      ASSERT_FALSE(opened.ok()) << path;
      EXPECT_TRUE(Contains(opened.error().message, kind) || Contains(opened.error().message, "cannot open"))
          << opened.error().message;
    }
  }
  ::rmdir(directory.str().c_str());
}

// Another local user could plant the default state file and then set everyone's quotas.
TEST(SharedStateOpen, ADefaultFileOfAnotherUserIsRefusedUnlessConfigured) {
  TempStatePath path;
  create_valid(path.str());
  if (::geteuid() != 0 || ::chown(path.str().c_str(), 54321, 54321) != 0) GTEST_SKIP() << "needs root to chown";
  auto by_default = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing, SharedState::Origin::kDefault);
  ASSERT_FALSE(by_default.ok());
  EXPECT_TRUE(Contains(by_default.error().message, "uid 54321"));
  EXPECT_TRUE(Contains(by_default.error().message, "GPUSHARE_STATE"));
  EXPECT_TRUE(SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing, SharedState::Origin::kConfigured).ok());
  ASSERT_EQ(::chown(path.str().c_str(), 0, 0), 0);
  EXPECT_TRUE(SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing, SharedState::Origin::kDefault).ok())
      << "root's file is trusted";
}

TEST(SharedStateMisc, APlantedVgpulockFolderIsNotTheDefault) {
  struct stat info {};
  if (::lstat("/tmp/vgpulock", &info) == 0) GTEST_SKIP() << "/tmp/vgpulock exists here";
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to make a folder of another user";
  ASSERT_EQ(::mkdir("/tmp/vgpulock", 0777), 0);
  ASSERT_EQ(::chown("/tmp/vgpulock", 54321, 54321), 0);
  EXPECT_EQ(default_state_path(), "/dev/shm/gpushare.state");
  ::rmdir("/tmp/vgpulock");
}

// Garbage in a mutex made glibc abort every process that joined (an assertion in
// __pthread_tpp_change_priority): such a file is refused, and a lock call on it fails cleanly.
TEST(SharedStateOpen, AFileWithADamagedLockIsRefused) {
  TempStatePath path;
  auto user = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_TRUE(user.ok());
  pthread_mutex_t* mutex = &user.value()->state().gpus[5].ledger_mutex;
  std::memset(static_cast<void*>(mutex), 0x5a, sizeof *mutex);
  auto newcomer = SharedState::open(path.str(), SharedState::Mode::kReadOnly);
  ASSERT_FALSE(newcomer.ok());
  EXPECT_TRUE(Contains(newcomer.error().message, "damaged lock"));
  auto locked = shared_mutex::lock(mutex);
  ASSERT_FALSE(locked.ok());
  EXPECT_TRUE(Contains(locked.error().message, "damaged"));
}

// A forged lock word (or a holder stopped inside its critical section) hung every allocation and
// `status` for good: the wait is bounded.
TEST(SharedMutex, AForgedOwnerIsWaitedForOnlyUntilTheBound) {
  TempStatePath path;
  auto opened = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_TRUE(opened.ok());
  pthread_mutex_t* mutex = &opened.value()->state().registry_mutex;
  mutex->__data.__lock = 4'000'000;  // "held" by a thread that does not exist
  mutex->__data.__owner = 4'000'000;
  const auto started = std::chrono::steady_clock::now();
  auto locked = shared_mutex::lock(mutex, std::chrono::milliseconds(100));
  const auto waited = std::chrono::steady_clock::now() - started;
  ASSERT_FALSE(locked.ok());
  EXPECT_TRUE(Contains(locked.error().message, "not free within 100 ms"));
  EXPECT_GE(waited, std::chrono::milliseconds(100));
  EXPECT_LT(waited, std::chrono::seconds(5));
}

TEST(OfdLock, AWaitForTheInitLockIsBounded) {
  TempStatePath path;
  create_valid(path.str());
  const int creator = ::open(path.str().c_str(), O_RDWR);
  ASSERT_GE(creator, 0);
  ASSERT_TRUE(ofd_lock::try_lock(creator, layout::kInitLockOffset));  // stopped while creating
  const int other = ::open(path.str().c_str(), O_RDWR);
  const auto started = std::chrono::steady_clock::now();
  const Status waited = ofd_lock::lock_wait(other, layout::kInitLockOffset, false, std::chrono::milliseconds(200));
  EXPECT_FALSE(waited.ok());
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(200));
  ofd_lock::unlock(creator, layout::kInitLockOffset);
  EXPECT_TRUE(ofd_lock::lock_wait(other, layout::kInitLockOffset, false, std::chrono::milliseconds(200)).ok());
  ::close(other);
  ::close(creator);
}

TEST(SharedMutex, LockReportsCleanAcquisitionAndUnlocks) {
  TempStatePath path;
  auto opened = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  ASSERT_TRUE(opened.ok());
  pthread_mutex_t* mutex = &opened.value()->state().registry_mutex;
  auto first = shared_mutex::lock(mutex);
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(first.value(), shared_mutex::Acquired::kClean);
  EXPECT_EQ(pthread_mutex_trylock(mutex), EBUSY);
  shared_mutex::unlock(mutex);
  EXPECT_EQ(pthread_mutex_trylock(mutex), 0);
  shared_mutex::unlock(mutex);
}

TEST(OfdLock, LocksBelongToTheOpenFileDescription) {
  TempStatePath path;
  create_valid(path.str());
  const int a = ::open(path.str().c_str(), O_RDWR);
  const int b = ::open(path.str().c_str(), O_RDWR);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  const int a_dup = ::dup(a);
  const std::int64_t offset = layout::kSlotLockBase + 3;
  EXPECT_TRUE(ofd_lock::try_lock(a, offset));
  EXPECT_FALSE(ofd_lock::try_lock(b, offset));      // another description: conflict
  EXPECT_TRUE(ofd_lock::try_lock(a_dup, offset));   // the same description: no conflict
  EXPECT_TRUE(ofd_lock::try_lock(b, offset + 1));   // another byte: independent
  ofd_lock::unlock(a, offset);
  EXPECT_TRUE(ofd_lock::try_lock(b, offset));
  ::close(b);  // closing the only descriptor of a description drops its locks
  EXPECT_TRUE(ofd_lock::try_lock(a, offset));
  EXPECT_TRUE(ofd_lock::lock_wait(a, offset + 1, false, std::chrono::seconds(1)).ok());
  ::close(a_dup);
  ::close(a);
}

TEST(SharedStateSlots, ProbesSeeLocksHeldThroughOtherDescriptions) {
  TempStatePath path;
  auto one = SharedState::open(path.str(), SharedState::Mode::kCreateIfMissing);
  auto two = SharedState::open(path.str(), SharedState::Mode::kExistingOnly);
  ASSERT_TRUE(one.ok());
  ASSERT_TRUE(two.ok());
  EXPECT_TRUE(one.value()->try_lock_slot(5));
  EXPECT_TRUE(one.value()->try_lock_slot(5));  // its own lock does not conflict with itself
  EXPECT_FALSE(two.value()->try_lock_slot(5));
  one.value()->unlock_slot(5);
  EXPECT_TRUE(two.value()->try_lock_slot(5));
  two.value()->unlock_slot(5);
}

TEST(SharedStateMisc, DefaultPathAndClock) {
  const std::string path = default_state_path();
  EXPECT_TRUE(path == "/tmp/vgpulock/gpushare.state" || path == "/dev/shm/gpushare.state") << path;
  const std::uint64_t a = unix_now_ns();
  const std::uint64_t b = unix_now_ns();
  EXPECT_GT(a, 1'600'000'000ull * 1'000'000'000ull);  // after 2020
  EXPECT_LE(a, b);
}

}  // namespace
}  // namespace gpushare
