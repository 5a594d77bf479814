#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "commands.hpp"

namespace fs = std::filesystem;

namespace gpushare::tools {

std::optional<StatePath> resolve_state_path(std::string_view command, const std::optional<std::string>& option) {
  auto resolved = state_path_for_command(option, [](const char* name) { return std::getenv(name); });
  if (!resolved) {
    fmt::print(stderr, "gpushare {}: {}\n", command, resolved.error().message);
    return std::nullopt;
  }
  return std::move(resolved).value();
}

Result<std::unique_ptr<SharedState>> open_existing(const StatePath& path, SharedState::Mode mode) {
  if (!fs::exists(path.path)) {
    return Error{fmt::format("no shared state at {} (no tenant has run with it yet; --state or GPUSHARE_STATE "
                             "chooses another)",
                             path.path)};
  }
  return SharedState::open(path.path, mode, path.origin());
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

int exec_companion(std::string_view command, const char* program_name, const char* from_bindir,
                   const char* build_path, const std::vector<std::string>& args) {
  const auto program = find_installed(from_bindir, build_path);
  if (!program) {
    fmt::print(stderr, "gpushare {}: cannot find {} (expected under {})\n", command, program_name, from_bindir);
    return kExitFailure;
  }
  std::vector<std::string> owned{*program};
  owned.insert(owned.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& arg : owned) argv.push_back(arg.data());
  argv.push_back(nullptr);
  ::execv(argv[0], argv.data());
  fmt::print(stderr, "gpushare {}: cannot run {}: {}\n", command, *program, std::strerror(errno));
  return kExitCannotExec;
}

std::optional<std::string> TableFlags::value(std::string_view flag) const {
  const auto found = once.find(flag);
  return found != once.end() ? found->second : std::nullopt;
}

std::optional<std::vector<OptionAssignment>> parse_table_flags(std::string_view command, OptionWay way,
                                                               const TableFlags& flags, Settings& settings) {
  std::vector<OptionAssignment> assignments;
  auto parse = [&](std::string_view flag, const OptionSpec& spec, const std::string& text) {
    auto assignment = apply_flag(spec, text, settings);
    if (!assignment) {
      fmt::print(stderr, "gpushare {}: {}: {}\n", command, flag, assignment.error().message);
      return false;
    }
    assignments.push_back(std::move(assignment).value());
    return true;
  };
  for (const OptionSpec& spec : option_specs()) {
    const std::string_view flag = option_name(spec, way);
    if (flag.empty()) continue;
    if (const auto given = flags.value(flag); given && !parse(flag, spec, *given)) return std::nullopt;
    if (const auto repeated = flags.repeatable.find(flag); repeated != flags.repeatable.end()) {
      for (const std::string& text : repeated->second) {
        if (!parse(flag, spec, text)) return std::nullopt;
      }
    }
  }
  return assignments;
}

}  // namespace gpushare::tools
