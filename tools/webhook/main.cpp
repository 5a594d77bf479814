// gpushare-webhook: the Kubernetes admission webhook that puts gpushare into opted-in pods, over
// HTTPS. Run as `gpushare webhook [OPTIONS]` (tools/webhook_command.cpp execs this program);
// docs/kubernetes-webhook.md describes what it injects and how to deploy it.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <semaphore>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>
#include <openssl/ssl.h>
#include <CLI/CLI.hpp>

#include "admission.hpp"
#include "http_serving.hpp"
#include "json_patch.hpp"
#include "listen_address.hpp"
#include "serving_certificate.hpp"
#include "version_line.hpp"

using namespace gpushare::webhook;
using gpushare::exporter::bind_or_say_why;
using gpushare::exporter::serve_until_stopped;
using gpushare::exporter::stop_signals;

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitBadInput = 2;

// The API server sends one pod in each review, and etcd stores no object above about 1.5 MiB:
// the review of the largest pod fits in 2 MiB. A larger body is refused before it is buffered.
constexpr std::size_t kMaxReviewBytes = 2 * 1024 * 1024;
// cpp-httplib 0.11 has no deadline for a whole request, only one per read and write: a client
// must send something every 2 s (the API server sends a review at once and waits at most its
// timeoutSeconds, 5, for the answer).
constexpr time_t kSocketTimeoutSeconds = 2;
// An idle keep-alive connection holds a worker thread: it is closed after 2 s, and after 100
// requests so that one client cannot keep a worker for ever.
constexpr time_t kKeepAliveSeconds = 2;
constexpr std::size_t kKeepAliveMaxRequests = 100;
// Each connection takes a worker for its lifetime: 32 keep a few slow or idle clients from
// starving the API server's reviews and the kubelet's /healthz probes.
constexpr std::size_t kWorkerThreads = 32;
// A body parsed into JSON takes up to about 35 times its size (a 2 MiB body of nested empty
// arrays): at most this many are decided at once, so that the 32 workers cannot take 32 times
// that. A review that waits longer than the API server would is answered 503.
constexpr std::ptrdiff_t kConcurrentDecisions = 2;
constexpr auto kDecisionWait = std::chrono::seconds(3);

void log_line(const std::string& line) { std::fprintf(stderr, "gpushare webhook: %s\n", line.c_str()); }

// POST handler of one endpoint: the review decided by admission.hpp, or 400 for a body that is
// not a review.
httplib::Server::Handler review_handler(Endpoint endpoint, const InjectionPaths& paths, const char* route,
                                        std::counting_semaphore<kConcurrentDecisions>& decision_slots) {
  return [endpoint, &paths, route, &decision_slots](const httplib::Request& request, httplib::Response& response) {
    if (!decision_slots.try_acquire_for(kDecisionWait)) {
      log_line(fmt::format("{} from {}: HTTP 503: busy deciding other reviews", route, request.remote_addr));
      response.status = 503;
      response.set_content("gpushare webhook: busy, try again\n", "text/plain");
      return;
    }
    struct SlotRelease {
      std::counting_semaphore<kConcurrentDecisions>& slots;
      ~SlotRelease() { slots.release(); }
    } release_slot{decision_slots};
    auto decision = review_admission_text(request.body, endpoint, paths);
    if (!decision) {
      log_line(fmt::format("{} from {}: HTTP 400: {}", route, request.remote_addr, decision.error().message));
      response.status = 400;
      response.set_content("gpushare webhook: " + decision.error().message + "\n", "text/plain");
      return;
    }
    log_line(fmt::format("{} {}", route, decision->log_line));
    response.set_content(dump_json(decision->review), "application/json");
  };
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "The Kubernetes admission webhook of gpushare: pods that opt in (gpushare.io/ annotations, or a namespace "
      "labelled gpushare.io/enabled=true) get the host's gpushare folder and agent socket mounted read-only, "
      "LD_PRELOAD and GPUSHARE_AGENT; pods with bad gpushare.io/ annotations are refused.\n",
      "gpushare webhook"};
  std::string listen = "0.0.0.0:8443";
  std::string certificate_path;
  std::string key_path;
  InjectionPaths paths;
  app.add_option("--listen", listen,
                 "HOST:PORT to serve HTTPS on ([::]:8443 for IPv6, port 0 for any free port); the address is the "
                 "first line on stdout")
      ->capture_default_str();
  app.add_option("--tls-cert", certificate_path,
                 "PEM certificate (then its intermediates) for the webhook Service's name; read again at the next "
                 "connection when the file changes")
      ->required();
  app.add_option("--tls-key", key_path, "PEM private key of --tls-cert; read again with it")->required();
  app.add_option("--host-dir", paths.host_dir,
                 "The nodes' gpushare folder, mounted read-only at the same path; LD_PRELOAD is "
                 "HOST_DIR/current/lib/gpushare/libgpushare-preload.so")
      ->capture_default_str();
  app.add_option("--socket-dir", paths.socket_dir,
                 "The nodes' agent socket folder, mounted read-only at the same path; GPUSHARE_AGENT is "
                 "SOCKET_DIR/agent.sock")
      ->capture_default_str();
  app.set_version_flag("--version", gpushare::agent::version_line(GPUSHARE_VERSION));
  app.footer(
      "Example: gpushare webhook --tls-cert /tls/tls.crt --tls-key /tls/tls.key\n"
      "Endpoints: POST /mutate (pods that opt in by annotation), POST /mutate-namespace (every pod of a namespace "
      "labelled gpushare.io/enabled=true unless gpushare.io/enabled: \"false\"), GET /healthz.\n"
      "One line per decision on stderr. SIGINT or SIGTERM stops it. Exit status: 0 when stopped, 1 when it cannot "
      "listen or the certificate does not load, 2 for bad options. docs/kubernetes-webhook.md has the manifests.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& success) {
    return app.exit(success);
  } catch (const CLI::ParseError& error) {
    app.exit(error);
    return kExitBadInput;
  }
  for (const auto& [flag, value] : {std::pair{"--host-dir", &paths.host_dir}, {"--socket-dir", &paths.socket_dir}}) {
    if (value->empty() || value->front() != '/') {
      fmt::print(stderr, "gpushare webhook: {} must be an absolute path, not \"{}\"\n", flag, *value);
      return kExitBadInput;
    }
  }
  auto parsed_listen = gpushare::exporter::parse_listen_address(listen);
  if (!parsed_listen) {
    fmt::print(stderr, "gpushare webhook: {}\n", parsed_listen.error().message);
    return kExitBadInput;
  }
  const gpushare::exporter::ListenAddress address = std::move(parsed_listen).value();

  ServingCertificate certificate(certificate_path, key_path);
  if (gpushare::Status loaded = certificate.load(); !loaded) {
    fmt::print(stderr, "gpushare webhook: {}\n", loaded.error().message);
    return kExitFailure;
  }

  // glibc gives each thread an arena of its own by default, and memory freed in one is not reused
  // by the others: after 32 workers have each parsed a large body once, each arena would keep its
  // peak. As many arenas as decisions run at once keep the peak at that of kConcurrentDecisions.
  mallopt(M_ARENA_MAX, static_cast<int>(kConcurrentDecisions));

  // As in the exporter: SIGINT and SIGTERM are taken by this thread only, which stops the server.
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // The certificate is not given to the server: each handshake asks `certificate` for it, so that
  // a rotated file serves the next connection without a restart.
  httplib::SSLServer server([&certificate](SSL_CTX& context) {
    SSL_CTX_set_min_proto_version(&context, TLS1_2_VERSION);
    certificate.attach(context);
    return true;
  });
  if (!server.is_valid()) {
    fmt::print(stderr, "gpushare webhook: cannot set up TLS\n");
    return kExitFailure;
  }
  server.set_socket_options([](socket_t socket) {
    const int yes = 1;
    ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  server.new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
  server.set_payload_max_length(kMaxReviewBytes);
  server.set_read_timeout(kSocketTimeoutSeconds, 0);
  server.set_write_timeout(kSocketTimeoutSeconds, 0);
  server.set_keep_alive_timeout(kKeepAliveSeconds);
  server.set_keep_alive_max_count(kKeepAliveMaxRequests);
  std::counting_semaphore<kConcurrentDecisions> decision_slots(kConcurrentDecisions);
  server.Post("/mutate", review_handler(Endpoint::kOptInPods, paths, "/mutate", decision_slots));
  server.Post("/mutate-namespace",
              review_handler(Endpoint::kNamespacePods, paths, "/mutate-namespace", decision_slots));
  server.Get("/healthz",
             [](const httplib::Request&, httplib::Response& response) { response.set_content("ok\n", "text/plain"); });

  const int port = bind_or_say_why(server, address, "gpushare webhook", listen);
  if (port <= 0) return kExitFailure;
  const bool ipv6 = address.host.find(':') != std::string::npos;
  fmt::print("listening on https://{}{}{}:{}\n", ipv6 ? "[" : "", address.host, ipv6 ? "]" : "", port);
  std::fflush(stdout);
  return serve_until_stopped(server, signals, "gpushare webhook", listen);
}
