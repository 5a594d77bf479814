// gpushare's C++ API: join a tenant and read its usage from a program that links gpushare
// (CMake: `find_package(gpushare CONFIG)`, `target_link_libraries(app PRIVATE gpushare::gpushare)`,
// listed before the CUDA driver library). A header-only layer over the C API in gpushare.h:
// errors come back as values carrying a message, never as exceptions or aborts.
//
//   gpushare::Options options;
//   options.tenant = "inference";
//   options.memory_limit_bytes = 8ull << 30;
//   if (auto joined = gpushare::join(options); !joined) {
//     std::fprintf(stderr, "gpushare: %s\n", joined.error().message.c_str());
//   }
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "gpushare/gpushare.h"

namespace gpushare {
// Versioned, so that these names never collide with gpushare's internal ones in one program.
inline namespace api_v1 {

inline constexpr std::uint64_t kUnlimited = GPUSHARE_UNLIMITED;

enum class Priority { kLow = GPUSHARE_PRIORITY_LOW, kNormal = GPUSHARE_PRIORITY_NORMAL, kHigh = GPUSHARE_PRIORITY_HIGH };

struct Error {
  gpushare_result code = GPUSHARE_ERROR_INVALID_ARGUMENT;
  std::string message;
};

// A value or the Error that prevented it. value() and error() REQUIRE has_value() to say which.
template <typename T>
class Expected {
 public:
  Expected(T value) : outcome_(std::move(value)) {}
  Expected(Error error) : outcome_(std::move(error)) {}
  bool has_value() const { return outcome_.index() == 0; }
  explicit operator bool() const { return has_value(); }
  const T& value() const { return std::get<0>(outcome_); }
  const T& operator*() const { return value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const { return std::get<1>(outcome_); }

 private:
  std::variant<T, Error> outcome_;
};

template <>
class Expected<void> {
 public:
  Expected() = default;
  Expected(Error error) : error_(std::move(error)) {}
  bool has_value() const { return !error_; }
  explicit operator bool() const { return has_value(); }
  const Error& error() const { return *error_; }

 private:
  std::optional<Error> error_;
};

// Unset fields leave the matching GPUSHARE_* environment variable in force.
struct Options {
  std::optional<std::string> tenant;
  std::optional<std::string> state_path;
  std::optional<std::uint64_t> memory_limit_bytes;  // kUnlimited for no quota
  std::optional<unsigned> compute_share_percent;
  std::optional<unsigned> compute_limit_percent;  // 1-99; 0 or 100: no cap
  std::optional<Priority> priority;
  std::optional<unsigned> slice_ms;
};

using Usage = gpushare_usage;

namespace detail {
inline Error last_error(gpushare_result code) { return Error{code, gpushare_last_error()}; }
}  // namespace detail

// Joins the tenant with these options; call it before the first CUDA call.
inline Expected<void> join(const Options& options = {}) {
  gpushare_options c;
  gpushare_options_init(&c);
  if (options.tenant) c.tenant = options.tenant->c_str();
  if (options.state_path) c.state_path = options.state_path->c_str();
  if (options.memory_limit_bytes) c.memory_limit_bytes = *options.memory_limit_bytes;
  if (options.compute_share_percent) c.compute_share_pct = *options.compute_share_percent;
  // 0 means no cap here as everywhere; in the C struct a zero field means "not set", 100 no cap.
  if (options.compute_limit_percent) {
    c.compute_limit_pct = *options.compute_limit_percent == 0 ? 100 : *options.compute_limit_percent;
  }
  if (options.priority) c.priority = static_cast<gpushare_priority>(*options.priority);
  if (options.slice_ms) c.slice_ms = *options.slice_ms;
  if (const gpushare_result result = gpushare_join(&c); result != GPUSHARE_OK) return detail::last_error(result);
  return {};
}

// This tenant's usage on a CUDA device (after cuInit).
inline Expected<Usage> usage(int device) {
  Usage out;
  gpushare_usage_init(&out);
  if (const gpushare_result result = gpushare_get_usage(device, &out); result != GPUSHARE_OK) {
    return detail::last_error(result);
  }
  return out;
}

inline std::string tenant_name() { return gpushare_tenant_name(); }
inline std::string version() { return gpushare_version(); }

}  // namespace api_v1
}  // namespace gpushare
