// `gpushare version` and every program's --version print the release CMakeLists.txt names and the
// state ABI state_layout.hpp names (both passed in by CMake, the ABI read from the header as the
// configure-time check reads it), with the agent protocol of protocol.hpp.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "../e2e/process.hpp"
#include "core/state_layout.hpp"
#include "protocol.hpp"

namespace gpushare::testing {
namespace {

static_assert(GPUSHARE_TEST_STATE_ABI == layout::kStateAbiVersion,
              "CMake's reading of kStateAbiVersion differs from the header's");

const std::string kRelease = GPUSHARE_TEST_PROJECT_VERSION;

std::string expected_line() {
  return "gpushare " + kRelease + " (state ABI " + std::to_string(GPUSHARE_TEST_STATE_ABI) + ", agent protocol " +
         std::to_string(agent::kProtocolVersion) + ")";
}

ProcessResult run_ok(const std::vector<std::string>& argv) {
  ProcessResult r = run(argv, {});
  EXPECT_EQ(r.exit_code, 0) << argv.front() << ": " << r.err;
  return r;
}

TEST(Version, ReleaseMinorIsTheStateAbiBeforeOnePointZero) {
  const auto first_dot = kRelease.find('.');
  const auto second_dot = kRelease.find('.', first_dot + 1);
  ASSERT_NE(second_dot, std::string::npos) << kRelease;
  ASSERT_EQ(kRelease.substr(0, first_dot), "0") << "1.0 and later: this rule and this test change";
  EXPECT_EQ(kRelease.substr(first_dot + 1, second_dot - first_dot - 1), std::to_string(GPUSHARE_TEST_STATE_ABI));
}

TEST(Version, CommandPrintsReleaseStateAbiAndAgentProtocol) {
  const ProcessResult r = run_ok({GPUSHARE_TEST_TOOL, "version"});
  EXPECT_EQ(r.out, expected_line() + "\n");
  EXPECT_EQ(r.err, "");
}

TEST(Version, JsonCarriesTheSameNumbers) {
  const ProcessResult r = run_ok({GPUSHARE_TEST_TOOL, "version", "--json"});
  const nlohmann::json version = nlohmann::json::parse(r.out);
  EXPECT_EQ(version.at("version").get<std::string>(), kRelease);
  EXPECT_EQ(version.at("state_abi").get<unsigned>(), GPUSHARE_TEST_STATE_ABI);
  EXPECT_EQ(version.at("agent_protocol").get<unsigned>(), agent::kProtocolVersion);
  EXPECT_EQ(version.size(), 3u) << r.out;
}

TEST(Version, EveryProgramsVersionFlagPrintsTheSameLine) {
  std::vector<std::string> programs{GPUSHARE_TEST_TOOL, GPUSHARE_TEST_AGENT};
#ifdef GPUSHARE_TEST_EXPORTER
  programs.emplace_back(GPUSHARE_TEST_EXPORTER);
#endif
  for (const std::string& program : programs) {
    const ProcessResult r = run_ok({program, "--version"});
    EXPECT_EQ(r.out, expected_line() + "\n") << program;
  }
}

TEST(Version, HelpListsTheCommandAndBadFlagsAreRefused) {
  const ProcessResult help = run_ok({GPUSHARE_TEST_TOOL, "--help"});
  EXPECT_NE(help.out.find("\n  version "), std::string::npos) << help.out;
  const ProcessResult bad = run({GPUSHARE_TEST_TOOL, "version", "--yaml"}, {});
  EXPECT_EQ(bad.exit_code, 2) << bad.out;
  EXPECT_EQ(bad.out, "");
}

}  // namespace
}  // namespace gpushare::testing
