// `gpushare trace merge DIR -o FILE` and `gpushare trace summary DIR [--json]`: the trace
// directory a traced tenant wrote (docs/tracing.md) as one Perfetto/Chrome trace, or as figures.
#include <cstdio>
#include <memory>

#include <fmt/format.h>

#include "commands.hpp"
#include "trace_merge.hpp"
#include "trace_model.hpp"
#include "trace_summary.hpp"

namespace gpushare::tools {
namespace {

trace::NoteSink note_sink(const char* command) {
  return [command](const std::string& text) { fmt::print(stderr, "gpushare trace {}: note: {}\n", command, text); };
}

// The directory's files read once; nullopt after saying why.
std::optional<trace::TraceModel> load(const char* command, const std::string& dir, trace::KernelIntervals kernels) {
  auto paths = trace::list_trace_files(dir);
  if (!paths) {
    fmt::print(stderr, "gpushare trace {}: {}\n", command, paths.error().message);
    return std::nullopt;
  }
  auto model = trace::load_trace(*paths, kernels, note_sink(command));
  if (!model) {
    fmt::print(stderr, "gpushare trace {}: {}\n", command, model.error().message);
    return std::nullopt;
  }
  return std::move(model).value();
}

}  // namespace

int trace_merge_command(const TraceMergeOptions& options) {
  const auto model = load("merge", options.dir, trace::KernelIntervals::kSkip);
  if (!model) return kExitFailure;
  // Written beside the target and renamed into place: a failed merge leaves no half file.
  const std::string partial = options.output + ".partial";
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> out(std::fopen(partial.c_str(), "wb"), &std::fclose);
  if (!out) {
    fmt::print(stderr, "gpushare trace merge: cannot write {}\n", partial);
    return kExitFailure;
  }
  // Notes were given by the first pass; the second reads the same files.
  const auto written = trace::write_chrome_trace(*model, out.get(), [](const std::string&) {});
  const bool closed = std::fclose(out.release()) == 0;
  if (!written || !closed || std::rename(partial.c_str(), options.output.c_str()) != 0) {
    fmt::print(stderr, "gpushare trace merge: {}: {}\n", options.output,
               written ? "write failed" : written.error().message);
    std::remove(partial.c_str());
    return kExitFailure;
  }
  return 0;
}

int trace_summary_command(const TraceSummaryOptions& options) {
  const auto model = load("summary", options.dir, trace::KernelIntervals::kKeep);
  if (!model) return kExitFailure;
  const auto summary = trace::summarize(*model);
  fmt::print("{}", options.json ? trace::summary_to_json(summary) : trace::render_summary(summary));
  return 0;
}

}  // namespace gpushare::tools
