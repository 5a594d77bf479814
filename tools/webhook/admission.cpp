#include "admission.hpp"

#include <utility>
#include <vector>

#include "json_patch.hpp"
#include "pod_request.hpp"  // kube/

namespace gpushare::webhook {
namespace {

using nlohmann::json;

constexpr const char* kReviewApiVersion = "admission.k8s.io/v1";

std::string string_member(const json& object, const char* key) {
  if (!object.is_object()) return {};
  const auto found = object.find(key);
  return found != object.end() && found->is_string() ? found->get<std::string>() : std::string();
}

const json& member_or_null(const json& object, const char* key) {
  static const json kNull;
  if (!object.is_object()) return kNull;
  const auto found = object.find(key);
  return found != object.end() ? *found : kNull;
}

// "namespace/name" for the log; "namespace/generateName*" for a pod whose name the API server
// has not generated yet.
std::string pod_reference(const json& request, const json& pod) {
  const json& metadata = member_or_null(pod, "metadata");
  std::string namespace_name = string_member(request, "namespace");
  if (namespace_name.empty()) namespace_name = string_member(metadata, "namespace");
  std::string name = string_member(metadata, "name");
  if (name.empty()) name = string_member(request, "name");
  if (name.empty() && !string_member(metadata, "generateName").empty()) {
    name = string_member(metadata, "generateName") + "*";
  }
  return (namespace_name.empty() ? "?" : namespace_name) + "/" + (name.empty() ? "?" : name);
}

bool is_pod_creation(const json& request) {
  const json& kind = member_or_null(request, "kind");
  return string_member(request, "operation") == "CREATE" && string_member(kind, "kind") == "Pod" &&
         string_member(kind, "group").empty() && string_member(request, "subResource").empty();
}

std::string joined(const std::vector<std::string>& parts) {
  std::string text;
  for (const std::string& part : parts) text += (text.empty() ? "" : "; ") + part;
  return text;
}

// SAX handler that only follows the nesting of arrays and objects, and stops the parse at the
// first one nested deeper than `max_depth`.
class NestingLimit final : public json::json_sax_t {
 public:
  explicit NestingLimit(int max_depth) : max_depth_(max_depth) {}

  bool exceeded() const { return exceeded_; }

  bool start_object(std::size_t) override { return enter(); }
  bool start_array(std::size_t) override { return enter(); }
  bool end_object() override { return leave(); }
  bool end_array() override { return leave(); }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool key(string_t&) override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

 private:
  bool enter() {
    exceeded_ = ++depth_ > max_depth_;
    return !exceeded_;
  }
  bool leave() {
    --depth_;
    return true;
  }

  const int max_depth_;
  int depth_ = 0;
  bool exceeded_ = false;
};

class Reviewer {
 public:
  Reviewer(std::string uid, std::string reference) : uid_(std::move(uid)), reference_(std::move(reference)) {}

  AdmissionDecision allow(const std::string& why) const {
    return decided({{"uid", uid_}, {"allowed", true}}, "allowed: " + why);
  }
  // The message may quote parts of the pod, cut anywhere: made valid UTF-8 so that the review
  // can always be written.
  AdmissionDecision refuse(const std::string& raw_message) const {
    const std::string message = valid_utf8(raw_message);
    json response = {{"uid", uid_},
                     {"allowed", false},
                     {"status", {{"code", 400}, {"reason", "BadRequest"}, {"message", "gpushare: " + message}}}};
    return decided(std::move(response), "refused: " + message);
  }
  AdmissionDecision patch(const json& operations, const std::string& why) const {
    json response = {
        {"uid", uid_}, {"allowed", true}, {"patchType", "JSONPatch"}, {"patch", base64_encode(dump_json(operations))}};
    return decided(std::move(response), "patched: " + why);
  }

 private:
  AdmissionDecision decided(json response, const std::string& outcome) const {
    json review = {{"apiVersion", kReviewApiVersion}, {"kind", "AdmissionReview"}, {"response", std::move(response)}};
    return {std::move(review), valid_utf8(reference_ + ": " + outcome)};
  }

  std::string uid_;
  std::string reference_;
};

}  // namespace

Result<AdmissionDecision> review_admission(const json& review, Endpoint endpoint, const InjectionPaths& paths) {
  if (!review.is_object() || string_member(review, "kind") != "AdmissionReview") {
    return Error{"the body is not an AdmissionReview"};
  }
  if (string_member(review, "apiVersion") != kReviewApiVersion) {
    return Error{"AdmissionReview apiVersion \"" + string_member(review, "apiVersion") + "\" is not " +
                 kReviewApiVersion};
  }
  const json& request = member_or_null(review, "request");
  if (!request.is_object()) return Error{"the AdmissionReview has no request"};
  const std::string uid = string_member(request, "uid");
  if (uid.empty()) return Error{"the AdmissionReview's request has no uid"};

  const json& pod = member_or_null(request, "object");
  const Reviewer reviewer(uid, pod_reference(request, pod));
  if (!is_pod_creation(request)) {
    return reviewer.allow(string_member(request, "operation") + " of " +
                          string_member(member_or_null(request, "kind"), "kind") +
                          ": only the creation of pods is changed");
  }
  if (!pod.is_object()) return Error{"the AdmissionReview creates a pod but carries no request.object"};

  auto pod_request = kube::read_pod_request(pod);
  if (!pod_request) return reviewer.refuse(pod_request.error().message);
  const bool in = endpoint == Endpoint::kNamespacePods ? !pod_request->opted_out : pod_request->opted_in;
  if (!in) {
    return reviewer.allow(pod_request->opted_out ? "opted out by gpushare.io/enabled: \"false\""
                                                 : "no gpushare.io/ annotation asks for gpushare");
  }
  auto operations = build_pod_patch(pod, paths);
  if (!operations) return reviewer.refuse(operations.error().message);
  const std::string why = endpoint == Endpoint::kNamespacePods ? "namespace opted in" : "opted in by annotation";
  const std::string sources = pod_request->sources.empty() ? "" : " (" + joined(pod_request->sources) + ")";
  if (operations->empty()) return reviewer.allow(why + ", already patched" + sources);
  return reviewer.patch(*operations, why + sources);
}

Result<AdmissionDecision> review_admission_text(std::string_view body, Endpoint endpoint, const InjectionPaths& paths) {
  // The depth is checked by a first pass that builds nothing and stops at the first container too
  // deep, rather than by a parser callback: nlohmann's callback parser looks through the parent
  // array at the end of every object, which makes a body of many small objects quadratic.
  NestingLimit limit(kMaxJsonDepth);
  const bool well_formed = json::sax_parse(body, &limit);
  if (limit.exceeded()) return Error{"the body nests JSON deeper than " + std::to_string(kMaxJsonDepth) + " levels"};
  if (!well_formed) return Error{"the body is not JSON"};
  const json review = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (review.is_discarded()) return Error{"the body is not JSON"};
  return review_admission(review, endpoint, paths);
}

}  // namespace gpushare::webhook
