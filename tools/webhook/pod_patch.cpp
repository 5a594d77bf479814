#include "pod_patch.hpp"

#include <array>
#include <string_view>
#include <vector>

#include "json_patch.hpp"

namespace gpushare::webhook {
namespace {

using nlohmann::json;

const json kNoEntries = json::array();

struct HostVolume {
  const char* name;
  std::string path;
};

std::string without_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

// The path with "." and empty segments dropped and ".." applied, always rooted at '/': how the
// kubelet reaches the host folder, so "//usr/./local/gpushare/" is /usr/local/gpushare.
std::string normalized_host_path(std::string_view path) {
  std::vector<std::string_view> segments;
  while (!path.empty()) {
    const std::size_t slash = path.find('/');
    const std::string_view segment = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    if (segment.empty() || segment == ".") continue;
    if (segment == "..") {
      if (!segments.empty()) segments.pop_back();
      continue;
    }
    segments.push_back(segment);
  }
  std::string normalized;
  for (const std::string_view segment : segments) (normalized += '/') += segment;
  return normalized.empty() ? "/" : normalized;
}

// Whether `inner` is `outer` or inside it (both normalized).
bool is_within(const std::string& inner, const std::string& outer) {
  return inner == outer || outer == "/" || (inner.starts_with(outer) && inner[outer.size()] == '/');
}

// A string member, "" when absent or not a string.
std::string string_member(const json& object, const char* key) {
  const auto found = object.find(key);
  return found != object.end() && found->is_string() ? found->get<std::string>() : std::string();
}

bool is_our_volume(const json& volume, const HostVolume& ours) {
  const auto host_path = volume.find("hostPath");
  if (host_path == volume.end() || !host_path->is_object()) return false;
  // Only name and hostPath: any other volume source beside it would make the object invalid.
  return volume.size() == 2 && without_trailing_slashes(string_member(*host_path, "path")) == ours.path &&
         string_member(*host_path, "type") == "Directory";
}

bool is_our_mount(const json& mount, const HostVolume& ours) {
  const auto read_only = mount.find("readOnly");
  return string_member(mount, "name") == ours.name && read_only != mount.end() && *read_only == true &&
         string_member(mount, "subPath").empty() && string_member(mount, "subPathExpr").empty();
}

// The first entry of LD_PRELOAD (the loader splits on ':' and spaces).
std::string_view first_preload_entry(std::string_view value) {
  const std::size_t start = value.find_first_not_of(": ");
  if (start == std::string_view::npos) return {};
  value.remove_prefix(start);
  return value.substr(0, value.find_first_of(": "));
}

// Array `key` of `object`: null when absent, an Error when present but not an array.
Result<const json*> optional_array(const json& object, const char* key, const std::string& where) {
  const auto found = object.find(key);
  if (found == object.end() || found->is_null()) return static_cast<const json*>(nullptr);
  if (!found->is_array()) return Error{where + "." + key + " is not a list"};
  return &*found;
}

// Adds `entries` to the array at `pointer`: the whole array when it does not exist yet (`existing`
// null), else each at the end ("-").
void append_entries(json& operations, const std::string& pointer, const json* existing, const json& entries) {
  if (entries.empty()) return;
  if (existing == nullptr) {
    operations.push_back({{"op", "add"}, {"path", pointer}, {"value", entries}});
    return;
  }
  for (const json& entry : entries) {
    operations.push_back({{"op", "add"}, {"path", pointer + "/-"}, {"value", entry}});
  }
}

class PodPatcher {
 public:
  PodPatcher(const json& pod, const InjectionPaths& paths)
      : pod_(pod),
        volumes_{{{kLibVolumeName, without_trailing_slashes(paths.host_dir)},
                  {kRunVolumeName, without_trailing_slashes(paths.socket_dir)}}},
        preload_(paths.preload_library()),
        agent_socket_(paths.agent_socket()) {}

  Result<json> build() {
    const auto spec = pod_.find("spec");
    if (spec == pod_.end() || !spec->is_object()) return Error{"the pod has no spec"};
    if (Status added = add_volumes(*spec); !added) return added.error();
    if (Status checked = check_host_paths(*spec); !checked) return checked.error();
    if (Status checked = check_our_mounts_read_only(*spec); !checked) return checked.error();
    for (const char* list : {"initContainers", "containers"}) {
      auto containers = optional_array(*spec, list, "spec");
      if (!containers) return containers.error();
      if (*containers == nullptr) continue;
      for (std::size_t index = 0; index < (*containers)->size(); ++index) {
        if (Status added = add_to_container(list, index, (**containers)[index]); !added) return added.error();
      }
    }
    return std::move(operations_);
  }

 private:
  Status add_volumes(const json& spec) {
    auto volumes = optional_array(spec, "volumes", "spec");
    if (!volumes) return volumes.error();
    json missing = json::array();
    for (const HostVolume& ours : volumes_) {
      bool present = false;
      for (const json& volume : *volumes ? **volumes : kNoEntries) {
        if (!volume.is_object() || string_member(volume, "name") != ours.name) continue;
        if (!is_our_volume(volume, ours)) {
          return Error{"the pod already has a volume named \"" + std::string(ours.name) +
                       "\" that is not gpushare's (hostPath " + ours.path +
                       ", type Directory): rename it, or opt the pod out with gpushare.io/enabled: \"false\""};
        }
        present = true;
      }
      if (!present) {
        missing.push_back({{"name", ours.name}, {"hostPath", {{"path", ours.path}, {"type", "Directory"}}}});
      }
    }
    append_entries(operations_, json_pointer({"spec", "volumes"}), *volumes, missing);
    return Ok{};
  }

  // Every hostPath volume reaching gpushare's host folders (the folder itself, inside it, or a
  // parent such as /usr/local or /) must be exactly ours: any other would hand the pod the
  // preload library that every tenant loads, or the agent's socket folder, writable or not
  // read-only where our mounts are.
  Status check_host_paths(const json& spec) const {
    auto volumes = optional_array(spec, "volumes", "spec");
    if (!volumes) return volumes.error();
    for (const json& volume : *volumes ? **volumes : kNoEntries) {
      if (!volume.is_object()) continue;
      const auto host_path = volume.find("hostPath");
      if (host_path == volume.end() || !host_path->is_object()) continue;
      const std::string path = normalized_host_path(string_member(*host_path, "path"));
      const std::string name = string_member(volume, "name");
      for (const HostVolume& ours : volumes_) {
        const std::string our_path = normalized_host_path(ours.path);
        if (!is_within(path, our_path) && !is_within(our_path, path)) continue;
        if (name == ours.name && is_our_volume(volume, ours)) continue;
        return Error{"volume \"" + name + "\" is hostPath " + string_member(*host_path, "path") +
                     ", which reaches gpushare's host folder " + ours.path +
                     " (the preload library every pod on the node loads, or the agent's socket): only "
                     "gpushare's own read-only volume may mount it; remove that volume, or opt the pod "
                     "out with gpushare.io/enabled: \"false\""};
      }
    }
    return Ok{};
  }

  // A mount of gpushare-lib or gpushare-run (already in the pod at re-invocation, or declared by
  // its author) must be read-only at whatever path, in every kind of container: else the pod
  // could write the files other tenants load.
  Status check_our_mounts_read_only(const json& spec) const {
    for (const char* list : {"initContainers", "containers", "ephemeralContainers"}) {
      auto containers = optional_array(spec, list, "spec");
      if (!containers) return containers.error();
      for (std::size_t index = 0; *containers != nullptr && index < (*containers)->size(); ++index) {
        const json& container = (**containers)[index];
        if (!container.is_object())
          return Error{"spec." + std::string(list) + "[" + std::to_string(index) + "] is not an object"};
        const std::string where =
            std::string(list) + "[" + std::to_string(index) + "] \"" + string_member(container, "name") + "\"";
        auto mounts = optional_array(container, "volumeMounts", where);
        if (!mounts) return mounts.error();
        for (const json& mount : *mounts ? **mounts : kNoEntries) {
          if (!mount.is_object()) continue;
          const std::string name = string_member(mount, "name");
          if (name != kLibVolumeName && name != kRunVolumeName) continue;
          const auto read_only = mount.find("readOnly");
          if (read_only != mount.end() && *read_only == true) continue;
          return Error{"container " + where + " mounts gpushare's volume \"" + name + "\" at " +
                       string_member(mount, "mountPath") +
                       " without readOnly: true; gpushare's folders are shared by every pod on the node and "
                       "may only be mounted read-only"};
        }
      }
    }
    return Ok{};
  }

  Status add_to_container(const char* list, std::size_t index, const json& container) {
    const std::string name = container.is_object() ? string_member(container, "name") : std::string();
    const std::string where = std::string(list) + "[" + std::to_string(index) + "] \"" + name + "\"";
    if (!container.is_object()) return Error{"spec." + where + " is not an object"};
    const std::string pointer = json_pointer({"spec", list, std::to_string(index)});
    if (Status added = add_mounts(container, pointer, where); !added) return added.error();
    return add_environment(container, pointer, where);
  }

  Status add_mounts(const json& container, const std::string& pointer, const std::string& where) {
    auto mounts = optional_array(container, "volumeMounts", where);
    if (!mounts) return mounts.error();
    json missing = json::array();
    for (const HostVolume& ours : volumes_) {
      bool present = false;
      for (const json& mount : *mounts ? **mounts : kNoEntries) {
        if (!mount.is_object() || without_trailing_slashes(string_member(mount, "mountPath")) != ours.path) continue;
        if (!is_our_mount(mount, ours)) {
          return Error{"container " + where + " already mounts volume \"" + string_member(mount, "name") + "\" at " +
                       ours.path +
                       ", where gpushare mounts its own (read-only): remove that mount, or opt the pod "
                       "out with gpushare.io/enabled: \"false\""};
        }
        present = true;
      }
      if (!present) missing.push_back({{"name", ours.name}, {"mountPath", ours.path}, {"readOnly", true}});
    }
    append_entries(operations_, pointer + json_pointer({"volumeMounts"}), *mounts, missing);
    return Ok{};
  }

  // LD_PRELOAD gets gpushare's library first (`ours:theirs` when the container sets one
  // literally); GPUSHARE_AGENT is added unless the container sets it.
  Status add_environment(const json& container, const std::string& pointer, const std::string& where) {
    auto env = optional_array(container, "env", where);
    if (!env) return env.error();
    const std::string env_pointer = pointer + json_pointer({"env"});
    bool has_preload = false;
    bool has_agent = false;
    for (std::size_t i = 0; *env != nullptr && i < (*env)->size(); ++i) {
      const json& variable = (**env)[i];
      if (!variable.is_object()) continue;
      const std::string name = string_member(variable, "name");
      if (name == "GPUSHARE_AGENT") has_agent = true;
      if (name != "LD_PRELOAD") continue;
      has_preload = true;
      if (variable.contains("valueFrom")) {
        return Error{"container " + where +
                     " sets LD_PRELOAD through valueFrom: gpushare must put its library first in LD_PRELOAD and "
                     "cannot read that value at admission; set LD_PRELOAD literally (value:), or opt the pod out "
                     "with gpushare.io/enabled: \"false\""};
      }
      const std::string theirs = string_member(variable, "value");
      if (first_preload_entry(theirs) == preload_) continue;
      operations_.push_back({{"op", variable.contains("value") ? "replace" : "add"},
                             {"path", env_pointer + json_pointer({std::to_string(i), "value"})},
                             {"value", theirs.empty() ? preload_ : preload_ + ":" + theirs}});
    }
    json missing = json::array();
    if (!has_preload) missing.push_back({{"name", "LD_PRELOAD"}, {"value", preload_}});
    if (!has_agent) missing.push_back({{"name", "GPUSHARE_AGENT"}, {"value", agent_socket_}});
    append_entries(operations_, env_pointer, *env, missing);
    return Ok{};
  }

  const json& pod_;
  const std::array<HostVolume, 2> volumes_;
  const std::string preload_;
  const std::string agent_socket_;
  json operations_ = json::array();
};

}  // namespace

std::string InjectionPaths::preload_library() const {
  return without_trailing_slashes(host_dir) + "/current/lib/gpushare/libgpushare-preload.so";
}

std::string InjectionPaths::agent_socket() const { return without_trailing_slashes(socket_dir) + "/agent.sock"; }

Result<nlohmann::json> build_pod_patch(const nlohmann::json& pod, const InjectionPaths& paths) {
  if (!pod.is_object()) return Error{"the object is not a pod"};
  return PodPatcher(pod, paths).build();
}

}  // namespace gpushare::webhook
