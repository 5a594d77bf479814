// End-to-end: bad input is refused with a message naming it, never run anyway or silently ignored:
// unknown options, empty state paths, unusable state files, per-device limits for no device, a
// context charge that fills the quota, and a "real driver" that is not a CUDA driver.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <vector>

#include "process.hpp"
#include "scratch.hpp"

namespace gpushare::testing {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

class BadInput : public ScratchTest {
 protected:
  // `gpushare ARGS` with `env` (and nothing of the test's own gpushare variables).
  static ProcessResult tool(std::vector<std::string> args, const Env& env = {}) {
    args.insert(args.begin(), GPUSHARE_TEST_TOOL);
    return run(args, env);
  }
  // A command for `gpushare run` that leaves a trace if it ever runs.
  std::vector<std::string> marker_command() const { return {"/usr/bin/touch", path("ran")}; }
  bool command_ran() const { return fs::exists(path("ran")); }

  // A preloaded process on the fake driver that allocates 1 MiB chunks until refused.
  ProcessResult probe_fill(Env extra) const {
    extra.insert({{"LD_PRELOAD", GPUSHARE_TEST_PRELOAD}, {"GPUSHARE_STATE", state_}});
    return run({GPUSHARE_TEST_PROBE, "linked", "fill", std::to_string(kMiB)},
               fake_driver_env(GPUSHARE_TEST_FAKE_DIR, std::move(extra)));
  }
};

std::string joined(const std::vector<std::string>& words) {
  std::string text;
  for (const auto& word : words) text += (text.empty() ? "'" : " '") + word + "'";
  return text;
}

std::size_t occurrences(const std::string& text, const std::string& needle) {
  std::size_t count = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++count;
  return count;
}

TEST_F(BadInput, RunRefusesAnUnknownOptionInsteadOfRunningIt) {
  for (const std::vector<std::string>& options : {std::vector<std::string>{"--memroy", "1GiB", "--"},
                                                  {"--memroy", "1GiB"},
                                                  {"--memory", "1GiB", "-x", "--"},
                                                  {"--bogus=3"},
                                                  {"--tenant", "t", "--sahre", "30", "--"}}) {
    std::vector<std::string> args{"run", "--state", state_};
    args.insert(args.end(), options.begin(), options.end());
    const auto command = marker_command();
    args.insert(args.end(), command.begin(), command.end());
    const ProcessResult r = tool(args);
    EXPECT_EQ(r.exit_code, 2) << joined(args) << "\n" << r.err;
    const std::string unknown = options[0] == "--memory" ? "-x" : options[0] == "--tenant" ? "--sahre" : options[0];
    EXPECT_NE(r.err.find("unknown option '" + unknown.substr(0, unknown.find('=')) + "'"), std::string::npos)
        << joined(args) << "\n"
        << r.err;
    EXPECT_FALSE(command_ran()) << joined(args);
    EXPECT_FALSE(fs::exists(state_)) << "refused before anything was opened: " << joined(args);
  }
  // Only words after "--" (or from the first non-option) are CMD's, options of CMD's included.
  const ProcessResult echoed = tool({"run", "--state", state_, "echo", "a", "--memroy", "--", "b"});
  EXPECT_EQ(echoed.exit_code, 0) << echoed.err;
  EXPECT_EQ(echoed.out, "a --memroy -- b\n");
  // The other commands refuse unknown options as well.
  for (const std::vector<std::string>& args : {std::vector<std::string>{"status", "--bogus"},
                                               {"top", "-n", "1", "--bogus"},
                                               {"quota", "set", "t", "--memory", "1GiB", "--bogus"}}) {
    const ProcessResult r = tool(args);
    EXPECT_EQ(r.exit_code, 2) << joined(args);
    EXPECT_NE(r.err.find("--bogus"), std::string::npos) << joined(args) << "\n" << r.err;
  }
}

TEST_F(BadInput, AnEmptyStatePathIsRefusedByEveryCommand) {
  const std::vector<std::vector<std::string>> commands{
      {"run"}, {"status"}, {"top", "-n", "1"}, {"quota", "set", "t", "--memory", "1GiB"}, {"exporter"}};
  for (const auto& command : commands) {
    // --state '', --state= (which CLI11 would read as "take the next word"), GPUSHARE_STATE=''.
    for (const std::vector<std::string>& state : {std::vector<std::string>{"--state", ""}, {"--state="}, {}}) {
      std::vector<std::string> args = command;
      args.insert(args.end(), state.begin(), state.end());
      if (command[0] == "run") {
        const auto marker = marker_command();
        args.insert(args.end(), marker.begin(), marker.end());
      }
      const Env env = state.empty() ? Env{{"GPUSHARE_STATE", ""}} : Env{};
      const ProcessResult r = tool(args, env);
      EXPECT_EQ(r.exit_code, 2) << joined(args) << "\n" << r.err;
      const std::string expected = state.empty() ? "GPUSHARE_STATE is set but empty" : "--state: empty path";
      EXPECT_NE(r.err.find(expected), std::string::npos) << joined(args) << "\n" << r.err;
      EXPECT_FALSE(command_ran()) << joined(args);
    }
  }
}

TEST_F(BadInput, RunRefusesAStateFileItCannotOpen) {
  const std::string fifo = path("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& state : {dir_.string(), path("no-such-folder/state"), fifo, std::string("/dev/null")}) {
    std::vector<std::string> args{"run", "--memory", "1GiB", "--state", state, "--"};
    const auto command = marker_command();
    args.insert(args.end(), command.begin(), command.end());
    const ProcessResult r = tool(args);
    EXPECT_EQ(r.exit_code, 2) << state << "\n" << r.err;
    EXPECT_NE(r.err.find("gpushare run: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(state), std::string::npos) << "the message names the path: " << r.err;
    EXPECT_FALSE(command_ran()) << state;
  }
  // A usable path is created before CMD runs (CMD here sees it already there).
  const ProcessResult r = tool(
      {"run", "--state", state_, "--", "/bin/sh", "-c", "test -s '" + state_ + "' && touch '" + path("ran") + "'"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(command_ran());
}

TEST_F(BadInput, PerDeviceLimitsForNoDeviceAreRefused) {
  for (const std::string variable :
       {"GPUSHARE_MEMORY_LIMIT_64", "GPUSHARE_MEMORY_LIMIT_00", "CUDA_DEVICE_MEMORY_LIMIT_07"}) {
    // gpushare run: exit 2, nothing runs.
    std::vector<std::string> args{"run", "--state", state_, "--"};
    const auto command = marker_command();
    args.insert(args.end(), command.begin(), command.end());
    const ProcessResult refused = tool(args, {{variable, "256MiB"}});
    EXPECT_EQ(refused.exit_code, 2) << variable << "\n" << refused.err;
    EXPECT_NE(refused.err.find(variable + ": "), std::string::npos) << refused.err;
    EXPECT_FALSE(command_ran()) << variable;
    // The preload library: one line naming the variable, then GPUSHARE_ON_ERROR (closed).
    const ProcessResult r = probe_fill({{variable, "256MiB"}});
    EXPECT_EQ(output_u64(r.out, "allocated"), 0u) << variable << "\n" << r.out << r.err;
    EXPECT_EQ(occurrences(r.err, variable + ": "), 1u) << r.err;
    EXPECT_NE(r.err.find("GPUSHARE_ON_ERROR=closed"), std::string::npos) << r.err;
  }
  // A bad value under a bad index is refused as well.
  const ProcessResult r = probe_fill({{"GPUSHARE_MEMORY_LIMIT_64", "bad"}});
  EXPECT_EQ(output_u64(r.out, "allocated"), 0u) << r.out << r.err;
  EXPECT_NE(r.err.find("GPUSHARE_MEMORY_LIMIT_64: "), std::string::npos) << r.err;
}

TEST_F(BadInput, AnEmptyGpushareStateIsASettingsErrorInThePreloadLibrary) {
  Env env = fake_driver_env(GPUSHARE_TEST_FAKE_DIR, {{"LD_PRELOAD", GPUSHARE_TEST_PRELOAD}, {"GPUSHARE_STATE", ""}});
  const ProcessResult r = run({GPUSHARE_TEST_PROBE, "linked", "fill", std::to_string(kMiB)}, env);
  EXPECT_EQ(output_u64(r.out, "allocated"), 0u) << r.out << r.err;
  EXPECT_EQ(occurrences(r.err, "GPUSHARE_STATE: empty path"), 1u) << r.err;
  // With GPUSHARE_ON_ERROR=open it runs without quotas, after the same one line.
  env["GPUSHARE_ON_ERROR"] = "open";
  env["GPUSHARE_MEMORY_LIMIT"] = "8MiB";
  env["FAKE_CUDA_DEVICE_MEMORY"] = std::to_string(256 * kMiB);
  const ProcessResult open = run({GPUSHARE_TEST_PROBE, "linked", "fill", std::to_string(64 * kMiB)}, env);
  EXPECT_GT(output_u64(open.out, "allocated").value_or(0), 8 * kMiB) << open.out << open.err;
  EXPECT_EQ(occurrences(open.err, "GPUSHARE_STATE: empty path"), 1u) << open.err;
}

TEST_F(BadInput, AContextChargeThatFillsTheQuotaIsRefused) {
  std::vector<std::string> args{"run", "--memory", "256MiB", "--context-memory", "512MiB", "--state", state_, "--"};
  const auto command = marker_command();
  args.insert(args.end(), command.begin(), command.end());
  const ProcessResult refused = tool(args);
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_NE(refused.err.find("GPUSHARE_CONTEXT_MEMORY: 512 MiB is not below GPUSHARE_MEMORY_LIMIT (256 MiB)"),
            std::string::npos)
      << refused.err;
  EXPECT_FALSE(command_ran());
  // Per device too, in the preload library.
  const ProcessResult r = probe_fill({{"GPUSHARE_CONTEXT_MEMORY", "64MiB"}, {"GPUSHARE_MEMORY_LIMIT_0", "64MiB"}});
  EXPECT_EQ(output_u64(r.out, "allocated"), 0u) << r.out << r.err;
  EXPECT_EQ(occurrences(r.err, "is not below GPUSHARE_MEMORY_LIMIT_0 (64 MiB)"), 1u) << r.err;
}

TEST_F(BadInput, ARealLibcudaThatIsNotACudaDriverIsNamedOnce) {
  for (const std::string library : {"libc.so.6", "libm.so.6"}) {
    Env env =
        fake_driver_env(GPUSHARE_TEST_FAKE_DIR, {{"LD_PRELOAD", GPUSHARE_TEST_PRELOAD}, {"GPUSHARE_STATE", state_}});
    env["GPUSHARE_REAL_LIBCUDA"] = library;
    const ProcessResult r = run({GPUSHARE_TEST_PROBE, "linked", "fill", std::to_string(kMiB)}, env);
    EXPECT_EQ(occurrences(r.err, "GPUSHARE_REAL_LIBCUDA: '" + library + "' is not a CUDA driver"), 1u)
        << r.out << r.err;
  }
  // The fake driver is one: nothing is said.
  const ProcessResult r = probe_fill({});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
}

}  // namespace
}  // namespace gpushare::testing
