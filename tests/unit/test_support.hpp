// Helpers shared by the unit tests: a fresh state file per test, pipes and forked children.
#pragma once

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "core/compute_slot_release.hpp"
#include "core/registry.hpp"
#include "core/shared_state.hpp"
#include "core/snapshot.hpp"

namespace gpushare::testing {

// gmock is not linked: a substring check that prints both strings when it fails.
inline ::testing::AssertionResult Contains(const std::string& haystack, const std::string& needle) {
  if (haystack.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << haystack << "' does not contain '" << needle << "'";
}

// A unique path under the test temporary folder, removed (if present) on construction and
// destruction. Unique per process and per call, so tests may run in parallel under ctest -j.
class TempStatePath {
 public:
  TempStatePath() {
    static std::atomic<unsigned> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info != nullptr ? std::string(info->test_suite_name()) + "." + info->name() : "none";
    for (char& c : name) {
      if (c == '/') c = '_';
    }
    path_ = ::testing::TempDir() + "gpushare_unit_" + std::to_string(::getpid()) + "_" +
            std::to_string(counter.fetch_add(1)) + "_" + name + ".state";
    std::remove(path_.c_str());
  }
  ~TempStatePath() { std::remove(path_.c_str()); }
  TempStatePath(const TempStatePath&) = delete;
  TempStatePath& operator=(const TempStatePath&) = delete;

  const std::string& str() const { return path_; }

 private:
  std::string path_;
};

// Fixture: a fresh state file per test, opened (created) in SetUp, with the arbiter's registry
// hooks installed as every program that joins tenants installs them.
class StateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    install_compute_slot_release();
    auto opened = SharedState::open(path_.str(), SharedState::Mode::kCreateIfMissing);
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    state_ = std::move(opened).value();
  }
  void TearDown() override { state_.reset(); }

  std::unique_ptr<SharedState> open_again() {
    auto opened = SharedState::open(path_.str(), SharedState::Mode::kExistingOnly);
    if (!opened.ok()) {
      ADD_FAILURE() << opened.error().message;
      return nullptr;
    }
    return std::move(opened).value();
  }

  TempStatePath path_;
  std::unique_ptr<SharedState> state_;
};

inline GpuUuid make_uuid(std::uint8_t seed) {
  GpuUuid uuid{};
  for (std::size_t i = 0; i < uuid.size(); ++i) uuid[i] = static_cast<std::uint8_t>(seed * 17 + i);
  return uuid;
}

// A pipe whose ends close themselves.
class Pipe {
 public:
  Pipe() {
    if (::pipe(fds_) != 0) {
      ADD_FAILURE() << "pipe() failed";
      fds_[0] = fds_[1] = -1;
    }
  }
  ~Pipe() {
    close_read();
    close_write();
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;

  void close_read() {
    if (fds_[0] >= 0) ::close(fds_[0]);
    fds_[0] = -1;
  }
  void close_write() {
    if (fds_[1] >= 0) ::close(fds_[1]);
    fds_[1] = -1;
  }
  // Whole-value transfers; the values are small, so a write is atomic.
  template <typename T>
  bool write_value(const T& value) {
    const ssize_t n = ::write(fds_[1], &value, sizeof value);
    return n == static_cast<ssize_t>(sizeof value);
  }
  // Returns false on end of file (every writer closed) or error.
  template <typename T>
  bool read_value(T& value) {
    auto* out = reinterpret_cast<char*>(&value);
    std::size_t got = 0;
    while (got < sizeof value) {
      const ssize_t n = ::read(fds_[0], out + got, sizeof value - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      got += static_cast<std::size_t>(n);
    }
    return true;
  }
  // Blocks until every writer has closed its end.
  void wait_eof() {
    char c;
    while (true) {
      const ssize_t n = ::read(fds_[0], &c, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
    }
  }

 private:
  int fds_[2];
};

// A forked child running `body`, which exits with its return value; the child never returns into
// the test framework (no destructors of the parent's objects run there). A child still running
// when this object goes (a failed ASSERT in the parent) is killed and reaped, and a child whose
// parent dies is killed by the kernel, so no test leaves a process behind.
class ChildProcess {
 public:
  explicit ChildProcess(const std::function<int()>& body) {
    const pid_t parent = ::getpid();
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(97);  // the parent died before prctl
      int code = 99;
      try {
        code = body();
      } catch (...) {
        code = 98;
      }
      ::_exit(code);
    }
    if (pid_ < 0) ADD_FAILURE() << "fork() failed";
  }
  ~ChildProcess() {
    if (pid_ > 0) kill_and_wait();
  }
  ChildProcess(ChildProcess&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ChildProcess& operator=(ChildProcess&&) = delete;

  pid_t pid() const { return pid_; }

  // Waits for the child; returns its exit status, or 128 + the signal that ended it.
  int wait() {
    if (pid_ <= 0) return -1;
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0) {
      if (errno != EINTR) {
        pid_ = -1;
        return -1;
      }
    }
    pid_ = -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
  }
  int kill_and_wait() {
    if (pid_ > 0) ::kill(pid_, SIGKILL);
    return wait();
  }

 private:
  pid_t pid_ = -1;
};

// If a call that must not block does block, the alarm ends the whole test binary (SIGALRM's
// default action) instead of letting it hang until the ctest timeout.
class Deadline {
 public:
  explicit Deadline(unsigned seconds) { ::alarm(seconds); }
  ~Deadline() { ::alarm(0); }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;
};

inline std::uint64_t used_of(SharedState& state, std::string_view tenant, std::uint32_t gpu) {
  for (const auto& snap : snapshot_tenants(state)) {
    if (snap.name != tenant) continue;
    for (const auto& ledger : snap.gpus) {
      if (ledger.gpu == gpu) return ledger.used_bytes;
    }
  }
  return UINT64_MAX;
}

}  // namespace gpushare::testing
