// The trace reader: the partial-last-line rule, every bad-line message (named file:line), the
// bounds, forward compatibility, and the directory listing.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "scratch.hpp"
#include "trace_files.hpp"
#include "trace_format.hpp"

namespace gpushare::trace {
namespace {

using gpushare::testing::gpu_line;
using gpushare::testing::kernel_line;
using gpushare::testing::process_line;
using gpushare::testing::write_trace;

class TraceReader : public gpushare::testing::ScratchTest {
 protected:
  // Reads `file`; the records' kinds and line numbers, and the notes, are kept.
  Status read(const std::string& file) {
    kinds_.clear();
    lines_.clear();
    notes_.clear();
    return read_trace_file(
        file, 0,
        [&](const Record& record, std::size_t, std::size_t line) {
          kinds_.push_back(record.kind);
          lines_.push_back(line);
        },
        [&](const std::string& note) { notes_.push_back(note); });
  }

  std::vector<RecordKind> kinds_;
  std::vector<std::size_t> lines_;
  std::vector<std::string> notes_;
};

TEST_F(TraceReader, SkipsAPartialLastLineWithANote) {
  const std::string file = path("1-00000000.gstrace");
  for (const bool last_newline : {false, true}) {
    write_trace(file, {process_line(1, "a"), gpu_line(0, "GPU-0"), kernel_line(0, 10), R"({"k":"kernel","gpu":0,"st)"},
                last_newline);
    ASSERT_TRUE(read(file)) << read(file).error().message;
    EXPECT_EQ(kinds_, (std::vector{RecordKind::kProcess, RecordKind::kGpu, RecordKind::kKernel}));
    ASSERT_EQ(notes_.size(), 1U);
    EXPECT_EQ(notes_[0], file + ":4: partial last line skipped");
  }
}

TEST_F(TraceReader, APartialLineBeforeTheLastIsAnError) {
  const std::string file = path("1-00000000.gstrace");
  write_trace(file, {process_line(1, "a"), R"({"k":"kernel","gpu":0,"st)", gpu_line(0, "GPU-0")});
  const Status status = read(file);
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().message, file + ":2: not JSON");
}

TEST_F(TraceReader, EveryBadLineIsNamedWithItsFileAndLine) {
  const std::string process = process_line(1, "a");
  const std::string gpu = gpu_line(0, "GPU-0");
  struct Case {
    std::vector<std::string> lines;
    std::string message;  // after "FILE:"
  };
  const std::vector<Case> cases{
      {{process, "[1,2]", gpu}, "2: not a JSON object"},
      {{process, R"({"kind":"gpu"})", gpu}, "2: missing or bad \"k\" (the record's kind)"},
      {{process, R"({"k":7})", gpu}, "2: missing or bad \"k\" (the record's kind)"},
      {{gpu}, "1: the first record must be \"process\""},
      {{process, process}, "2: a second \"process\" record"},
      {{R"({"k":"process","tenant":"a"})"}, "1: process: missing or bad \"pid\" (an integer >= 0)"},
      {{R"({"k":"process","pid":1})"}, "1: process: missing or bad \"tenant\" (a string)"},
      {{process, R"({"k":"gpu","id":0})"}, "2: gpu: missing or bad \"uuid\" (a string)"},
      {{process, gpu, R"({"k":"kernel","gpu":0,"end":5,"name":"k"})"},
       "3: kernel: missing or bad \"start\" (an integer >= 0)"},
      {{process, gpu, R"({"k":"kernel","gpu":0,"start":1.5,"end":5,"name":"k"})"},
       "3: kernel: missing or bad \"start\" (an integer >= 0)"},
      {{process, gpu, R"({"k":"kernel","gpu":0,"start":-1,"end":5,"name":"k"})"},
       "3: kernel: missing or bad \"start\" (an integer >= 0)"},
      {{process, gpu, R"({"k":"kernel","gpu":0,"start":9,"end":5,"name":"k"})"},
       "3: kernel: \"end\" before \"start\""},
      {{process, gpu, R"({"k":"kernel","gpu":0,"start":1,"end":5})"}, "3: kernel: missing or bad \"name\" (a string)"},
      {{process, gpu, R"({"k":"kernel","gpu":0,"start":1,"end":5,"name":"k","stream":"x"})"},
       "3: kernel: missing or bad \"stream\" (an integer >= 0)"},
      {{process, gpu, R"({"k":"kernel","start":1,"end":5,"name":"k"})"},
       "3: kernel: missing or bad \"gpu\" (an integer >= 0)"},
      {{process, gpu, kernel_line(1, 5, 3)}, "3: gpu 3 not declared by a \"gpu\" record before"},
      {{process, R"({"k":"gpu","id":2000000,"uuid":"GPU-0"})"}, "2: gpu: \"id\" out of range"},
      {{process, gpu, kernel_line(1, 5, 2000000)}, "3: kernel: \"gpu\" out of range"},
      {{process, gpu, R"({"k":"range","start":1,"end":5,"name":7})"}, "3: range: missing or bad \"name\" (a string)"},
      {{process, gpu, R"({"k":"memcpy","gpu":0,"start":1,"end":5,"dir":"HtoD"})"},
       "3: memcpy: missing or bad \"bytes\" (an integer >= 0)"},
      {{process, gpu, R"({"k":"memset","gpu":0,"start":1,"end":5})"},
       "3: memset: missing or bad \"bytes\" (an integer >= 0)"},
      {{process, gpu, R"({"k":"gs","gpu":0,"what":"granted"})"}, "3: gs: missing or bad \"at\" (an integer >= 0)"},
      {{process, gpu, R"({"k":"gs","gpu":0,"at":1})"}, "3: gs: missing or bad \"what\" (a string)"},
      {{process, R"({"k":"range","start":1})"}, "2: range: missing or bad \"end\" (an integer >= 0)"},
      {{process, R"({"k":"note","at":1})"}, "2: note: missing or bad \"text\" (a string)"},
      {{process, std::string(kMaxTraceLineBytes + 1, ' '), gpu}, "2: line longer than 1 MiB, refused"},
  };
  const std::string file = path("1-00000000.gstrace");
  for (const Case& bad : cases) {
    write_trace(file, bad.lines);
    const Status status = read(file);
    ASSERT_FALSE(status) << bad.message;
    EXPECT_EQ(status.error().message, file + ":" + bad.message);
  }
}

TEST_F(TraceReader, SkipsUnknownKindsAndIgnoresUnknownFields) {
  const std::string file = path("1-00000000.gstrace");
  write_trace(file, {process_line(1, "a"), R"({"k":"future_kind","whatever":[1,2]})", gpu_line(0, "GPU-0"),
                     R"({"k":"kernel","gpu":0,"start":1,"end":5,"name":"k","new_field":{"x":1}})", ""});
  ASSERT_TRUE(read(file));
  EXPECT_EQ(kinds_, (std::vector{RecordKind::kProcess, RecordKind::kGpu, RecordKind::kKernel}));
  EXPECT_EQ(lines_, (std::vector<std::size_t>{1, 3, 4}));
  EXPECT_TRUE(notes_.empty());
}

TEST_F(TraceReader, RefusesAFileOver2GiB) {
  const std::string file = path("1-00000000.gstrace");
  write_trace(file, {process_line(1, "a")});
  std::filesystem::resize_file(file, kMaxTraceFileBytes + 1);  // sparse: no disk used
  const Status status = read(file);
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().message, file + ": larger than 2 GiB (2147483649 bytes), refused");
}

TEST_F(TraceReader, ListsTheTraceFilesOfADirectorySorted) {
  write_trace(path("20-0000000b.gstrace"), {process_line(20, "b")});
  write_trace(path("10-0000000a.gstrace"), {process_line(10, "a")});
  write_trace(path("notes.txt"), {"not a trace"});
  auto files = list_trace_files(dir_);
  ASSERT_TRUE(files);
  ASSERT_EQ(files->size(), 2U);
  EXPECT_EQ((*files)[0].filename(), "10-0000000a.gstrace");
  EXPECT_EQ((*files)[1].filename(), "20-0000000b.gstrace");

  const auto missing = list_trace_files(dir_ / "missing");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message, (dir_ / "missing").string() + ": no such directory");
  std::filesystem::create_directory(dir_ / "empty");
  const auto empty = list_trace_files(dir_ / "empty");
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().message, (dir_ / "empty").string() + ": no .gstrace files (is it a trace directory?)");
}

}  // namespace
}  // namespace gpushare::trace
