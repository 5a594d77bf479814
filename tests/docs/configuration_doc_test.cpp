// docs/configuration.md must describe every option of the settings table, with its alias, its
// `gpushare run` and `gpushare quota set` flags, its API field and its default, so the document
// cannot drift from the code.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/settings.hpp"

namespace {

std::string read_file(const char* path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(ConfigurationDoc, ListsEveryOptionWithItsAliasFlagsApiFieldAndDefault) {
  const std::string doc = read_file(GPUSHARE_CONFIGURATION_DOC);
  ASSERT_FALSE(doc.empty()) << GPUSHARE_CONFIGURATION_DOC;
  for (const gpushare::OptionSpec& option : gpushare::option_specs()) {
    // One table row per option: | `ENV` | `ALIAS` | `RUN FLAG` | `QUOTA FLAG` | `API FIELD` | DEFAULT | ...
    const std::string env = "`" + std::string(option.env) + "`";
    const auto row_start = doc.find("| " + env + " |");
    ASSERT_NE(row_start, std::string::npos) << option.env << " has no row";
    const std::string row = doc.substr(row_start, doc.find('\n', row_start) - row_start);
    // Cells in their columns: an empty name leaves its cell empty.
    std::vector<std::string> cells;
    for (std::size_t bar = row.find('|'); bar != std::string::npos && bar + 1 < row.size();) {
      const std::size_t next = row.find('|', bar + 1);
      if (next == std::string::npos) break;
      std::string cell = row.substr(bar + 1, next - bar - 1);
      cell.erase(0, cell.find_first_not_of(' '));
      cell.erase(cell.find_last_not_of(' ') + 1);
      cells.push_back(cell);
      bar = next;
    }
    ASSERT_GE(cells.size(), 7u) << row;
    auto names = [](std::string_view cell, std::string_view name) {
      return name.empty() ? cell.empty() : cell.starts_with("`" + std::string(name));
    };
    EXPECT_TRUE(names(cells[1], option.hami_alias)) << row;
    EXPECT_TRUE(names(cells[2], option.run_flag)) << row;
    EXPECT_TRUE(names(cells[3], option.quota_flag)) << row;
    EXPECT_TRUE(names(cells[4], option.api_field)) << row;
    EXPECT_NE(cells[5].find(option.default_text()), std::string::npos) << row;
  }
}

}  // namespace
