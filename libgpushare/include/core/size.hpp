// Byte sizes as people write them: "1073741824", "512MiB", "8GiB", "1.5GiB", Kubernetes' "8Gi", and
// HAMi's "8g"/"512m".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace gpushare {

inline constexpr std::uint64_t operator""_KiB(unsigned long long n) { return n << 10; }
inline constexpr std::uint64_t operator""_MiB(unsigned long long n) { return n << 20; }
inline constexpr std::uint64_t operator""_GiB(unsigned long long n) { return n << 30; }

// A limit of kUnlimited bytes means "no quota".
inline constexpr std::uint64_t kUnlimited = UINT64_MAX;

// Accepts an integer or decimal number followed by an optional unit: B, KiB, MiB, GiB, TiB, PiB,
// Kubernetes' Ki, Mi, Gi, Ti, Pi, or HAMi's lowercase k, m, g, t, p (all binary; HAMi reads its
// letters so). Units that may be decimal (K, M, G, T, P, KB, MB, GB, TB, PB, kB) are refused with a
// message naming the binary unit: silently treating "8G" as 8 GiB or as 8e9 bytes would both
// surprise someone. The result must be a whole number of bytes that fits in 64 bits (and is not
// the reserved kUnlimited value).
Result<std::uint64_t> parse_size(std::string_view text);

// Like parse_size, but also accepts "unlimited" / "none" for kUnlimited.
Result<std::uint64_t> parse_limit(std::string_view text);

// "8 GiB", "512 MiB", "1.50 GiB", "123 B", "unlimited": for messages and tables, not for parsing.
std::string format_size(std::uint64_t bytes);

}  // namespace gpushare
