// The recorder's lines (core/trace_lines) read back by the tools' reader: every kind, every field,
// and strings no name should be able to break a line with (quotes, control bytes, bytes that are
// not UTF-8).
#include <gtest/gtest.h>

#include <string>

#include "core/trace_lines.hpp"
#include "trace_format.hpp"

namespace gpushare::trace {
namespace {

Record parsed(const std::string& line) {
  EXPECT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n') << line;
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line: " << line;
  auto result = parse_trace_line(line.substr(0, line.size() - 1));
  EXPECT_TRUE(static_cast<bool>(result)) << line << ": " << (result ? "" : result.error().message);
  if (!result) return {};
  EXPECT_FALSE(result->skipped);
  return result->record;
}

TEST(TraceLines, EveryKindReadsBackWithItsFields) {
  Record process = parsed(trace_lines::process(4242, "ml/train", "node-a"));
  EXPECT_EQ(process.kind, RecordKind::kProcess);
  EXPECT_EQ(process.pid, 4242);
  EXPECT_EQ(process.tenant, "ml/train");
  EXPECT_EQ(process.host, "node-a");
  EXPECT_EQ(parsed(trace_lines::process(1, "t", "")).host, "");

  Record gpu = parsed(trace_lines::gpu(3, "GPU-5d3c", "NVIDIA H100 80GB HBM3"));
  EXPECT_EQ(gpu.kind, RecordKind::kGpu);
  EXPECT_EQ(gpu.gpu, 3);
  EXPECT_EQ(gpu.uuid, "GPU-5d3c");
  EXPECT_EQ(gpu.name, "NVIDIA H100 80GB HBM3");

  Record kernel = parsed(trace_lines::kernel(1, 1700000000001000, 1700000000051000, "sgemm", 7, 42));
  EXPECT_EQ(kernel.kind, RecordKind::kKernel);
  EXPECT_EQ(kernel.gpu, 1);
  EXPECT_EQ(kernel.start, 1700000000001000);
  EXPECT_EQ(kernel.end, 1700000000051000);
  EXPECT_EQ(kernel.name, "sgemm");
  EXPECT_EQ(kernel.stream, 7);
  EXPECT_EQ(kernel.correlation, 42);
  Record bare = parsed(trace_lines::kernel(0, 5, 6, "k", -1, -1));
  EXPECT_EQ(bare.stream, -1);
  EXPECT_EQ(bare.correlation, -1);

  Record copy = parsed(trace_lines::memcpy(0, 10, 20, 1048576, "DtoH"));
  EXPECT_EQ(copy.kind, RecordKind::kMemcpy);
  EXPECT_EQ(copy.bytes, 1048576);
  EXPECT_EQ(copy.direction, "DtoH");
  EXPECT_EQ(copy.end, 20);
  Record set = parsed(trace_lines::memset(0, 30, 40, 512));
  EXPECT_EQ(set.kind, RecordKind::kMemset);
  EXPECT_EQ(set.bytes, 512);

  Record event = parsed(trace_lines::gpushare_event(2, 99, "oom_refused", 1 << 20));
  EXPECT_EQ(event.kind, RecordKind::kGpushare);
  EXPECT_EQ(event.gpu, 2);
  EXPECT_EQ(event.at, 99);
  EXPECT_EQ(event.what, "oom_refused");
  EXPECT_EQ(event.bytes, 1 << 20);
  EXPECT_EQ(parsed(trace_lines::gpushare_event(0, 1, "granted")).bytes, -1);

  Record range = parsed(trace_lines::range(100, 250, "request"));
  EXPECT_EQ(range.kind, RecordKind::kRange);
  EXPECT_EQ(range.start, 100);
  EXPECT_EQ(range.end, 250);
  EXPECT_EQ(range.name, "request");

  Record note = parsed(trace_lines::note(7, "untraced: CUPTI not found"));
  EXPECT_EQ(note.kind, RecordKind::kNote);
  EXPECT_EQ(note.at, 7);
  EXPECT_EQ(note.text, "untraced: CUPTI not found");
}

TEST(TraceLines, NamesCannotBreakALine) {
  const std::string nasty = std::string("a\"b\\c\nd\te\x01\x7f") + "\xff\xc3(" + "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
  Record kernel = parsed(trace_lines::kernel(0, 1, 2, nasty, -1, -1));
  // Kept exactly where it is JSON-expressible UTF-8; each stray byte becomes U+FFFD.
  EXPECT_EQ(kernel.name, std::string("a\"b\\c\nd\te\x01\x7f") + "\xef\xbf\xbd\xef\xbf\xbd(" +
                             "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  // Overlong forms, surrogates and a truncated sequence are not UTF-8 either.
  Record tenant = parsed(trace_lines::process(1, "\xc0\xaf|\xed\xa0\x80|\xe2\x82", ""));
  EXPECT_EQ(tenant.tenant, "\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd");
}

}  // namespace
}  // namespace gpushare::trace
