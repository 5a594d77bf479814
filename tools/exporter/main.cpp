// gpushare-exporter: the shared state's figures for Prometheus, on http://HOST:PORT/metrics. Run
// as `gpushare exporter [OPTIONS]` (tools/exporter_command.cpp execs this program);
// docs/metrics.md describes the metrics.
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>
#include <CLI/CLI.hpp>

#include "core/report.hpp"
#include "core/settings.hpp"
#include "core/shared_state.hpp"
#include "http_serving.hpp"
#include "listen_address.hpp"
#include "prometheus.hpp"
#include "tenant_labels.hpp"
#include "tenant_labels_file.hpp"
#include "version_line.hpp"

namespace fs = std::filesystem;
using gpushare::SharedState;
using namespace gpushare::exporter;

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitBadInput = 2;

// Scrapes come seconds apart and take a millisecond at most. Each thread serves one connection at
// a time, though, so idle connections (a browser's keep-alive, a stalled client) must not hold a
// thread for long: they are dropped after a second without a request (httplib's default is 5 s,
// and a handful of idle connections would then stall every scrape past Prometheus's timeout).
constexpr std::size_t kServerThreads = 8;
constexpr time_t kIdleConnectionSeconds = 1;

constexpr const char* kIndexPage =
    "<!DOCTYPE html>\n<html><head><title>gpushare exporter</title></head>\n"
    "<body><h1>gpushare exporter</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n";

// One line on stderr when a condition appears or changes, not one per scrape. An empty condition
// is nothing to say; `cleared` is said when it follows another one.
class ConditionLog {
 public:
  void log_if_changed(const std::string& condition, std::string_view cleared = {}) {
    const std::lock_guard lock(mutex_);
    if (condition == last_condition_) return;
    last_condition_ = condition;
    const std::string_view line = condition.empty() ? cleared : std::string_view(condition);
    if (!line.empty()) fmt::print(stderr, "gpushare exporter: {}\n", line);
  }

 private:
  std::mutex mutex_;
  std::string last_condition_;
};

// Reads the state for each scrape. It is opened afresh every time, so that a state created or
// replaced after the exporter started is the one shown. Only reads: it never creates the file
// and, unlike `gpushare status`, does not give dead processes' bytes back (the next process to
// join, or an allocation about to be refused, does), so watching never changes what is watched.
// The tenant labels are only an addition: a damaged file is said in a comment, and the scrape
// goes on without them.
class StateReader {
 public:
  StateReader(gpushare::StatePath path, std::string tenant_labels_path)
      : path_(std::move(path.path)), origin_(path.origin()), tenant_labels_(std::move(tenant_labels_path)) {}

  // May run on several server threads at once: each scrape has its own mapping.
  std::string scrape() {
    std::error_code error;
    if (!fs::exists(path_, error)) {
      return unavailable(fmt::format("no shared state at {} yet: no tenant has run with it", path_));
    }
    auto state = SharedState::open(path_, SharedState::Mode::kReadOnly, origin_);
    if (!state) return unavailable(state.error().message);
    state_log_.log_if_changed(fmt::format("reading the shared state at {}", path_));

    const auto labels = tenant_labels_.read();
    std::string text;
    labels_log_.log_if_changed(labels->problem,
                               fmt::format("the tenant labels at {} are readable again", tenant_labels_.path()));
    if (!labels->problem.empty()) text = render_comment(labels->problem);
    text += render_prometheus(gpushare::build_report(**state), labels->pods);
    return text;
  }

 private:
  std::string unavailable(const std::string& why) {
    state_log_.log_if_changed(why);
    return render_prometheus_without_state(why);
  }

  const std::string path_;
  const SharedState::Origin origin_;
  TenantLabelsFile tenant_labels_;
  ConditionLog state_log_;
  ConditionLog labels_log_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Serve gpushare's figures to Prometheus: each GPU's tenants, their memory, quotas, refusals, GPU "
      "time, launches and waits, read from the shared state at every scrape.\n",
      "gpushare exporter"};
  std::string listen = "127.0.0.1:9400";
  std::string state_option;
  app.add_option("--listen", listen,
                 "HOST:PORT to serve http://HOST:PORT/metrics on; [::1]:9400 for IPv6, 0.0.0.0:9400 for every "
                 "interface, port 0 for any free port. The address is the first line on stdout")
      ->capture_default_str();
  const gpushare::OptionSpec& state_spec = gpushare::option_spec(gpushare::OptionId::kState);
  app.add_option("--state", state_option,
                 fmt::format("{} (default: ${}, else {})", state_spec.help, state_spec.env, state_spec.default_text()));
  std::string tenant_labels_path = gpushare::kube::kTenantLabelsPath;
  app.add_option("--tenant-labels", tenant_labels_path,
                 "The agent's tenant-labels file (gpushare agent --kubernetes writes it): namespace, pod and "
                 "container labels for each tenant's samples. A missing file gives no such labels; a damaged "
                 "one gives none, a comment in the page and a line on stderr")
      ->capture_default_str();
  app.set_version_flag("--version", gpushare::agent::version_line(GPUSHARE_VERSION));
  app.footer(
      "Example: gpushare exporter --listen 127.0.0.1:9400\n"
      "In a Kubernetes DaemonSet: gpushare exporter --listen 0.0.0.0:9400 --state /run/gpushare/gpushare.state "
      "--tenant-labels /run/gpushare/tenant-labels.json\n"
      "The state is only read, never created: until a tenant has run, /metrics shows gpushare_up 0.\n"
      "SIGINT or SIGTERM stops it. Exit status: 0 when stopped, 1 when it cannot listen, 2 for bad options.\n"
      "The metrics and a scrape config: docs/metrics.md.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& success) {
    return app.exit(success);
  } catch (const CLI::ParseError& error) {
    app.exit(error);
    return kExitBadInput;
  }
  // An empty path would silently mean the default one.
  const bool state_given = app.count("--state") > 0;
  auto state_path = gpushare::state_path_for_command(state_given ? std::optional(state_option) : std::nullopt,
                                                     [](const char* name) { return std::getenv(name); });
  if (!state_path) {
    fmt::print(stderr, "gpushare exporter: {}\n", state_path.error().message);
    return kExitBadInput;
  }
  auto parsed_listen = parse_listen_address(listen);
  if (!parsed_listen) {
    fmt::print(stderr, "gpushare exporter: {}\n", parsed_listen.error().message);
    return kExitBadInput;
  }
  const ListenAddress address = std::move(parsed_listen).value();

  // SIGINT and SIGTERM are blocked in every thread (the server's threads, started later, inherit
  // the mask) and taken by this one, which then stops the server: no handler ever interrupts the
  // HTTP library.
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  StateReader reader(std::move(state_path).value(), std::move(tenant_labels_path));
  httplib::Server server;
  server.new_task_queue = [] { return new httplib::ThreadPool(kServerThreads); };
  // SO_REUSEADDR only: a restarted exporter gets its port back at once, but a second one on a port
  // in use fails instead of sharing it (httplib's default, SO_REUSEPORT, would split the scrapes
  // between two exporters that may read different states).
  server.set_socket_options([](socket_t socket) {
    const int yes = 1;
    ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  server.set_read_timeout(kIdleConnectionSeconds, 0);
  server.set_keep_alive_timeout(kIdleConnectionSeconds);
  server.Get("/metrics", [&reader](const httplib::Request&, httplib::Response& response) {
    response.set_content(reader.scrape(), std::string(kExpositionContentType));
  });
  server.Get("/", [](const httplib::Request&, httplib::Response& response) {
    response.set_content(kIndexPage, "text/html; charset=utf-8");
  });

  const int port = bind_or_say_why(server, address, "gpushare exporter", listen);
  if (port <= 0) return kExitFailure;
  fmt::print("listening on {}\n", metrics_url(address.host, port));
  std::fflush(stdout);
  return serve_until_stopped(server, signals, "gpushare exporter", listen);
}
