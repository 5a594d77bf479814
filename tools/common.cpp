#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>

#include "commands.hpp"
#include "core/size.hpp"

namespace fs = std::filesystem;

namespace gpushare::tools {

std::optional<std::string> resolve_state_path(std::string_view command, const std::optional<std::string>& option) {
  if (option && option->empty()) {
    fmt::print(stderr,
               "gpushare {}: --state: empty path (leave --state out to use $GPUSHARE_STATE or the default, {})\n",
               command, default_state_path());
    return std::nullopt;
  }
  const char* variable = std::getenv("GPUSHARE_STATE");
  if (!option && variable != nullptr && *variable == '\0') {
    fmt::print(stderr, "gpushare {}: GPUSHARE_STATE is set but empty (unset it to use the default, {})\n", command,
               default_state_path());
    return std::nullopt;
  }
  return state_path_for_command(option.value_or(""));
}

Result<std::unique_ptr<SharedState>> open_existing(const std::string& path, SharedState::Mode mode) {
  if (!fs::exists(path)) {
    return Error{fmt::format("no shared state at {} (no tenant has run with it yet; --state or GPUSHARE_STATE "
                             "chooses another)",
                             path)};
  }
  // The default path gets the library's owner check (another user may have planted the file);
  // a path named by GPUSHARE_STATE or --state is taken as given.
  const char* variable = std::getenv("GPUSHARE_STATE");
  const bool by_default = path == default_state_path() && (variable == nullptr || path != variable);
  return SharedState::open(path, mode, by_default ? SharedState::Origin::kDefault : SharedState::Origin::kConfigured);
}

std::optional<std::string> find_installed(const char* from_bindir, const char* build_path) {
  std::error_code error;
  const fs::path self = fs::read_symlink("/proc/self/exe", error);
  if (!error) {
    const fs::path installed = self.parent_path() / from_bindir;
    if (fs::exists(installed, error)) return fs::weakly_canonical(installed, error).string();
  }
  if (fs::exists(build_path, error)) return std::string(build_path);
  return std::nullopt;
}

std::optional<std::uint64_t> size_option(const std::string& flag, const std::string& text, bool allow_unlimited) {
  auto parsed = allow_unlimited ? parse_limit(text) : parse_size(text);
  if (!parsed) {
    fmt::print(stderr, "gpushare: {}: {}\n", flag, parsed.error().message);
    return std::nullopt;
  }
  return parsed.value();
}

}  // namespace gpushare::tools
