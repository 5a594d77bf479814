// The `gpushare` command's options are the options table's: --help lists every flag of the table
// with the table's help line (and, for run, its default), lists no other value option, and the
// command accepts what the table accepts ("no cap" above all).
#include <gtest/gtest.h>

#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "../e2e/process.hpp"
#include "../e2e/scratch.hpp"
#include "core/settings.hpp"

namespace gpushare::testing {
namespace {

class CommandOptions : public ScratchTest {};

// The help lines that describe an option ("  --memory SIZE   Memory quota ..."), by flag.
std::map<std::string, std::string> option_lines(const std::string& help) {
  std::map<std::string, std::string> lines;
  std::istringstream in(help);
  std::string line;
  while (std::getline(in, line)) {
    const auto start = line.find_first_not_of(' ');
    if (start == std::string::npos || line.compare(start, 2, "--") != 0) continue;
    lines[line.substr(start, line.find(' ', start) - start)] = line;
  }
  return lines;
}

TEST_F(CommandOptions, HelpListsEveryFlagOfTheTable) {
  struct Command {
    std::vector<std::string> args;
    OptionWay way;
    std::set<std::string> own_flags;  // flags that are not settings
  };
  for (const Command& command : {Command{{"run", "--help"}, OptionWay::kRunFlag, {"--nvml", "--init"}},
                                 Command{{"quota", "set", "--help"}, OptionWay::kQuotaFlag, {}}}) {
    std::vector<std::string> argv{GPUSHARE_TEST_TOOL};
    argv.insert(argv.end(), command.args.begin(), command.args.end());
    const ProcessResult r = run(argv, {});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto lines = option_lines(r.out);
    std::set<std::string> from_table;
    for (const OptionSpec& spec : option_specs()) {
      const std::string flag(option_name(spec, command.way));
      if (flag.empty()) continue;
      from_table.insert(flag);
      const auto line = lines.find(flag);
      ASSERT_NE(line, lines.end()) << command.args[0] << " --help lacks " << flag << "\n" << r.out;
      EXPECT_NE(line->second.find(std::string(spec.value_name)), std::string::npos) << line->second;
      EXPECT_NE(line->second.find(std::string(spec.help)), std::string::npos) << line->second;
      if (command.way == OptionWay::kRunFlag || spec.env == "GPUSHARE_STATE") {
        EXPECT_NE(line->second.find(std::string(spec.default_text())), std::string::npos) << line->second;
      }
    }
    for (const auto& [flag, line] : lines) {
      EXPECT_TRUE(from_table.count(flag) == 1 || command.own_flags.count(flag) == 1 || flag == "--help")
          << flag << " is not in the options table: " << line;
    }
  }
}

TEST_F(CommandOptions, RunAndQuotaSetTakeNoCapAsZeroNoneOrHundred) {
  for (const char* text : {"0", "none", "100", "30"}) {
    const ProcessResult r = run({GPUSHARE_TEST_TOOL, "run", "--tenant", "capped", "--limit", text, "--state", state_,
                                 "--", "/bin/sh", "-c", "echo limit=$GPUSHARE_COMPUTE_LIMIT"},
                                {});
    EXPECT_EQ(r.exit_code, 0) << text << ": " << r.err;
    EXPECT_EQ(output_value(r.out, "limit"), std::string(text)) << r.out;
  }
  // quota set parses its flags before it looks for the tenant (gone with its process): a value it
  // takes gets that far (exit 1), a bad one does not (exit 2, below).
  for (const char* text : {"0", "none", "100"}) {
    const ProcessResult r = run({GPUSHARE_TEST_TOOL, "quota", "set", "capped", "--limit", text, "--state", state_}, {});
    EXPECT_EQ(r.exit_code, 1) << text << ": " << r.err;
    EXPECT_NE(r.err.find("no tenant named 'capped'"), std::string::npos) << r.err;
  }
  // Refused, naming the flag: a cap past 100, an ambiguous size.
  struct Refused {
    std::vector<std::string> args;
    std::string says;
  };
  for (const Refused& refused :
       {Refused{{"run", "--limit", "101", "--state", state_, "--", "/bin/true"}, "--limit: "},
        Refused{{"quota", "set", "capped", "--limit", "101", "--state", state_}, "--limit: "},
        Refused{{"run", "--memory", "8G", "--state", state_, "--", "/bin/true"}, "--memory: "},
        Refused{{"quota", "set", "capped", "--memory", "8GB", "--state", state_}, "--memory: "}}) {
    std::vector<std::string> argv{GPUSHARE_TEST_TOOL};
    argv.insert(argv.end(), refused.args.begin(), refused.args.end());
    const ProcessResult r = run(argv, {});
    EXPECT_EQ(r.exit_code, 2) << refused.args[0] << " " << refused.says;
    EXPECT_NE(r.err.find(refused.says), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace gpushare::testing
