// The webhook's decision, without the network: an admission.k8s.io/v1 AdmissionReview in, the
// AdmissionReview to answer with out (same request.uid), and one line for the log.
//
// Only CREATE of a pod is looked at; anything else is allowed untouched. The pod's gpushare.io/
// annotations are read by kube::read_pod_request: a bad one refuses the pod (allowed: false,
// status.code 400, the message naming the annotation, which `kubectl apply` shows). A pod that
// is in (opted in by annotation on /mutate; every pod not opted out on /mutate-namespace) is
// allowed with the JSONPatch of pod_patch.hpp, or refused with its reason.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/result.hpp"
#include "pod_patch.hpp"

namespace gpushare::webhook {

enum class Endpoint {
  kOptInPods,      // /mutate: namespaces without the label; a pod opts in by annotation
  kNamespacePods,  // /mutate-namespace: gpushare.io/enabled=true namespaces; a pod opts out
};

struct AdmissionDecision {
  nlohmann::json review;  // the AdmissionReview answered
  std::string log_line;   // "NAMESPACE/NAME: patched|allowed|refused: why"
};

// An Error when `review` is not an admission.k8s.io/v1 AdmissionReview with a request and its
// uid: the server answers that with HTTP 400 rather than a review.
Result<AdmissionDecision> review_admission(const nlohmann::json& review, Endpoint endpoint,
                                           const InjectionPaths& paths);
// Arrays and objects nested deeper than this in a request body make it an Error: a pod's
// AdmissionReview nests about 15 deep, and deeper bodies only cost memory and time.
inline constexpr int kMaxJsonDepth = 64;

// The same from the request body's text (malformed JSON, or nested deeper than kMaxJsonDepth: an
// Error).
Result<AdmissionDecision> review_admission_text(std::string_view body, Endpoint endpoint, const InjectionPaths& paths);

}  // namespace gpushare::webhook
