// `gpushare run` as init: as PID 1 of a PID namespace (unshare --pid --fork, as a container's first
// process) and with --init anywhere. CMD's exit status comes back, signals sent to init reach CMD,
// and orphans reparented to init are reaped.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <string>
#include <vector>

#include "process.hpp"
#include "scratch.hpp"

namespace gpushare::testing {
namespace {

class Init : public ScratchTest {
 protected:
  // `gpushare run --state S [--init] -- sh -c SCRIPT`.
  std::vector<std::string> run_shell(const std::string& script, bool init_flag) const {
    std::vector<std::string> argv = {GPUSHARE_TEST_TOOL, "run", "--state", state_};
    if (init_flag) argv.push_back("--init");
    argv.insert(argv.end(), {"--", "sh", "-c", script});
    return argv;
  }
  // The same, as PID 1 of a new PID namespace with its own /proc.
  std::vector<std::string> in_pid_namespace(const std::string& script) const {
    std::vector<std::string> argv = {"unshare", "--pid", "--fork", "--mount-proc"};
    for (std::string& word : run_shell(script, false)) argv.push_back(std::move(word));
    return argv;
  }
  static Env env() { return fake_driver_env(GPUSHARE_TEST_FAKE_DIR); }

  void SetUp() override {
    if (!needs_namespace_) return;
    const ProcessResult probe = run({"unshare", "--pid", "--fork", "--mount-proc", "true"}, {});
    if (probe.exit_code != 0) GTEST_SKIP() << "unshare --pid --fork --mount-proc is not available here (root needed)";
  }
  bool needs_namespace_ = true;

  // A script that traps SIGTERM (writing `term_file`, exiting 0), says it is ready, then waits.
  std::string traps_term() const {
    return "trap 'echo > " + path("term") + "; exit 0' TERM; echo > " + path("ready") +
           "; while :; do sleep 5 & wait $!; done";
  }
};

class InitFlag : public Init {
 protected:
  InitFlag() { needs_namespace_ = false; }
};

// The host pid of the unshare process's one child: gpushare run, PID 1 inside.
pid_t init_host_pid(pid_t unshare_pid) {
  std::ifstream children("/proc/" + std::to_string(unshare_pid) + "/task/" + std::to_string(unshare_pid) +
                         "/children");
  pid_t child = -1;
  children >> child;
  return child;
}

TEST_F(Init, AsPid1ItStaysAndExitsWithCmdsStatus) {
  // CMD is a child of init (PID 1), not PID 1 itself as after an exec.
  const ProcessResult r = run(in_pid_namespace("echo pid=$$ ppid=$PPID; exit 7"), env());
  EXPECT_EQ(r.exit_code, 7) << r.err;
  EXPECT_EQ(output_value(r.out, "ppid"), "1") << r.out;
  EXPECT_NE(output_value(r.out, "pid"), "1") << r.out;
}

TEST_F(Init, ACmdKilledBySigkillGives137) {
  const ProcessResult r = run(in_pid_namespace("kill -KILL $$"), env());
  EXPECT_EQ(r.exit_code, 128 + SIGKILL) << r.err;
}

TEST_F(Init, SigtermSentToPid1ReachesCmd) {
  Process unshare(in_pid_namespace(traps_term()), env());
  ASSERT_TRUE(appears_within(path("ready"), std::chrono::seconds(30)));
  const pid_t init = init_host_pid(unshare.pid());
  ASSERT_GT(init, 0);
  ASSERT_EQ(::kill(init, SIGTERM), 0);
  const ProcessResult r = unshare.wait();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(path("term")));
}

TEST_F(Init, OrphansReparentedToPid1AreReaped) {
  // The inner shell exits at once, leaving `true` to PID 1; a zombie keeps its /proc entry until its
  // parent reaps it. CMD waits (up to about 10 s) for it to go, then checks that PID 1 has no zombie
  // child at all: 3 or 4 when one remains.
  const std::string orphan = path("orphan");
  const std::string script = "sh -c 'true & echo $! > " + orphan + "'; orphan=$(cat " + orphan +
                             "); i=0; while [ -e /proc/$orphan ]; do i=$((i+1)); [ $i -gt 1000 ] && exit 3; "
                             "sleep 0.01; done; "
                             "if awk '$3 == \"Z\" && $4 == 1' /proc/[0-9]*/stat | grep -q .; then exit 4; fi; exit 0";
  const ProcessResult r = run(in_pid_namespace(script), env());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(orphan));
}

TEST_F(InitFlag, OutsideAPidNamespaceItStaysAsCmdsParent) {
  Process run_init(run_shell("echo ppid=$PPID; exit 7", true), env());
  const pid_t init = run_init.pid();
  const ProcessResult r = run_init.wait();
  EXPECT_EQ(r.exit_code, 7) << r.err;
  EXPECT_EQ(output_value(r.out, "ppid"), std::to_string(init)) << r.out;
  EXPECT_EQ(run(run_shell("kill -KILL $$", true), env()).exit_code, 128 + SIGKILL);
}

TEST_F(InitFlag, SigtermSentToInitReachesCmd) {
  Process run_init(run_shell(traps_term(), true), env());
  ASSERT_TRUE(appears_within(path("ready"), std::chrono::seconds(30)));
  run_init.kill(SIGTERM);
  const ProcessResult r = run_init.wait();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(path("term")));
}

TEST_F(InitFlag, ACmdThatCannotRunGives127) {
  const ProcessResult r =
      run({GPUSHARE_TEST_TOOL, "run", "--state", state_, "--init", "--", "/nonexistent/gpushare-cmd"}, env());
  EXPECT_EQ(r.exit_code, 127);
  EXPECT_NE(r.err.find("cannot run"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace gpushare::testing
