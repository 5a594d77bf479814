// The pods of this node as the API server's watch reports them (kube_pod_watch.hpp), kept for the
// agent's loop, which looks a pod up by the UID its cgroup names (pod_cgroup.hpp).
//
// Each pod is kept trimmed to what the agent reads (kube::read_pod_identity, kube::read_pod_request
// and container names): metadata.uid/namespace/name, the annotations that are gpushare's
// ("gpushare.io/...") or name a GPU (peers' requests: KAI's gpu-fraction, gpu-memory), the
// containers' names and literal env values of the peers' variables, and the container statuses
// (name and containerID). Written by the watch's thread, read by the loop: one mutex.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace gpushare::agent {

// The environment variables of peers' requests that kube::read_pod_request reads from containers.
inline constexpr std::string_view kPeerEnvironment[] = {"GPU_PORTION", "NVIDIA_GPU_MEMORY_LIMIT",
                                                        "NVIDIA_GPU_MEMORY_REQUEST"};

// The parts of a pod object the agent reads; {} when `pod` has no string metadata.uid. Only
// annotations whose value is a string are kept (the API server writes no other kind).
nlohmann::json trim_pod(const nlohmann::json& pod);

// Where the pods are in a text the API server sends.
enum class PodsIn {
  kWatchEvent,  // {"type": ..., "object": pod, or an ERROR's Status with code and message}
  kPodList,     // {"metadata": {"resourceVersion": ...}, "items": [pod, ...]}
};

// Deepest nesting kept when parsing: a pod object is shallow, so deeper values are dropped.
inline constexpr std::size_t kMaxJsonDepth = 64;
// Most elements kept of one array of a pod (containers, their env, statuses).
inline constexpr std::size_t kMaxPodArrayElements = 1024;

// `text` parsed keeping of its pods only what trim_pod reads (and of an event its type and an
// ERROR's code and message, of a list its resourceVersion): what a bulky pod carries besides
// (other annotations, fields, env entries of other variables) is dropped as it is read, so that
// parsing takes little more memory than the text. A discarded value when `text` is no JSON.
nlohmann::json parse_trimmed(std::string_view text, PodsIn where);

// The container of a pod whose runtime ID is `container_id` (64 hex digits), from its statuses'
// containerID ("containerd://<id>"); "" when none has it.
std::string container_name_of(const nlohmann::json& trimmed_pod, std::string_view container_id);

class PodCache {
 public:
  explicit PodCache(std::size_t max_pods) : max_pods_(max_pods) {}

  // A list's answer replaces everything; the first one marks the cache listed. Returns the pods
  // dropped over the bound.
  std::size_t replace_all(std::vector<nlohmann::json> trimmed_pods);
  // ADDED or MODIFIED; false when the pod is new and the cache is full (dropped).
  bool upsert(nlohmann::json trimmed_pod);
  void erase(const std::string& uid);

  std::optional<nlohmann::json> find(const std::string& uid) const;
  std::size_t size() const;
  // Counts every change; waiters wake on each.
  std::uint64_t version() const;
  bool listed() const;
  // Waits until `done` holds (checked under the lock, after each change) or `timeout` passes.
  bool wait_until(const std::function<bool(const PodCache&)>& done, std::chrono::milliseconds timeout) const;
  // The UIDs of pods whose gpushare annotations or peers' env changed since the last call.
  std::set<std::string> take_changed_requests();

 private:
  void changed_locked();

  const std::size_t max_pods_;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::map<std::string, nlohmann::json> pods_;
  std::set<std::string> changed_requests_;
  std::uint64_t version_ = 0;
  bool listed_ = false;
};

}  // namespace gpushare::agent
