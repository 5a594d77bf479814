// Summary and merge on trace directories written by the tests: exact shares of a 30/70 pair, idle
// gaps at a handover, request percentiles, and the merged Chrome trace parsed back and checked.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>

#include <nlohmann/json.hpp>

#include "scratch.hpp"
#include "trace_files.hpp"
#include "trace_merge.hpp"
#include "trace_model.hpp"
#include "trace_summary.hpp"

namespace gpushare::trace {
namespace {

using namespace gpushare::testing;

class TraceOutput : public ScratchTest {
 protected:
  // Tenant "train" holds the GPU [0, 3000), "serve" waits from 1000 and gets it at 4000 (a 1000 ns
  // gap with nothing running), then runs [4000, 11000): 3000 vs 7000 ns of kernels, 30/70.
  // Process 2 of "train" waits [11500, 12000) while a kernel of its own tenant runs: no gap.
  void write_pair() {
    write_trace(path("100-0000000a.gstrace"),
                {process_line(100, "train"), gpu_line(0, "GPU-aaaa"), gs_line(0, "granted"), kernel_line(0, 2000),
                 kernel_line(1000, 3000),  // overlaps the first: counted once
                 gs_line(3000, "drain_ended"), gs_line(3500, "handover_asked"), range_line(0, 100),
                 range_line(0, 200), range_line(0, 300), range_line(0, 400)});
    write_trace(path("200-0000000b.gstrace"),
                {process_line(200, "serve"), gpu_line(1, "GPU-aaaa"),  // another ordinal, same GPU
                 gs_line(1000, "wait_begun", 1), gs_line(4000, "wait_ended", 1), gs_line(4000, "granted", 1),
                 kernel_line(4000, 7000, 1), kernel_line(7000, 11000, 1), gs_line(11000, "drain_ended", 1)});
    write_trace(path("300-0000000c.gstrace"), {process_line(300, "train"), gpu_line(0, "GPU-aaaa"),
                                               gs_line(11500, "wait_begun"), kernel_line(11400, 12100),
                                               gs_line(12000, "wait_ended")});
  }

  TraceModel load(KernelIntervals kernels) {
    auto files = list_trace_files(dir_);
    EXPECT_TRUE(files);
    auto model = load_trace(*files, kernels, [](const std::string&) {});
    EXPECT_TRUE(model) << model.error().message;
    return std::move(model).value();
  }

  std::string merged() {
    const TraceModel model = load(KernelIntervals::kSkip);
    std::FILE* out = std::tmpfile();
    EXPECT_TRUE(write_chrome_trace(model, out, [](const std::string&) {}));
    std::string text(static_cast<std::size_t>(std::ftell(out)), '\0');
    std::rewind(out);
    EXPECT_EQ(std::fread(text.data(), 1, text.size(), out), text.size());
    std::fclose(out);
    return text;
  }
};

TEST_F(TraceOutput, SummaryGivesExactSharesIdleGapsAndPercentiles) {
  write_pair();
  const auto gpus = summarize(load(KernelIntervals::kKeep));
  ASSERT_EQ(gpus.size(), 1U);
  const GpuSummary& gpu = gpus[0];
  EXPECT_EQ(gpu.uuid, "GPU-aaaa");
  EXPECT_EQ(gpu.busy_ns, 3000 + 7000 + 700);
  EXPECT_EQ(gpu.wall_ns, 12100);
  EXPECT_EQ(gpu.idle_at_handovers.total_ns, 1000);
  EXPECT_EQ(gpu.idle_at_handovers.count, 1U);
  EXPECT_EQ(gpu.idle_at_handovers.longest_ns, 1000);
  ASSERT_EQ(gpu.tenants.size(), 2U);
  const TenantSummary& serve = gpu.tenants[0];
  const TenantSummary& train = gpu.tenants[1];
  EXPECT_EQ(serve.tenant, "serve");
  EXPECT_EQ(serve.busy_ns, 7000);
  EXPECT_EQ(serve.kernels, 2U);
  EXPECT_EQ(serve.wall_ns, 10000);
  EXPECT_FALSE(serve.requests);
  EXPECT_EQ(train.busy_ns, 3700);
  EXPECT_DOUBLE_EQ(serve.share_percent + train.share_percent, 100.0);
  ASSERT_TRUE(train.requests);
  EXPECT_EQ(train.requests->count, 4U);
  EXPECT_EQ(train.requests->p50, 200);
  EXPECT_EQ(train.requests->p90, 400);
  EXPECT_EQ(train.requests->max, 400);

  const auto json = nlohmann::json::parse(summary_to_json(gpus));
  EXPECT_EQ(json["gpus"][0]["tenants"][1]["requests"]["p99_ns"], 400);
  EXPECT_EQ(json["gpus"][0]["idle_at_handovers"]["total_ns"], 1000);
  const std::string table = render_summary(gpus);
  EXPECT_NE(table.find("GPU 0 GPU-aaaa Fake GPU: busy 10.7us of 12.1us wall; idle at handovers 1.0us in 1 gaps"),
            std::string::npos)
      << table;
}

TEST_F(TraceOutput, AnExactThirtySeventyPair) {
  write_trace(path("1-00000001.gstrace"), {process_line(1, "a"), gpu_line(0, "GPU-x"), kernel_line(0, 300)});
  write_trace(path("2-00000002.gstrace"), {process_line(2, "b"), gpu_line(0, "GPU-x"), kernel_line(300, 1000)});
  const auto gpus = summarize(load(KernelIntervals::kKeep));
  ASSERT_EQ(gpus.at(0).tenants.size(), 2U);
  EXPECT_EQ(gpus[0].tenants[0].share_percent, 30.0);
  EXPECT_EQ(gpus[0].tenants[1].share_percent, 70.0);
}

TEST_F(TraceOutput, MergeWritesTracksEventsAndMicroseconds) {
  write_pair();
  const auto trace = nlohmann::json::parse(merged());
  EXPECT_EQ(trace["displayTimeUnit"], "ns");
  EXPECT_EQ(trace["otherData"]["origin_ns"], 0);
  std::map<std::pair<int, int>, std::string> names;  // (pid, tid) -> name; tid 0: the process
  std::map<std::string, std::vector<nlohmann::json>> by_track;
  for (const auto& event : trace["traceEvents"]) {
    const auto key = std::pair{event["pid"].get<int>(), event["tid"].get<int>()};
    if (event["ph"] == "M") {
      if (event["name"] == "process_name" || event["name"] == "thread_name") names[key] = event["args"]["name"];
      continue;
    }
    by_track[names.at(key)].push_back(event);
  }
  EXPECT_EQ(names.at({1, 0}), "GPU 0 GPU-aaaa");
  EXPECT_EQ(by_track["serve"].size(), 2U);
  EXPECT_EQ(by_track["train"].size(), 3U);
  EXPECT_EQ(by_track["train requests"].size(), 4U);
  // Slices: train [0, 3000) closed by its drain_ended, serve [4000, 11000); one instant.
  ASSERT_EQ(by_track["train slices"].size(), 2U);
  EXPECT_EQ(by_track["train slices"][0]["ph"], "X");
  EXPECT_EQ(by_track["train slices"][0]["dur"].get<double>(), 3.0);
  EXPECT_EQ(by_track["train slices"][1]["ph"], "i");
  EXPECT_EQ(by_track["train slices"][1]["name"], "handover_asked");
  ASSERT_EQ(by_track["serve slices"].size(), 1U);
  EXPECT_EQ(by_track["serve slices"][0]["ts"].get<double>(), 4.0);
  EXPECT_EQ(by_track["serve slices"][0]["dur"].get<double>(), 7.0);
  // Kernels in microseconds with fractions.
  const auto& last_train_kernel = by_track["train"][2];
  EXPECT_EQ(last_train_kernel["ph"], "X");
  EXPECT_DOUBLE_EQ(last_train_kernel["ts"].get<double>(), 11.4);
  EXPECT_DOUBLE_EQ(last_train_kernel["dur"].get<double>(), 0.7);
  EXPECT_EQ(last_train_kernel["args"]["stream"], 7);
}

TEST_F(TraceOutput, TwoMergesAreByteIdentical) {
  write_pair();
  EXPECT_EQ(merged(), merged());
}

}  // namespace
}  // namespace gpushare::trace

namespace gpushare::trace {
namespace {

// CUPTI names C++ kernels by their mangled names: merge shows them demangled, keeps the mangled
// one in args, and leaves names that are not mangled (or do not demangle) as they are.
TEST_F(TraceOutput, MergeDemanglesKernelNames) {
  write_trace(path("7-00000001.gstrace"),
              {process_line(7, "t"), gpu_line(0, "GPU-aaaa"),
               R"({"k":"kernel","gpu":0,"start":0,"end":10,"name":"_Z4spinx"})",
               R"({"k":"kernel","gpu":0,"start":10,"end":20,"name":"ampere_sgemm_128x64_nn"})",
               R"({"k":"kernel","gpu":0,"start":20,"end":30,"name":"_Znot a name"})"});
  const auto trace = nlohmann::json::parse(merged());
  std::vector<nlohmann::json> kernels;
  for (const auto& event : trace["traceEvents"]) {
    if (event["ph"] == "X" && event["cat"] == "kernel") kernels.push_back(event);
  }
  ASSERT_EQ(kernels.size(), 3U);
  EXPECT_EQ(kernels[0]["name"], "spin(long long)");
  EXPECT_EQ(kernels[0]["args"]["mangled"], "_Z4spinx");
  EXPECT_EQ(kernels[1]["name"], "ampere_sgemm_128x64_nn");
  EXPECT_FALSE(kernels[1]["args"].contains("mangled"));
  EXPECT_EQ(kernels[2]["name"], "_Znot a name");
}

}  // namespace
}  // namespace gpushare::trace
