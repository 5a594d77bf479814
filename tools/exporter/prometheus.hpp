// A gpushare report in the Prometheus text exposition format, version 0.0.4. Pure functions of a
// report, so that the exact text is tested without a server or a state file; docs/metrics.md
// lists every metric and what it means.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "core/report.hpp"

namespace gpushare::exporter {

inline constexpr std::string_view kExpositionContentType = "text/plain; version=0.0.4; charset=utf-8";

// Where a tenant runs in Kubernetes (the agent's tenant-labels file): extra labels of every sample
// that has a `tenant` label. An empty value is not known, and then the label is left out.
struct PodLabels {
  std::string namespace_name;
  std::string pod;
  std::string container;
};
using PodLabelsByTenant = std::map<std::string, PodLabels, std::less<>>;

// Every metric of `report`, and gpushare_up 1. A limit that does not exist (no memory quota, no
// share given, no cap) has no sample rather than a made-up value. A tenant found in `pods` gets
// its namespace, pod and container labels after its `tenant` label.
std::string render_prometheus(const Report& report, const PodLabelsByTenant& pods = {});

// `text` as one comment line ("# text\n", line feeds turned into spaces): Prometheus ignores it,
// a person reading the page does not.
std::string render_comment(std::string_view text);

// A scrape that found no state to read (none yet, or one that cannot be opened): the exporter's
// own metrics with gpushare_up 0, and `why` as a comment for whoever reads the text.
std::string render_prometheus_without_state(std::string_view why);

// `value` as the inside of a quoted label value: backslash, double quote and line feed escaped.
std::string escape_label_value(std::string_view value);

}  // namespace gpushare::exporter
