#include "pod_request.hpp"

#include <charconv>
#include <cmath>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/settings.hpp"
#include "core/size.hpp"
#include "core/tenant_name.hpp"

namespace gpushare::kube {
namespace {

using nlohmann::json;

// A string member of an object, or nullptr (absent, or not a string).
const std::string* string_member(const json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  const auto found = object.find(key);
  if (found == object.end() || !found->is_string()) return nullptr;
  return found->get_ptr<const std::string*>();
}

const json* object_member(const json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  const auto found = object.find(key);
  return found != object.end() && found->is_object() ? &*found : nullptr;
}

// `text` for a message: printable ASCII as it is, other bytes as \xNN (a message must be valid UTF-8
// for the JSON it travels in), at most 64 characters of it.
std::string printable(std::string_view text) {
  constexpr std::size_t kShown = 64;
  std::string out;
  for (char c : text.substr(0, kShown)) {
    const auto byte = static_cast<unsigned char>(c);
    out += byte >= 0x20 && byte < 0x7f ? std::string(1, c) : fmt::format("\\x{:02x}", byte);
  }
  if (text.size() > kShown) out += "...";
  return out;
}

// A group name in a tenant: what Kubernetes allows in a label value, so that a label can carry it.
Status check_group(std::string_view group) {
  if (group.empty() || group.size() > 63) return Error{"expected 1 to 63 characters"};
  for (char c : group) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                         c == '_' || c == '.';
    if (!allowed) {
      return Error{fmt::format("'{}' is not allowed (letters, digits, '-', '_' and '.')", printable({&c, 1}))};
    }
  }
  return Ok{};
}

Status annotation_error(std::string_view key, std::string_view value, std::string_view why) {
  return Error{fmt::format("annotation {}{}: \"{}\": {}", kAnnotationPrefix, printable(key), printable(value), why)};
}

// One gpushare.io/ annotation into `request`.
Status apply_annotation(std::string_view key, const std::string& value, PodRequest& request) {
  if (key == "memory") {
    auto bytes = parse_limit(value);
    if (!bytes) return annotation_error(key, value, bytes.error().message);
    request.limits.memory_bytes = *bytes;
    request.sources.push_back(fmt::format("memory {} from {}memory", format_size(*bytes), kAnnotationPrefix));
  } else if (key == "share") {
    auto share = parse_percent(value);
    if (!share) return annotation_error(key, value, share.error().message);
    request.limits.compute.share_pct = *share;
  } else if (key == "limit") {
    auto cap = parse_compute_cap(value);
    if (!cap) return annotation_error(key, value, cap.error().message);
    request.limits.compute.limit_pct = *cap;
  } else if (key == "priority") {
    auto priority = parse_priority(value);
    if (!priority) return annotation_error(key, value, priority.error().message);
    request.limits.compute.priority = *priority;
  } else if (key == "tenant") {
    if (auto valid = check_group(value); !valid) return annotation_error(key, value, valid.error().message);
    request.tenant_group = value;
  } else if (key == "enabled") {
    if (value != "true" && value != "false") return annotation_error(key, value, "expected \"true\" or \"false\"");
    request.opted_out = value == "false";
    if (request.opted_out) return Ok{};
  } else {
    return Error{fmt::format("annotation {}{} is not one gpushare reads (memory, share, limit, priority, tenant, "
                             "enabled)",
                             kAnnotationPrefix, printable(key))};
  }
  request.opted_in = true;
  return Ok{};
}

// A whole number of MiB as bytes (NVIDIA_GPU_MEMORY_*, KAI's gpu-memory); nullopt when it is not one.
std::optional<std::uint64_t> whole_mib(std::string_view text) {
  std::uint64_t mib = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), mib);
  if (error != std::errc{} || end != text.data() + text.size() || mib == 0 || mib > (UINT64_MAX >> 21)) {
    return std::nullopt;
  }
  return mib << 20;
}

std::optional<double> fraction(const std::string& text) {
  try {
    std::size_t used = 0;
    const double value = std::stod(text, &used);
    if (used != text.size() || !std::isfinite(value) || value <= 0.0 || value > 1.0) return std::nullopt;
    return value;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// The literal value of variable `name` in the pod's containers (only `container` when given); the
// first container that sets it wins. Values from valueFrom are not known to the API server.
const std::string* container_env(const json& pod, std::string_view container, std::string_view name) {
  const json* spec = object_member(pod, "spec");
  if (spec == nullptr) return nullptr;
  const auto containers = spec->find("containers");
  if (containers == spec->end() || !containers->is_array()) return nullptr;
  for (const json& entry : *containers) {
    const std::string* entry_name = string_member(entry, "name");
    if (!container.empty() && (entry_name == nullptr || *entry_name != container)) continue;
    const auto env = entry.is_object() ? entry.find("env") : entry.end();
    if (env == entry.end() || !env->is_array()) continue;
    for (const json& variable : *env) {
      const std::string* variable_name = string_member(variable, "name");
      if (variable_name != nullptr && *variable_name == name) {
        if (const std::string* value = string_member(variable, "value")) return value;
      }
    }
  }
  return nullptr;
}

// The memory a peer asked for, when gpushare's annotation did not: sizes first (the most exact), then
// fractions of the GPU.
void read_peer_memory(const json& pod, const json* annotations, std::string_view container, PodRequest& request) {
  struct SizeSource {
    std::string_view what;
    const std::string* value;
  };
  const SizeSource sizes[] = {
      {"NVIDIA_GPU_MEMORY_LIMIT", container_env(pod, container, "NVIDIA_GPU_MEMORY_LIMIT")},
      {"annotation gpu-memory", annotations ? string_member(*annotations, "gpu-memory") : nullptr},
      {"NVIDIA_GPU_MEMORY_REQUEST", container_env(pod, container, "NVIDIA_GPU_MEMORY_REQUEST")},
  };
  for (const auto& [what, value] : sizes) {
    if (value == nullptr) continue;
    if (auto bytes = whole_mib(*value)) {
      request.limits.memory_bytes = *bytes;
      request.sources.push_back(fmt::format("memory {} from {}", format_size(*bytes), what));
      return;
    }
    request.sources.push_back(fmt::format("{} \"{}\" skipped: not a whole number of MiB", what, *value));
  }
  const SizeSource fractions[] = {
      {"annotation gpu-fraction", annotations ? string_member(*annotations, "gpu-fraction") : nullptr},
      {"GPU_PORTION", container_env(pod, container, "GPU_PORTION")},
  };
  for (const auto& [what, value] : fractions) {
    if (value == nullptr) continue;
    if (auto part = fraction(*value)) {
      request.memory_fraction = *part;
      request.sources.push_back(fmt::format("memory {} of the GPU from {}", *part, what));
      return;
    }
    request.sources.push_back(fmt::format("{} \"{}\" skipped: not a fraction above 0 and at most 1", what, *value));
  }
}

}  // namespace

Result<PodIdentity> read_pod_identity(const nlohmann::json& pod) {
  const json* metadata = object_member(pod, "metadata");
  if (metadata == nullptr) return Error{"the pod has no metadata"};
  PodIdentity identity;
  for (auto [key, out] : {std::pair{"uid", &identity.uid}, std::pair{"namespace", &identity.namespace_name},
                          std::pair{"name", &identity.name}}) {
    const std::string* value = string_member(*metadata, key);
    if (value == nullptr || value->empty()) return Error{fmt::format("the pod has no metadata.{}", key)};
    *out = *value;
  }
  return identity;
}

Result<PodRequest> read_pod_request(const nlohmann::json& pod, std::string_view container) {
  PodRequest request;
  const json* metadata = object_member(pod, "metadata");
  const json* annotations = metadata ? object_member(*metadata, "annotations") : nullptr;
  if (annotations != nullptr) {
    for (const auto& [key, value] : annotations->items()) {
      if (!key.starts_with(kAnnotationPrefix)) continue;
      const std::string_view name = std::string_view(key).substr(kAnnotationPrefix.size());
      if (!value.is_string()) return Error{fmt::format("annotation {} is not a string", printable(key))};
      if (auto applied = apply_annotation(name, value.get_ref<const std::string&>(), request); !applied) {
        return applied.error();
      }
    }
  }
  if (request.opted_out && request.opted_in) {
    return Error{fmt::format("annotation {}enabled is \"false\" but other {} annotations ask for gpushare",
                             kAnnotationPrefix, kAnnotationPrefix)};
  }
  const bool memory_asked = annotations != nullptr && annotations->contains(std::string(kAnnotationPrefix) + "memory");
  if (!memory_asked && !request.opted_out) {
    read_peer_memory(pod, annotations, container, request);
  }
  return request;
}

std::string tenant_of(const PodIdentity& pod, const PodRequest& request) {
  const std::string& last = request.tenant_group.empty() ? pod.name : request.tenant_group;
  return normalize_tenant_name(fmt::format("{}/{}", pod.namespace_name, last));
}

}  // namespace gpushare::kube
