// Reading the options table's settings from the environment and from flags, and where the state
// file is. The table itself, its parsers and the defaults are in options_table.cpp.
#include "core/settings.hpp"

#include <unistd.h>

#include <string>

#include <fmt/format.h>

#include "core/tenant_name.hpp"
#include "core/shared_state.hpp"

namespace gpushare {
namespace {

// A device index as written in GPUSHARE_MEMORY_LIMIT_<i> or --device-memory i=SIZE: 0 to
// kMaxDeviceOrdinals - 1, decimal digits without leading zeros.
std::optional<int> device_index(std::string_view text) {
  if (text.empty() || text.size() > 2 || (text.size() > 1 && text.front() == '0')) return std::nullopt;
  int value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (value >= kMaxDeviceOrdinals) return std::nullopt;
  return value;
}

// "GPUSHARE_MEMORY_LIMIT_<i>" with the index written in.
std::string device_variable(std::string_view pattern, int device) {
  return fmt::format("{}{}", pattern.substr(0, pattern.size() - std::string_view("<i>").size()), device);
}

// Per-device variables whose index names no device would be ignored: each one is an error.
void check_device_variable_names(const OptionSpec& spec, const EnvLookup& env, const std::vector<std::string>& names,
                                 std::vector<std::string>& errors) {
  for (std::string_view pattern : {spec.env, spec.hami_alias}) {
    if (pattern.empty()) continue;
    const std::string_view prefix = pattern.substr(0, pattern.size() - std::string_view("<i>").size());
    for (const std::string& name : names) {
      if (!name.starts_with(prefix) || device_index(std::string_view(name).substr(prefix.size()))) continue;
      if (env(name.c_str()) == nullptr) continue;
      errors.push_back(fmt::format("{}: '{}' is not a device index (expected 0 to {} without leading zeros)", name,
                                   name.substr(prefix.size()), kMaxDeviceOrdinals - 1));
    }
  }
}

// gpushare's variable, else HAMi's alias: the value and the name it was read from.
struct Found {
  const char* value = nullptr;
  std::string name;
  bool from_hami_alias = false;
};
Found lookup(const EnvLookup& env, std::string name, std::string alias) {
  if (const char* value = env(name.c_str())) return {value, std::move(name), false};
  if (!alias.empty()) {
    if (const char* value = env(alias.c_str())) return {value, std::move(alias), true};
  }
  return {};
}

}  // namespace

std::uint64_t Settings::memory_limit_for(int ordinal) const {
  auto it = device_memory_limit_bytes.find(ordinal);
  return it != device_memory_limit_bytes.end() ? it->second : memory_limit_bytes;
}

std::vector<std::string> environment_names() {
  std::vector<std::string> names;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view text = *entry;
    names.emplace_back(text.substr(0, text.find('=')));
  }
  return names;
}

LoadedSettings load_settings(const EnvLookup& env, const EnvNames& names) {
  LoadedSettings loaded;
  Settings& s = loaded.settings;
  const std::vector<std::string> names_set = names ? names() : std::vector<std::string>{};
  // The variable each memory quota came from (-1: every device), for the context check below.
  std::map<int, std::string> limit_variables;
  for (const OptionSpec& spec : option_specs()) {
    auto read = [&](std::string name, std::string alias, int device) {
      const Found found = lookup(env, std::move(name), std::move(alias));
      if (found.value == nullptr) return;
      OptionValue value{found.value, device, found.from_hami_alias};
      std::string readable_name;  // HAMi's cache path as a tenant name a person can read
      if (spec.id == OptionId::kTenant && found.from_hami_alias && *found.value != '\0') {
        readable_name = hami_tenant_name(found.value, env("HOSTNAME"));
        value.text = readable_name;
      }
      if (auto applied = apply_option(spec, value, s); !applied) {
        loaded.errors.push_back(fmt::format("{}: {}", found.name, applied.error().message));
      } else if (spec.memory_quota()) {
        limit_variables[device] = found.name;
      }
    };
    if (!spec.per_device()) {
      read(std::string(spec.env), std::string(spec.hami_alias), -1);
      continue;
    }
    for (int device = 0; device < kMaxDeviceOrdinals; ++device) {
      read(device_variable(spec.env, device), spec.hami_alias.empty() ? "" : device_variable(spec.hami_alias, device),
           device);
    }
    check_device_variable_names(spec, env, names_set, loaded.errors);
  }
  // A context charge that fills the quota would refuse every allocation without a word.
  for (const auto& [device, variable] : limit_variables) {
    const std::uint64_t limit = device < 0 ? s.memory_limit_bytes : s.memory_limit_for(device);
    if (s.context_memory_bytes == 0 || limit == kUnlimited || s.context_memory_bytes < limit) continue;
    loaded.errors.push_back(fmt::format(
        "{}: {} is not below {} ({}): the context charge alone would fill the quota and every allocation would be "
        "refused",
        option_spec(OptionId::kContextMemory).env, format_size(s.context_memory_bytes), variable,
        format_size(limit)));
  }
  return loaded;
}

Result<OptionAssignment> apply_flag(const OptionSpec& spec, std::string_view text, Settings& settings) {
  OptionAssignment assignment{std::string(spec.env), std::string(text)};
  if (spec.per_device()) {
    const auto equals = text.find('=');
    const auto device = equals == std::string_view::npos ? std::nullopt : device_index(text.substr(0, equals));
    if (!device) {
      return Error{fmt::format("expected INDEX=SIZE with INDEX in 0..{} (no leading zeros), got '{}'",
                               kMaxDeviceOrdinals - 1, text)};
    }
    assignment = {device_variable(spec.env, *device), std::string(text.substr(equals + 1)), *device};
  }
  if (auto applied = apply_option(spec, {assignment.value, assignment.device}, settings); !applied) {
    return applied.error();
  }
  return assignment;
}

StatePath resolved_state_path(const Settings& settings) {
  if (!settings.state_path.empty()) return {settings.state_path, true};
  return {default_state_path(), false};
}

Result<StatePath> state_path_for_command(const std::optional<std::string>& flag, const EnvLookup& env) {
  const OptionSpec& spec = option_spec(OptionId::kState);
  Settings settings;
  if (flag) {
    if (auto applied = apply_option(spec, {*flag}, settings); !applied) {
      return Error{fmt::format("{}: {}", spec.run_flag, applied.error().message)};
    }
  } else if (const char* variable = env(std::string(spec.env).c_str())) {
    if (auto applied = apply_option(spec, {variable}, settings); !applied) {
      return Error{fmt::format("{} is set but empty: {}", spec.env, applied.error().message)};
    }
  }
  return resolved_state_path(settings);
}

}  // namespace gpushare
