// The pods of this node from the Kubernetes API server, kept in a PodCache by a thread of their
// own: a list (GET /api/v1/pods?fieldSelector=spec.nodeName=NODE), then a watch from the list's
// resourceVersion, streamed one JSON event per line. A watch that ends or fails is resumed from the
// last resourceVersion seen; one the server says is too old (410 Gone) starts over with a list; a
// server that cannot be reached is tried again after a capped, doubling wait. The bearer token is
// read from its file before each list and watch: projected service-account tokens rotate.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "core/result.hpp"
#include "kube_pod_cache.hpp"

namespace gpushare::agent {

// In-cluster defaults (a pod's service account).
inline constexpr const char* kServiceAccountToken = "/var/run/secrets/kubernetes.io/serviceaccount/token";
inline constexpr const char* kServiceAccountCa = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

struct KubeApiEndpoint {
  std::string host;  // a name or an address; IPv6 without brackets
  int port = 443;
};

// "https://HOST[:PORT]" ("[v6]" in brackets), nothing after the port but an optional '/'.
Result<KubeApiEndpoint> parse_kube_api_url(std::string_view url);

struct PodWatchConfig {
  KubeApiEndpoint endpoint;
  std::string token_file = kServiceAccountToken;
  std::string ca_file = kServiceAccountCa;
  std::string node;
  std::chrono::milliseconds first_backoff{200};
  std::chrono::milliseconds most_backoff{30000};
  std::size_t max_line_bytes = 1u << 20;   // one watch event; a longer one is dropped
  // One list's answer: room for about a hundred pods at the API server's 1.5 MiB object limit,
  // parsed trimmed (parse_trimmed), within the DaemonSet's 512Mi.
  std::size_t max_list_bytes = 192u << 20;
  std::size_t max_pods = 4096;             // kubelets run at most a few hundred pods per node
  int watch_timeout_s = 300;               // the server ends each watch after this; it is resumed
};

class PodWatch {
 public:
  using Log = std::function<void(std::string_view)>;
  // Starts the thread; the first list follows at once (cache().listed() once it has an answer).
  PodWatch(PodWatchConfig config, Log log);
  ~PodWatch();  // stops the thread, cutting a request in flight
  PodWatch(const PodWatch&) = delete;
  PodWatch& operator=(const PodWatch&) = delete;

  PodCache& cache() { return cache_; }
  const PodCache& cache() const { return cache_; }

 private:
  enum class Outcome { kResume, kRelist, kFailed, kStopped };
  class Connection;
  void run();
  Outcome list(Connection& connection);
  Outcome watch(Connection& connection);
  // Puts the service account's token on `connection`, read again before each request (projected
  // tokens rotate); false, logged after `failure`, when the file cannot be read.
  bool authorize(Connection& connection, std::string_view failure);
  // Applies one line of the watch's stream.
  Outcome apply_event(std::string_view line);
  void backoff_wait();
  // Logs `line` when it differs from the last state logged (a watch failing in a loop logs once).
  void log_state(const std::string& line);

  const PodWatchConfig config_;
  const Log log_;
  PodCache cache_;
  std::string resource_version_;
  std::chrono::milliseconds backoff_{0};
  std::string last_state_;
  std::atomic<bool> stopping_{false};
  std::mutex stop_mutex_;
  std::condition_variable stop_wake_;
  Connection* in_flight_ = nullptr;  // under stop_mutex_
  std::thread thread_;
};

}  // namespace gpushare::agent
