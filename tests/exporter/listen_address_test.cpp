// --listen HOST:PORT: what is accepted, what is refused, and the URL printed for it.
#include "listen_address.hpp"

#include <gtest/gtest.h>

namespace {

using gpushare::exporter::metrics_url;
using gpushare::exporter::parse_listen_address;

TEST(ListenAddress, HostAndPort) {
  for (const auto& [text, host, port] :
       {std::tuple{"127.0.0.1:9400", "127.0.0.1", 9400}, std::tuple{"0.0.0.0:0", "0.0.0.0", 0},
        std::tuple{"localhost:65535", "localhost", 65535}, std::tuple{"[::1]:9400", "::1", 9400},
        std::tuple{"[::]:1", "::", 1}}) {
    auto parsed = parse_listen_address(text);
    ASSERT_TRUE(parsed) << text << ": " << parsed.error().message;
    EXPECT_EQ(parsed->host, host) << text;
    EXPECT_EQ(parsed->port, port) << text;
  }
}

TEST(ListenAddress, RefusesWhatIsNotHostColonPort) {
  for (const char* text :
       {"", "9400", "nonsense", "127.0.0.1", "127.0.0.1:", ":9400", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:+1",
        "127.0.0.1:9x", "127.0.0.1: 9400", "::1:9400", "[::1", "[::1]", "[]:9400", "bad host:9400"}) {
    const auto parsed = parse_listen_address(text);
    ASSERT_FALSE(parsed) << "accepted '" << text << "'";
    EXPECT_NE(parsed.error().message.find("--listen"), std::string::npos) << parsed.error().message;
    EXPECT_NE(parsed.error().message.find("HOST:PORT"), std::string::npos) << parsed.error().message;
  }
}

TEST(ListenAddress, UrlBracketsAnIpv6Host) {
  EXPECT_EQ(metrics_url("127.0.0.1", 9400), "http://127.0.0.1:9400/metrics");
  EXPECT_EQ(metrics_url("::1", 41234), "http://[::1]:41234/metrics");
}

}  // namespace
