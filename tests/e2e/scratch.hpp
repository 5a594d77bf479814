// A fixture for tests that run real processes: a fresh folder of their own per test, for the
// shared state file, ready files, engine files and whatever else the processes leave behind.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

namespace gpushare::testing {

namespace fs = std::filesystem;

class ScratchTest : public ::testing::Test {
 protected:
  // Made in the constructor (not SetUp), so that fixtures can derive their own members from it.
  ScratchTest() : dir_(folder_for_this_test()) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  ~ScratchTest() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Polls for a file another process creates when it is ready, 5 ms apart; false if it never came.
  static bool appears_within(const std::string& file, std::chrono::milliseconds patience) {
    const auto deadline = std::chrono::steady_clock::now() + patience;
    while (!fs::exists(file) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return fs::exists(file);
  }

  const fs::path dir_;
  // This test's gpushare state file (GPUSHARE_STATE, --state): created by the processes, if at all.
  const std::string state_ = path("state");

 private:
  // Named after the suite and the test, and this process: test binaries may run side by side.
  // Parameterized names hold '/', which would make nested folders that cleanup leaves behind.
  static fs::path folder_for_this_test() {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string("gpushare-") + test->test_suite_name() + "-" + std::to_string(::getpid()) + "-" +
                       test->name();
    for (char& c : name) {
      if (c == '/') c = '_';
    }
    return fs::path(::testing::TempDir()) / name;
  }
};

}  // namespace gpushare::testing
