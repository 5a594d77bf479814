// docs/configuration.md must describe every option of the settings table, with its alias, its
// `gpushare run` flag and its default, so the document cannot drift from the code.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "core/settings.hpp"

namespace {

std::string read_file(const char* path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(ConfigurationDoc, ListsEveryOptionWithItsAliasFlagAndDefault) {
  const std::string doc = read_file(GPUSHARE_CONFIGURATION_DOC);
  ASSERT_FALSE(doc.empty()) << GPUSHARE_CONFIGURATION_DOC;
  for (const gpushare::OptionSpec& option : gpushare::option_specs()) {
    // One table row per option: | `ENV` | `ALIAS` | `FLAG` | DEFAULT | ...
    const std::string env = "`" + std::string(option.env) + "`";
    const auto row_start = doc.find("| " + env + " |");
    ASSERT_NE(row_start, std::string::npos) << option.env << " has no row";
    const std::string row = doc.substr(row_start, doc.find('\n', row_start) - row_start);
    if (!option.hami_alias.empty()) {
      EXPECT_NE(row.find(option.hami_alias), std::string::npos) << row;
    }
    if (!option.run_flag.empty()) {
      EXPECT_NE(row.find(option.run_flag), std::string::npos) << row;
    }
    EXPECT_NE(row.find(option.default_value), std::string::npos) << row;
  }
}

}  // namespace
