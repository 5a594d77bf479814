#include "listen_address.hpp"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

namespace gpushare::exporter {

Result<ListenAddress> parse_listen_address(std::string_view text) {
  const auto bad = [text](std::string_view why) {
    return Error{
        fmt::format("--listen {:?}: {}; expected HOST:PORT, for example 127.0.0.1:9400, [::1]:9400 or "
                    "0.0.0.0:9400 (every interface); port 0 picks a free one",
                    text, why)};
  };
  const std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return bad("no port");
  std::string_view host = text.substr(0, colon);
  const std::string_view port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find_first_of("[]:") != std::string_view::npos) {
    return bad("an IPv6 address needs brackets");
  }
  if (host.empty()) return bad("no host");
  if (std::any_of(host.begin(), host.end(), [](char c) { return c == ' ' || c == '\t' || c == '\n'; })) {
    return bad("space in the host");
  }
  unsigned port = 0;
  const auto [end, error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || error != std::errc{} || end != port_text.data() + port_text.size()) {
    return bad("the port is not a number");
  }
  if (port > 65535) return bad("the port is over 65535");
  return ListenAddress{std::string(host), static_cast<std::uint16_t>(port)};
}

std::string metrics_url(std::string_view host, int port) {
  const bool ipv6 = host.find(':') != std::string_view::npos;
  return fmt::format("http://{}:{}/metrics", ipv6 ? fmt::format("[{}]", host) : std::string(host), port);
}

}  // namespace gpushare::exporter
