// The real `gpushare trace merge` and `gpushare trace summary`: exit statuses and messages, the
// outputs parsed back, and a 200k-kernel file merged and summarised quickly in bounded memory.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "process.hpp"
#include "scratch.hpp"
#include "trace_files.hpp"

namespace gpushare::testing {
namespace {

class TraceCommand : public ScratchTest {
 protected:
  ProcessResult gpushare(const std::vector<std::string>& args) {
    std::vector<std::string> argv{GPUSHARE_TEST_TOOL};
    argv.insert(argv.end(), args.begin(), args.end());
    return Process(argv, {}).wait(std::chrono::seconds(60));
  }
  static std::string read_file(const std::string& file) {
    std::ifstream in(file, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
};

TEST_F(TraceCommand, SummaryAndMergeOfAPair) {
  write_trace(path("1-00000001.gstrace"), {process_line(1, "a"), gpu_line(0, "GPU-x"), kernel_line(0, 300)});
  write_trace(path("2-00000002.gstrace"), {process_line(2, "b"), gpu_line(0, "GPU-x"), kernel_line(300, 1000)});
  const auto table = gpushare({"trace", "summary", dir_.string()});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("30.0%"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("70.0%"), std::string::npos) << table.out;

  const auto json = gpushare({"trace", "summary", dir_.string(), "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const auto summary = nlohmann::json::parse(json.out);
  EXPECT_EQ(summary["gpus"][0]["tenants"][1]["share_percent"], 70.0);

  const std::string output = path("trace.json");
  const auto merge = gpushare({"trace", "merge", dir_.string(), "-o", output});
  ASSERT_EQ(merge.exit_code, 0) << merge.err;
  const auto trace = nlohmann::json::parse(read_file(output));
  EXPECT_EQ(trace["displayTimeUnit"], "ns");
  EXPECT_FALSE(trace["traceEvents"].empty());
}

TEST_F(TraceCommand, MissingEmptyOrForeignDirectoriesFail) {
  const auto missing = gpushare({"trace", "summary", path("missing")});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("missing: no such directory"), std::string::npos) << missing.err;
  fs::create_directory(path("empty"));
  const auto empty = gpushare({"trace", "merge", path("empty"), "-o", path("out.json")});
  EXPECT_EQ(empty.exit_code, 1);
  EXPECT_NE(empty.err.find("no .gstrace files"), std::string::npos) << empty.err;
  EXPECT_FALSE(fs::exists(path("out.json")));
  write_trace(path("empty/readme.txt"), {"hello"});
  EXPECT_EQ(gpushare({"trace", "summary", path("empty")}).exit_code, 1);
}

TEST_F(TraceCommand, ABadLineFailsNamingFileAndLine) {
  const std::string file = path("1-00000001.gstrace");
  write_trace(file, {process_line(1, "a"), gpu_line(0, "GPU-x"), R"({"k":"kernel","gpu":0,"start":5})",
                     kernel_line(0, 1)});
  for (const auto& args : {std::vector<std::string>{"trace", "summary", dir_.string()},
                           std::vector<std::string>{"trace", "merge", dir_.string(), "-o", path("out.json")}}) {
    const auto result = gpushare(args);
    EXPECT_EQ(result.exit_code, 1);
    EXPECT_NE(result.err.find(file + ":3: kernel: missing or bad \"end\""), std::string::npos) << result.err;
  }
  EXPECT_FALSE(fs::exists(path("out.json")));
  EXPECT_FALSE(fs::exists(path("out.json.partial")));
}

TEST_F(TraceCommand, APartialLastLineIsANoteNotAFailure) {
  write_trace(path("1-00000001.gstrace"), {process_line(1, "a"), gpu_line(0, "GPU-x"), kernel_line(0, 1), "{\"k\":"},
              false);
  const auto result = gpushare({"trace", "summary", dir_.string()});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("1-00000001.gstrace:4: partial last line skipped"), std::string::npos) << result.err;
}

TEST_F(TraceCommand, HelpAndBadOptions) {
  const auto help = gpushare({"trace", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("merge"), std::string::npos);
  EXPECT_NE(help.out.find("summary"), std::string::npos);
  const auto merge_help = gpushare({"trace", "merge", "--help"});
  EXPECT_EQ(merge_help.exit_code, 0);
  EXPECT_NE(merge_help.out.find("Perfetto"), std::string::npos);
  EXPECT_EQ(gpushare({"trace", "summary", dir_.string(), "--bogus"}).exit_code, 2);
  EXPECT_EQ(gpushare({"trace", "merge", dir_.string()}).exit_code, 2);  // no -o
  EXPECT_EQ(gpushare({"trace", "summary"}).exit_code, 2);
  EXPECT_EQ(gpushare({"trace"}).exit_code, 2);
}

// 200k kernels (about 20 MB): both commands finish within a few seconds, and neither holds the
// file: merge streams it, summary keeps 16 bytes per kernel. The bound on the largest child's
// resident memory is well under the file's size plus what parsed JSON of it would take.
TEST_F(TraceCommand, ALargeFileIsStreamed) {
  constexpr int kKernels = 200'000;
  {
    std::ofstream out(path("1-00000001.gstrace"));
    out << process_line(1, "big") << '\n' << gpu_line(0, "GPU-x") << '\n';
    for (int i = 0; i < kKernels; ++i) {
      out << fmt::format(R"({{"k":"kernel","gpu":0,"start":{},"end":{},"name":"ampere_sgemm_128x64_nn","stream":7,"corr":{}}})",
                         i * 1000LL, i * 1000LL + 600, i)
          << '\n';
    }
  }
  ASSERT_GT(fs::file_size(path("1-00000001.gstrace")), 18U << 20);
  const auto timed = [&](const std::vector<std::string>& args) {
    const auto start = std::chrono::steady_clock::now();
    const auto result = gpushare(args);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  const double summary_s = timed({"trace", "summary", dir_.string(), "--json"});
  const double merge_s = timed({"trace", "merge", dir_.string(), "-o", path("trace.json")});
  EXPECT_LT(summary_s, 10.0);
  EXPECT_LT(merge_s, 10.0);
  rusage usage{};
  ASSERT_EQ(getrusage(RUSAGE_CHILDREN, &usage), 0);
  EXPECT_LT(usage.ru_maxrss, 48L * 1024) << "largest child's resident KiB";  // ru_maxrss is in KiB

  std::ifstream merged(path("trace.json"));
  std::size_t kernels = 0;
  for (std::string line; std::getline(merged, line);) kernels += line.find("\"cat\":\"kernel\"") != std::string::npos;
  EXPECT_EQ(kernels, static_cast<std::size_t>(kKernels));
}

}  // namespace
}  // namespace gpushare::testing
