// The node's pods, trimmed (kube_pod_cache.hpp).
#include "kube_pod_cache.hpp"

#include <algorithm>
#include <cctype>
#include <initializer_list>
#include <optional>
#include <vector>

namespace gpushare::agent {
namespace {

using nlohmann::json;

bool is_kept_annotation(std::string_view key) {
  if (key.substr(0, 12) == "gpushare.io/") return true;
  const std::size_t slash = key.rfind('/');
  std::string name(key.substr(slash == std::string_view::npos ? 0 : slash + 1));
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  return name.find("gpu") != std::string::npos;
}

const json* member(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  const auto found = object.find(key);
  return found == object.end() ? nullptr : &*found;
}

json trim_containers(const json* containers) {
  json kept = json::array();
  if (containers == nullptr || !containers->is_array()) return kept;
  for (const json& container : *containers) {
    const json* name = member(container, "name");
    if (name == nullptr || !name->is_string()) continue;
    json env = json::array();
    if (const json* variables = member(container, "env"); variables != nullptr && variables->is_array()) {
      for (const json& variable : *variables) {
        const json* key = member(variable, "name");
        const json* value = member(variable, "value");  // valueFrom: not literal, not read
        if (key == nullptr || !key->is_string() || value == nullptr || !value->is_string()) continue;
        if (std::find(std::begin(kPeerEnvironment), std::end(kPeerEnvironment), key->get<std::string>()) !=
            std::end(kPeerEnvironment)) {
          env.push_back({{"name", *key}, {"value", *value}});
        }
      }
    }
    kept.push_back({{"name", *name}, {"env", std::move(env)}});
  }
  return kept;
}

json trim_statuses(const json* statuses) {
  json kept = json::array();
  if (statuses == nullptr || !statuses->is_array()) return kept;
  for (const json& status : *statuses) {
    const json* name = member(status, "name");
    const json* id = member(status, "containerID");
    if (name != nullptr && name->is_string() && id != nullptr && id->is_string()) {
      kept.push_back({{"name", *name}, {"containerID", *id}});
    }
  }
  return kept;
}

bool is_peer_variable(const json& entry) {
  const json* key = member(entry, "name");
  const json* value = member(entry, "value");
  return key != nullptr && key->is_string() && value != nullptr && value->is_string() &&
         std::find(std::begin(kPeerEnvironment), std::end(kPeerEnvironment), key->get<std::string>()) !=
             std::end(kPeerEnvironment);
}

// Whether a value at a location of a parsed text is kept: no, yes, or only when it is no object
// or array (a scalar field).
enum class Want { kNo, kYes, kScalar };

// `at`: the keys from a pod object down, "[]" standing for an array's element.
Want wanted_in_pod(const std::vector<std::string>& at, std::size_t from) {
  const std::size_t depth = at.size() - from;
  const auto is = [&](std::size_t i, std::initializer_list<std::string_view> names) {
    return std::find(names.begin(), names.end(), at[from + i]) != names.end();
  };
  if (depth == 0) return Want::kYes;
  if (is(0, {"code", "message"})) return depth == 1 ? Want::kScalar : Want::kNo;  // an ERROR event's Status
  if (is(0, {"metadata"})) {
    if (depth == 1) return Want::kYes;
    if (is(1, {"uid", "namespace", "name", "resourceVersion"})) return depth == 2 ? Want::kScalar : Want::kNo;
    if (!is(1, {"annotations"})) return Want::kNo;
    if (depth == 2) return Want::kYes;
    return depth == 3 && is_kept_annotation(at[from + 2]) ? Want::kScalar : Want::kNo;
  }
  if (is(0, {"spec"})) {
    if (depth == 1) return Want::kYes;
    if (!is(1, {"containers", "initContainers"})) return Want::kNo;
    if (depth <= 3) return is(depth - 1, {"[]", "containers", "initContainers"}) ? Want::kYes : Want::kNo;
    if (is(3, {"name"})) return depth == 4 ? Want::kScalar : Want::kNo;
    if (!is(3, {"env"})) return Want::kNo;
    if (depth == 4) return Want::kYes;
    if (!is(4, {"[]"})) return Want::kNo;
    if (depth == 5) return Want::kYes;
    return depth == 6 && is(5, {"name", "value"}) ? Want::kScalar : Want::kNo;
  }
  if (is(0, {"status"})) {
    if (depth == 1) return Want::kYes;
    if (!is(1, {"containerStatuses", "initContainerStatuses"})) return Want::kNo;
    if (depth <= 3) return is(depth - 1, {"[]", "containerStatuses", "initContainerStatuses"}) ? Want::kYes : Want::kNo;
    return depth == 4 && is(3, {"name", "containerID"}) ? Want::kScalar : Want::kNo;
  }
  return Want::kNo;
}

// nlohmann's parser callback keeping what parse_trimmed keeps. It sees every event, also those
// inside values it discards (but no end of a discarded object or array).
class TrimmingParse {
 public:
  explicit TrimmingParse(PodsIn where) : where_(where) {}

  // `depth`: how many objects and arrays are open (the one starting or ending not counted).
  bool operator()(int depth, json::parse_event_t event, json& parsed) {
    // No event ends a discarded object or array: the depth closes those.
    const auto open = static_cast<std::size_t>(std::max(depth, 0));
    if (at_.size() > open) {
      at_.resize(open);
      kept_.resize(open);
    }
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start: {
        const bool keep = at_.size() < kMaxJsonDepth && wanted() == Want::kYes;
        at_.emplace_back(event == json::parse_event_t::array_start ? "[]" : "");
        kept_.push_back(0);
        return keep;
      }
      case json::parse_event_t::key:
        if (at_.empty()) return false;
        at_.back() = parsed.get<std::string>();
        return wanted() != Want::kNo;
      case json::parse_event_t::value:
        return !at_.empty() && at_.back() != "[]" && wanted() != Want::kNo;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        return keep_finished(parsed);
    }
    return false;
  }

 private:
  // A pod's location, from where its object starts; nullopt when `at_` is above or beside pods.
  std::optional<std::size_t> pod_from() const {
    if (where_ == PodsIn::kWatchEvent) {
      if (!at_.empty() && at_[0] == "object") return 1;
    } else if (at_.size() >= 2 && at_[0] == "items" && at_[1] == "[]") {
      return 2;
    }
    return std::nullopt;
  }

  Want wanted() const {
    if (const auto from = pod_from()) return wanted_in_pod(at_, *from);
    if (at_.empty()) return Want::kYes;
    if (where_ == PodsIn::kWatchEvent) return at_.size() == 1 && at_[0] == "type" ? Want::kScalar : Want::kNo;
    if (at_[0] == "items") return at_.size() == 1 ? Want::kYes : Want::kNo;
    if (at_[0] != "metadata") return Want::kNo;
    if (at_.size() == 1) return Want::kYes;
    return at_.size() == 2 && at_[1] == "resourceVersion" ? Want::kScalar : Want::kNo;
  }

  // An object or array just ended (and was kept so far): an env entry of another variable, or an
  // element over an array's bound, is dropped.
  bool keep_finished(const json& finished) {
    const auto from = pod_from();
    if (!from || at_.size() <= *from || at_.back() != "[]") return true;
    if (at_.size() == *from + 5 && at_[*from + 3] == "env" && !is_peer_variable(finished)) return false;
    return ++kept_.back() <= kMaxPodArrayElements;
  }

  const PodsIn where_;
  std::vector<std::string> at_;       // the key of each open object ("[]" for an array)
  std::vector<std::size_t> kept_;     // the elements kept of each open array
};

// What a pod asks of gpushare: its annotations and its containers' env.
json request_part(const json& trimmed) { return {trimmed["metadata"]["annotations"], trimmed["spec"]}; }

}  // namespace

json trim_pod(const json& pod) {
  const json* metadata = member(pod, "metadata");
  const json* uid = metadata ? member(*metadata, "uid") : nullptr;
  if (uid == nullptr || !uid->is_string()) return {};
  json kept_metadata = {{"uid", *uid}, {"annotations", json::object()}};
  for (const char* key : {"namespace", "name", "resourceVersion"}) {
    if (const json* value = member(*metadata, key); value != nullptr && value->is_string()) kept_metadata[key] = *value;
  }
  if (const json* annotations = member(*metadata, "annotations"); annotations != nullptr && annotations->is_object()) {
    for (const auto& [key, value] : annotations->items()) {
      // A value of another kind is dropped before it is copied: it may nest deeply.
      if (value.is_string() && is_kept_annotation(key)) kept_metadata["annotations"][key] = value;
    }
  }
  const json* spec = member(pod, "spec");
  const json* status = member(pod, "status");
  return {{"metadata", std::move(kept_metadata)},
          {"spec",
           {{"containers", trim_containers(spec ? member(*spec, "containers") : nullptr)},
            {"initContainers", trim_containers(spec ? member(*spec, "initContainers") : nullptr)}}},
          {"status",
           {{"containerStatuses", trim_statuses(status ? member(*status, "containerStatuses") : nullptr)},
            {"initContainerStatuses", trim_statuses(status ? member(*status, "initContainerStatuses") : nullptr)}}}};
}

json parse_trimmed(std::string_view text, PodsIn where) {
  TrimmingParse trimming(where);
  return json::parse(
      text.begin(), text.end(),
      [&trimming](int depth, json::parse_event_t event, json& parsed) { return trimming(depth, event, parsed); },
      false);
}

std::string container_name_of(const json& trimmed_pod, std::string_view container_id) {
  if (container_id.empty()) return {};
  const json* status = member(trimmed_pod, "status");
  for (const char* kind : {"containerStatuses", "initContainerStatuses"}) {
    const json* statuses = status ? member(*status, kind) : nullptr;
    if (statuses == nullptr || !statuses->is_array()) continue;
    for (const json& entry : *statuses) {
      // "<runtime>://<id>"
      const std::string id = entry.value("containerID", "");
      const std::size_t scheme = id.find("://");
      if (scheme != std::string::npos && std::string_view(id).substr(scheme + 3) == container_id) {
        return entry.value("name", "");
      }
    }
  }
  return {};
}

std::size_t PodCache::replace_all(std::vector<json> trimmed_pods) {
  std::lock_guard lock(mutex_);
  std::map<std::string, json> pods;
  std::size_t dropped = 0;
  for (json& pod : trimmed_pods) {
    if (pods.size() >= max_pods_) {
      ++dropped;
      continue;
    }
    std::string uid = pod["metadata"]["uid"].get<std::string>();
    const auto before = pods_.find(uid);
    if (before != pods_.end() && request_part(before->second) != request_part(pod)) changed_requests_.insert(uid);
    pods.emplace(std::move(uid), std::move(pod));
  }
  pods_ = std::move(pods);
  listed_ = true;
  changed_locked();
  return dropped;
}

bool PodCache::upsert(json trimmed_pod) {
  std::lock_guard lock(mutex_);
  std::string uid = trimmed_pod["metadata"]["uid"].get<std::string>();
  const auto found = pods_.find(uid);
  if (found == pods_.end()) {
    if (pods_.size() >= max_pods_) return false;
    pods_.emplace(std::move(uid), std::move(trimmed_pod));
  } else {
    if (request_part(found->second) != request_part(trimmed_pod)) changed_requests_.insert(uid);
    found->second = std::move(trimmed_pod);
  }
  changed_locked();
  return true;
}

void PodCache::erase(const std::string& uid) {
  std::lock_guard lock(mutex_);
  pods_.erase(uid);
  changed_requests_.erase(uid);
  changed_locked();
}

std::optional<json> PodCache::find(const std::string& uid) const {
  std::lock_guard lock(mutex_);
  const auto found = pods_.find(uid);
  if (found == pods_.end()) return std::nullopt;
  return found->second;
}

std::size_t PodCache::size() const {
  std::lock_guard lock(mutex_);
  return pods_.size();
}

std::uint64_t PodCache::version() const {
  std::lock_guard lock(mutex_);
  return version_;
}

bool PodCache::listed() const {
  std::lock_guard lock(mutex_);
  return listed_;
}

bool PodCache::wait_until(const std::function<bool(const PodCache&)>& done, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  // `done` reads the cache through its locked accessors: give the lock back around each check.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const std::uint64_t seen = version_;
    lock.unlock();
    if (done(*this)) return true;
    lock.lock();
    if (!changed_.wait_until(lock, deadline, [&] { return version_ != seen; })) return false;
  }
}

std::set<std::string> PodCache::take_changed_requests() {
  std::lock_guard lock(mutex_);
  return std::exchange(changed_requests_, {});
}

void PodCache::changed_locked() {
  ++version_;
  changed_.notify_all();
}

}  // namespace gpushare::agent
