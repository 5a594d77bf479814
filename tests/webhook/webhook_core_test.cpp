// The webhook's decision without the network: JSON pointer escaping and base64 (json_patch.hpp),
// the operations added to a pod (pod_patch.hpp, applied with nlohmann's RFC 6902 patch to check
// the result), and the AdmissionReview answers that do not depend on the annotation parser.
#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "admission.hpp"
#include "json_patch.hpp"
#include "pod_patch.hpp"

namespace gpushare::webhook {
namespace {

using nlohmann::json;

const InjectionPaths kPaths;
const std::string kPreload = "/usr/local/gpushare/current/lib/gpushare/libgpushare-preload.so";
const std::string kAgentSocket = "/run/gpushare/agent.sock";

json pod_with(json spec) {
  return {{"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", {{"name", "p"}}}, {"spec", spec}};
}

json container(const std::string& name, json extra = json::object()) {
  json result = {{"name", name}, {"image", "busybox"}};
  result.update(extra);
  return result;
}

// The pod with build_pod_patch's operations applied; fails the test when there are none.
json patched(const json& pod) {
  auto operations = build_pod_patch(pod, kPaths);
  EXPECT_TRUE(operations.ok()) << (operations.ok() ? "" : operations.error().message);
  if (!operations.ok()) return pod;
  EXPECT_FALSE(operations->empty());
  return pod.patch(*operations);
}

// The value of variable `name` in a container, "" when absent.
std::string env_value(const json& container, const std::string& name) {
  for (const json& variable : container.value("env", json::array())) {
    if (variable.at("name") == name) return variable.value("value", "");
  }
  return "";
}

void expect_mounts(const json& container) {
  const json expected =
      json::array({{{"name", "gpushare-lib"}, {"mountPath", "/usr/local/gpushare"}, {"readOnly", true}},
                   {{"name", "gpushare-run"}, {"mountPath", "/run/gpushare"}, {"readOnly", true}}});
  json ours = json::array();
  for (const json& mount : container.at("volumeMounts")) {
    if (mount.at("name").get<std::string>().starts_with("gpushare-")) ours.push_back(mount);
  }
  EXPECT_EQ(ours, expected) << container.dump();
}

TEST(JsonPointerTest, EscapesTildeBeforeSlash) {
  EXPECT_EQ(escape_pointer_token("plain"), "plain");
  EXPECT_EQ(escape_pointer_token("a/b"), "a~1b");
  EXPECT_EQ(escape_pointer_token("a~b"), "a~0b");
  EXPECT_EQ(escape_pointer_token("~1"), "~01");  // not read back as '/'
  EXPECT_EQ(escape_pointer_token("/~/"), "~1~0~1");
  EXPECT_EQ(escape_pointer_token(""), "");
  EXPECT_EQ(json_pointer({"metadata", "annotations", "gpushare.io/memory"}),
            "/metadata/annotations/gpushare.io~1memory");
  EXPECT_EQ(json_pointer({}), "");
}

TEST(JsonPointerTest, EscapedPointerFindsTheMemberInNlohmann) {
  const json document = {{"metadata", {{"annotations", {{"a/b~c", "found"}}}}}};
  EXPECT_EQ(document.at(json::json_pointer(json_pointer({"metadata", "annotations", "a/b~c"}))), "found");
}

TEST(Base64Test, Rfc4648Vectors) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
  EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode(std::string("\xff\xfe\x00", 3)), "//4A");
}

TEST(PodPatchTest, CreatesMissingArraysWholeAndInjectsEveryContainer) {
  const json pod =
      pod_with({{"initContainers", {container("init")}}, {"containers", {container("a"), container("b")}}});
  const json operations = build_pod_patch(pod, kPaths).value();
  // Absent arrays are added whole (a "/-" append to a missing array would fail to apply).
  for (const json& operation : operations) {
    EXPECT_EQ(operation.at("op"), "add");
    EXPECT_FALSE(operation.at("path").get<std::string>().ends_with("/-")) << operation.dump();
  }
  const json result = pod.patch(operations);
  EXPECT_EQ(result.at("spec").at("volumes"),
            json::parse(R"([{"name":"gpushare-lib","hostPath":{"path":"/usr/local/gpushare","type":"Directory"}},
                            {"name":"gpushare-run","hostPath":{"path":"/run/gpushare","type":"Directory"}}])"));
  for (const char* list : {"initContainers", "containers"}) {
    for (const json& each : result.at("spec").at(list)) {
      expect_mounts(each);
      EXPECT_EQ(env_value(each, "LD_PRELOAD"), kPreload);
      EXPECT_EQ(env_value(each, "GPUSHARE_AGENT"), kAgentSocket);
    }
  }
  // Nothing else changed: without our additions the pod is the one given.
  json stripped = result;
  stripped["spec"].erase("volumes");
  for (const char* list : {"initContainers", "containers"}) {
    for (json& each : stripped["spec"][list]) {
      each.erase("volumeMounts");
      each.erase("env");
    }
  }
  EXPECT_EQ(stripped, pod);
}

TEST(PodPatchTest, AppendsToExistingArraysKeepingTheirEntries) {
  const json pod = pod_with({{"volumes", {{{"name", "data"}, {"emptyDir", json::object()}}}},
                             {"containers",
                              {container("a", {{"volumeMounts", {{{"name", "data"}, {"mountPath", "/data"}}}},
                                               {"env", {{{"name", "HOME"}, {"value", "/home/a"}}}}})}}});
  const json operations = build_pod_patch(pod, kPaths).value();
  for (const json& operation : operations) {
    EXPECT_TRUE(operation.at("path").get<std::string>().ends_with("/-")) << operation.dump();
  }
  const json result = pod.patch(operations);
  const json& volumes = result.at("spec").at("volumes");
  ASSERT_EQ(volumes.size(), 3u);
  EXPECT_EQ(volumes[0].at("name"), "data");
  const json& only = result.at("spec").at("containers").at(0);
  EXPECT_EQ(only.at("volumeMounts").at(0).at("mountPath"), "/data");
  expect_mounts(only);
  EXPECT_EQ(env_value(only, "HOME"), "/home/a");
  EXPECT_EQ(env_value(only, "LD_PRELOAD"), kPreload);
}

TEST(PodPatchTest, SecondPassOnAPatchedPodAddsNothing) {
  const json once = patched(
      pod_with({{"initContainers", {container("init")}},
                {"containers", {container("a", {{"env", {{{"name", "LD_PRELOAD"}, {"value", "/lib/theirs.so"}}}}})}}}));
  auto again = build_pod_patch(once, kPaths);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, json::array());
  EXPECT_EQ(env_value(once.at("spec").at("containers").at(0), "LD_PRELOAD"), kPreload + ":/lib/theirs.so");
}

TEST(PodPatchTest, LiteralPreloadKeptAfterOursAndEmptyOneReplaced) {
  const json result =
      patched(pod_with({{"containers",
                         {container("a", {{"env", {{{"name", "LD_PRELOAD"}, {"value", "/x.so /y.so"}}}}}),
                          container("b", {{"env", {{{"name", "LD_PRELOAD"}, {"value", ""}}}}}),
                          container("c", {{"env", {{{"name", "LD_PRELOAD"}}}}})}}}));
  const json& containers = result.at("spec").at("containers");
  EXPECT_EQ(env_value(containers[0], "LD_PRELOAD"), kPreload + ":/x.so /y.so");
  EXPECT_EQ(env_value(containers[1], "LD_PRELOAD"), kPreload);
  EXPECT_EQ(env_value(containers[2], "LD_PRELOAD"), kPreload);
  for (const json& each : containers) EXPECT_EQ(each.at("env").size(), 2u) << each.dump();  // + GPUSHARE_AGENT
}

TEST(PodPatchTest, PreloadFromValueFromIsRefused) {
  const json pod =
      pod_with({{"containers",
                 {container("app", {{"env",
                                     {{{"name", "LD_PRELOAD"},
                                       {"valueFrom", {{"configMapKeyRef", {{"name", "c"}, {"key", "k"}}}}}}}}})}}});
  const auto result = build_pod_patch(pod, kPaths);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().message.find("\"app\""), std::string::npos) << result.error().message;
  EXPECT_NE(result.error().message.find("LD_PRELOAD through valueFrom"), std::string::npos) << result.error().message;
}

TEST(PodPatchTest, GpushareVariablesThePodSetsAreLeft) {
  const json result =
      patched(pod_with({{"containers",
                         {container("a", {{"env",
                                           {{{"name", "GPUSHARE_AGENT"}, {"value", "/elsewhere.sock"}},
                                            {{"name", "GPUSHARE_MEMORY_LIMIT"}, {"value", "1GiB"}}}}})}}}));
  const json& only = result.at("spec").at("containers").at(0);
  EXPECT_EQ(env_value(only, "GPUSHARE_AGENT"), "/elsewhere.sock");
  EXPECT_EQ(env_value(only, "GPUSHARE_MEMORY_LIMIT"), "1GiB");
  EXPECT_EQ(only.at("env").size(), 3u);
}

TEST(PodPatchTest, ForeignVolumeOrMountAtOurPathsIsRefused) {
  const json other_volume = pod_with(
      {{"volumes", {{{"name", "gpushare-run"}, {"emptyDir", json::object()}}}}, {"containers", {container("a")}}});
  auto result = build_pod_patch(other_volume, kPaths);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().message.find("volume named \"gpushare-run\""), std::string::npos) << result.error().message;

  const json other_type =
      pod_with({{"volumes", {{{"name", "gpushare-lib"}, {"hostPath", {{"path", "/usr/local/gpushare"}}}}}},
                {"containers", {container("a")}}});
  EXPECT_FALSE(build_pod_patch(other_type, kPaths).ok());

  const json other_mount = pod_with(
      {{"containers", {container("a", {{"volumeMounts", {{{"name", "cache"}, {"mountPath", "/run/gpushare/"}}}}})}}});
  result = build_pod_patch(other_mount, kPaths);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().message.find("already mounts volume \"cache\" at /run/gpushare"), std::string::npos)
      << result.error().message;

  const json writable_mount = pod_with(
      {{"containers",
        {container("a", {{"volumeMounts", {{{"name", "gpushare-lib"}, {"mountPath", "/usr/local/gpushare"}}}}})}}});
  EXPECT_FALSE(build_pod_patch(writable_mount, kPaths).ok());
}

// A pod declaring gpushare's own volume may not mount it writable at some other path: it would
// write the preload library every tenant loads, or the agent's folder.
TEST(PodPatchTest, OurVolumeMountedWithoutReadOnlyAtAnyPathIsRefused) {
  const json our_volume = {{"name", "gpushare-lib"},
                           {"hostPath", {{"path", "/usr/local/gpushare"}, {"type", "Directory"}}}};
  const json writable_elsewhere = pod_with(
      {{"volumes", {our_volume}},
       {"containers", {container("a", {{"volumeMounts", {{{"name", "gpushare-lib"}, {"mountPath", "/x"}}}}})}}});
  auto result = build_pod_patch(writable_elsewhere, kPaths);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().message.find("mounts gpushare's volume \"gpushare-lib\" at /x without readOnly"),
            std::string::npos)
      << result.error().message;

  const json run_volume = {{"name", "gpushare-run"}, {"hostPath", {{"path", "/run/gpushare"}, {"type", "Directory"}}}};
  const json run_writable = pod_with(
      {{"volumes", {run_volume}},
       {"containers",
        {container("a", {{"volumeMounts", {{{"name", "gpushare-run"}, {"mountPath", "/y"}, {"readOnly", false}}}}})}}});
  EXPECT_FALSE(build_pod_patch(run_writable, kPaths).ok());

  // The same in an init container and in an ephemeral container.
  for (const char* list : {"initContainers", "ephemeralContainers"}) {
    const json pod = pod_with(
        {{"volumes", {run_volume}},
         {"containers", {container("a")}},
         {list, {container("b", {{"volumeMounts", {{{"name", "gpushare-run"}, {"mountPath", "/run/gpushare"}}}}})}}});
    EXPECT_FALSE(build_pod_patch(pod, kPaths).ok()) << list;
  }

  // Read-only at another path is fine: the pod then gets the usual mounts added.
  const json read_only_elsewhere = pod_with(
      {{"volumes", {our_volume}},
       {"containers",
        {container("a", {{"volumeMounts", {{{"name", "gpushare-lib"}, {"mountPath", "/x"}, {"readOnly", true}}}}})}}});
  const json mounts = patched(read_only_elsewhere).at("spec").at("containers").at(0).at("volumeMounts");
  EXPECT_EQ(mounts, json::array({{{"name", "gpushare-lib"}, {"mountPath", "/x"}, {"readOnly", true}},
                                 {{"name", "gpushare-lib"}, {"mountPath", "/usr/local/gpushare"}, {"readOnly", true}},
                                 {{"name", "gpushare-run"}, {"mountPath", "/run/gpushare"}, {"readOnly", true}}}));
}

// A hostPath volume at, inside or above gpushare's folders (a parent exposes them writable) is
// refused unless it is exactly gpushare's own; paths are compared as the kubelet resolves them.
TEST(PodPatchTest, OtherHostPathVolumesReachingOurFoldersAreRefused) {
  for (const std::string path : {"/usr/local", "/", "/run", "/run/gpushare", "/usr/local/gpushare/current",
                                 "//usr/./local/gpushare/", "/usr/local/x/../gpushare", "/run/gpushare/agent.sock"}) {
    const json pod =
        pod_with({{"volumes", {{{"name", "host"}, {"hostPath", {{"path", path}}}}}}, {"containers", {container("a")}}});
    auto result = build_pod_patch(pod, kPaths);
    ASSERT_FALSE(result.ok()) << path;
    EXPECT_NE(result.error().message.find("volume \"host\" is hostPath " + path + ", which reaches gpushare's host"),
              std::string::npos)
        << result.error().message;
  }
  // Our volume names with the other folder, or ours with a non-normalized path, are not ours.
  const json swapped = pod_with(
      {{"volumes", {{{"name", "gpushare-lib"}, {"hostPath", {{"path", "/run/gpushare"}, {"type", "Directory"}}}}}},
       {"containers", {container("a")}}});
  EXPECT_FALSE(build_pod_patch(swapped, kPaths).ok());

  // Neighbours that only share a prefix of characters are other folders.
  for (const std::string path : {"/usr/local/gpushare2", "/run/gpushare-old", "/usr/lib", "/var/run"}) {
    const json pod =
        pod_with({{"volumes", {{{"name", "host"}, {"hostPath", {{"path", path}}}}}}, {"containers", {container("a")}}});
    EXPECT_TRUE(build_pod_patch(pod, kPaths).ok()) << path;
  }
}

TEST(PodPatchTest, OtherHostFoldersAndMalformedSpecs) {
  const InjectionPaths elsewhere{"/opt/gs/", "/var/run/gs"};
  EXPECT_EQ(elsewhere.preload_library(), "/opt/gs/current/lib/gpushare/libgpushare-preload.so");
  EXPECT_EQ(elsewhere.agent_socket(), "/var/run/gs/agent.sock");
  const json result = pod_with({{"containers", {container("a")}}})
                          .patch(build_pod_patch(pod_with({{"containers", {container("a")}}}), elsewhere).value());
  EXPECT_EQ(result.at("spec").at("volumes").at(0).at("hostPath").at("path"), "/opt/gs");
  EXPECT_EQ(result.at("spec").at("containers").at(0).at("volumeMounts").at(1).at("mountPath"), "/var/run/gs");

  EXPECT_FALSE(build_pod_patch(json::array(), kPaths).ok());
  EXPECT_FALSE(build_pod_patch(json{{"metadata", json::object()}}, kPaths).ok());
  EXPECT_FALSE(build_pod_patch(pod_with({{"containers", "a"}}), kPaths).ok());
  EXPECT_FALSE(build_pod_patch(pod_with({{"containers", {container("a", {{"env", json::object()}})}}}), kPaths).ok());
  EXPECT_FALSE(build_pod_patch(pod_with({{"containers", {42}}}), kPaths).ok());
}

json review_of(const std::string& operation, const json& kind, const json& object) {
  return {{"apiVersion", "admission.k8s.io/v1"},
          {"kind", "AdmissionReview"},
          {"request",
           {{"uid", "c0ffee"}, {"kind", kind}, {"operation", operation}, {"namespace", "ml"}, {"object", object}}}};
}

const json kPodKind = {{"group", ""}, {"version", "v1"}, {"kind", "Pod"}};

TEST(AdmissionTest, OnlyPodCreationIsLookedAt) {
  const json annotated = {{"metadata", {{"name", "p"}, {"annotations", {{"gpushare.io/memory", "8Gi"}}}}},
                          {"spec", {{"containers", {container("a")}}}}};
  for (const json& review :
       {review_of("UPDATE", kPodKind, annotated), review_of("DELETE", kPodKind, nullptr),
        review_of("CREATE", {{"group", "apps"}, {"version", "v1"}, {"kind", "Deployment"}}, annotated)}) {
    auto decision = review_admission(review, Endpoint::kNamespacePods, kPaths);
    ASSERT_TRUE(decision.ok()) << decision.error().message;
    const json& response = decision->review.at("response");
    EXPECT_EQ(response.at("uid"), "c0ffee");
    EXPECT_EQ(response.at("allowed"), true);
    EXPECT_FALSE(response.contains("patch"));
    EXPECT_EQ(decision->review.at("apiVersion"), "admission.k8s.io/v1");
    EXPECT_EQ(decision->review.at("kind"), "AdmissionReview");
  }
}

TEST(AdmissionTest, PatchedPodCarriesBase64JsonPatchAndLogNamesThePod) {
  const json pod = {{"metadata", {{"generateName", "train-"}}}, {"spec", {{"containers", {container("a")}}}}};
  auto decision = review_admission(review_of("CREATE", kPodKind, pod), Endpoint::kNamespacePods, kPaths);
  ASSERT_TRUE(decision.ok()) << decision.error().message;
  const json& response = decision->review.at("response");
  EXPECT_EQ(response.at("patchType"), "JSONPatch");
  EXPECT_EQ(response.at("patch"), base64_encode(build_pod_patch(pod, kPaths).value().dump()));
  EXPECT_EQ(decision->log_line.rfind("ml/train-*: patched", 0), 0u) << decision->log_line;
}

TEST(AdmissionTest, WhatIsNotAReviewIsAnError) {
  EXPECT_FALSE(review_admission_text("", Endpoint::kOptInPods, kPaths).ok());
  EXPECT_FALSE(review_admission_text("{\"kind\":", Endpoint::kOptInPods, kPaths).ok());
  EXPECT_FALSE(review_admission_text("[]", Endpoint::kOptInPods, kPaths).ok());
  json review = review_of("CREATE", kPodKind, json::object());
  review["apiVersion"] = "admission.k8s.io/v1beta1";
  EXPECT_FALSE(review_admission(review, Endpoint::kOptInPods, kPaths).ok());
  review = review_of("CREATE", kPodKind, json::object());
  review["request"].erase("uid");
  EXPECT_FALSE(review_admission(review, Endpoint::kOptInPods, kPaths).ok());
  review = review_of("CREATE", kPodKind, nullptr);  // a pod creation without the pod
  EXPECT_FALSE(review_admission(review, Endpoint::kOptInPods, kPaths).ok());
}

// A refusal that quotes one byte of a multi-byte UTF-8 character (the annotation parser prints
// the offending char alone) must still make a review that can be written: else the API server
// gets an HTTP 500 and, with failurePolicy Ignore on /mutate, admits the pod unchecked.
TEST(AdmissionTest, RefusalQuotingPartOfANonAsciiCharacterIsValidUtf8) {
  const json pod = {{"metadata", {{"name", "p"}, {"annotations", {{"gpushare.io/tenant", "caf\u00e9"}}}}},
                    {"spec", {{"containers", {container("a")}}}}};
  auto decision = review_admission(review_of("CREATE", kPodKind, pod), Endpoint::kOptInPods, kPaths);
  ASSERT_TRUE(decision.ok()) << decision.error().message;
  EXPECT_EQ(decision->review.at("response").at("allowed"), false);
  EXPECT_NO_THROW((void)decision->review.dump());
  EXPECT_NE(decision->review.at("response").at("status").at("message").get<std::string>().find("tenant"),
            std::string::npos);
}

TEST(JsonTextTest, InvalidUtf8IsReplacedNotThrown) {
  const std::string cut = std::string("caf") + '\xc3';  // the first byte of a two-byte character
  EXPECT_THROW((void)json(cut).dump(), json::type_error);
  EXPECT_EQ(dump_json(json{{"m", cut}}), "{\"m\":\"caf\xef\xbf\xbd\"}");
  EXPECT_EQ(valid_utf8(cut), "caf\xef\xbf\xbd");
  EXPECT_EQ(valid_utf8("caf\xc3\xa9 \xe2\x82\xac"), "caf\xc3\xa9 \xe2\x82\xac");  // valid text unchanged
  EXPECT_EQ(valid_utf8(""), "");
}

std::string nested_arrays(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(AdmissionTest, BodiesNestedDeeperThanTheLimitAreRefused) {
  // 64 levels are JSON (not a review); 65 are refused for their depth, wherever they are.
  auto at_limit = review_admission_text(nested_arrays(kMaxJsonDepth), Endpoint::kOptInPods, kPaths);
  ASSERT_FALSE(at_limit.ok());
  EXPECT_EQ(at_limit.error().message, "the body is not an AdmissionReview");
  auto beyond = review_admission_text(nested_arrays(kMaxJsonDepth + 1), Endpoint::kOptInPods, kPaths);
  ASSERT_FALSE(beyond.ok());
  EXPECT_NE(beyond.error().message.find("deeper than 64"), std::string::npos) << beyond.error().message;

  json review =
      review_of("CREATE", kPodKind, {{"metadata", {{"name", "p"}}}, {"spec", {{"containers", {container("a")}}}}});
  std::string text = review.dump();
  const std::string deep_member = "\"deep\":" + nested_arrays(200) + ",";
  text.insert(text.find("\"kind\""), deep_member);
  auto deep = review_admission_text(text, Endpoint::kOptInPods, kPaths);
  ASSERT_FALSE(deep.ok());
  EXPECT_NE(deep.error().message.find("deeper than 64"), std::string::npos) << deep.error().message;
  EXPECT_TRUE(review_admission_text(review.dump(), Endpoint::kOptInPods, kPaths).ok());
}

}  // namespace
}  // namespace gpushare::webhook
