#include "pod_request.hpp"

#include <algorithm>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/size.hpp"

namespace gpushare::kube {
namespace {

using nlohmann::json;

json pod_with(json annotations, json containers = json::array({{{"name", "main"}}})) {
  return json{{"metadata", {{"uid", "0f3c"}, {"namespace", "ml"}, {"name", "train-0"}, {"annotations", annotations}}},
              {"spec", {{"containers", containers}}}};
}

TEST(PodRequest, NoAnnotationsAsksForNothing) {
  auto request = read_pod_request(pod_with(json::object()));
  ASSERT_TRUE(request) << request.error().message;
  EXPECT_FALSE(request->opted_in);
  EXPECT_FALSE(request->opted_out);
  EXPECT_EQ(request->limits.memory_bytes, kUnlimited);
  EXPECT_FALSE(request->memory_fraction);
  EXPECT_EQ(request->limits.compute.share_pct, default_compute_policy().share_pct);
}

TEST(PodRequest, ReadsEveryGpushareAnnotation) {
  auto request = read_pod_request(pod_with({{"gpushare.io/memory", "8Gi"},
                                            {"gpushare.io/share", "30%"},
                                            {"gpushare.io/limit", "50"},
                                            {"gpushare.io/priority", "high"},
                                            {"gpushare.io/tenant", "llama-serving"},
                                            {"unrelated.example/x", "anything"}}));
  ASSERT_TRUE(request) << request.error().message;
  EXPECT_TRUE(request->opted_in);
  EXPECT_EQ(request->limits.memory_bytes, 8_GiB);
  EXPECT_EQ(request->limits.compute.share_pct, 30u);
  EXPECT_EQ(request->limits.compute.limit_pct, 50u);
  EXPECT_EQ(request->limits.compute.priority, Priority::kHigh);
  EXPECT_EQ(request->tenant_group, "llama-serving");
}

TEST(PodRequest, EnabledTrueOptsInWithoutLimits) {
  auto request = read_pod_request(pod_with({{"gpushare.io/enabled", "true"}}));
  ASSERT_TRUE(request) << request.error().message;
  EXPECT_TRUE(request->opted_in);
  EXPECT_EQ(request->limits.memory_bytes, kUnlimited);
}

TEST(PodRequest, EnabledFalseOptsOut) {
  auto request = read_pod_request(pod_with({{"gpushare.io/enabled", "false"}}));
  ASSERT_TRUE(request) << request.error().message;
  EXPECT_TRUE(request->opted_out);
  EXPECT_FALSE(request->opted_in);
}

TEST(PodRequest, OptingOutWhileAskingForLimitsIsRefused) {
  auto request = read_pod_request(pod_with({{"gpushare.io/enabled", "false"}, {"gpushare.io/memory", "1Gi"}}));
  ASSERT_FALSE(request);
  EXPECT_NE(request.error().message.find("gpushare.io/enabled"), std::string::npos) << request.error().message;
}

struct BadAnnotation {
  const char* key;
  const char* value;
  const char* message_names;
};

class PodRequestRefuses : public testing::TestWithParam<BadAnnotation> {};

TEST_P(PodRequestRefuses, NamingTheAnnotation) {
  const BadAnnotation bad = GetParam();
  auto request = read_pod_request(pod_with({{bad.key, bad.value}}));
  ASSERT_FALSE(request) << bad.key << "=" << bad.value << " was accepted";
  EXPECT_NE(request.error().message.find(bad.message_names), std::string::npos) << request.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Annotations, PodRequestRefuses,
    testing::Values(BadAnnotation{"gpushare.io/memory", "eight", "gpushare.io/memory: \"eight\""},
                    BadAnnotation{"gpushare.io/memory", "8G", "gpushare.io/memory"},
                    BadAnnotation{"gpushare.io/share", "0", "gpushare.io/share"},
                    BadAnnotation{"gpushare.io/share", "101", "gpushare.io/share"},
                    BadAnnotation{"gpushare.io/limit", "150", "gpushare.io/limit"},
                    BadAnnotation{"gpushare.io/priority", "urgent", "gpushare.io/priority"},
                    BadAnnotation{"gpushare.io/tenant", "a/b", "gpushare.io/tenant"},
                    BadAnnotation{"gpushare.io/tenant", "", "gpushare.io/tenant"},
                    BadAnnotation{"gpushare.io/enabled", "yes", "gpushare.io/enabled"},
                    BadAnnotation{"gpushare.io/memroy", "8Gi", "gpushare.io/memroy is not one gpushare reads"}));

TEST(PodRequest, RefusalsShowOtherBytesEscapedAndLongValuesCut) {
  auto group = read_pod_request(pod_with({{"gpushare.io/tenant", "caf\xc3\xa9"}}));
  ASSERT_FALSE(group);
  const std::string& message = group.error().message;
  EXPECT_NE(message.find("caf\\xc3\\xa9"), std::string::npos) << message;
  EXPECT_TRUE(std::all_of(message.begin(), message.end(), [](char c) { return c >= 0x20 && c < 0x7f; })) << message;
  auto long_value = read_pod_request(pod_with({{"gpushare.io/priority", std::string(10000, 'x')}}));
  ASSERT_FALSE(long_value);
  EXPECT_NE(long_value.error().message.find(std::string(64, 'x') + "...\""), std::string::npos);
}

TEST(PodRequest, AnnotationThatIsNotAStringIsRefused) {
  auto request = read_pod_request(pod_with({{"gpushare.io/share", 30}}));
  ASSERT_FALSE(request);
  EXPECT_NE(request.error().message.find("gpushare.io/share"), std::string::npos);
}

json env_container(const char* name, json env) { return json{{"name", name}, {"env", env}}; }

TEST(PodRequest, NvidiaMemoryLimitInMibBecomesTheQuota) {
  auto pod = pod_with(json::object(),
                      json::array({env_container("main", json::array({{{"name", "NVIDIA_GPU_MEMORY_LIMIT"},
                                                                       {"value", "4096"}},
                                                                      {{"name", "NVIDIA_GPU_MEMORY_REQUEST"},
                                                                       {"value", "1024"}}}))}));
  auto request = read_pod_request(pod);
  ASSERT_TRUE(request) << request.error().message;
  EXPECT_FALSE(request->opted_in);  // a peer's request limits, it does not opt in
  EXPECT_EQ(request->limits.memory_bytes, 4_GiB);
}

TEST(PodRequest, NvidiaMemoryRequestWhenNoLimit) {
  auto pod = pod_with(json::object(), json::array({env_container(
                                          "main", json::array({{{"name", "NVIDIA_GPU_MEMORY_REQUEST"},
                                                                {"value", "1024"}}}))}));
  auto request = read_pod_request(pod);
  ASSERT_TRUE(request);
  EXPECT_EQ(request->limits.memory_bytes, 1_GiB);
}

TEST(PodRequest, GpushareMemoryWinsOverPeers) {
  auto pod = pod_with({{"gpushare.io/memory", "2Gi"}, {"gpu-memory", "8192"}},
                      json::array({env_container("main", json::array({{{"name", "NVIDIA_GPU_MEMORY_LIMIT"},
                                                                       {"value", "4096"}}}))}));
  auto request = read_pod_request(pod);
  ASSERT_TRUE(request);
  EXPECT_EQ(request->limits.memory_bytes, 2_GiB);
}

TEST(PodRequest, ExplicitUnlimitedKeepsPeersOut) {
  auto request = read_pod_request(pod_with({{"gpushare.io/memory", "unlimited"}, {"gpu-memory", "8192"}}));
  ASSERT_TRUE(request);
  EXPECT_EQ(request->limits.memory_bytes, kUnlimited);
  EXPECT_FALSE(request->memory_fraction);
}

TEST(PodRequest, KaiGpuMemoryAnnotation) {
  auto request = read_pod_request(pod_with({{"gpu-memory", "2048"}}));
  ASSERT_TRUE(request);
  EXPECT_EQ(request->limits.memory_bytes, 2_GiB);
}

TEST(PodRequest, KaiFractionFromTheAnnotationOrTheEnvironment) {
  auto annotated = read_pod_request(pod_with({{"gpu-fraction", "0.5"}}));
  ASSERT_TRUE(annotated);
  ASSERT_TRUE(annotated->memory_fraction);
  EXPECT_DOUBLE_EQ(*annotated->memory_fraction, 0.5);
  EXPECT_EQ(annotated->limits.memory_bytes, kUnlimited);

  auto from_env = read_pod_request(pod_with(
      json::object(), json::array({env_container("main", json::array({{{"name", "GPU_PORTION"}, {"value", "0.25"}}}))})));
  ASSERT_TRUE(from_env);
  ASSERT_TRUE(from_env->memory_fraction);
  EXPECT_DOUBLE_EQ(*from_env->memory_fraction, 0.25);
}

TEST(PodRequest, UnreadablePeerValuesAreSkippedWithANote) {
  auto request = read_pod_request(pod_with({{"gpu-memory", "lots"}, {"gpu-fraction", "1.5"}}));
  ASSERT_TRUE(request) << "a peer's bad value must not refuse the pod";
  EXPECT_EQ(request->limits.memory_bytes, kUnlimited);
  EXPECT_FALSE(request->memory_fraction);
  ASSERT_EQ(request->sources.size(), 2u);
  EXPECT_NE(request->sources[0].find("gpu-memory"), std::string::npos);
  EXPECT_NE(request->sources[1].find("gpu-fraction"), std::string::npos);
}

TEST(PodRequest, ReadsOnlyTheNamedContainersEnvironment) {
  auto pod = pod_with(json::object(),
                      json::array({env_container("sidecar", json::array({{{"name", "NVIDIA_GPU_MEMORY_LIMIT"},
                                                                          {"value", "100"}}})),
                                   env_container("main", json::array({{{"name", "NVIDIA_GPU_MEMORY_LIMIT"},
                                                                       {"value", "200"}}}))}));
  auto main = read_pod_request(pod, "main");
  ASSERT_TRUE(main);
  EXPECT_EQ(main->limits.memory_bytes, 200_MiB);
  auto any = read_pod_request(pod);
  ASSERT_TRUE(any);
  EXPECT_EQ(any->limits.memory_bytes, 100_MiB);  // the first container that sets it
}

TEST(PodRequest, ValueFromIsNotALiteralAndIsIgnored) {
  auto pod = pod_with(json::object(),
                      json::array({env_container("main", json::array({{{"name", "NVIDIA_GPU_MEMORY_LIMIT"},
                                                                       {"valueFrom", {{"fieldRef", "x"}}}}}))}));
  auto request = read_pod_request(pod);
  ASSERT_TRUE(request);
  EXPECT_EQ(request->limits.memory_bytes, kUnlimited);
}

TEST(PodRequest, MalformedPodShapesAreNotErrors) {
  for (const json& pod : {json(nullptr), json::array(), json{{"metadata", 3}}, json{{"spec", {{"containers", "x"}}}},
                          json{{"metadata", {{"annotations", json::array()}}}}}) {
    auto request = read_pod_request(pod);
    ASSERT_TRUE(request) << pod.dump();
    EXPECT_FALSE(request->opted_in);
  }
}

TEST(PodIdentity, NeedsUidNamespaceAndName) {
  auto identity = read_pod_identity(pod_with(json::object()));
  ASSERT_TRUE(identity);
  EXPECT_EQ(identity->uid, "0f3c");
  EXPECT_EQ(identity->namespace_name, "ml");
  EXPECT_EQ(identity->name, "train-0");
  auto missing = read_pod_identity(json{{"metadata", {{"namespace", "ml"}, {"name", "x"}}}});
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("metadata.uid"), std::string::npos);
}

TEST(TenantOf, NamespaceAndNameOrGroup) {
  PodIdentity pod{"u", "ml", "train-0"};
  PodRequest request;
  EXPECT_EQ(tenant_of(pod, request), "ml/train-0");
  request.tenant_group = "llama";
  EXPECT_EQ(tenant_of(pod, request), "ml/llama");
}

TEST(TenantOf, LongNamesStayValidAndDistinct) {
  PodRequest request;
  const std::string long_name(200, 'a');
  const std::string a = tenant_of({"u", "ml", long_name + "1"}, request);
  const std::string b = tenant_of({"u", "ml", long_name + "2"}, request);
  EXPECT_LE(a.size(), 95u);
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace gpushare::kube
