// End-to-end: `gpushare webhook` (the dispatch and the real program) over real HTTPS on loopback.
// Each test makes a throwaway CA and serving certificate with the openssl CLI, starts the webhook
// on a free port, waits for /healthz and posts AdmissionReviews with cpp-httplib's SSLClient,
// which verifies the server against that CA. Patches are decoded and applied to the pod to check
// what the pod would become.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "process.hpp"
#include "scratch.hpp"

namespace gpushare::testing {
namespace {

using nlohmann::json;

constexpr auto kPatience = std::chrono::seconds(10);
const std::string kPreload = "/usr/local/gpushare/current/lib/gpushare/libgpushare-preload.so";
const std::string kAgentSocket = "/run/gpushare/agent.sock";

bool wait_until(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::string base64_decode(const std::string& text) {
  std::string bytes(text.size() / 4 * 3, '\0');
  const int size = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(bytes.data()),
                                   reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (size < 0) return {};
  bytes.resize(static_cast<std::size_t>(size));
  // EVP_DecodeBlock counts the padding as zero bytes.
  for (std::size_t pad = text.size(); pad > 0 && text[pad - 1] == '='; --pad) bytes.pop_back();
  return bytes;
}

json container(const std::string& name, json extra = json::object()) {
  json result = {{"name", name}, {"image", "python:3.12"}};
  result.update(extra);
  return result;
}

json pod(const json& annotations, json spec = {{"containers", {container("train")}}}) {
  json metadata = {{"name", "p"}, {"namespace", "ml"}};
  if (!annotations.is_null()) metadata["annotations"] = annotations;
  return {{"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", metadata}, {"spec", std::move(spec)}};
}

json review_of(const json& object, const std::string& operation = "CREATE",
               const json& kind = {{"group", ""}, {"version", "v1"}, {"kind", "Pod"}}) {
  return {{"apiVersion", "admission.k8s.io/v1"},
          {"kind", "AdmissionReview"},
          {"request",
           {{"uid", "705ab4f5-6393-11e8-b7cc-42010a800002"},
            {"kind", kind},
            {"resource", {{"group", ""}, {"version", "v1"}, {"resource", "pods"}}},
            {"operation", operation},
            {"namespace", "ml"},
            {"object", object}}}};
}

std::string env_value(const json& each, const std::string& name) {
  for (const json& variable : each.value("env", json::array())) {
    if (variable.at("name") == name) return variable.value("value", "");
  }
  return "";
}

class WebhookTest : public ScratchTest {
 protected:
  WebhookTest() {
    make_ca("ca");
    make_serving_certificate("ca", "tls");
  }
  ~WebhookTest() override {
    if (webhook_) webhook_->kill(SIGKILL);
  }

  void openssl(const std::vector<std::string>& args) {
    std::vector<std::string> argv{"openssl"};
    argv.insert(argv.end(), args.begin(), args.end());
    const ProcessResult result = run(argv, {});
    ASSERT_EQ(result.exit_code, 0) << "openssl " << args.front() << ": " << result.err;
  }
  // NAME.crt and NAME.key: a self-signed CA.
  void make_ca(const std::string& name) {
    openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             path(name + ".key"), "-out", path(name + ".crt"), "-days", "1", "-subj", "/CN=" + name + " test CA"});
  }
  // NAME.crt and NAME.key for 127.0.0.1, signed by CA.
  void make_serving_certificate(const std::string& ca, const std::string& name) {
    std::ofstream(path(name + ".ext")) << "subjectAltName=IP:127.0.0.1\n";
    openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             path(name + ".key"), "-out", path(name + ".csr"), "-subj", "/CN=127.0.0.1"});
    openssl({"x509", "-req", "-in", path(name + ".csr"), "-CA", path(ca + ".crt"), "-CAkey", path(ca + ".key"),
             "-CAcreateserial", "-out", path(name + ".crt"), "-days", "1", "-extfile", path(name + ".ext")});
  }

  // `gpushare webhook ARGS` with stdout in a file, read for the announced port.
  void start_webhook(std::vector<std::string> args = {}) {
    const std::string out = path("webhook.out");
    std::vector<std::string> argv{"/bin/sh",
                                  "-c",
                                  R"(out=$1; shift; exec "$@" >"$out")",
                                  "sh",
                                  out,
                                  GPUSHARE_TEST_TOOL,
                                  "webhook",
                                  "--listen",
                                  "127.0.0.1:0",
                                  "--tls-cert",
                                  path("tls.crt"),
                                  "--tls-key",
                                  path("tls.key")};
    argv.insert(argv.end(), args.begin(), args.end());
    webhook_ = std::make_unique<Process>(argv, Env{});
    std::string first_line;
    ASSERT_TRUE(wait_until([&] {
      std::ifstream file(out);
      return std::getline(file, first_line) && !file.eof();
    })) << "no address on the webhook's first line";
    std::smatch match;
    ASSERT_TRUE(std::regex_match(first_line, match, std::regex(R"(listening on https://127\.0\.0\.1:([0-9]+))")))
        << first_line;
    port_ = std::stoi(match[1]);
    ASSERT_TRUE(wait_until([&] { return healthy("ca"); })) << "/healthz never answered";
  }

  std::unique_ptr<httplib::SSLClient> client(const std::string& ca) const {
    auto result = std::make_unique<httplib::SSLClient>("127.0.0.1", port_);
    result->set_ca_cert_path(path(ca + ".crt").c_str());
    result->enable_server_certificate_verification(true);
    result->set_connection_timeout(5, 0);
    return result;
  }
  // A new connection that trusts only `ca` gets "ok" from /healthz.
  bool healthy(const std::string& ca) const {
    const auto response = client(ca)->Get("/healthz");
    return response && response->status == 200 && response->body == "ok\n";
  }

  httplib::Result post(const std::string& endpoint, const std::string& body) const {
    return client("ca")->Post(endpoint.c_str(), body, "application/json");
  }
  // The review's response object, after checking the envelope.
  json respond(const std::string& endpoint, const json& review) const {
    const auto result = post(endpoint, review.dump());
    EXPECT_TRUE(result) << httplib::to_string(result.error());
    if (!result) return json::object();
    EXPECT_EQ(result->status, 200) << result->body;
    const json answer = json::parse(result->body);
    EXPECT_EQ(answer.at("apiVersion"), "admission.k8s.io/v1");
    EXPECT_EQ(answer.at("kind"), "AdmissionReview");
    EXPECT_EQ(answer.at("response").at("uid"), review.at("request").at("uid"));
    return answer.at("response");
  }
  // `object` with the response's patch applied; checks that there is one.
  static json apply_patch(const json& object, const json& response) {
    EXPECT_EQ(response.at("allowed"), true);
    EXPECT_EQ(response.value("patchType", ""), "JSONPatch");
    const json operations = json::parse(base64_decode(response.value("patch", "")), nullptr, false);
    EXPECT_TRUE(operations.is_array()) << response.dump();
    return operations.is_array() ? object.patch(operations) : object;
  }
  static void expect_allowed_untouched(const json& response) {
    EXPECT_EQ(response.at("allowed"), true) << response.dump();
    EXPECT_FALSE(response.contains("patch")) << response.dump();
    EXPECT_FALSE(response.contains("patchType")) << response.dump();
  }
  static void expect_injected(const json& patched) {
    EXPECT_EQ(patched.at("spec").at("volumes"),
              json::parse(R"([{"name":"gpushare-lib","hostPath":{"path":"/usr/local/gpushare","type":"Directory"}},
                              {"name":"gpushare-run","hostPath":{"path":"/run/gpushare","type":"Directory"}}])"));
    for (const char* list : {"initContainers", "containers"}) {
      for (const json& each : patched.at("spec").value(list, json::array())) {
        EXPECT_EQ(each.at("volumeMounts"), json::parse(R"([
          {"name":"gpushare-lib","mountPath":"/usr/local/gpushare","readOnly":true},
          {"name":"gpushare-run","mountPath":"/run/gpushare","readOnly":true}])"))
            << each.dump();
        EXPECT_EQ(env_value(each, "LD_PRELOAD"), kPreload) << each.dump();
        EXPECT_EQ(env_value(each, "GPUSHARE_AGENT"), kAgentSocket) << each.dump();
      }
    }
  }
  // Stops the webhook with SIGTERM; its stderr (one line per decision).
  std::string stop_webhook() {
    webhook_->kill(SIGTERM);
    const ProcessResult result = webhook_->wait();
    webhook_.reset();
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return result.err;
  }

  std::unique_ptr<Process> webhook_;
  int port_ = 0;
};

TEST_F(WebhookTest, PodOptedInByAnnotationGetsMountsAndEnvInEveryContainer) {
  start_webhook();
  const json object =
      pod({{"gpushare.io/memory", "8Gi"}, {"gpushare.io/share", "30"}},
          {{"initContainers", {container("fetch")}}, {"containers", {container("train"), container("sidecar")}}});
  const json patched = apply_patch(object, respond("/mutate", review_of(object)));
  expect_injected(patched);
  ASSERT_EQ(patched.at("spec").at("containers").size(), 2u);
  EXPECT_EQ(patched.at("spec").at("initContainers").size(), 1u);
  EXPECT_EQ(patched.at("metadata"), object.at("metadata"));
  const std::string log = stop_webhook();
  EXPECT_NE(log.find("/mutate ml/p: patched"), std::string::npos) << log;
}

TEST_F(WebhookTest, PodWithoutAnnotationIsAllowedUntouchedOnMutate) {
  start_webhook();
  expect_allowed_untouched(respond("/mutate", review_of(pod(nullptr))));
  expect_allowed_untouched(respond("/mutate", review_of(pod({{"team", "a"}}))));
  const std::string log = stop_webhook();
  EXPECT_NE(log.find("/mutate ml/p: allowed"), std::string::npos) << log;
}

TEST_F(WebhookTest, LabelledNamespacePodsArePatchedUnlessOptedOut) {
  start_webhook();
  const json plain = pod(nullptr);
  expect_injected(apply_patch(plain, respond("/mutate-namespace", review_of(plain))));
  expect_allowed_untouched(respond("/mutate-namespace", review_of(pod({{"gpushare.io/enabled", "false"}}))));
  // Opting out in a namespace that is not labelled changes nothing either.
  expect_allowed_untouched(respond("/mutate", review_of(pod({{"gpushare.io/enabled", "false"}}))));
  const std::string log = stop_webhook();
  EXPECT_NE(log.find("/mutate-namespace ml/p: patched"), std::string::npos) << log;
  EXPECT_NE(log.find("/mutate-namespace ml/p: allowed"), std::string::npos) << log;
}

TEST_F(WebhookTest, BadAnnotationsAreRefusedNamingTheAnnotation) {
  start_webhook();
  const std::vector<std::pair<std::string, std::string>> bad = {{"gpushare.io/memory", "eight"},
                                                                {"gpushare.io/share", "0"},
                                                                {"gpushare.io/priority", "urgent"},
                                                                {"gpushare.io/colour", "blue"}};
  for (const auto& [key, value] : bad) {
    for (const char* endpoint : {"/mutate", "/mutate-namespace"}) {
      const json response = respond(endpoint, review_of(pod({{key, value}})));
      EXPECT_EQ(response.at("allowed"), false) << key;
      EXPECT_FALSE(response.contains("patch"));
      EXPECT_EQ(response.at("status").at("code"), 400);
      const std::string message = response.at("status").at("message");
      EXPECT_NE(message.find(key), std::string::npos) << message;
    }
  }
  const std::string log = stop_webhook();
  EXPECT_NE(log.find("ml/p: refused"), std::string::npos) << log;
}

TEST_F(WebhookTest, ExistingLiteralPreloadComesAfterOursAndValueFromIsRefused) {
  start_webhook();
  const json literal =
      pod({{"gpushare.io/memory", "1Gi"}},
          {{"containers",
            {container("train", {{"env", {{{"name", "LD_PRELOAD"}, {"value", "/opt/lib/libtheirs.so"}}}}})}}});
  const json patched = apply_patch(literal, respond("/mutate", review_of(literal)));
  EXPECT_EQ(env_value(patched.at("spec").at("containers").at(0), "LD_PRELOAD"), kPreload + ":/opt/lib/libtheirs.so");
  EXPECT_EQ(patched.at("spec").at("containers").at(0).at("env").size(), 2u);

  const json from_secret =
      pod({{"gpushare.io/memory", "1Gi"}},
          {{"containers",
            {container("train", {{"env",
                                  {{{"name", "LD_PRELOAD"},
                                    {"valueFrom", {{"secretKeyRef", {{"name", "s"}, {"key", "k"}}}}}}}}})}}});
  const json response = respond("/mutate", review_of(from_secret));
  EXPECT_EQ(response.at("allowed"), false);
  EXPECT_EQ(response.at("status").at("code"), 400);
  const std::string message = response.at("status").at("message");
  EXPECT_NE(message.find("LD_PRELOAD through valueFrom"), std::string::npos) << message;
}

TEST_F(WebhookTest, SecondInvocationOnAPatchedPodMakesNoPatch) {
  start_webhook();
  const json object = pod({{"gpushare.io/tenant", "team-a"}},
                          {{"initContainers", {container("fetch")}}, {"containers", {container("train")}}});
  const json patched = apply_patch(object, respond("/mutate", review_of(object)));
  expect_allowed_untouched(respond("/mutate", review_of(patched)));
  expect_allowed_untouched(respond("/mutate-namespace", review_of(patched)));
  const std::string log = stop_webhook();
  EXPECT_NE(log.find("already patched"), std::string::npos) << log;
}

TEST_F(WebhookTest, OtherKindsAndOperationsAreAllowedUntouched) {
  start_webhook();
  const json annotated = pod({{"gpushare.io/memory", "8Gi"}});
  expect_allowed_untouched(respond("/mutate", review_of(annotated, "UPDATE")));
  expect_allowed_untouched(respond("/mutate-namespace", review_of(annotated, "UPDATE")));
  const json deployment = {{"apiVersion", "apps/v1"}, {"kind", "Deployment"}, {"metadata", {{"name", "d"}}}};
  expect_allowed_untouched(
      respond("/mutate-namespace",
              review_of(deployment, "CREATE", {{"group", "apps"}, {"version", "v1"}, {"kind", "Deployment"}})));
}

TEST_F(WebhookTest, GarbageAndOversizedBodiesAreRefusedWithoutAReview) {
  start_webhook();
  for (const std::string& body : {std::string("garbage"), std::string("{\"kind\":\"AdmissionReview\""),
                                  std::string("{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}")}) {
    const auto result = post("/mutate", body);
    ASSERT_TRUE(result) << httplib::to_string(result.error());
    EXPECT_EQ(result->status, 400) << body;
    EXPECT_NE(result->body.find("gpushare webhook: "), std::string::npos) << result->body;
  }
  json huge = review_of(pod({{"gpushare.io/memory", "8Gi"}, {"padding", std::string(9 << 20, 'x')}}));
  const auto result = post("/mutate", huge.dump());
  // Refused either with 413 or by closing the connection before the whole body was read.
  if (result) {
    EXPECT_EQ(result->status, 413);
  }
  EXPECT_TRUE(healthy("ca"));  // and still serving
}

TEST_F(WebhookTest, DeeplyNestedBodyIsRefusedWith400) {
  start_webhook();
  const auto result = post("/mutate", std::string(100, '[') + std::string(100, ']'));
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_EQ(result->status, 400);
  EXPECT_NE(result->body.find("deeper than 64"), std::string::npos) << result->body;
}

// Clients that connect and send nothing (not even a TLS hello) each hold a worker: 16 of them leave
// /healthz answering at once (before the 2 s read timeout frees a worker), and each is dropped by
// the server after that timeout.
TEST_F(WebhookTest, SilentClientsDoNotStarveHealthzAndAreDropped) {
  start_webhook();
  std::vector<int> silent;
  for (int i = 0; i < 16; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    silent.push_back(fd);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port_));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address), 0);
  }
  const auto asked = std::chrono::steady_clock::now();
  EXPECT_TRUE(healthy("ca"));
  EXPECT_LT(std::chrono::steady_clock::now() - asked, std::chrono::milliseconds(1500));
  for (const int fd : silent) {
    // The server closes it: readable, and read returns 0 (or an error once reset).
    pollfd waiting{fd, POLLIN, 0};
    EXPECT_EQ(::poll(&waiting, 1, 20'000), 1);
    char byte = 0;
    EXPECT_LE(::read(fd, &byte, 1), 0);
    ::close(fd);
  }
  EXPECT_TRUE(healthy("ca"));
}

TEST_F(WebhookTest, ReplacedCertificateServesTheNextConnection) {
  start_webhook();
  make_ca("next-ca");
  make_serving_certificate("next-ca", "next");
  EXPECT_FALSE(healthy("next-ca"));  // the client really verifies
  // As kubelet updates a mounted Secret: each file replaced by a rename.
  std::filesystem::rename(path("next.key"), path("tls.key"));
  std::filesystem::rename(path("next.crt"), path("tls.crt"));
  EXPECT_TRUE(healthy("next-ca"));
  EXPECT_FALSE(healthy("ca"));
  const std::string log = stop_webhook();
  EXPECT_NE(log.find("the certificate changed"), std::string::npos) << log;
}

TEST_F(WebhookTest, MissingOrBadCertificateStopsAtStart) {
  ProcessResult result = run({GPUSHARE_TEST_TOOL, "webhook", "--listen", "127.0.0.1:0"}, {});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("--tls-cert"), std::string::npos) << result.err;
  result = run({GPUSHARE_TEST_TOOL, "webhook", "--listen", "127.0.0.1:0", "--tls-cert", path("tls.crt"), "--tls-key",
                path("ca.key")},
               {});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("is not the key of the certificate"), std::string::npos) << result.err;
  result = run({GPUSHARE_TEST_TOOL, "webhook", "--listen", "127.0.0.1:0", "--tls-cert", path("missing.crt"),
                "--tls-key", path("tls.key")},
               {});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("missing.crt"), std::string::npos) << result.err;
}

TEST_F(WebhookTest, VersionAndHelpAreTheWebhookProgramsOwn) {
  const ProcessResult tool = run({GPUSHARE_TEST_TOOL, "--version"}, {});
  const ProcessResult version = run({GPUSHARE_TEST_TOOL, "webhook", "--version"}, {});
  EXPECT_EQ(version.exit_code, 0) << version.err;
  EXPECT_EQ(version.out, tool.out);
  const ProcessResult help = run({GPUSHARE_TEST_TOOL, "webhook", "--help"}, {});
  EXPECT_EQ(help.exit_code, 0) << help.err;
  for (const char* option :
       {"--listen", "--tls-cert", "--tls-key", "--host-dir", "--socket-dir", "/mutate-namespace"}) {
    EXPECT_NE(help.out.find(option), std::string::npos) << option << " missing from:\n" << help.out;
  }
}

}  // namespace
}  // namespace gpushare::testing
