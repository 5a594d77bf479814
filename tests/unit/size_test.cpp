#include "core/size.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "test_support.hpp"

namespace gpushare {
namespace {

using testing::Contains;

struct Good {
  const char* text;
  std::uint64_t bytes;
};

TEST(ParseSize, AcceptsIntegersIecUnitsKubernetesSuffixesAndHamiLetters) {
  const std::vector<Good> cases{
      {"1073741824", 1073741824ull},
      {"0", 0},
      {"1", 1},
      {"123B", 123},
      {"4KiB", 4096},
      {"512MiB", 512ull << 20},
      {"8GiB", 8ull << 30},
      {"1TiB", 1ull << 40},
      {"2PiB", 2ull << 50},
      {"8g", 8ull << 30},
      {"512m", 512ull << 20},
      {"8Gi", 8ull << 30},
      {"512Mi", 512ull << 20},
      {"4Ki", 4096},
      {"2Ti", 2ull << 40},
      {"1Pi", 1ull << 50},
      {"1.5Gi", 1610612736ull},
      {"8 Gi", 8ull << 30},
      {"64k", 64ull << 10},
      {"1t", 1ull << 40},
      {"1.5GiB", 1610612736ull},
      {"0.5KiB", 512},
      {"1.25MiB", 1310720},
      {"8 GiB", 8ull << 30},
      {"18446744073709551613", UINT64_MAX - 2},  // the largest size: the two above are reserved
  };
  for (const auto& c : cases) {
    auto parsed = parse_size(c.text);
    ASSERT_TRUE(parsed.ok()) << c.text << ": " << parsed.error().message;
    EXPECT_EQ(parsed.value(), c.bytes) << c.text;
  }
}

TEST(ParseSize, UnlimitedIsOnlyForLimits) {
  EXPECT_FALSE(parse_size("unlimited").ok());
  EXPECT_FALSE(parse_size("none").ok());
  auto limit = parse_limit("unlimited");
  ASSERT_TRUE(limit.ok());
  EXPECT_EQ(limit.value(), kUnlimited);
  auto none = parse_limit("none");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none.value(), kUnlimited);
  auto sized = parse_limit("8GiB");
  ASSERT_TRUE(sized.ok());
  EXPECT_EQ(sized.value(), 8ull << 30);
  auto zero = parse_limit("0");
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(zero.value(), 0u);
}

struct Bad {
  const char* text;
  const char* why;  // a fragment of the reason
};

TEST(ParseSize, RefusesBadInputsNamingThem) {
  const std::vector<Bad> cases{
      {"", "empty"},
      {"8XB", "unknown unit 'XB'"},
      {"-1", "negative"},
      {"8GB", "decimal units"},
      {"512MB", "decimal units"},
      {"1.3B", "whole number of bytes"},
      {"1.5", "whole number of bytes"},
      {"99999999999999999999", "too large"},
      {"16777216TiB", "too large"},
      {"18446744073709551615", "too large"},  // UINT64_MAX is reserved for kUnlimited
      {"18446744073709551614", "too large"},  // and UINT64_MAX - 1 for "no override" in the state
      {"GiB", "does not start with a number"},
      {"1..5GiB", "unknown unit"},
      {"8 g b", "unknown unit"},
      {"8gib", "unknown unit"},
      {"1.0000000000001GiB", "too many decimals"},
  };
  for (const auto& c : cases) {
    auto parsed = parse_size(c.text);
    ASSERT_FALSE(parsed.ok()) << "'" << c.text << "' was accepted as " << parsed.value();
    EXPECT_TRUE(Contains(parsed.error().message, std::string("'") + c.text + "'")) << c.text;
    EXPECT_TRUE(Contains(parsed.error().message, c.why)) << c.text;
    // parse_limit refuses the same inputs the same way.
    auto limit = parse_limit(c.text);
    ASSERT_FALSE(limit.ok()) << c.text;
    EXPECT_TRUE(Contains(limit.error().message, std::string("'") + c.text + "'"));
  }
}

TEST(ParseSize, DecimalUnitRefusalGivesAHint) {
  auto parsed = parse_size("8GB");
  ASSERT_FALSE(parsed.ok());
  EXPECT_TRUE(Contains(parsed.error().message, "GiB"));
}

TEST(ParseSize, AmbiguousUnitsAreRefusedNamingTheBinaryOnes) {
  // Uppercase single letters and decimal names may count 1000s (Kubernetes, disks) or 1024s.
  const std::vector<std::pair<const char*, const char*>> cases{
      {"8G", "GiB or Gi"},   {"8GB", "GiB or Gi"},   {"512M", "MiB or Mi"}, {"512MB", "MiB or Mi"},
      {"1T", "TiB or Ti"},   {"1TB", "TiB or Ti"},   {"64K", "KiB or Ki"},  {"64KB", "KiB or Ki"},
      {"64kB", "KiB or Ki"}, {"2P", "PiB or Pi"},    {"2PB", "PiB or Pi"},  {"1.5G", "GiB or Gi"},
      {"8 G", "GiB or Gi"},
  };
  for (const auto& [text, binary] : cases) {
    for (const auto& parsed : {parse_size(text), parse_limit(text)}) {
      ASSERT_FALSE(parsed.ok()) << text << " was accepted as " << parsed.value();
      EXPECT_TRUE(Contains(parsed.error().message, std::string("'") + text + "'")) << parsed.error().message;
      EXPECT_TRUE(Contains(parsed.error().message, "ambiguous")) << parsed.error().message;
      EXPECT_TRUE(Contains(parsed.error().message, binary)) << parsed.error().message;
    }
  }
}

TEST(ParseSize, HamiLowercaseLettersKeepTheirBinaryMeaning) {
  EXPECT_EQ(parse_size("8g").value(), 8_GiB);
  EXPECT_EQ(parse_size("512m").value(), 512_MiB);
  EXPECT_EQ(parse_size("64k").value(), 64_KiB);
  EXPECT_EQ(parse_size("1t").value(), 1ull << 40);
  EXPECT_EQ(parse_size("1p").value(), 1ull << 50);
  EXPECT_EQ(parse_limit("8g").value(), parse_limit("8Gi").value());
  EXPECT_EQ(parse_limit("8g").value(), parse_limit("8GiB").value());
}

TEST(ParseSize, FractionsThatAreWholeBytesInLargeUnitsAreExact) {
  // 0.1 PiB = 112589990684262.4 B: not whole; 0.125 PiB is.
  EXPECT_FALSE(parse_size("0.1PiB").ok());
  auto eighth = parse_size("0.125PiB");
  ASSERT_TRUE(eighth.ok()) << eighth.error().message;
  EXPECT_EQ(eighth.value(), 1ull << 47);
  EXPECT_FALSE(parse_size("16384PiB").ok());
  auto near_top = parse_size("16383PiB");
  ASSERT_TRUE(near_top.ok());
  EXPECT_EQ(near_top.value(), 16383ull << 50);
}

TEST(FormatSize, ReadableForms) {
  EXPECT_EQ(format_size(0), "0 B");
  EXPECT_EQ(format_size(123), "123 B");
  EXPECT_EQ(format_size(1023), "1023 B");
  EXPECT_EQ(format_size(1024), "1 KiB");
  EXPECT_EQ(format_size((1ull << 20) - 1), "1.00 MiB");  // rounds up to the next unit, not "1024.00 KiB"
  EXPECT_EQ(format_size(512ull << 20), "512 MiB");
  EXPECT_EQ(format_size(8ull << 30), "8 GiB");
  EXPECT_EQ(format_size(1ull << 40), "1 TiB");
  EXPECT_EQ(format_size(3ull << 50), "3 PiB");
  EXPECT_EQ(format_size(1610612736ull), "1.50 GiB");
  EXPECT_EQ(format_size(kUnlimited), "unlimited");
}

TEST(FormatSize, WholeUnitsRoundTripThroughParseSize) {
  for (std::uint64_t bytes : {0ull, 1ull, 4096ull, 512ull << 20, 8ull << 30, 7ull << 40, 5ull << 50}) {
    std::string text = format_size(bytes);
    auto parsed = parse_size(text);
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.error().message;
    EXPECT_EQ(parsed.value(), bytes) << text;
  }
  auto unlimited = parse_limit(format_size(kUnlimited));
  ASSERT_TRUE(unlimited.ok());
  EXPECT_EQ(unlimited.value(), kUnlimited);
}

TEST(SizeLiterals, AreBinary) {
  EXPECT_EQ(3_KiB, 3072u);
  EXPECT_EQ(3_MiB, 3ull << 20);
  EXPECT_EQ(3_GiB, 3ull << 30);
}

}  // namespace
}  // namespace gpushare
