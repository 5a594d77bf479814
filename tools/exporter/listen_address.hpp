// The exporter's --listen HOST:PORT.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace gpushare::exporter {

struct ListenAddress {
  std::string host;        // a name or an address; an IPv6 address without its brackets
  std::uint16_t port = 0;  // 0: any free port
};

// HOST:PORT, or [IPV6]:PORT. The host may not be left out: listening on every interface exposes
// the tenants' names and figures to the network, so it has to be asked for (0.0.0.0:9400).
Result<ListenAddress> parse_listen_address(std::string_view text);

// http://HOST:PORT/metrics, with an IPv6 host in brackets.
std::string metrics_url(std::string_view host, int port);

}  // namespace gpushare::exporter
