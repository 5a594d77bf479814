// End-to-end trace mode: tenants run under `gpushare run --trace DIR` on the fake driver, with the
// fake libcupti.so as their CUPTI (GPUSHARE_CUPTI), then `gpushare trace summary` and `merge` read
// what they wrote. The fake CUPTI reports the fake engine's kernels, so the trace's shares can be
// held against the engine's own accounting. Without a usable CUPTI (missing, too old, held by a
// profiler) the tenant runs untraced: one log line and a note in its file.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "process.hpp"
#include "scratch.hpp"

namespace gpushare::testing {
namespace {

using Json = nlohmann::json;

struct Tenant {
  std::string name;
  std::vector<std::string> options;   // gpushare run options
  std::vector<std::string> workload;  // gpu_workload arguments after `linked`
  Env env = {};                       // more environment
};

struct TraceFile {
  std::string path;
  std::vector<Json> records;  // its lines, in order
  std::size_t count(const std::string& kind) const {
    return static_cast<std::size_t>(
        std::count_if(records.begin(), records.end(), [&](const Json& r) { return r.value("k", "") == kind; }));
  }
};

class Tracing : public ScratchTest {
 protected:
  Tracing() { fs::create_directories(trace_dir_); }

  std::unique_ptr<Process> start(const Tenant& tenant) const {
    std::vector<std::string> argv{GPUSHARE_TEST_TOOL, "run",       "--trace", trace_dir_,
                                  "--tenant",         tenant.name, "--state", state_};
    argv.insert(argv.end(), tenant.options.begin(), tenant.options.end());
    argv.insert(argv.end(), {"--", GPUSHARE_TEST_WORKLOAD, "linked"});
    argv.insert(argv.end(), tenant.workload.begin(), tenant.workload.end());
    Env env = tenant.env;
    env.insert({{"FAKE_CUDA_ENGINE", path("engine")}, {"GPUSHARE_CUPTI", GPUSHARE_TEST_FAKE_CUPTI}});
    return std::make_unique<Process>(argv, fake_driver_env(GPUSHARE_TEST_FAKE_DIR, std::move(env)));
  }

  // Every .gstrace file in the trace folder, each line parsed.
  std::vector<TraceFile> trace_files() const {
    std::vector<TraceFile> files;
    for (const auto& entry : fs::directory_iterator(trace_dir_)) {
      if (entry.path().extension() != ".gstrace") continue;
      TraceFile file{entry.path().string(), {}};
      std::ifstream in(entry.path());
      std::string line;
      while (std::getline(in, line)) {
        if (line.empty()) continue;
        Json record = Json::parse(line, nullptr, false);
        EXPECT_FALSE(record.is_discarded()) << file.path << ": not JSON: " << line;
        if (!record.is_discarded()) file.records.push_back(std::move(record));
      }
      files.push_back(std::move(file));
    }
    std::sort(files.begin(), files.end(), [](const TraceFile& x, const TraceFile& y) { return x.path < y.path; });
    return files;
  }

  // `gpushare trace ARGS...`, which must succeed.
  ProcessResult trace_command(std::vector<std::string> args) const {
    args.insert(args.begin(), {GPUSHARE_TEST_TOOL, "trace"});
    ProcessResult result = run(args, {});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return result;
  }

  const std::string trace_dir_ = path("trace");
};

std::size_t lines_containing(const std::string& text, const std::string& word) {
  std::istringstream lines(text);
  std::size_t count = 0;
  for (std::string line; std::getline(lines, line);) count += line.find(word) != std::string::npos ? 1 : 0;
  return count;
}

// Two tenants at 30 and 70 on one GPU: the trace's shares, kernels and slices against what the
// engine gave each, and the merged Chrome trace.
TEST_F(Tracing, ThirtySeventyPairMatchesTheEnginesAccounting) {
  const std::vector<Tenant> tenants{{"a", {"--share", "30"}, {"saturate", "3", "1000"}},
                                    {"b", {"--share", "70"}, {"saturate", "3", "1000"}}};
  std::vector<std::unique_ptr<Process>> processes;
  for (const auto& tenant : tenants) processes.push_back(start(tenant));
  std::map<std::string, double> kernel_us;
  std::map<std::string, std::uint64_t> launches;
  double total_us = 0;
  for (std::size_t i = 0; i < tenants.size(); ++i) {
    const ProcessResult r = processes[i]->wait(std::chrono::seconds(60));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(lines_containing(r.err, "untraced"), 0u) << r.err;
    const auto us = output_double(r.out, "kernel_us");
    const auto n = output_u64(r.out, "launches");
    ASSERT_TRUE(us.has_value() && n.has_value()) << "no kernel_us/launches in: " << r.out;
    kernel_us[tenants[i].name] = *us;
    launches[tenants[i].name] = *n;
    total_us += *us;
  }
  ASSERT_GT(total_us, 0);

  // One file per process, each opened by its one process record, each granted the GPU.
  const std::vector<TraceFile> files = trace_files();
  ASSERT_EQ(files.size(), 2u);
  std::set<std::string> traced_tenants;
  for (const TraceFile& file : files) {
    SCOPED_TRACE(file.path);
    ASSERT_FALSE(file.records.empty());
    EXPECT_EQ(file.records.front().value("k", ""), "process");
    EXPECT_EQ(file.count("process"), 1u);
    traced_tenants.insert(file.records.front().value("tenant", ""));
    EXPECT_GT(file.count("kernel"), 0u);
    EXPECT_EQ(file.count("note"), 0u);
    const bool granted = std::any_of(file.records.begin(), file.records.end(), [](const Json& record) {
      return record.value("k", "") == "gs" && record.value("what", "") == "granted";
    });
    EXPECT_TRUE(granted) << "no gs granted record";
  }
  EXPECT_EQ(traced_tenants, (std::set<std::string>{"a", "b"}));

  // The summary's shares are the engine's, within 3 points; every launched kernel is in it.
  const ProcessResult summary_run = trace_command({"summary", trace_dir_, "--json"});
  const Json summary = Json::parse(summary_run.out, nullptr, false);
  ASSERT_FALSE(summary.is_discarded()) << summary_run.out;
  ASSERT_EQ(summary.at("gpus").size(), 1u) << summary.dump();
  const Json& gpu = summary.at("gpus").at(0);
  ASSERT_EQ(gpu.at("tenants").size(), 2u) << gpu.dump();
  for (const Json& tenant : gpu.at("tenants")) {
    const std::string name = tenant.at("tenant").get<std::string>();
    SCOPED_TRACE(name);
    ASSERT_EQ(kernel_us.count(name), 1u);
    const double engine_percent = 100.0 * kernel_us[name] / total_us;
    std::printf("share %s: trace %.2f%%, engine %.2f%%\n", name.c_str(), tenant.at("share_percent").get<double>(),
                engine_percent);
    EXPECT_NEAR(tenant.at("share_percent").get<double>(), engine_percent, 3.0);
    EXPECT_EQ(tenant.at("kernels").get<std::uint64_t>(), launches[name]);
  }
  // Handovers happen between the two; whatever idle they left, it is reported.
  const Json& idle = gpu.at("idle_at_handovers");
  EXPECT_GE(idle.at("count").get<std::int64_t>(), 0);
  EXPECT_GE(idle.at("total_ns").get<std::int64_t>(), 0);
  EXPECT_GE(idle.at("longest_ns").get<std::int64_t>(), 0);

  // The merged trace is JSON with the kernels of both tenants as complete events.
  const std::string merged_path = path("merged.json");
  trace_command({"merge", trace_dir_, "-o", merged_path});
  std::ifstream merged_in(merged_path);
  const Json merged = Json::parse(merged_in, nullptr, false);
  ASSERT_FALSE(merged.is_discarded()) << merged_path << " is not JSON";
  ASSERT_TRUE(merged.contains("traceEvents"));
  std::uint64_t kernel_events = 0;
  for (const Json& event : merged.at("traceEvents")) {
    if (event.value("ph", "") == "X" && event.value("cat", "") == "kernel") ++kernel_events;
  }
  EXPECT_EQ(kernel_events, launches["a"] + launches["b"]);
}

struct Untraced {
  const char* why;
  Env env;             // on top of GPUSHARE_CUPTI=<fake libcupti>
  const char* reason;  // in the note: untraced for this reason and no other
};
void PrintTo(const Untraced& untraced, std::ostream* out) { *out << untraced.why; }

class TracingWithoutCupti : public Tracing, public ::testing::WithParamInterface<Untraced> {};

// The workload runs and succeeds; its file says why it holds no GPU records, and so does one line
// of its log.
TEST_P(TracingWithoutCupti, RunsUntracedWithANote) {
  Tenant tenant{"solo", {}, {"saturate", "0.3", "1000"}, GetParam().env};
  const ProcessResult r = start(tenant)->wait(std::chrono::seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(output_u64(r.out, "launches").value_or(0) > 0) << r.out;
  EXPECT_EQ(lines_containing(r.err, "untraced"), 1u) << r.err;

  const std::vector<TraceFile> files = trace_files();
  ASSERT_EQ(files.size(), 1u);
  const TraceFile& file = files.front();
  ASSERT_FALSE(file.records.empty());
  EXPECT_EQ(file.records.front().value("k", ""), "process");
  const auto note = std::find_if(file.records.begin(), file.records.end(), [](const Json& record) {
    return record.value("k", "") == "note" && record.value("text", "").rfind("untraced:", 0) == 0;
  });
  ASSERT_NE(note, file.records.end()) << "no note starting 'untraced:' in " << file.path;
  EXPECT_NE(note->at("text").get<std::string>().find(GetParam().reason), std::string::npos) << note->dump();
  EXPECT_EQ(file.count("kernel"), 0u);
  EXPECT_EQ(file.count("memcpy"), 0u);
  EXPECT_EQ(file.count("memset"), 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Tracing, TracingWithoutCupti,
    ::testing::Values(Untraced{"missing", {{"GPUSHARE_CUPTI", "/nonexistent/libcupti.so"}}, "not found"},
                      Untraced{"held", {{"FAKE_CUPTI_HELD", "1"}}, "held by another subscriber"},
                      Untraced{"too_old", {{"FAKE_CUPTI_VERSION", "12"}}, "older than"}),
    [](const ::testing::TestParamInfo<Untraced>& param) { return std::string(param.param.why); });

}  // namespace
}  // namespace gpushare::testing
