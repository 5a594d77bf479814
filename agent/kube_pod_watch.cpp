// The pod watch's thread and its HTTPS requests (kube_pod_watch.hpp).
#include "kube_pod_watch.hpp"

#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace gpushare::agent {
namespace {

using nlohmann::json;

constexpr std::size_t kMostErrorBody = 4096;

// A query parameter's value, percent-encoded but for the unreserved characters.
std::string encode_query_value(std::string_view value) {
  std::string encoded;
  for (const unsigned char c : value) {
    if (std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_' || c == '~') {
      encoded += static_cast<char>(c);
    } else {
      encoded += fmt::format("%{:02X}", c);
    }
  }
  return encoded;
}

Result<std::string> read_token(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error{fmt::format("the token file {} cannot be read", path)};
  std::ostringstream text;
  text << in.rdbuf();
  std::string token = text.str();
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back())) != 0) token.pop_back();
  if (token.empty()) return Error{fmt::format("the token file {} is empty", path)};
  return token;
}

// The reason an answer that is not 200 gives: the Status object's message when it is one.
std::string refusal(int status, const std::string& body) {
  const json parsed = json::parse(body, nullptr, false);
  if (parsed.is_object() && parsed.contains("message") && parsed["message"].is_string()) {
    return fmt::format("HTTP {}: {}", status, parsed["message"].get<std::string>());
  }
  return fmt::format("HTTP {}", status);
}

std::string resource_version_of(const json& object) {
  if (!object.is_object() || !object.contains("metadata")) return {};
  const json& metadata = object["metadata"];
  if (!metadata.is_object() || !metadata.contains("resourceVersion") || !metadata["resourceVersion"].is_string()) {
    return {};
  }
  return metadata["resourceVersion"].get<std::string>();
}

}  // namespace

Result<KubeApiEndpoint> parse_kube_api_url(std::string_view url) {
  constexpr std::string_view kScheme = "https://";
  if (url.substr(0, kScheme.size()) != kScheme) return Error{fmt::format("{}: not an https:// address", url)};
  std::string_view rest = url.substr(kScheme.size());
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  KubeApiEndpoint endpoint;
  std::string_view port;
  if (!rest.empty() && rest.front() == '[') {
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos) return Error{fmt::format("{}: no ']' after the IPv6 address", url)};
    endpoint.host = std::string(rest.substr(1, close - 1));
    rest.remove_prefix(close + 1);
    if (!rest.empty() && rest.front() != ':')
      return Error{fmt::format("{}: nothing may follow the host but :PORT", url)};
    if (!rest.empty()) port = rest.substr(1);
  } else {
    const std::size_t colon = rest.find(':');
    endpoint.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) port = rest.substr(colon + 1);
  }
  if (endpoint.host.empty() || endpoint.host.find_first_of("/?#@ ") != std::string::npos) {
    return Error{fmt::format("{}: no host, or more than HOST:PORT", url)};
  }
  if (port.data() != nullptr) {
    const auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), endpoint.port);
    if (port.empty() || error != std::errc{} || end != port.data() + port.size() || endpoint.port < 1 ||
        endpoint.port > 65535) {
      return Error{fmt::format("{}: the port is not 1-65535", url)};
    }
  }
  return endpoint;
}

// One HTTPS client; cut by the destructor of PodWatch while a request is in flight.
class PodWatch::Connection {
 public:
  explicit Connection(const PodWatchConfig& config) : client(config.endpoint.host, config.endpoint.port) {
    client.set_ca_cert_path(config.ca_file.c_str());
    client.enable_server_certificate_verification(true);
    client.set_connection_timeout(std::chrono::seconds(5));
    // A quiet watch sends nothing until the server ends it (timeoutSeconds): wait a little longer.
    client.set_read_timeout(std::chrono::seconds(config.watch_timeout_s + 30));
  }
  httplib::SSLClient client;
};

PodWatch::PodWatch(PodWatchConfig config, Log log)
    : config_(std::move(config)), log_(std::move(log)), cache_(config_.max_pods), thread_([this] { run(); }) {}

PodWatch::~PodWatch() {
  {
    std::lock_guard lock(stop_mutex_);
    stopping_ = true;
    if (in_flight_ != nullptr) in_flight_->client.stop();
  }
  stop_wake_.notify_all();
  thread_.join();
}

void PodWatch::run() {
  bool need_list = true;
  while (!stopping_) {
    Connection connection(config_);
    {
      std::lock_guard lock(stop_mutex_);
      if (stopping_) break;
      in_flight_ = &connection;
    }
    const auto began = std::chrono::steady_clock::now();
    const bool watching = !need_list;
    const Outcome outcome = need_list ? list(connection) : watch(connection);
    {
      std::lock_guard lock(stop_mutex_);
      in_flight_ = nullptr;
    }
    switch (outcome) {
      case Outcome::kStopped:
        return;
      case Outcome::kResume:
        // A server that ends each watch at once is not asked again in a busy loop.
        if (watching && std::chrono::steady_clock::now() - began < std::chrono::seconds(1)) backoff_wait();
        need_list = false;
        break;
      case Outcome::kRelist:
        need_list = true;
        break;
      case Outcome::kFailed:
        need_list = true;
        backoff_wait();
        break;
    }
  }
}

bool PodWatch::authorize(Connection& connection, std::string_view failure) {
  auto token = read_token(config_.token_file);
  if (!token) {
    log_state(fmt::format("{}: {}", failure, token.error().message));
    return false;
  }
  connection.client.set_bearer_token_auth(token.value().c_str());
  return true;
}

PodWatch::Outcome PodWatch::list(Connection& connection) {
  if (!authorize(connection, "pod list failed")) return Outcome::kFailed;
  const std::string path =
      fmt::format("/api/v1/pods?fieldSelector={}", encode_query_value("spec.nodeName=" + config_.node));
  std::string body;
  bool too_long = false;
  auto answer = connection.client.Get(path, httplib::Headers{{"Accept", "application/json"}},
                                      [&](const char* data, std::size_t length) {
                                        if (body.size() + length > config_.max_list_bytes) {
                                          too_long = true;
                                          return false;
                                        }
                                        body.append(data, length);
                                        return !stopping_;
                                      });
  if (stopping_) return Outcome::kStopped;
  if (too_long) {
    log_state(fmt::format("pod list failed: the answer is over {} bytes", config_.max_list_bytes));
    return Outcome::kFailed;
  }
  if (!answer) {
    log_state(fmt::format("pod list failed: {}", httplib::to_string(answer.error())));
    return Outcome::kFailed;
  }
  if (answer->status != 200) {
    log_state(fmt::format("pod list failed: {}", refusal(answer->status, body.substr(0, kMostErrorBody))));
    return Outcome::kFailed;
  }
  const json parsed = parse_trimmed(body, PodsIn::kPodList);
  body = std::string();  // the text's memory back before the pods are trimmed again
  if (!parsed.is_object() || !parsed.contains("items") || !parsed["items"].is_array()) {
    log_state("pod list failed: the answer is not a PodList");
    return Outcome::kFailed;
  }
  std::vector<json> pods;
  for (const json& item : parsed["items"]) {
    json trimmed = trim_pod(item);
    if (!trimmed.is_null()) pods.push_back(std::move(trimmed));
  }
  const std::size_t listed = pods.size();
  const std::size_t dropped = cache_.replace_all(std::move(pods));
  resource_version_ = resource_version_of(parsed);
  backoff_ = std::chrono::milliseconds(0);
  last_state_.clear();
  log_(fmt::format(
      "pod watch: listed {} pods of node {}{}", listed, config_.node,
      dropped > 0 ? fmt::format(" ({} over the cache's bound of {} dropped)", dropped, config_.max_pods) : ""));
  return Outcome::kResume;
}

PodWatch::Outcome PodWatch::watch(Connection& connection) {
  if (!authorize(connection, "pod watch lost")) return Outcome::kFailed;
  const std::string path =
      fmt::format("/api/v1/pods?fieldSelector={}&watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds={}",
                  encode_query_value("spec.nodeName=" + config_.node), encode_query_value(resource_version_),
                  config_.watch_timeout_s);
  int status = 0;
  std::string pending;    // the start of a line not ended yet, or an error's body
  bool skipping = false;  // inside a line over the bound
  Outcome ended = Outcome::kResume;
  auto answer = connection.client.Get(
      path, httplib::Headers{{"Accept", "application/json"}},
      [&](const httplib::Response& response) {
        status = response.status;
        return true;
      },
      [&](const char* data, std::size_t length) {
        if (stopping_) return false;
        if (status != 200) {
          pending.append(data, std::min(length, kMostErrorBody - std::min(kMostErrorBody, pending.size())));
          return true;
        }
        for (std::string_view chunk(data, length); !chunk.empty();) {
          const std::size_t newline = chunk.find('\n');
          const std::string_view piece = chunk.substr(0, newline);
          if (!skipping) pending.append(piece);
          if (!skipping && pending.size() > config_.max_line_bytes) {
            log_(fmt::format("pod watch: an event over {} bytes was dropped", config_.max_line_bytes));
            skipping = true;
            pending.clear();
          }
          if (newline == std::string_view::npos) break;
          if (!skipping && !pending.empty()) ended = apply_event(pending);
          skipping = false;
          pending.clear();
          if (ended != Outcome::kResume) return false;
          chunk.remove_prefix(newline + 1);
        }
        return true;
      });
  if (stopping_) return Outcome::kStopped;
  if (ended != Outcome::kResume) return ended;
  if (status == 410) {
    log_state("pod watch lost: its resourceVersion is gone (410); relisting");
    return Outcome::kRelist;
  }
  if (status != 0 && status != 200) {
    log_state(fmt::format("pod watch lost: {}", refusal(status, pending)));
    return Outcome::kFailed;
  }
  if (!answer) {
    log_state(fmt::format("pod watch lost: {}", httplib::to_string(answer.error())));
    return Outcome::kFailed;
  }
  return Outcome::kResume;  // the server ended the watch (timeoutSeconds): resume from the last version
}

PodWatch::Outcome PodWatch::apply_event(std::string_view line) {
  const json event = parse_trimmed(line, PodsIn::kWatchEvent);
  if (!event.is_object() || !event.contains("type") || !event["type"].is_string() || !event.contains("object")) {
    log_("pod watch: a malformed event was dropped");
    return Outcome::kResume;
  }
  const std::string type = event["type"].get<std::string>();
  const json& object = event["object"];
  if (type == "ERROR") {
    const int code = object.is_object() && object.contains("code") && object["code"].is_number_integer()
                         ? object["code"].get<int>()
                         : 0;
    const std::string message = object.is_object() ? object.value("message", std::string()) : std::string();
    log_state(fmt::format("pod watch lost: error event {}{}; relisting", code, message.empty() ? "" : ": " + message));
    return Outcome::kRelist;
  }
  if (const std::string version = resource_version_of(object); !version.empty()) resource_version_ = version;
  if (type == "BOOKMARK") return Outcome::kResume;
  json trimmed = trim_pod(object);
  if (trimmed.is_null()) {
    log_(fmt::format("pod watch: a {} event without a pod UID was dropped", type));
    return Outcome::kResume;
  }
  if (type == "DELETED") {
    cache_.erase(trimmed["metadata"]["uid"].get<std::string>());
  } else if (type == "ADDED" || type == "MODIFIED") {
    const std::string uid = trimmed["metadata"]["uid"].get<std::string>();
    if (!cache_.upsert(std::move(trimmed))) {
      log_(fmt::format("pod watch: pod {} dropped: the cache holds its bound of {} pods", uid, config_.max_pods));
    }
  }
  return Outcome::kResume;
}

void PodWatch::backoff_wait() {
  backoff_ = std::clamp(backoff_ * 2, config_.first_backoff, config_.most_backoff);
  std::unique_lock lock(stop_mutex_);
  stop_wake_.wait_for(lock, backoff_, [&] { return stopping_.load(); });
}

void PodWatch::log_state(const std::string& line) {
  if (line == last_state_) return;
  last_state_ = line;
  log_(line);
}

}  // namespace gpushare::agent
