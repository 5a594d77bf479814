// A stand-in for the Kubernetes API server, for the agent's pod watch: HTTPS with a throwaway CA
// (made by the openssl command line), GET /api/v1/pods for one node's fieldSelector and one bearer
// token, answered with a list, or with a chunked watch that the test feeds line by line.
#pragma once

#include <httplib.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace gpushare::agent::testing {

// A CA and a server certificate for 127.0.0.1 in a fresh folder (removed with it).
class ThrowawayCertificates {
 public:
  ThrowawayCertificates() {
    std::string pattern = std::filesystem::temp_directory_path() / "gpushare-kube-ca-XXXXXX";
    folder_ = ::mkdtemp(pattern.data()) != nullptr ? pattern : "";
    if (folder_.empty()) return;
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script = "cd '" + folder_ + "' && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && " +
                               "openssl req -x509 " + ec + " -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca && " +
                               "openssl req " + ec + " -keyout server.key -out server.csr -subj /CN=127.0.0.1 && " +
                               "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
                               "-out server.crt -days 2 -extfile san.ext";
    made_ = std::system(("(" + script + ") >/dev/null 2>&1").c_str()) == 0;
  }
  ~ThrowawayCertificates() {
    std::error_code ignored;
    if (!folder_.empty()) std::filesystem::remove_all(folder_, ignored);
  }
  bool made() const { return made_; }
  std::string path(const std::string& name) const { return folder_ + "/" + name; }

 private:
  std::string folder_;
  bool made_ = false;
};

class FakeKubeApi {
 public:
  FakeKubeApi(const ThrowawayCertificates& certificates, std::string node, std::string token)
      : certificates_(certificates), node_(std::move(node)), token_(std::move(token)) {}
  ~FakeKubeApi() { stop(); }

  // Serves on `port` (0: any free one); false when it cannot bind.
  bool start(int port = 0) {
    server_ = std::make_unique<httplib::SSLServer>(certificates_.path("server.crt").c_str(),
                                                   certificates_.path("server.key").c_str());
    if (!server_->is_valid()) return false;
    server_->Get("/api/v1/pods",
                 [this](const httplib::Request& request, httplib::Response& response) { serve(request, response); });
    {
      std::lock_guard lock(mutex_);
      closing_ = false;
    }
    port_ = port == 0 ? server_->bind_to_any_port("127.0.0.1") : (server_->bind_to_port("127.0.0.1", port) ? port : -1);
    if (port_ <= 0) return false;
    thread_ = std::thread([this] { server_->listen_after_bind(); });
    return true;
  }
  // Cuts every connection: watches in flight end without their last chunk.
  void stop() {
    if (!server_) return;
    {
      std::lock_guard lock(mutex_);
      closing_ = true;
    }
    changed_.notify_all();
    server_->stop();
    if (thread_.joinable()) thread_.join();
    server_.reset();
  }
  int port() const { return port_; }
  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }

  // What the next lists answer, at resourceVersion `version`.
  void set_pods(std::vector<nlohmann::json> pods, std::string version) {
    std::lock_guard lock(mutex_);
    pods_ = std::move(pods);
    list_version_ = std::move(version);
  }
  // Watches from now on are answered 410 Gone (too old a resourceVersion) while `gone`.
  void set_gone(bool gone) {
    std::lock_guard lock(mutex_);
    gone_ = gone;
  }
  // One line to every watch in flight (and to the next ones, if none is).
  void send(const std::string& line) {
    {
      std::lock_guard lock(mutex_);
      lines_.push_back(line + "\n");
    }
    changed_.notify_all();
  }
  void send_event(const std::string& type, const nlohmann::json& object) {
    send(nlohmann::json{{"type", type}, {"object", object}}.dump());
  }
  // The watches in flight end, as when their timeoutSeconds passes.
  void end_watches() {
    {
      std::lock_guard lock(mutex_);
      ++watch_generation_;
    }
    changed_.notify_all();
  }

  struct Counts {
    int lists = 0, watches = 0, unauthorized = 0, bad_selector = 0;
    std::string last_watch_version;
  };
  Counts counts() const {
    std::lock_guard lock(mutex_);
    return counts_;
  }
  // Waits (on the server's own changes) until `done` holds for the counts.
  bool wait_for(const std::function<bool(const Counts&)>& done, std::chrono::seconds limit = std::chrono::seconds(20)) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, limit, [&] { return done(counts_); });
  }

 private:
  static std::string status_body(int code, const std::string& reason, const std::string& message) {
    return nlohmann::json{{"kind", "Status"},   {"apiVersion", "v1"}, {"status", "Failure"},
                          {"message", message}, {"reason", reason},   {"code", code}}
        .dump();
  }

  void serve(const httplib::Request& request, httplib::Response& response) {
    std::unique_lock lock(mutex_);
    if (request.get_header_value("Authorization") != "Bearer " + token_) {
      ++counts_.unauthorized;
      changed_.notify_all();
      response.status = 401;
      response.set_content(status_body(401, "Unauthorized", "Unauthorized"), "application/json");
      return;
    }
    if (request.get_param_value("fieldSelector") != "spec.nodeName=" + node_) {
      ++counts_.bad_selector;
      changed_.notify_all();
      response.status = 400;
      response.set_content(status_body(400, "BadRequest", "wrong fieldSelector"), "application/json");
      return;
    }
    if (request.get_param_value("watch") != "1") {
      ++counts_.lists;
      changed_.notify_all();
      nlohmann::json list = {{"kind", "PodList"},
                             {"apiVersion", "v1"},
                             {"metadata", {{"resourceVersion", list_version_}}},
                             {"items", pods_}};
      response.set_content(list.dump(), "application/json");
      return;
    }
    ++counts_.watches;
    counts_.last_watch_version = request.get_param_value("resourceVersion");
    changed_.notify_all();
    if (gone_) {
      response.status = 410;
      response.set_content(status_body(410, "Expired", "too old resource version"), "application/json");
      return;
    }
    const int generation = watch_generation_;
    response.set_chunked_content_provider("application/json", [this, generation](std::size_t, httplib::DataSink& sink) {
      std::unique_lock wait_lock(mutex_);
      changed_.wait(wait_lock, [&] { return closing_ || watch_generation_ != generation || !lines_.empty(); });
      if (closing_) return false;
      while (!lines_.empty()) {
        const std::string line = std::move(lines_.front());
        lines_.pop_front();
        if (!sink.write(line.data(), line.size())) return false;
      }
      if (watch_generation_ != generation) sink.done();
      return true;
    });
  }

  const ThrowawayCertificates& certificates_;
  const std::string node_, token_;
  std::unique_ptr<httplib::SSLServer> server_;
  std::thread thread_;
  int port_ = -1;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<nlohmann::json> pods_;
  std::string list_version_ = "1";
  std::deque<std::string> lines_;
  int watch_generation_ = 0;
  bool gone_ = false;
  bool closing_ = false;
  Counts counts_;
};

// A pod object as the API server writes it (the parts the agent reads and some it does not).
inline nlohmann::json make_pod(const std::string& uid, const std::string& namespace_name, const std::string& name,
                               nlohmann::json annotations = nlohmann::json::object(),
                               const std::string& version = "1") {
  return {{"kind", "Pod"},
          {"metadata",
           {{"uid", uid},
            {"namespace", namespace_name},
            {"name", name},
            {"resourceVersion", version},
            {"labels", {{"app", name}}},
            {"annotations", std::move(annotations)}}},
          {"spec", {{"nodeName", "node-a"}, {"containers", {{{"name", "main"}, {"image", "cuda"}}}}}},
          {"status", {{"phase", "Running"}}}};
}

}  // namespace gpushare::agent::testing
