#include "tenant_labels.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/tenant_name.hpp"
#include "core/unique_fd.hpp"

namespace gpushare::kube {
namespace {

using nlohmann::json;

Error system_error(std::string_view what, const std::string& path) {
  return Error{fmt::format("{} {}: {}", what, path, std::strerror(errno))};
}

Status write_all(int fd, std::string_view text, const std::string& path) {
  while (!text.empty()) {
    const ssize_t written = ::write(fd, text.data(), text.size());
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) return system_error("cannot write", path);
    text.remove_prefix(static_cast<std::size_t>(written));
  }
  return Ok{};
}

Result<std::string> read_small_file(int fd, const std::string& path) {
  struct stat info {};
  if (::fstat(fd, &info) != 0) return system_error("cannot stat", path);
  if (!S_ISREG(info.st_mode)) return Error{fmt::format("{} is not a regular file", path)};
  if (static_cast<std::uint64_t>(info.st_size) > kTenantLabelsMaxBytes) {
    return Error{fmt::format("{} is larger than {} bytes", path, kTenantLabelsMaxBytes)};
  }
  std::string text;
  char buffer[65536];
  for (;;) {
    const ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return system_error("cannot read", path);
    if (got == 0) break;
    text.append(buffer, static_cast<std::size_t>(got));
    if (text.size() > kTenantLabelsMaxBytes) {
      return Error{fmt::format("{} is larger than {} bytes", path, kTenantLabelsMaxBytes)};
    }
  }
  return text;
}

Result<TenantLabels> labels_from(const std::string& tenant, const json& value) {
  if (!value.is_object()) return Error{fmt::format("tenant {}: expected an object", tenant)};
  TenantLabels labels;
  for (auto [key, out] : {std::pair{"namespace", &labels.namespace_name}, std::pair{"pod", &labels.pod},
                          std::pair{"container", &labels.container}}) {
    const auto found = value.find(key);
    if (found == value.end()) continue;
    if (!found->is_string()) return Error{fmt::format("tenant {}: {} is not a string", tenant, key)};
    *out = found->get<std::string>();
  }
  return labels;
}

}  // namespace

Status write_tenant_labels(const std::string& path, const TenantLabelMap& by_tenant) {
  json tenants = json::object();
  for (const auto& [tenant, labels] : by_tenant) {
    json entry = json::object();
    if (!labels.namespace_name.empty()) entry["namespace"] = labels.namespace_name;
    if (!labels.pod.empty()) entry["pod"] = labels.pod;
    if (!labels.container.empty()) entry["container"] = labels.container;
    tenants[tenant] = std::move(entry);
  }
  // Replacement bytes for invalid UTF-8 rather than an exception: names come from the API server.
  const std::string text =
      json{{"version", 1}, {"tenants", std::move(tenants)}}.dump(-1, ' ', false, json::error_handler_t::replace) +
      "\n";
  if (text.size() > kTenantLabelsMaxBytes) {
    return Error{fmt::format("the labels of {} tenants would be larger than {} bytes", by_tenant.size(),
                             kTenantLabelsMaxBytes)};
  }
  const std::string temporary = fmt::format("{}.{}.tmp", path, ::getpid());
  {
    UniqueFd fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (fd.get() < 0) return system_error("cannot create", temporary);
    Status written = write_all(fd.get(), text, temporary);
    if (written && ::fchmod(fd.get(), 0644) != 0) written = system_error("cannot chmod", temporary);
    if (!written) {
      ::unlink(temporary.c_str());
      return written;
    }
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const Error error = system_error(fmt::format("cannot rename {} to", temporary), path);
    ::unlink(temporary.c_str());
    return error;
  }
  return Ok{};
}

Result<TenantLabelMap> read_tenant_labels(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) {
    if (errno == ENOENT) return TenantLabelMap{};
    return system_error("cannot open", path);
  }
  auto text = read_small_file(fd.get(), path);
  if (!text) return text.error();
  const json document = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return Error{fmt::format("{} is not JSON", path)};
  const auto version = document.is_object() ? document.find("version") : document.end();
  if (version == document.end() || !version->is_number_integer() || version->get<long long>() != 1) {
    return Error{fmt::format("{}: expected an object with \"version\": 1", path)};
  }
  const auto tenants = document.find("tenants");
  if (tenants == document.end() || !tenants->is_object()) {
    return Error{fmt::format("{}: expected \"tenants\" to be an object", path)};
  }
  TenantLabelMap labels;
  for (const auto& [tenant, value] : tenants->items()) {
    if (auto valid = validate_tenant_name(tenant); !valid) {
      return Error{fmt::format("{}: {}", path, valid.error().message)};
    }
    auto entry = labels_from(tenant, value);
    if (!entry) return Error{fmt::format("{}: {}", path, entry.error().message)};
    labels.emplace(tenant, std::move(entry).value());
  }
  return labels;
}

}  // namespace gpushare::kube
