// The Kubernetes labels of tenants that are pods, handed from the node agent (which knows the pods)
// to the exporter (which labels its metrics with them) through a small JSON file beside the agent's
// socket:
//
//   {"version": 1, "tenants": {"ml/train-0": {"namespace": "ml", "pod": "train-0", "container": "main"}}}
//
// An empty or absent field is not known (a tenant grouping several pods has no one pod).
#pragma once

#include <map>
#include <string>

#include "core/result.hpp"

namespace gpushare::kube {

struct TenantLabels {
  std::string namespace_name;
  std::string pod;
  std::string container;
  bool operator==(const TenantLabels&) const = default;
};

using TenantLabelMap = std::map<std::string, TenantLabels>;

inline constexpr const char* kTenantLabelsPath = "/run/gpushare/tenant-labels.json";
// Larger files are refused by the reader (and never written): the file is read on every scrape.
inline constexpr std::size_t kTenantLabelsMaxBytes = 4u << 20;

// Replaces the file at `path` whole (a temporary file beside it, then rename), mode 0644: a reader sees
// the old file or the new one, never a part.
Status write_tenant_labels(const std::string& path, const TenantLabelMap& by_tenant);

// The labels in the file at `path`; an empty map when there is no file. A file that is too large, is
// not the format above or names an invalid tenant is an Error saying what is wrong.
Result<TenantLabelMap> read_tenant_labels(const std::string& path);

}  // namespace gpushare::kube
