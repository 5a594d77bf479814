// `gpushare node-install`'s core (tools/node_install.hpp) on real files: a release is copied whole,
// an identical one is kept, an upgrade moves `current` without a moment where it is missing, old
// releases are pruned, and a source that cannot be read leaves the host folder as it was.
#include <gtest/gtest.h>

#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <fstream>
#include <iterator>
#include <thread>

#include "node_install.hpp"
#include "scratch.hpp"

namespace gpushare::tools {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_text(const fs::path& file, const std::string& text, fs::perms mode = fs::perms(0644)) {
  fs::create_directories(file.parent_path());
  std::ofstream(file) << text;
  fs::permissions(file, mode);
}

class NodeInstall : public gpushare::testing::ScratchTest {
 protected:
  // An installed prefix whose files all say `label`, laid out as `cmake --install` does.
  ReleaseSource make_source(const std::string& name, const std::string& label) {
    const fs::path prefix = dir_ / name;
    write_text(prefix / "bin/gpushare", "gpushare " + label, fs::perms(0755));
    write_text(prefix / "lib/gpushare/libgpushare-preload.so", "preload " + label);
    write_text(prefix / "lib/gpushare/nvml/libnvidia-ml.so.1", "shadow " + label);
    write_text(prefix / "lib/gpushare/nvml/real/libgpushare-real-nvml.so", "real " + label);
    fs::create_symlink("libnvidia-ml.so.1", prefix / "lib/gpushare/nvml/libnvidia-ml.so");
    // Not asked for: must not be copied.
    write_text(prefix / "lib/gpushare/gpushare-exporter", "exporter", fs::perms(0755));
    return {prefix, {"bin/gpushare", "lib/gpushare/libgpushare-preload.so", "lib/gpushare/nvml"}};
  }
  fs::path current_target() const { return fs::read_symlink(host_ / "current"); }
  std::string preload_text() const { return read_text(host_ / "current/lib/gpushare/libgpushare-preload.so"); }

  const fs::path host_ = dir_ / "host/usr/local/gpushare";
};

TEST_F(NodeInstall, CopiesTheReleaseAndPointsCurrentAtItRelatively) {
  const ReleaseSource source = make_source("prefix", "one");
  auto outcome = install_release(source, host_, "0.7.0");
  ASSERT_TRUE(outcome.ok()) << outcome.error().message;
  EXPECT_FALSE(outcome->kept_existing);
  EXPECT_EQ(outcome->release, host_ / "releases/0.7.0");
  EXPECT_EQ(current_target(), fs::path("releases/0.7.0"));
  EXPECT_EQ(preload_text(), "preload one");
  EXPECT_EQ(read_text(host_ / "current/lib/gpushare/nvml/real/libgpushare-real-nvml.so"), "real one");
  EXPECT_EQ(fs::read_symlink(host_ / "current/lib/gpushare/nvml/libnvidia-ml.so"), fs::path("libnvidia-ml.so.1"));
  EXPECT_EQ(fs::status(host_ / "current/bin/gpushare").permissions() & fs::perms::all, fs::perms(0755));
  EXPECT_EQ(fs::status(host_ / "current/lib/gpushare/libgpushare-preload.so").permissions() & fs::perms::all,
            fs::perms(0644));
  EXPECT_FALSE(fs::exists(host_ / "current/lib/gpushare/gpushare-exporter"));
  // Nothing temporary is left beside the release.
  for (const auto& entry : fs::directory_iterator(host_ / "releases")) {
    EXPECT_EQ(entry.path().filename(), "0.7.0");
  }

  // Moved elsewhere, the host folder still works: the link is relative.
  fs::rename(dir_ / "host", dir_ / "moved");
  EXPECT_EQ(read_text(dir_ / "moved/usr/local/gpushare/current/lib/gpushare/libgpushare-preload.so"), "preload one");
}

TEST_F(NodeInstall, KeepsAnIdenticalReleaseAndReplacesADifferentOneOfTheSameVersion) {
  const ReleaseSource source = make_source("prefix", "one");
  ASSERT_TRUE(install_release(source, host_, "0.7.0").ok());
  struct stat before {};
  ASSERT_EQ(::stat((host_ / "releases/0.7.0/lib/gpushare/libgpushare-preload.so").c_str(), &before), 0);

  auto again = install_release(source, host_, "0.7.0");
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_TRUE(again->kept_existing);
  struct stat after {};
  ASSERT_EQ(::stat((host_ / "releases/0.7.0/lib/gpushare/libgpushare-preload.so").c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino) << "an identical release was rewritten";

  // A rebuild under the same version replaces the release.
  const ReleaseSource rebuilt = make_source("rebuilt", "rebuilt");
  auto replaced = install_release(rebuilt, host_, "0.7.0");
  ASSERT_TRUE(replaced.ok()) << replaced.error().message;
  EXPECT_FALSE(replaced->kept_existing);
  EXPECT_EQ(preload_text(), "preload rebuilt");
  EXPECT_EQ(list_releases(host_), std::vector<std::string>{"0.7.0"});
}

TEST_F(NodeInstall, UpgradesWithoutCurrentEverMissingAndPrunesOldReleases) {
  const ReleaseSource source = make_source("prefix", "same");
  ASSERT_TRUE(install_release(source, host_, "0.7.0").ok());

  // A reader resolves current/... as a pod's exec would, all through the upgrades. The promise is
  // that a reader that resolved `current` just before one switch still finds its release; a reader
  // preempted across two whole installs (installs back to back here, minutes apart on a node) may
  // not, and is not counted: an ENOENT is a fault only when at most one install overlapped the look.
  std::atomic<bool> upgrading{true};
  std::atomic<int> missing{0};
  std::atomic<long> reads{0};
  std::atomic<int> installs_started{0}, installs_done{0};
  std::thread reader([&] {
    const std::string preload = (host_ / "current/lib/gpushare/libgpushare-preload.so").string();
    while (upgrading.load()) {
      const int done_before = installs_done.load();
      struct stat info {};
      const bool absent = ::stat(preload.c_str(), &info) != 0 && errno == ENOENT;
      if (absent && installs_started.load() - done_before <= 1) missing.fetch_add(1);
      reads.fetch_add(1);
    }
  });
  while (reads.load() == 0) std::this_thread::yield();
  const std::vector<std::string> versions{"0.7.1", "0.8.0", "0.9.0", "0.10.0", "0.10.1"};
  for (int round = 0; round < 20; ++round) {
    for (const std::string& version : versions) {
      installs_started.fetch_add(1);
      auto outcome = install_release(source, host_, version);
      installs_done.fetch_add(1);
      ASSERT_TRUE(outcome.ok()) << outcome.error().message;
      ASSERT_EQ(current_target(), fs::path("releases") / version);
    }
  }
  upgrading = false;
  reader.join();
  EXPECT_EQ(missing.load(), 0) << "current was missing during an upgrade";

  // Newest two kept (numeric order: 0.10.x after 0.9.0).
  EXPECT_EQ(list_releases(host_), (std::vector<std::string>{"0.10.1", "0.10.0"}));
  // A downgrade keeps the two newest and the current one.
  auto downgrade = install_release(source, host_, "0.7.0");
  ASSERT_TRUE(downgrade.ok()) << downgrade.error().message;
  EXPECT_EQ(list_releases(host_), (std::vector<std::string>{"0.10.1", "0.10.0", "0.7.0"}));
  EXPECT_EQ(current_target(), fs::path("releases/0.7.0"));
  // The release `current` pointed at before is kept until the next install: a reader may have
  // resolved `current` to it just before the switch.
  ASSERT_TRUE(install_release(source, host_, "0.11.0").ok());
  EXPECT_EQ(list_releases(host_), (std::vector<std::string>{"0.11.0", "0.10.1", "0.7.0"}));
  ASSERT_TRUE(install_release(source, host_, "0.12.0").ok());
  EXPECT_EQ(list_releases(host_), (std::vector<std::string>{"0.12.0", "0.11.0"}));
}

TEST_F(NodeInstall, AnUnreadableSourceIsRefusedAndLeavesTheHostFolderAsItWas) {
  const ReleaseSource good = make_source("good", "good");
  ASSERT_TRUE(install_release(good, host_, "0.7.0").ok());
  ReleaseSource bad = make_source("bad", "bad");
  fs::permissions(bad.prefix / "lib/gpushare/nvml/real/libgpushare-real-nvml.so", fs::perms(0600));

  // Root reads every file: the install runs as nobody then, in a child, with the host folder its own.
  std::string message;
  bool installed = false;
  if (::geteuid() == 0) {
    for (const auto& entry : fs::recursive_directory_iterator(dir_ / "host")) {
      ASSERT_EQ(::lchown(entry.path().c_str(), 65534, 65534), 0);
    }
    ASSERT_EQ(::chown((dir_ / "host").c_str(), 65534, 65534), 0);
    ::chmod(dir_.c_str(), 0755);
    int pipe_fds[2];
    ASSERT_EQ(::pipe(pipe_fds), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(pipe_fds[0]);
      if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
          ::setresuid(65534, 65534, 65534) != 0) {
        ::_exit(3);
      }
      auto outcome = install_release(bad, host_, "0.8.0");
      const std::string said = outcome.ok() ? std::string() : outcome.error().message;
      const ssize_t ignored = ::write(pipe_fds[1], said.data(), said.size());
      (void)ignored;
      ::_exit(outcome.ok() ? 0 : 1);
    }
    ::close(pipe_fds[1]);
    char buffer[4096];
    for (ssize_t got; (got = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;) message.append(buffer, got);
    ::close(pipe_fds[0]);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_NE(WEXITSTATUS(status), 3) << "could not become nobody";
    installed = WEXITSTATUS(status) == 0;
  } else {
    auto outcome = install_release(bad, host_, "0.8.0");
    installed = outcome.ok();
    if (!outcome.ok()) message = outcome.error().message;
  }
  EXPECT_FALSE(installed);
  EXPECT_NE(message.find("cannot read"), std::string::npos) << message;
  EXPECT_NE(message.find("libgpushare-real-nvml.so"), std::string::npos) << message;
  EXPECT_EQ(current_target(), fs::path("releases/0.7.0"));
  EXPECT_EQ(preload_text(), "preload good");
  EXPECT_EQ(list_releases(host_), std::vector<std::string>{"0.7.0"});
  for (const auto& entry : fs::directory_iterator(host_ / "releases")) {
    EXPECT_EQ(entry.path().filename(), "0.7.0") << "left behind";
  }
}

TEST_F(NodeInstall, RefusesBadReleaseNamesAndPathsOutsideThePrefix) {
  const ReleaseSource source = make_source("prefix", "one");
  for (const char* name : {"", "../x", ".hidden", "a/b"}) {
    EXPECT_FALSE(install_release(source, host_, name).ok()) << name;
  }
  ReleaseSource outside = source;
  outside.entries.push_back("../escape");
  EXPECT_FALSE(install_release(outside, host_, "0.7.0").ok());
  EXPECT_FALSE(fs::exists(host_ / "current"));
}

TEST(VersionOrder, ComparesDottedNumbersNumerically) {
  EXPECT_TRUE(version_less("0.9.1", "0.10.0"));
  EXPECT_TRUE(version_less("0.7.0", "0.7.1"));
  EXPECT_FALSE(version_less("1.0.0", "0.99.0"));
  EXPECT_TRUE(version_less("nightly", "0.1.0"));
  EXPECT_FALSE(version_less("0.7.0", "0.7.0"));
}

}  // namespace
}  // namespace gpushare::tools
