// The serving loop the exporter and the webhook share: bind to --listen, serve on a thread, stop on
// SIGINT or SIGTERM. Apart from listen_address because it needs cpp-httplib, which the exporter's
// core library (tested without a server) does not link.
#pragma once

#include <signal.h>

#include <string_view>

#include <httplib.h>

#include "listen_address.hpp"

namespace gpushare::exporter {

// SIGINT and SIGTERM: block them in every thread (pthread_sigmask before starting any) and pass them
// to serve_until_stopped, which waits for them.
sigset_t stop_signals();

// Binds `server` to `address`; the port bound (the one picked, for port 0), or -1 after saying why on
// stderr as "PROGRAM: cannot listen on LISTEN: ...".
int bind_or_say_why(httplib::Server& server, const ListenAddress& address, std::string_view program,
                    std::string_view listen);

// Serves the bound `server` until one of `signals` arrives (exit status 0) or the server stops
// accepting connections by itself (1, said on stderr).
int serve_until_stopped(httplib::Server& server, const sigset_t& signals, std::string_view program,
                        std::string_view listen);

}  // namespace gpushare::exporter
