// The Grafana dashboard and the PrometheusRule (deploy/kubernetes/monitoring) ask only for what the
// exporter emits: every metric name and label in their PromQL, legends and annotations is checked
// against the exporter's own text for a report with every kind of figure, so that a renamed
// metric or label cannot leave a panel empty or an alert silent. Also: each alert's runbook link
// points at a section of docs/metrics.md.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <cctype>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "exposition.hpp"
#include "prometheus.hpp"
#include "sample_report.hpp"

namespace gpushare::testing {
namespace {

using LabelSets = std::map<std::string, std::set<std::string>>;  // metric -> its label names

// Labels Prometheus adds to every sample of a target: its own, and `node` from the ServiceMonitor.
const std::set<std::string> kTargetLabels{"job", "instance", "node"};

// Metrics of others that the dashboard and the rules use on purpose: Prometheus's `up`, and
// dcgm-exporter's, joined on the GPU's UUID (docs/metrics.md).
const LabelSets kForeignMetrics{{"up", {}},
                                {"DCGM_FI_DEV_GPU_UTIL", {"UUID", "gpu", "modelName", "Hostname"}},
                                {"DCGM_FI_DEV_FB_USED", {"UUID", "gpu", "modelName", "Hostname"}}};

std::string read_file(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot read " + path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// What the exporter emits, family by family, for a report where every family has a sample: two
// tenants (one with a pod and container, one with a pod only) and an escaped process.
LabelSets exporter_labels() {
  Report report = two_tenants();
  UnaccountedReport escaped;
  escaped.pid = 4242;
  escaped.gpu_uuid = "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f";
  escaped.used_bytes = 1u << 30;
  escaped.unaccounted_bytes = 1u << 30;
  escaped.cgroup = "/kubepods/pod-x";
  report.unaccounted.push_back(escaped);
  const exporter::PodLabelsByTenant pods{{"train", {"team-a", "train-0", "trainer"}},
                                         {"serve", {"team-b", "serve-0", ""}}};
  const Exposition exposition = parse_exposition(exporter::render_prometheus(report, pods));
  LabelSets labels;
  for (const std::string& family : exposition.type_order) labels[family];
  for (const Sample& sample : exposition.samples) {
    for (const auto& label : sample.labels) labels[sample.name].insert(label.first);
  }
  return labels;
}

struct Token {
  enum Kind { kName, kString, kNumber, kVariable, kPunctuation } kind;
  std::string text;
};

std::vector<Token> tokenize(const std::string& promql) {
  std::vector<Token> tokens;
  const auto name_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':'; };
  for (std::size_t i = 0; i < promql.size();) {
    const char c = promql[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (c == '"' || c == '\'') {
      std::string text;
      for (++i; i < promql.size() && promql[i] != c; ++i) {
        if (promql[i] == '\\' && i + 1 < promql.size()) ++i;
        text += promql[i];
      }
      if (i == promql.size()) throw std::runtime_error("unterminated string in " + promql);
      ++i;
      tokens.push_back({Token::kString, text});
    } else if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') {
      const std::size_t start = i;
      while (i < promql.size() && (name_char(promql[i]) || promql[i] == '.')) ++i;
      tokens.push_back({Token::kNumber, promql.substr(start, i - start)});
    } else if (c == '$' || name_char(c)) {
      const std::size_t start = c == '$' ? ++i : i;
      while (i < promql.size() && name_char(promql[i])) ++i;
      tokens.push_back({c == '$' ? Token::kVariable : Token::kName, promql.substr(start, i - start)});
    } else {
      tokens.push_back({Token::kPunctuation, std::string(1, c)});
      ++i;
    }
  }
  return tokens;
}

// The names a PromQL expression (or a Grafana label_values() query) uses.
struct PromqlNames {
  LabelSets selectors;                 // metric -> the labels its {...} matches on
  std::set<std::string> other_labels;  // by/on/... lists, label_replace's source, label_values' label
  std::set<std::string> created;       // label_replace's destination
};

bool is_punctuation(const std::vector<Token>& tokens, std::size_t at, char c) {
  return at < tokens.size() && tokens[at].kind == Token::kPunctuation && tokens[at].text[0] == c;
}

std::size_t closing_parenthesis(const std::vector<Token>& tokens, std::size_t open) {
  int depth = 0;
  for (std::size_t at = open; at < tokens.size(); ++at) {
    if (is_punctuation(tokens, at, '(')) ++depth;
    if (is_punctuation(tokens, at, ')') && --depth == 0) return at;
  }
  throw std::runtime_error("unbalanced parentheses");
}

PromqlNames read_promql(const std::string& promql) {
  static const std::set<std::string> kLabelLists{"by", "without", "on", "ignoring", "group_left", "group_right"};
  static const std::set<std::string> kKeywords{"and", "or", "unless", "bool", "offset"};
  static const std::set<std::string> kAggregations{"sum",    "min",  "max",     "avg",      "count", "stddev",
                                                   "stdvar", "topk", "bottomk", "quantile", "group", "count_values"};
  const std::vector<Token> tokens = tokenize(promql);
  PromqlNames names;
  std::set<std::size_t> label_tokens;  // names that are labels, not metrics
  for (std::size_t at = 0; at < tokens.size(); ++at) {
    const Token& token = tokens[at];
    if (token.kind != Token::kName || label_tokens.count(at) != 0 || kKeywords.count(token.text) != 0) continue;
    if (kLabelLists.count(token.text) != 0) {
      if (!is_punctuation(tokens, at + 1, '(')) continue;  // group_left without a list
      const std::size_t close = closing_parenthesis(tokens, at + 1);
      for (std::size_t label = at + 2; label < close; ++label) {
        if (tokens[label].kind == Token::kName) names.other_labels.insert(tokens[label].text);
      }
      at = close;
      continue;
    }
    if (kAggregations.count(token.text) != 0) continue;
    if (is_punctuation(tokens, at + 1, '(')) {  // a function
      const std::size_t close = closing_parenthesis(tokens, at + 1);
      if (token.text == "label_replace") {
        // label_replace(v, "destination", "replacement", "source", "regex")
        if (close < 7 || tokens[close - 7].kind != Token::kString || tokens[close - 3].kind != Token::kString) {
          throw std::runtime_error("label_replace without its four strings: " + promql);
        }
        names.created.insert(tokens[close - 7].text);
        names.other_labels.insert(tokens[close - 3].text);
      } else if (token.text == "label_values" && tokens[close - 1].kind == Token::kName) {
        names.other_labels.insert(tokens[close - 1].text);
        label_tokens.insert(close - 1);
      }
      continue;
    }
    LabelSets::mapped_type& matched = names.selectors[token.text];
    if (is_punctuation(tokens, at + 1, '{')) {
      for (at += 2; at < tokens.size() && !is_punctuation(tokens, at, '}'); ++at) {
        if (tokens[at].kind == Token::kName) matched.insert(tokens[at].text);
      }
    }
  }
  return names;
}

// Checks one query: its metrics exist, with the labels it matches on, and every other label it
// names (lists, legends, annotations) is one of its metrics' or one it makes.
void expect_emitted(const std::string& where, const std::string& promql, const std::set<std::string>& shown_labels,
                    const LabelSets& emitted) {
  SCOPED_TRACE(where + ": " + promql);
  const PromqlNames names = read_promql(promql);
  EXPECT_FALSE(names.selectors.empty()) << "no metric found";
  std::set<std::string> available = kTargetLabels;
  available.insert(names.created.begin(), names.created.end());
  for (const auto& [metric, matched] : names.selectors) {
    auto known = emitted.find(metric);
    if (known == emitted.end()) known = kForeignMetrics.find(metric);
    if (known == kForeignMetrics.end()) {
      ADD_FAILURE() << "metric " << metric << " is not one the exporter emits";
      continue;
    }
    available.insert(known->second.begin(), known->second.end());
    for (const std::string& label : matched) {
      EXPECT_TRUE(known->second.count(label) != 0 || kTargetLabels.count(label) != 0)
          << metric << " has no label " << label;
    }
  }
  for (const std::string& label : names.other_labels) EXPECT_EQ(available.count(label), 1u) << "label " << label;
  for (const std::string& label : shown_labels) EXPECT_EQ(available.count(label), 1u) << "shown label " << label;
}

// Labels a Grafana legend ({{pod}}) or an alert's annotation ($labels.pod) shows.
std::set<std::string> labels_shown(const std::string& text, const std::regex& pattern) {
  std::set<std::string> labels;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), pattern); it != std::sregex_iterator(); ++it) {
    labels.insert((*it)[1]);
  }
  return labels;
}

void expect_panels_emitted(const nlohmann::json& panels, const LabelSets& emitted, int& queries) {
  static const std::regex kLegendLabel(R"(\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\})");
  for (const auto& panel : panels) {
    if (panel.contains("panels")) expect_panels_emitted(panel["panels"], emitted, queries);
    if (!panel.contains("targets")) continue;
    for (const auto& target : panel["targets"]) {
      const std::string legend = target.value("legendFormat", "");
      expect_emitted("panel \"" + panel.value("title", "") + "\"", target.at("expr").get<std::string>(),
                     labels_shown(legend, kLegendLabel), emitted);
      ++queries;
    }
  }
}

TEST(Monitoring, TheDashboardQueriesOnlyWhatTheExporterEmits) {
  const LabelSets emitted = exporter_labels();
  const auto dashboard = nlohmann::json::parse(read_file(GPUSHARE_GRAFANA_DASHBOARD));
  EXPECT_EQ(dashboard.at("schemaVersion").get<int>() / 10, 3) << "schemaVersion 3x";
  int queries = 0;
  expect_panels_emitted(dashboard.at("panels"), emitted, queries);
  EXPECT_GE(queries, 10);

  std::set<std::string> variables;
  for (const auto& variable : dashboard.at("templating").at("list")) {
    variables.insert(variable.at("name").get<std::string>());
    if (variable.at("type") != "query") continue;
    EXPECT_EQ(variable.at("datasource").at("uid"), "${datasource}");
    // The query as text (what every Grafana release reads), or as the newer editor's object.
    const auto& query = variable.at("query");
    expect_emitted("variable " + variable.at("name").get<std::string>(),
                   query.is_string() ? query.get<std::string>() : query.at("query").get<std::string>(), {}, emitted);
  }
  EXPECT_EQ(variables, (std::set<std::string>{"datasource", "namespace", "tenant", "gpu_uuid"}));
}

struct Alert {
  std::string name, expr, annotations, runbook_url;
};

// The rules file is plain YAML kept to one form (tests/exporter/prometheus_rules_test.sh reads it
// too): `- alert:` begins a rule, `expr:` is one line, annotations are one quoted line each.
std::vector<Alert> read_alerts(const std::string& path) {
  static const std::regex kField(R"(^\s*(- alert|expr|summary|description|runbook_url):\s*(.*)$)");
  std::vector<Alert> alerts;
  std::istringstream lines(read_file(path));
  std::string line;
  while (std::getline(lines, line)) {
    std::smatch field;
    if (!std::regex_match(line, field, kField)) continue;
    const std::string key = field[1];
    std::string value = field[2];
    if (key == "- alert") {
      alerts.push_back({value, "", "", ""});
      continue;
    }
    if (alerts.empty()) throw std::runtime_error(key + " before the first alert");
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
    if (key == "expr") {
      if (value.empty() || value[0] == '|' || value[0] == '>')
        throw std::runtime_error("expr not on one line: " + line);
      alerts.back().expr = value;
    } else if (key == "runbook_url") {
      alerts.back().runbook_url = value;
    } else {
      alerts.back().annotations += value + "\n";
    }
  }
  return alerts;
}

// GitHub's anchor of a heading: lower case, spaces as dashes, other punctuation dropped.
std::set<std::string> heading_anchors(const std::string& markdown_path) {
  std::set<std::string> anchors;
  std::istringstream lines(read_file(markdown_path));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] != '#') continue;
    const std::size_t text = line.find_first_not_of("# ");
    if (text == std::string::npos) continue;
    std::string anchor;
    for (const char c : line.substr(text)) {
      if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') {
        anchor += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      } else if (c == ' ') {
        anchor += '-';
      }
    }
    anchors.insert(anchor);
  }
  return anchors;
}

TEST(Monitoring, TheAlertsQueryOnlyWhatTheExporterEmitsAndLinkTheirRunbook) {
  static const std::regex kAnnotationLabel(R"(\$labels\.([A-Za-z_][A-Za-z0-9_]*))");
  const LabelSets emitted = exporter_labels();
  const std::vector<Alert> alerts = read_alerts(GPUSHARE_PROMETHEUS_RULE);
  const std::set<std::string> anchors = heading_anchors(GPUSHARE_METRICS_DOC);
  std::set<std::string> names;
  for (const Alert& alert : alerts) {
    names.insert(alert.name);
    ASSERT_FALSE(alert.expr.empty()) << alert.name;
    expect_emitted("alert " + alert.name, alert.expr, labels_shown(alert.annotations, kAnnotationLabel), emitted);
    const std::string docs = "docs/metrics.md#";
    const std::size_t anchor = alert.runbook_url.find(docs);
    ASSERT_NE(anchor, std::string::npos) << alert.name << ": " << alert.runbook_url;
    EXPECT_EQ(anchors.count(alert.runbook_url.substr(anchor + docs.size())), 1u)
        << alert.name << ": no section for " << alert.runbook_url << " in docs/metrics.md";
  }
  EXPECT_EQ(names,
            (std::set<std::string>{"GpushareTenantAtQuota", "GpushareOomRefusals", "GpushareLongWaits",
                                   "GpushareUnaccountedMemory", "GpushareStateUnreadable", "GpushareExporterDown"}));
}

// The checks above catch what they are meant to: a name the exporter does not emit, a label a
// metric lacks, a legend naming a label no metric has.
TEST(Monitoring, TheCheckRejectsUnknownMetricsAndLabels) {
  const LabelSets emitted = exporter_labels();
  const auto read =
      read_promql(R"q(sum by (gpu_uuid) (rate(gpushare_x_total{tenant=~"$tenant"}[$__rate_interval])) / on(gpu_uuid) )q"
                  R"q(group_left() label_replace(DCGM_FI_DEV_FB_USED, "gpu_uuid", "$1", "UUID", "(.+)") * 1048576)q");
  EXPECT_EQ(read.selectors, (LabelSets{{"gpushare_x_total", {"tenant"}}, {"DCGM_FI_DEV_FB_USED", {}}}));
  EXPECT_EQ(read.other_labels, (std::set<std::string>{"gpu_uuid", "UUID"}));
  EXPECT_EQ(read.created, (std::set<std::string>{"gpu_uuid"}));
  EXPECT_EQ(read_promql(R"(label_values(gpushare_tenant_info{namespace=~"$namespace"}, tenant))").other_labels,
            (std::set<std::string>{"tenant"}));

  EXPECT_TRUE(emitted.at("gpushare_tenant_memory_used_bytes").count("pod"));
  EXPECT_FALSE(emitted.at("gpushare_gpu_info").count("pod"));
  EXPECT_NONFATAL_FAILURE(expect_emitted("t", "gpushare_no_such_metric", {}, emitted), "not one the exporter emits");
  EXPECT_NONFATAL_FAILURE(expect_emitted("t", R"(gpushare_gpu_info{pod="x"})", {}, emitted), "has no label pod");
  EXPECT_NONFATAL_FAILURE(expect_emitted("t", "gpushare_gpu_info", {"tenant"}, emitted), "shown label tenant");
  EXPECT_NONFATAL_FAILURE(expect_emitted("t", "sum by (pod) (gpushare_gpu_info)", {}, emitted), "label pod");
}

}  // namespace
}  // namespace gpushare::testing
