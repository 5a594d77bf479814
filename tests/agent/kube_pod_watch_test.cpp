// The agent's pod watch against a local HTTPS server that answers like the API server: list and
// watch reflected in the cache, a relist on 410 Gone, the server going away and coming back, a
// wrong token, an oversized event. Every wait is on the cache's or the server's changes.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "fake_kube_api.hpp"
#include "kube_pod_watch.hpp"

namespace gpushare::agent {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::FakeKubeApi;
using testing::make_pod;

const std::string kUidA = "aaaaaaaa-0000-4000-8000-000000000001";
const std::string kUidB = "bbbbbbbb-0000-4000-8000-000000000002";
const std::string kUidC = "cccccccc-0000-4000-8000-000000000003";
constexpr auto kLimit = 20s;

class Logs {
 public:
  PodWatch::Log sink() {
    return [this](std::string_view line) {
      std::lock_guard lock(mutex_);
      lines_.emplace_back(line);
    };
  }
  int count(const std::string& part) const {
    std::lock_guard lock(mutex_);
    int found = 0;
    for (const auto& line : lines_) found += line.find(part) != std::string::npos ? 1 : 0;
    return found;
  }
  std::string all() const {
    std::lock_guard lock(mutex_);
    std::string text;
    for (const auto& line : lines_) text += line + "\n";
    return text;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> lines_;
};

class PodWatchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { certificates_ = new testing::ThrowawayCertificates(); }
  static void TearDownTestSuite() {
    delete certificates_;
    certificates_ = nullptr;
  }

  void SetUp() override {
    if (!certificates_->made()) GTEST_SKIP() << "the openssl command cannot make certificates here";
    server_ = std::make_unique<FakeKubeApi>(*certificates_, "node-a", "the-token");
    token_file_ =
        certificates_->path("token-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    write_token("the-token\n");
  }
  void TearDown() override {
    watch_.reset();
    server_.reset();
  }

  void write_token(const std::string& token) { std::ofstream(token_file_) << token; }

  void start_watch(std::size_t max_line_bytes = 1u << 20) {
    ASSERT_TRUE(server_->port() > 0 || server_->start());
    auto endpoint = parse_kube_api_url(server_->url());
    ASSERT_TRUE(endpoint.ok());
    PodWatchConfig config;
    config.endpoint = endpoint.value();
    config.token_file = token_file_;
    config.ca_file = certificates_->path("ca.crt");
    config.node = "node-a";
    config.first_backoff = 20ms;
    config.most_backoff = 200ms;
    config.max_line_bytes = max_line_bytes;
    watch_ = std::make_unique<PodWatch>(config, logs_.sink());
  }

  bool wait_cache(const std::function<bool(const PodCache&)>& done) {
    return watch_->cache().wait_until(done, std::chrono::duration_cast<std::chrono::milliseconds>(kLimit));
  }
  bool wait_watching(int watches) {
    return server_->wait_for([&](const FakeKubeApi::Counts& counts) { return counts.watches >= watches; });
  }
  static bool has(const PodCache& cache, const std::string& uid) { return cache.find(uid).has_value(); }

  static testing::ThrowawayCertificates* certificates_;
  std::unique_ptr<FakeKubeApi> server_;
  std::unique_ptr<PodWatch> watch_;
  std::string token_file_;
  Logs logs_;
};

testing::ThrowawayCertificates* PodWatchTest::certificates_ = nullptr;

TEST_F(PodWatchTest, ListThenWatchReflectsAddedModifiedDeleted) {
  server_->set_pods({make_pod(kUidA, "team-a", "train", {{"gpushare.io/memory", "8Gi"}})}, "100");
  start_watch();
  ASSERT_TRUE(wait_cache([](const PodCache& cache) { return cache.listed() && has(cache, kUidA); })) << logs_.all();
  const json pod_a = *watch_->cache().find(kUidA);
  EXPECT_EQ(pod_a["metadata"]["namespace"], "team-a");
  EXPECT_EQ(pod_a["metadata"]["annotations"]["gpushare.io/memory"], "8Gi");
  ASSERT_TRUE(wait_watching(1));
  EXPECT_EQ(server_->counts().last_watch_version, "100");  // the watch starts where the list ended

  server_->send_event("ADDED", make_pod(kUidB, "team-b", "infer", {}, "101"));
  ASSERT_TRUE(wait_cache([](const PodCache& cache) { return has(cache, kUidB); }));
  EXPECT_TRUE(watch_->cache().take_changed_requests().empty());

  server_->send_event("MODIFIED", make_pod(kUidB, "team-b", "infer", {{"gpushare.io/share", "30"}}, "102"));
  ASSERT_TRUE(wait_cache([](const PodCache& cache) {
    const auto pod = cache.find(kUidB);
    return pod && (*pod)["metadata"]["annotations"].contains("gpushare.io/share");
  }));
  EXPECT_EQ(watch_->cache().take_changed_requests(), std::set<std::string>{kUidB});

  // A pod deleted mid-watch leaves the cache; the next watch resumes after its event.
  server_->send_event("DELETED", make_pod(kUidA, "team-a", "train", {}, "103"));
  ASSERT_TRUE(wait_cache([](const PodCache& cache) { return !has(cache, kUidA); }));
  EXPECT_EQ(watch_->cache().size(), 1u);
  server_->send_event("BOOKMARK", {{"kind", "Pod"}, {"metadata", {{"resourceVersion", "107"}}}});
  server_->end_watches();
  ASSERT_TRUE(wait_watching(2));
  const auto counts = server_->counts();
  EXPECT_EQ(counts.last_watch_version, "107");
  EXPECT_EQ(counts.lists, 1);
  EXPECT_EQ(counts.bad_selector, 0);
  EXPECT_EQ(counts.unauthorized, 0);
  EXPECT_EQ(logs_.count("listed 1 pods of node node-a"), 1) << logs_.all();
}

TEST_F(PodWatchTest, GoneRelists) {
  server_->set_pods({make_pod(kUidA, "ns", "a")}, "10");
  start_watch();
  ASSERT_TRUE(wait_watching(1));
  // 410 as the watch's answer: a new list replaces the cache.
  server_->set_pods({make_pod(kUidB, "ns", "b")}, "20");
  server_->set_gone(true);
  server_->end_watches();
  ASSERT_TRUE(server_->wait_for([](const FakeKubeApi::Counts& counts) { return counts.watches >= 2; }));
  server_->set_gone(false);
  ASSERT_TRUE(wait_cache([](const PodCache& cache) { return has(cache, kUidB) && !has(cache, kUidA); })) << logs_.all();
  ASSERT_TRUE(server_->wait_for([](const FakeKubeApi::Counts& counts) { return counts.lists == 2; }));
  // 410 as an ERROR event inside the stream: the same.
  ASSERT_TRUE(wait_watching(3));
  server_->set_pods({make_pod(kUidC, "ns", "c")}, "30");
  server_->send_event("ERROR", {{"kind", "Status"}, {"code", 410}, {"message", "too old resource version"}});
  ASSERT_TRUE(wait_cache([](const PodCache& cache) { return has(cache, kUidC) && !has(cache, kUidB); }));
  EXPECT_EQ(server_->counts().lists, 3);
  EXPECT_GE(logs_.count("410"), 2) << logs_.all();
}

TEST_F(PodWatchTest, ServerGoingAwayAndComingBack) {
  server_->set_pods({make_pod(kUidA, "ns", "a")}, "10");
  start_watch();
  ASSERT_TRUE(wait_watching(1));
  const int port = server_->port();
  server_->stop();
  const int watches_before = server_->counts().watches;
  // While it is away, the pods it knew stay known.
  EXPECT_TRUE(has(watch_->cache(), kUidA));
  server_->set_pods({make_pod(kUidB, "ns", "b")}, "50");
  const std::uint64_t before = watch_->cache().version();
  ASSERT_TRUE(server_->start(port));
  ASSERT_TRUE(wait_cache([&](const PodCache& cache) {
    return cache.version() > before && has(cache, kUidB) && !has(cache, kUidA);
  })) << logs_.all();
  ASSERT_TRUE(wait_watching(watches_before + 1));
  EXPECT_EQ(server_->counts().last_watch_version, "50");
  EXPECT_GE(logs_.count("pod watch lost"), 1) << logs_.all();
  EXPECT_EQ(logs_.count("listed 1 pods"), 2) << logs_.all();
}

TEST_F(PodWatchTest, WrongTokenIsLoggedOnceAndRetriedUntilTheFileChanges) {
  write_token("stale-token\n");
  server_->set_pods({make_pod(kUidA, "ns", "a")}, "10");
  start_watch();
  ASSERT_TRUE(server_->wait_for([](const FakeKubeApi::Counts& counts) { return counts.unauthorized >= 3; }));
  EXPECT_FALSE(watch_->cache().listed());
  EXPECT_EQ(logs_.count("pod list failed: HTTP 401: Unauthorized"), 1) << logs_.all();
  // A rotated token is read on the next try.
  write_token("the-token");
  ASSERT_TRUE(wait_cache([](const PodCache& cache) { return cache.listed() && has(cache, kUidA); })) << logs_.all();
}

TEST_F(PodWatchTest, OversizedEventIsDroppedAndTheStreamGoesOn) {
  server_->set_pods({}, "10");
  start_watch(4096);
  ASSERT_TRUE(wait_watching(1));
  server_->send_event("ADDED", make_pod(kUidA, "ns", "huge", {{"gpushare.io/memory", std::string(10000, '9')}}, "11"));
  server_->send("{not json");
  server_->send_event("ADDED", make_pod(kUidB, "ns", "small", {}, "12"));
  ASSERT_TRUE(wait_cache([](const PodCache& cache) { return has(cache, kUidB); })) << logs_.all();
  EXPECT_FALSE(has(watch_->cache(), kUidA));
  EXPECT_EQ(logs_.count("an event over 4096 bytes was dropped"), 1) << logs_.all();
  EXPECT_EQ(logs_.count("a malformed event was dropped"), 1) << logs_.all();
  EXPECT_EQ(server_->counts().watches, 1);
}

TEST(KubeApiUrlTest, Forms) {
  auto plain = parse_kube_api_url("https://10.96.0.1:6443");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->host, "10.96.0.1");
  EXPECT_EQ(plain->port, 6443);
  auto default_port = parse_kube_api_url("https://kubernetes.default.svc/");
  ASSERT_TRUE(default_port.ok());
  EXPECT_EQ(default_port->port, 443);
  auto v6 = parse_kube_api_url("https://[fd00::1]:443");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "fd00::1");
  for (const char* bad : {"http://10.0.0.1", "https://", "https://host:0", "https://host:99999", "https://host:x",
                          "https://host/api", "https://[::1", "https://user@host"}) {
    EXPECT_FALSE(parse_kube_api_url(bad).ok()) << bad;
  }
}

TEST(PodCacheTest, TrimKeepsWhatTheAgentReads) {
  json pod = make_pod(kUidA, "ns", "a",
                      {{"gpushare.io/memory", "1Gi"},
                       {"gpu-fraction", "0.5"},
                       {"kai.scheduler/gpu-memory", "2000"},
                       {"kubectl.kubernetes.io/last-applied-configuration", std::string(1000, 'x')}});
  pod["spec"]["containers"][0]["env"] = {{{"name", "GPU_PORTION"}, {"value", "0.25"}},
                                         {{"name", "SECRET"}, {"value", "hidden"}},
                                         {{"name", "NVIDIA_GPU_MEMORY_LIMIT"}, {"valueFrom", {{"x", 1}}}}};
  pod["status"]["containerStatuses"] = {{{"name", "main"}, {"containerID", "containerd://" + std::string(64, 'e')}}};
  const json trimmed = trim_pod(pod);
  EXPECT_EQ(trimmed["metadata"]["annotations"].size(), 3u);
  EXPECT_FALSE(trimmed["metadata"]["annotations"].contains("kubectl.kubernetes.io/last-applied-configuration"));
  EXPECT_EQ(trimmed["spec"]["containers"][0]["env"], json::parse(R"([{"name":"GPU_PORTION","value":"0.25"}])"));
  EXPECT_EQ(container_name_of(trimmed, std::string(64, 'e')), "main");
  EXPECT_EQ(container_name_of(trimmed, std::string(64, 'f')), "");
  EXPECT_TRUE(trim_pod(json::parse(R"({"metadata":{"uid":7}})")).is_null());
  EXPECT_TRUE(trim_pod(json::array()).is_null());
}

// A watch line under the bound whose annotation value nests deeply: trim_pod must not copy (or
// compare) that value recursively, nor may parsing keep it. Run in a child so that a stack
// overflow fails this test only.
TEST(PodCacheTest, DeeplyNestedAnnotationIsDroppedWithoutRecursion) {
  const std::size_t depth = (1u << 20) / 2 - 200;
  const std::string line = R"({"type":"ADDED","object":{"metadata":{"uid":"u","annotations":{"gpushare.io/x":)" +
                           std::string(depth, '[') + std::string(depth, ']') + R"(,"gpushare.io/y":"kept"}}}})";
  const PodWatchConfig config;
  ASSERT_LT(line.size(), config.max_line_bytes);
  EXPECT_EXIT(
      {
        const json event = json::parse(line, nullptr, false);
        const json trimmed = trim_pod(event["object"]);
        const bool dropped = !trimmed.is_null() && !trimmed["metadata"]["annotations"].contains("gpushare.io/x") &&
                             trimmed["metadata"]["annotations"].value("gpushare.io/y", "") == "kept";
        const json parsed = parse_trimmed(line, PodsIn::kWatchEvent);
        const json from_parsed = trim_pod(parsed["object"]);
        const bool dropped_in_parse = !from_parsed.is_null() && from_parsed == trimmed;
        std::exit(dropped && dropped_in_parse ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// A pod rich in what the agent does not read: parsing trimmed keeps what trim_pod keeps, and
// little else.
json bulky_pod(const std::string& uid, std::size_t padding_bytes) {
  json pod = make_pod(uid, "ns", "bulky",
                      {{"gpushare.io/memory", "1Gi"},
                       {"gpu-fraction", "0.5"},
                       {"kubectl.kubernetes.io/last-applied-configuration", std::string(padding_bytes / 2, 'x')}});
  json env = json::array();
  for (int i = 0; i < 200; ++i) env.push_back({{"name", "VAR_" + std::to_string(i)}, {"value", std::to_string(i)}});
  env.push_back({{"name", "GPU_PORTION"}, {"value", "0.25"}});
  env.push_back({{"name", "NVIDIA_GPU_MEMORY_LIMIT"}, {"valueFrom", {{"fieldRef", {{"fieldPath", "x"}}}}}});
  // Many small values: what takes the most memory per byte of text once parsed.
  json numbers = json::array();
  for (std::size_t i = 0; i < padding_bytes / 4; ++i) numbers.push_back(1);
  pod["spec"]["containers"][0]["env"] = std::move(env);
  pod["spec"]["containers"][0]["args"] = std::move(numbers);
  pod["spec"]["initContainers"] = {{{"name", "init"}, {"env", {{{"name", "GPU_PORTION"}, {"value", "1"}}}}}};
  pod["status"]["containerStatuses"] = {
      {{"name", "main"}, {"containerID", "containerd://" + std::string(64, 'e')}, {"image", "cuda"}}};
  pod["metadata"]["annotations"]["gpushare.io/not-a-string"] = {{"nested", {1, 2, 3}}};
  pod["metadata"]["managedFields"] = {{{"manager", "kubectl"}, {"fieldsV1", {{"f:spec", json::object()}}}}};
  return pod;
}

TEST(PodCacheTest, ParsingTrimmedKeepsWhatTrimPodReads) {
  const json pod = bulky_pod(kUidA, 4096);
  const json event = {{"type", "MODIFIED"}, {"object", pod}};
  const json parsed = parse_trimmed(event.dump(), PodsIn::kWatchEvent);
  ASSERT_TRUE(parsed.is_object());
  EXPECT_EQ(parsed["type"], "MODIFIED");
  EXPECT_EQ(trim_pod(parsed["object"]), trim_pod(pod));
  EXPECT_EQ(trim_pod(pod)["spec"]["containers"][0]["env"], json::parse(R"([{"name":"GPU_PORTION","value":"0.25"}])"));
  EXPECT_FALSE(trim_pod(pod)["metadata"]["annotations"].contains("gpushare.io/not-a-string"));
  // What the parse dropped as it read: other annotations and env entries, other fields.
  const json& object = parsed["object"];
  EXPECT_FALSE(object["metadata"]["annotations"].contains("kubectl.kubernetes.io/last-applied-configuration"));
  EXPECT_FALSE(object["metadata"].contains("managedFields"));
  EXPECT_FALSE(object["metadata"].contains("labels"));
  EXPECT_FALSE(object["spec"]["containers"][0].contains("args"));
  EXPECT_EQ(object["spec"]["containers"][0]["env"].size(), 1u);
  EXPECT_FALSE(object["status"]["containerStatuses"][0].contains("image"));
  EXPECT_FALSE(object.contains("kind"));

  // An ERROR event's code and message, a list's resourceVersion and items.
  const json error = parse_trimmed(R"({"type":"ERROR","object":{"kind":"Status","code":410,"message":"gone"}})",
                                   PodsIn::kWatchEvent);
  EXPECT_EQ(error["object"]["code"], 410);
  EXPECT_EQ(error["object"]["message"], "gone");
  const json list = {{"kind", "PodList"},
                     {"metadata", {{"resourceVersion", "42"}, {"continue", "x"}}},
                     {"items", {pod, bulky_pod(kUidB, 64), 7}}};
  const json listed = parse_trimmed(list.dump(), PodsIn::kPodList);
  EXPECT_EQ(listed["metadata"], json::parse(R"({"resourceVersion":"42"})"));
  ASSERT_EQ(listed["items"].size(), 2u);
  EXPECT_EQ(trim_pod(listed["items"][0]), trim_pod(pod));
  EXPECT_EQ(trim_pod(listed["items"][1])["metadata"]["uid"], kUidB);
  EXPECT_FALSE(listed.contains("kind"));

  EXPECT_TRUE(parse_trimmed("{\"type\":", PodsIn::kWatchEvent).is_discarded());
  EXPECT_TRUE(parse_trimmed("", PodsIn::kPodList).is_discarded());
}

TEST(PodCacheTest, ParsingKeepsNoDeepNestingAndBoundedArrays) {
  // Nesting past the bound, anywhere, is dropped (and the parse neither recurses nor crashes).
  const std::size_t depth = 200000;
  const json deep = parse_trimmed(R"({"type":"ADDED","object":{"spec":{"containers":[{"name":"c","env":)" +
                                      std::string(depth, '[') + std::string(depth, ']') + "}]}}}",
                                  PodsIn::kWatchEvent);
  ASSERT_TRUE(deep.is_object());
  EXPECT_EQ(deep["object"]["spec"]["containers"][0]["name"], "c");
  // At most kMaxPodArrayElements containers (or env entries) of one pod are kept.
  json many = json::array();
  for (std::size_t i = 0; i < kMaxPodArrayElements + 10; ++i) many.push_back({{"name", "c" + std::to_string(i)}});
  const json event = {{"type", "ADDED"}, {"object", {{"metadata", {{"uid", kUidA}}}, {"spec", {{"containers", many}}}}}};
  const json parsed = parse_trimmed(event.dump(), PodsIn::kWatchEvent);
  EXPECT_EQ(parsed["object"]["spec"]["containers"].size(), kMaxPodArrayElements);
}

// This process's resident memory now and at its peak since the last reset_peak_resident(), from
// /proc/self/status.
std::size_t resident_bytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1)) * 1024;
  }
  return 0;
}
void reset_peak_resident() { std::ofstream("/proc/self/clear_refs") << "5"; }

// A list of a hundred pods at the API server's 1.5 MiB object limit, received in chunks as the
// watch receives it, parsed and trimmed: the whole stays far below the DaemonSet's 512Mi. In a
// child, so that its peak is this run's alone.
TEST(PodCacheTest, AListOfBulkyPodsFitsTheAgentsMemory) {
  constexpr std::size_t kPods = 100;
  constexpr std::size_t kMiB = 1u << 20;
  const PodWatchConfig config;
  EXPECT_EXIT(
      {
        // Each pod: what bulky_pod carries, and small numbers (the most memory per byte once
        // parsed) up to 1.5 MiB.
        std::string pod_text = bulky_pod(kUidA, 64 * 1024).dump();
        std::string numbers = R"({"padding":[1)";
        while (numbers.size() + pod_text.size() < 3 * kMiB / 2) numbers += ",1";
        pod_text = numbers + "]," + pod_text.substr(1);
        numbers = std::string();
        reset_peak_resident();
        const std::size_t before = resident_bytes("VmRSS");
        // As the watch's receiver: appended chunk by chunk into a growing string.
        std::string body = R"({"kind":"PodList","metadata":{"resourceVersion":"9"},"items":[)";
        for (std::size_t i = 0; i < kPods; ++i) {
          if (i > 0) body += ",";
          for (std::size_t at = 0; at < pod_text.size(); at += 16384) body.append(pod_text, at, 16384);
        }
        body += "]}";
        if (body.size() > config.max_list_bytes) std::exit(2);
        const json parsed = parse_trimmed(body, PodsIn::kPodList);
        body = std::string();
        std::vector<json> pods;
        for (const json& item : parsed["items"]) pods.push_back(trim_pod(item));
        const std::size_t peak = resident_bytes("VmHWM");
        std::fprintf(stderr, "list of %zu pods of %zu bytes: peak resident %zu MiB (%zu MiB before receiving)\n",
                     kPods, pod_text.size(), peak / kMiB, before / kMiB);
        std::exit(pods.size() == kPods && peak < 384 * kMiB ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "peak resident");
}

TEST(PodCacheTest, BoundedSize) {
  PodCache cache(2);
  EXPECT_TRUE(cache.upsert(trim_pod(make_pod(kUidA, "ns", "a"))));
  EXPECT_TRUE(cache.upsert(trim_pod(make_pod(kUidB, "ns", "b"))));
  EXPECT_FALSE(cache.upsert(trim_pod(make_pod(kUidC, "ns", "c"))));
  EXPECT_TRUE(cache.upsert(trim_pod(make_pod(kUidB, "ns", "b2"))));  // a known pod is still updated
  EXPECT_EQ(cache.replace_all({trim_pod(make_pod(kUidA, "ns", "a")), trim_pod(make_pod(kUidB, "ns", "b")),
                               trim_pod(make_pod(kUidC, "ns", "c"))}),
            1u);
  EXPECT_EQ(cache.size(), 2u);
}

}  // namespace
}  // namespace gpushare::agent
