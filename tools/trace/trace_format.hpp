// The trace files a traced process writes (docs/tracing.md, "Trace files"): one JSON Lines file per
// process, `<pid>-<8 hex>.gstrace`, times in nanoseconds on the GPU's clock. This reader streams a
// file line by line (a line is at most 1 MiB, a file at most 2 GiB) and hands each record to a
// callback, so no file is ever held in memory. A last line that does not parse (a process killed
// mid-write) is skipped with a note; any other bad line is an error naming file:line.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/result.hpp"

namespace gpushare::trace {

inline constexpr std::uint64_t kMaxTraceFileBytes = 2ULL << 30;
inline constexpr std::size_t kMaxTraceLineBytes = 1U << 20;

enum class RecordKind { kProcess, kGpu, kKernel, kMemcpy, kMemset, kGpushare, kRange, kNote };

// One parsed line; only the fields of its kind are set. Times are nanoseconds.
struct Record {
  RecordKind kind = RecordKind::kNote;
  std::int64_t pid = 0;     // process
  std::string tenant;       // process
  std::string host;         // process (may be empty)
  int gpu = 0;              // gpu (its id), kernel, memcpy, memset, gs
  std::string uuid;         // gpu
  std::string name;         // gpu, kernel, range
  std::int64_t start = 0;   // kernel, memcpy, memset, range
  std::int64_t end = 0;     // kernel, memcpy, memset, range
  std::int64_t at = 0;      // gs, note
  std::int64_t bytes = -1;  // memcpy, memset, gs (-1: not given)
  std::string direction;    // memcpy ("HtoD", ...)
  std::int64_t stream = -1; // kernel (-1: not given)
  std::int64_t correlation = -1;  // kernel
  std::string what;         // gs: granted, handover_asked, drain_begun, ...
  std::string text;         // note
};

// One line parsed: its record, or `skipped` for a kind this reader does not know (forward
// compatibility). The error of a line that is not JSON at all is exactly kNotJson: the reader
// forgives it on the last line only (a partial write).
inline constexpr const char* kNotJson = "not JSON";
struct ParsedLine {
  bool skipped = false;
  Record record;
};
Result<ParsedLine> parse_trace_line(const std::string& line);

// What the reader hands on: the record, its file's index in the list and its line number (from 1).
using RecordVisitor = std::function<void(const Record&, std::size_t file_index, std::size_t line_number)>;
using NoteSink = std::function<void(const std::string&)>;

// Reads one file: checks the size bound, that the first record is `process`, that every gpu a
// record names was declared by a `gpu` line before, and hands every record on.
Status read_trace_file(const std::filesystem::path& path, std::size_t file_index, const RecordVisitor& visit,
                       const NoteSink& note);

// The `.gstrace` files of a directory, sorted by name; an error when it is missing, not a
// directory, or holds none.
Result<std::vector<std::filesystem::path>> list_trace_files(const std::filesystem::path& dir);

}  // namespace gpushare::trace
