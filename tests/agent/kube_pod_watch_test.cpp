// The agent's pod watch against a local HTTPS server that answers like the API server: list and
// watch reflected in the cache, a relist on 410 Gone, the server going away and coming back, a
// wrong token, an oversized event. Every wait is on the cache's or the server's changes.
#include <gtest/gtest.h>

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
