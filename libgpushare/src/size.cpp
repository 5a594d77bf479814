#include "core/size.hpp"

#include <array>
#include <cctype>

#include <fmt/format.h>

namespace gpushare {
namespace {

struct Unit {
  std::string_view name;
  unsigned shift;  // bytes = number << shift
};

// Matched case-sensitively for the IEC names, case-insensitively for HAMi's single letters.
constexpr std::array kUnits{
    Unit{"", 0},     Unit{"B", 0},     Unit{"KiB", 10}, Unit{"MiB", 20}, Unit{"GiB", 30},
    Unit{"TiB", 40}, Unit{"PiB", 50},  Unit{"k", 10},   Unit{"m", 20},   Unit{"g", 30},
    Unit{"t", 40},   Unit{"p", 50},    Unit{"K", 10},   Unit{"M", 20},   Unit{"G", 30},
    Unit{"T", 40},   Unit{"P", 50},
};

Error size_error(std::string_view text, std::string_view why) {
  return Error{fmt::format("invalid size '{}': {} (examples: 1073741824, 512MiB, 8GiB, 1.5GiB, 8g)",
                           text, why)};
}

}  // namespace

Result<std::uint64_t> parse_size(std::string_view text) {
  if (text.empty()) return size_error(text, "empty");
  std::size_t pos = 0;
  std::uint64_t whole = 0;
  bool any_digit = false;
  while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
    if (__builtin_mul_overflow(whole, 10u, &whole) ||
        __builtin_add_overflow(whole, static_cast<std::uint64_t>(text[pos] - '0'), &whole)) {
      return size_error(text, "too large");
    }
    any_digit = true;
    ++pos;
  }
  // Fraction digits are kept as an exact rational: fraction / 10^fraction_digits.
  std::uint64_t fraction = 0;
  std::uint64_t fraction_scale = 1;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
      if (fraction_scale >= 1'000'000'000'000ull) return size_error(text, "too many decimals");
      fraction = fraction * 10 + static_cast<std::uint64_t>(text[pos] - '0');
      fraction_scale *= 10;
      any_digit = true;
      ++pos;
    }
  }
  if (!any_digit) {
    return size_error(text, text[0] == '-' ? "must not be negative" : "does not start with a number");
  }
  std::string_view suffix = text.substr(pos);
  if (!suffix.empty() && suffix.front() == ' ') suffix.remove_prefix(1);
  const Unit* unit = nullptr;
  for (const Unit& candidate : kUnits) {
    if (candidate.name == suffix) {
      unit = &candidate;
      break;
    }
  }
  if (unit == nullptr) {
    if (suffix == "KB" || suffix == "MB" || suffix == "GB" || suffix == "TB" || suffix == "kB") {
      return size_error(text, "decimal units are ambiguous here; use KiB, MiB, GiB or TiB");
    }
    return size_error(text, fmt::format("unknown unit '{}'", suffix));
  }
  std::uint64_t bytes = 0;
  if (unit->shift > 0 && whole > (UINT64_MAX >> unit->shift)) return size_error(text, "too large");
  bytes = whole << unit->shift;
  if (fraction != 0) {
    // fraction * 2^shift / scale must be whole; fraction < scale <= 10^12 and shift <= 50 could
    // overflow 64 bits, so use 128-bit arithmetic.
    __extension__ using u128 = unsigned __int128;
    const u128 scaled = static_cast<u128>(fraction) << unit->shift;
    if (scaled % fraction_scale != 0) return size_error(text, "is not a whole number of bytes");
    const auto extra = static_cast<std::uint64_t>(scaled / fraction_scale);
    if (__builtin_add_overflow(bytes, extra, &bytes)) return size_error(text, "too large");
  }
  // The two largest values are reserved (unlimited, and "no override" in the shared state).
  if (bytes >= kUnlimited - 1) return size_error(text, "too large");
  return bytes;
}

Result<std::uint64_t> parse_limit(std::string_view text) {
  if (text == "unlimited" || text == "none") return kUnlimited;
  return parse_size(text);
}

std::string format_size(std::uint64_t bytes) {
  if (bytes == kUnlimited) return "unlimited";
  constexpr std::array<std::string_view, 6> kNames{"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  unsigned index = 0;
  while (index + 1 < kNames.size() && bytes >= (1ull << (10 * (index + 1)))) ++index;
  if (index == 0) return fmt::format("{} B", bytes);
  const std::uint64_t unit = 1ull << (10 * index);
  if (bytes % unit == 0) return fmt::format("{} {}", bytes / unit, kNames[index]);
  const double value = static_cast<double>(bytes) / static_cast<double>(unit);
  // Just under the next unit rounds up to it ("1.00 MiB", not "1024.00 KiB").
  if (value >= 1023.995 && index + 1 < kNames.size()) return fmt::format("{:.2f} {}", value / 1024.0, kNames[index + 1]);
  return fmt::format("{:.2f} {}", value, kNames[index]);
}

}  // namespace gpushare
