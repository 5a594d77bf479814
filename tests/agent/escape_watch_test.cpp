// Escaped GPU processes: the comparison of NVML's figures with the ledger, the NVML reader against
// the fake NVML (tests/nvml/fake_nvml.cpp), and the enforcer on a fake clock against real child
// processes, killed or spared as its rules say.
#include "escape_watch.hpp"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "core/size.hpp"
#include "identity.hpp"

namespace gpushare::agent {
namespace {

using namespace std::chrono_literals;
using Kind = EscapeEvent::Kind;
using Enforce = EnforcementConfig::Enforce;

// The UUIDs the fake NVML gives its devices 0 and 1.
const std::string kGpu0 = "GPU-46414b45-4750-552d-0000-000000000000";
const std::string kGpu1 = "GPU-46414b45-4750-552d-0000-000000000001";
constexpr std::uint64_t kAllowance = 1_GiB;

// ---- find_unaccounted -------------------------------------------------------------------------

TEST(FindUnaccounted, AProcessTheAgentDoesNotKnowIsAllItUses) {
  auto findings = find_unaccounted({{4242, kGpu0, 300_MiB}}, {}, kAllowance);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0], (Unaccounted{4242, kGpu0, 300_MiB, 0, 300_MiB, false}));
}

TEST(FindUnaccounted, AKnownProcessWithinItsLedgerAndTheAllowanceIsNotReported) {
  Accounted accounted{{7, {{kGpu0, 2_GiB}}}};
  EXPECT_TRUE(find_unaccounted({{7, kGpu0, 2_GiB}}, accounted, kAllowance).empty());
  EXPECT_TRUE(find_unaccounted({{7, kGpu0, 3_GiB}}, accounted, kAllowance).empty());  // exactly at the bound
  EXPECT_TRUE(find_unaccounted({{7, kGpu0, 100_MiB}}, accounted, kAllowance).empty());
}

TEST(FindUnaccounted, AKnownProcessAboveItsLedgerAndTheAllowanceReportsTheExcess) {
  Accounted accounted{{7, {{kGpu0, 2_GiB}}}};
  auto findings = find_unaccounted({{7, kGpu0, 5_GiB}}, accounted, kAllowance);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0], (Unaccounted{7, kGpu0, 5_GiB, 2_GiB, 2_GiB, true}));
  // Without an allowance the context counts too.
  auto strict = find_unaccounted({{7, kGpu0, 2_GiB + 1}}, accounted, 0);
  ASSERT_EQ(strict.size(), 1u);
  EXPECT_EQ(strict[0].unaccounted_bytes, 1u);
}

TEST(FindUnaccounted, AnUnknownSizeIsNeverAHugeNumber) {
  Accounted accounted{{7, {{kGpu0, 1_GiB}}}};
  auto findings = find_unaccounted({{7, kGpu0, std::nullopt}, {8, kGpu0, std::nullopt}}, accounted, kAllowance);
  // The unknown process is reported with its size unknown; the known one shows nothing over.
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0].pid, 8);
  EXPECT_FALSE(findings[0].known_to_agent);
  EXPECT_FALSE(findings[0].used_bytes.has_value());
  EXPECT_FALSE(findings[0].unaccounted_bytes.has_value());
}

TEST(FindUnaccounted, ComparesEachGpuWithItsOwnLedger) {
  // Process 7 is accounted on GPU 0 only: on GPU 1 all beyond the allowance is unaccounted.
  Accounted accounted{{7, {{kGpu0, 4_GiB}}}, {9, {{kGpu0, 1_GiB}, {kGpu1, 1_GiB}}}};
  std::vector<GpuProcess> seen{
      {9, kGpu1, 1_GiB + 512_MiB}, {7, kGpu1, 3_GiB}, {7, kGpu0, 4_GiB + 512_MiB}, {11, kGpu1, 64_MiB}};
  auto findings = find_unaccounted(seen, accounted, kAllowance);
  ASSERT_EQ(findings.size(), 2u);  // sorted by GPU, then pid
  EXPECT_EQ(findings[0], (Unaccounted{7, kGpu1, 3_GiB, 0, 2_GiB, true}));
  EXPECT_EQ(findings[1], (Unaccounted{11, kGpu1, 64_MiB, 0, 64_MiB, false}));
}

TEST(FindUnaccounted, EntriesOfOneProcessOnOneGpuAreAddedUp) {
  Accounted accounted{{7, {{kGpu0, 1_GiB}}}};
  auto findings = find_unaccounted({{7, kGpu0, 1_GiB}, {7, kGpu0, 2_GiB}}, accounted, kAllowance);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0].used_bytes, 3_GiB);
  EXPECT_EQ(findings[0].unaccounted_bytes, 1_GiB);
  auto unknown = find_unaccounted({{8, kGpu0, 1_GiB}, {8, kGpu0, std::nullopt}}, {}, kAllowance);
  ASSERT_EQ(unknown.size(), 1u);
  EXPECT_FALSE(unknown[0].used_bytes.has_value());
}

TEST(FindUnaccounted, HugeFiguresDoNotWrapAround) {
  Accounted accounted{{7, {{kGpu0, UINT64_MAX - 1}}}};
  EXPECT_TRUE(find_unaccounted({{7, kGpu0, UINT64_MAX - 1}}, accounted, UINT64_MAX).empty());
  auto findings = find_unaccounted({{8, kGpu0, UINT64_MAX - 2}, {8, kGpu0, 10}}, {}, kAllowance);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0].used_bytes, UINT64_MAX);
}

// ---- NvmlProcesses on the fake NVML -----------------------------------------------------------

class NvmlProcessesTest : public ::testing::Test {
 protected:
  void TearDown() override { ::unsetenv("FAKE_NVML_PROCESSES"); }
  static void list_processes(const std::string& text) { ::setenv("FAKE_NVML_PROCESSES", text.c_str(), 1); }
};

TEST_F(NvmlProcessesTest, AMissingLibraryIsAClearError) {
  auto nvml = NvmlProcesses::open("/nonexistent/libnvidia-ml.so.1");
  ASSERT_FALSE(nvml.ok());
  EXPECT_NE(nvml.error().message.find("NVML cannot be loaded"), std::string::npos) << nvml.error().message;
  EXPECT_NE(nvml.error().message.find("/nonexistent/libnvidia-ml.so.1"), std::string::npos);
}

TEST_F(NvmlProcessesTest, ListsTheProcessesOfEveryGpu) {
  auto nvml = NvmlProcesses::open(GPUSHARE_TEST_FAKE_NVML);
  ASSERT_TRUE(nvml.ok()) << nvml.error().message;
  EXPECT_STREQ(nvml->listing_function(), "nvmlDeviceGetComputeRunningProcesses_v3");
  auto none = nvml->list();
  ASSERT_TRUE(none.ok()) << none.error().message;
  EXPECT_TRUE(none->empty());

  list_processes("100:0:1048576,200:1:NA,300:1:0x40000000");
  auto listed = nvml->list();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 3u);
  EXPECT_EQ((*listed)[0].pid, 100);
  EXPECT_EQ((*listed)[0].gpu_uuid, kGpu0);
  EXPECT_EQ((*listed)[0].used_bytes, 1_MiB);
  EXPECT_EQ((*listed)[1].pid, 200);
  EXPECT_EQ((*listed)[1].gpu_uuid, kGpu1);
  EXPECT_FALSE((*listed)[1].used_bytes.has_value());  // NVML_VALUE_NOT_AVAILABLE
  EXPECT_EQ((*listed)[2].pid, 300);
  EXPECT_EQ((*listed)[2].used_bytes, 1_GiB);
}

TEST_F(NvmlProcessesTest, GrowsItsRoomUntilTheListFits) {
  std::string text;
  for (int pid = 1000; pid < 1100; ++pid) text += std::to_string(pid) + ":1:4096,";
  list_processes(text);
  auto nvml = NvmlProcesses::open(GPUSHARE_TEST_FAKE_NVML);
  ASSERT_TRUE(nvml.ok()) << nvml.error().message;
  auto listed = nvml->list();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 100u);
  for (std::size_t i = 0; i < listed->size(); ++i) {
    EXPECT_EQ((*listed)[i].pid, static_cast<pid_t>(1000 + i));
    EXPECT_EQ((*listed)[i].gpu_uuid, kGpu1);
  }
}

TEST_F(NvmlProcessesTest, FallsBackToTheUnversionedListingOfOlderDrivers) {
  auto nvml = NvmlProcesses::open(GPUSHARE_TEST_FAKE_NVML_WITHOUT_V3);
  ASSERT_TRUE(nvml.ok()) << nvml.error().message;
  EXPECT_STREQ(nvml->listing_function(), "nvmlDeviceGetComputeRunningProcesses");
  std::string text = "5:0:NA,";
  for (int pid = 6; pid < 40; ++pid) text += std::to_string(pid) + ":0:8192,";
  list_processes(text);
  auto listed = nvml->list();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 35u);
  EXPECT_FALSE((*listed)[0].used_bytes.has_value());
  EXPECT_EQ((*listed)[34].pid, 39);
  EXPECT_EQ((*listed)[34].used_bytes, 8192u);
}

TEST_F(NvmlProcessesTest, AMovedReaderStillLists) {
  list_processes("42:0:4096");
  auto opened = NvmlProcesses::open(GPUSHARE_TEST_FAKE_NVML);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  NvmlProcesses nvml = std::move(opened).value();
  auto listed = nvml.list();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].pid, 42);
}

// ---- EscapeEnforcer on real processes ---------------------------------------------------------

// A child that waits for a signal; killed and reaped when the test is done with it.
class Sleeper {
 public:
  Sleeper() : pid_(::fork()) {
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives a crashed test
      for (;;) ::pause();
    }
  }
  Sleeper(const Sleeper&) = delete;
  Sleeper& operator=(const Sleeper&) = delete;
  ~Sleeper() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      wait_status();
    }
  }

  [[nodiscard]] pid_t pid() const { return pid_; }
  // Whether it runs still (not exited, not a zombie waiting to be reaped).
  bool running() {
    int status = 0;
    const pid_t changed = ::waitpid(pid_, &status, WNOHANG);
    if (changed == pid_) {
      reaped_ = true;
      status_ = status;
    }
    return changed == 0;
  }
  // Waits for it to end, and how it ended.
  int wait_status() {
    if (pid_ > 0 && !reaped_) {
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      reaped_ = true;
      status_ = status;
    }
    return status_;
  }

 private:
  pid_t pid_;
  bool reaped_ = false;
  int status_ = 0;
};

Unaccounted escaped(pid_t pid, const std::string& gpu = kGpu0) { return {pid, gpu, 2_GiB, 0, 2_GiB, false}; }

std::vector<Kind> kinds(const std::vector<EscapeEvent>& events) {
  std::vector<Kind> out;
  for (const EscapeEvent& event : events) out.push_back(event.kind);
  return out;
}

const auto kStart = std::chrono::steady_clock::time_point{} + 1000s;

TEST(EscapeEnforcer, ReportOnlyNeverKills) {
  Sleeper child;
  ASSERT_GT(child.pid(), 0);
  EscapeEnforcer enforcer({Enforce::kReport, 1s});
  auto first = enforcer.round({escaped(child.pid())}, kStart);
  ASSERT_EQ(kinds(first), std::vector<Kind>{Kind::kFound});
  EXPECT_EQ(first[0].pid, child.pid());
  EXPECT_NE(first[0].log_line.find("not connected to the agent, uses 2 GiB"), std::string::npos) << first[0].log_line;
  EXPECT_NE(first[0].log_line.find("report only"), std::string::npos) << first[0].log_line;
  EXPECT_TRUE(enforcer.round({escaped(child.pid())}, kStart + 1h).empty());
  EXPECT_TRUE(child.running());

  auto tracked = enforcer.tracked();
  ASSERT_EQ(tracked.size(), 1u);
  EXPECT_EQ(tracked[0].finding, escaped(child.pid()));
  EXPECT_EQ(tracked[0].first_seen, kStart);
  EXPECT_FALSE(tracked[0].kill_sent);
  auto cgroup = read_cgroup(child.pid());
  ASSERT_TRUE(cgroup.ok()) << cgroup.error().message;
  EXPECT_EQ(tracked[0].cgroup, *cgroup);
  EXPECT_EQ(cgroup_for_report(child.pid()), *cgroup);
}

TEST(EscapeEnforcer, KillsOnlyOnceTheGraceHasPassed) {
  Sleeper child;
  ASSERT_GT(child.pid(), 0);
  EscapeEnforcer enforcer({Enforce::kKill, 10s});
  auto found = enforcer.round({escaped(child.pid())}, kStart);
  ASSERT_EQ(kinds(found), std::vector<Kind>{Kind::kFound});
  EXPECT_NE(found[0].log_line.find("killed if this still holds in 10 s"), std::string::npos) << found[0].log_line;
  EXPECT_TRUE(enforcer.round({escaped(child.pid())}, kStart + 10s - 1ns).empty());
  EXPECT_TRUE(child.running());

  auto killed = enforcer.round({escaped(child.pid())}, kStart + 10s);
  ASSERT_EQ(kinds(killed), std::vector<Kind>{Kind::kKilled});
  EXPECT_NE(killed[0].log_line.find("killed (SIGKILL)"), std::string::npos) << killed[0].log_line;
  const int status = child.wait_status();
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  ASSERT_EQ(enforcer.tracked().size(), 1u);
  EXPECT_TRUE(enforcer.tracked()[0].kill_sent);

  // The driver may list it a little longer: its entry goes, with nothing killed twice.
  auto after = enforcer.round({escaped(child.pid())}, kStart + 11s);
  EXPECT_EQ(kinds(after), (std::vector<Kind>{Kind::kGone, Kind::kGone}));
  EXPECT_TRUE(enforcer.tracked().empty());
}

TEST(EscapeEnforcer, KillsNoEarlierThanTheSecondRoundEvenWithoutGrace) {
  Sleeper child;
  ASSERT_GT(child.pid(), 0);
  EscapeEnforcer enforcer({Enforce::kKill, 0s});
  EXPECT_EQ(kinds(enforcer.round({escaped(child.pid())}, kStart)), std::vector<Kind>{Kind::kFound});
  EXPECT_TRUE(child.running());
  EXPECT_EQ(kinds(enforcer.round({escaped(child.pid())}, kStart)), std::vector<Kind>{Kind::kKilled});
  EXPECT_EQ(WTERMSIG(child.wait_status()), SIGKILL);
}

TEST(EscapeEnforcer, AProcessThatIsGoneIsNotKilledAndItsEntryIsDropped) {
  Sleeper child;
  ASSERT_GT(child.pid(), 0);
  EscapeEnforcer enforcer({Enforce::kKill, 0s});
  ASSERT_EQ(kinds(enforcer.round({escaped(child.pid())}, kStart)), std::vector<Kind>{Kind::kFound});
  ::kill(child.pid(), SIGTERM);
  const int status = child.wait_status();
  ASSERT_TRUE(WIFSIGNALED(status));
  ASSERT_EQ(WTERMSIG(status), SIGTERM);

  // A stale listing still names it: the held process is gone, so nothing is signalled.
  auto events = enforcer.round({escaped(child.pid())}, kStart + 1h);
  for (const EscapeEvent& event : events) EXPECT_NE(event.kind, Kind::kKilled) << event.log_line;
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0].kind, Kind::kGone);
  EXPECT_NE(events[0].log_line.find("its process exited"), std::string::npos) << events[0].log_line;
  EXPECT_TRUE(enforcer.tracked().empty());
}

TEST(EscapeEnforcer, APidListedAfterItsProcessExitedIsNotFollowed) {
  pid_t gone = 0;
  {
    Sleeper child;
    gone = child.pid();
  }
  EscapeEnforcer enforcer({Enforce::kReport, 0s});
  auto events = enforcer.round({escaped(gone)}, kStart);
  ASSERT_EQ(kinds(events), std::vector<Kind>{Kind::kGone});
  EXPECT_NE(events[0].log_line.find("already exited"), std::string::npos) << events[0].log_line;
  EXPECT_TRUE(enforcer.tracked().empty());
}

TEST(EscapeEnforcer, AFindingThatDisappearsIsForgottenAndStartsOverWhenItReturns) {
  Sleeper child;
  ASSERT_GT(child.pid(), 0);
  EscapeEnforcer enforcer({Enforce::kKill, 10s});
  ASSERT_EQ(kinds(enforcer.round({escaped(child.pid())}, kStart)), std::vector<Kind>{Kind::kFound});
  auto resolved = enforcer.round({}, kStart + 5s);
  ASSERT_EQ(kinds(resolved), std::vector<Kind>{Kind::kResolved});
  EXPECT_NE(resolved[0].log_line.find("no longer unaccounted"), std::string::npos);
  EXPECT_TRUE(enforcer.tracked().empty());

  // Back again: the grace counts from now, not from the first sighting.
  ASSERT_EQ(kinds(enforcer.round({escaped(child.pid())}, kStart + 8s)), std::vector<Kind>{Kind::kFound});
  EXPECT_TRUE(enforcer.round({escaped(child.pid())}, kStart + 12s).empty());
  EXPECT_TRUE(child.running());
  EXPECT_EQ(kinds(enforcer.round({escaped(child.pid())}, kStart + 18s)), std::vector<Kind>{Kind::kKilled});
  EXPECT_EQ(WTERMSIG(child.wait_status()), SIGKILL);
}

TEST(EscapeEnforcer, FollowsEachGpuOfAProcessApart) {
  Sleeper child;
  ASSERT_GT(child.pid(), 0);
  EscapeEnforcer enforcer({Enforce::kReport, 0s});
  auto found = enforcer.round({escaped(child.pid(), kGpu0), escaped(child.pid(), kGpu1)}, kStart);
  ASSERT_EQ(kinds(found), (std::vector<Kind>{Kind::kFound, Kind::kFound}));
  EXPECT_EQ(found[0].gpu_uuid, kGpu0);
  EXPECT_EQ(found[1].gpu_uuid, kGpu1);
  EXPECT_EQ(kinds(enforcer.round({escaped(child.pid(), kGpu1)}, kStart + 1s)), std::vector<Kind>{Kind::kResolved});
  ASSERT_EQ(enforcer.tracked().size(), 1u);
  EXPECT_EQ(enforcer.tracked()[0].finding.gpu_uuid, kGpu1);
}

TEST(EscapeEnforcer, SaysWhatAKnownProcessUsesBeyondItsLedger) {
  Sleeper child;
  ASSERT_GT(child.pid(), 0);
  EscapeEnforcer enforcer({Enforce::kReport, 0s});
  const Unaccounted over{child.pid(), kGpu1, 5_GiB, 2_GiB, 2_GiB, true};
  auto found = enforcer.round({over}, kStart);
  ASSERT_EQ(kinds(found), std::vector<Kind>{Kind::kFound});
  EXPECT_NE(found[0].log_line.find(kGpu1 + ": uses 5 GiB, 2 GiB beyond its ledger (2 GiB)"), std::string::npos)
      << found[0].log_line;
}

}  // namespace
}  // namespace gpushare::agent
