// The C API of include/gpushare/gpushare.h, for programs that link gpushare instead of being
// started under LD_PRELOAD. It configures the same Tenancy the driver hooks use, so a linked
// program gets exactly the preload path's enforcement.
//
// Options travel as the environment variables they stand for, overlaid on the real environment
// and read by the same load_settings(): one validation, one set of error messages.
#include <dlfcn.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "driver.hpp"
#include "gpushare/gpushare.h"
#include "core/settings.hpp"
#include "core/size.hpp"
#include "tenancy.hpp"

#define GPUSHARE_EXPORT extern "C" __attribute__((visibility("default")))

namespace gpushare::interpose {
namespace {

thread_local std::string t_last_error;

gpushare_result fail(gpushare_result code, std::string_view message) noexcept {
  try {
    t_last_error.assign(message);
  } catch (...) {
    t_last_error.clear();  // out of memory for the message: the code still says what failed
  }
  return code;
}
gpushare_result succeed() {
  t_last_error.clear();
  return GPUSHARE_OK;
}

// Under LD_PRELOAD our driver entry points and dlsym come first by construction; when linked, only
// the link order puts them ahead of libcuda's and libc's. Checked in the global scope, as the
// program sees it: through the main program's handle, not RTLD_DEFAULT, which from inside this
// -Bsymbolic library would find our own definitions first whatever the order.
std::string interposition_problem() {
  DlsymFn lookup = real_dlsym();
  if (lookup == nullptr) return "the C library's dlsym cannot be found";
  Dl_info ours{};
  if (::dladdr(reinterpret_cast<void*>(&gpushare_join), &ours) == 0) return {};
  void* program = ::dlopen(nullptr, RTLD_NOW);
  if (program == nullptr) return {};
  for (const char* name : {"cuMemAlloc_v2", "cuLaunchKernel", "cuGetProcAddress_v2", "dlsym"}) {
    void* first = lookup(program, name);
    Dl_info found{};
    if (first == nullptr || ::dladdr(first, &found) == 0) continue;
    if (found.dli_fbase != ours.dli_fbase) {
      return fmt::format(
          "{} resolves to {} before gpushare ({}): link gpushare ahead of {} (CMake: list gpushare::gpushare "
          "first in target_link_libraries), or start the program with `gpushare run`",
          name, found.dli_fname ? found.dli_fname : "another library", ours.dli_fname ? ours.dli_fname : "",
          found.dli_fname ? found.dli_fname : "it");
    }
  }
  return {};
}

// The options as the environment variables they stand for (the options table's api_field), over
// the process's environment. A zero or null field is not set; numbers travel as decimal text and
// meet the same parser as the variable ("100" for compute_limit_pct is no cap).
std::map<std::string, std::string> option_variables(const gpushare_options& options) {
  std::map<std::string, std::string> variables;
  auto set = [&](std::string_view field, std::string value) {
    if (std::string variable = option_variable(OptionWay::kApiField, field); !variable.empty()) {
      variables[variable] = std::move(value);
    }
  };
  auto set_number = [&](std::string_view field, std::uint64_t value) {
    if (value != 0) set(field, std::to_string(value));
  };
  if (options.tenant != nullptr) set("tenant", options.tenant);
  if (options.state_path != nullptr) set("state_path", options.state_path);
  if (options.memory_limit_bytes == GPUSHARE_UNLIMITED) {
    set("memory_limit_bytes", "unlimited");
  } else {
    set_number("memory_limit_bytes", options.memory_limit_bytes);
  }
  set_number("compute_share_pct", options.compute_share_pct);
  set_number("compute_limit_pct", options.compute_limit_pct);
  switch (options.priority) {
    case GPUSHARE_PRIORITY_LOW: set("priority", "low"); break;
    case GPUSHARE_PRIORITY_NORMAL: set("priority", "normal"); break;
    case GPUSHARE_PRIORITY_HIGH: set("priority", "high"); break;
    default: break;
  }
  set_number("slice_ms", options.slice_ms);
  return variables;
}

// The first version's structs end here; a program built against it passes at least this much.
constexpr std::size_t kOptionsV1Bytes = offsetof(gpushare_options, slice_ms) + sizeof(gpushare_options::slice_ms);
constexpr std::size_t kUsageV1Bytes = offsetof(gpushare_usage, wait_seconds) + sizeof(gpushare_usage::wait_seconds);

gpushare_result join(const gpushare_options* given) {
  if (given == nullptr) return fail(GPUSHARE_ERROR_INVALID_ARGUMENT, "gpushare_join: options is null");
  if (given->struct_size < kOptionsV1Bytes) {
    return fail(GPUSHARE_ERROR_INVALID_ARGUMENT,
                "gpushare_join: options.struct_size is too small (set it with gpushare_options_init)");
  }
  // The fields the program knows of; any this library has and the program's header lacked stay zero.
  gpushare_options own{};
  std::memcpy(&own, given, std::min<std::size_t>(given->struct_size, sizeof own));
  const gpushare_options* options = &own;
  int priority = 0;
  std::memcpy(&priority, &options->priority, sizeof priority);  // any int the caller stored, not only enumerators
  if (priority < GPUSHARE_PRIORITY_UNSET || priority > GPUSHARE_PRIORITY_HIGH) {
    return fail(GPUSHARE_ERROR_INVALID_ARGUMENT,
                fmt::format("gpushare_join: priority {} is not one of the gpushare_priority values", priority));
  }
  if (std::string problem = interposition_problem(); !problem.empty()) {
    return fail(GPUSHARE_ERROR_NOT_INTERPOSED, "gpushare_join: " + problem);
  }
  const auto variables = option_variables(*options);
  LoadedSettings loaded = load_settings([&](const char* name) -> const char* {
    if (auto option = variables.find(name); option != variables.end()) return option->second.c_str();
    return std::getenv(name);
  });
  if (!loaded.errors.empty()) return fail(GPUSHARE_ERROR_INVALID_ARGUMENT, "gpushare_join: " + loaded.errors.front());
  if (!install_process_settings(std::move(loaded))) {
    return fail(GPUSHARE_ERROR_ALREADY_STARTED,
                "gpushare_join: gpushare has already started in this process (a CUDA call or gpushare_join came "
                "first); its settings are in force");
  }
  Tenancy& tenancy = Tenancy::get();
  if (tenancy.mode() != Tenancy::Mode::kEnforce) return fail(GPUSHARE_ERROR_STATE, "gpushare_join: " + tenancy.failure());
  return succeed();
}

gpushare_result get_usage(int device, gpushare_usage* out) {
  if (out == nullptr) return fail(GPUSHARE_ERROR_INVALID_ARGUMENT, "gpushare_get_usage: usage is null");
  if (out->struct_size < kUsageV1Bytes) {
    return fail(GPUSHARE_ERROR_INVALID_ARGUMENT,
                "gpushare_get_usage: usage.struct_size is too small (set it with gpushare_usage_init)");
  }
  // Asking must not start gpushare: that would join with the environment's settings and make a
  // later gpushare_join fail.
  Tenancy* started = Tenancy::if_started();
  if (started == nullptr) {
    return fail(GPUSHARE_ERROR_NOT_JOINED, "gpushare_get_usage: gpushare has not started in this process (call "
                                           "gpushare_join first)");
  }
  Tenancy& tenancy = *started;
  if (tenancy.mode() != Tenancy::Mode::kEnforce) {
    return fail(GPUSHARE_ERROR_NOT_JOINED, "gpushare_get_usage: gpushare is not enforcing here: " + tenancy.failure());
  }
  const auto gpu = tenancy.gpu_for(device);
  if (!gpu) {
    return fail(GPUSHARE_ERROR_DEVICE, fmt::format("gpushare_get_usage: device {} cannot be identified (is it a "
                                                   "valid ordinal, and has cuInit been called?)",
                                                   device));
  }
  const auto& tenant = tenancy.shared_state().state().tenants[tenancy.tenant_index()];
  const auto& ledger = tenant.ledger[*gpu];
  const auto& compute = tenant.compute[*gpu];
  constexpr auto kRelaxed = std::memory_order_relaxed;
  gpushare_usage own{};
  gpushare_usage* usage = &own;
  usage->memory_limit_bytes = ledger.limit_bytes.load(kRelaxed);
  usage->memory_used_bytes = ledger.used_bytes.load(kRelaxed);
  usage->memory_peak_bytes = ledger.peak_bytes.load(kRelaxed);
  usage->oom_refusals = ledger.oom_refusals.load(kRelaxed);
  usage->physical_bytes = tenancy.physical_bytes(device);
  usage->device_total_bytes = std::min(usage->memory_limit_bytes, usage->physical_bytes);
  usage->gpu_seconds = static_cast<double>(compute.gpu_ns.load(kRelaxed)) / 1e9;
  usage->launches = compute.launches.load(kRelaxed);
  usage->wait_seconds = static_cast<double>(compute.wait_ns.load(kRelaxed)) / 1e9;
  // Only what fits the program's struct; its size field stays its own.
  const std::uint32_t size = out->struct_size;
  std::memcpy(out, &own, std::min<std::size_t>(size, sizeof own));
  out->struct_size = size;
  return succeed();
}

template <typename Body>
gpushare_result guarded(Body&& body) noexcept {
  try {
    return body();
  } catch (const std::exception& error) {
    return fail(GPUSHARE_ERROR_STATE, error.what());
  } catch (...) {
    return fail(GPUSHARE_ERROR_STATE, "unexpected error");
  }
}

}  // namespace
}  // namespace gpushare::interpose

using namespace gpushare::interpose;

GPUSHARE_EXPORT gpushare_result gpushare_join(const gpushare_options* options) {
  return guarded([&] { return join(options); });
}

GPUSHARE_EXPORT gpushare_result gpushare_get_usage(int device, gpushare_usage* usage) {
  return guarded([&] { return get_usage(device, usage); });
}

GPUSHARE_EXPORT const char* gpushare_tenant_name(void) {
  try {
    // Only a started tenancy has a name; asking must not start one.
    static thread_local std::string name;
    name = Tenancy::if_started() != nullptr ? Tenancy::if_started()->tenant_name() : std::string();
    return name.c_str();
  } catch (...) {
    return "";
  }
}

GPUSHARE_EXPORT const char* gpushare_last_error(void) { return t_last_error.c_str(); }

GPUSHARE_EXPORT const char* gpushare_version(void) { return GPUSHARE_VERSION; }
