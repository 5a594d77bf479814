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

// Matched case-sensitively: the IEC names, Kubernetes' binary suffixes and HAMi's lowercase letters
// (binary, as HAMi reads them).
constexpr std::array kUnits{
    Unit{"", 0},     Unit{"B", 0},    Unit{"KiB", 10}, Unit{"MiB", 20}, Unit{"GiB", 30}, Unit{"TiB", 40},
    Unit{"PiB", 50}, Unit{"Ki", 10},  Unit{"Mi", 20},  Unit{"Gi", 30},  Unit{"Ti", 40},  Unit{"Pi", 50},
    Unit{"k", 10},   Unit{"m", 20},   Unit{"g", 30},   Unit{"t", 40},   Unit{"p", 50},
};

// Units that mean powers of 1000 to some readers and of 1024 to others, with the binary names to
// write instead. Taking "8G" either way would surprise someone.
struct AmbiguousUnit {
  std::string_view name;
  std::string_view binary;  // "GiB or Gi"
};
constexpr std::array kAmbiguousUnits{
    AmbiguousUnit{"K", "KiB or Ki"},  AmbiguousUnit{"KB", "KiB or Ki"}, AmbiguousUnit{"kB", "KiB or Ki"},
    AmbiguousUnit{"M", "MiB or Mi"},  AmbiguousUnit{"MB", "MiB or Mi"}, AmbiguousUnit{"G", "GiB or Gi"},
    AmbiguousUnit{"GB", "GiB or Gi"}, AmbiguousUnit{"T", "TiB or Ti"},  AmbiguousUnit{"TB", "TiB or Ti"},
    AmbiguousUnit{"P", "PiB or Pi"},  AmbiguousUnit{"PB", "PiB or Pi"},
};

Error size_error(std::string_view text, std::string_view why) {
  return Error{fmt::format("invalid size '{}': {} (examples: 1073741824, 512MiB, 8GiB, 8Gi, 1.5GiB, 8g)",
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
    for (const AmbiguousUnit& ambiguous : kAmbiguousUnits) {
      if (ambiguous.name != suffix) continue;
      return size_error(text, fmt::format("decimal units are ambiguous here ('{}' may count 1000s or 1024s); "
                                          "write {} for the binary unit, or the number of bytes",
                                          suffix, ambiguous.binary));
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
