// The trace reader: a bounded line reader and the checks of each record kind.
#include "trace_format.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace gpushare::trace {
namespace {

using nlohmann::json;

// Lines of a FILE*, each at most kMaxTraceLineBytes; reads in blocks.
class LineReader {
 public:
  explicit LineReader(std::FILE* file) : file_(file) {}

  enum class Outcome { kLine, kEnd, kTooLong, kReadError };

  Outcome next(std::string& line) {
    line.clear();
    for (;;) {
      if (position_ == filled_ && !refill()) {
        if (std::ferror(file_)) return Outcome::kReadError;
        return line.empty() ? Outcome::kEnd : Outcome::kLine;
      }
      const char* begin = buffer_.data() + position_;
      const char* newline = static_cast<const char*>(std::memchr(begin, '\n', filled_ - position_));
      const std::size_t take = newline != nullptr ? static_cast<std::size_t>(newline - begin) : filled_ - position_;
      if (line.size() + take > kMaxTraceLineBytes) return Outcome::kTooLong;
      line.append(begin, take);
      position_ += take;
      if (newline != nullptr) {
        ++position_;
        return Outcome::kLine;
      }
    }
  }

  // True when nothing follows what was read.
  bool at_end() { return position_ == filled_ && !refill(); }

 private:
  bool refill() {
    filled_ = std::fread(buffer_.data(), 1, buffer_.size(), file_);
    position_ = 0;
    return filled_ > 0;
  }

  std::FILE* file_;
  std::string buffer_ = std::string(64 * 1024, '\0');
  std::size_t position_ = 0;
  std::size_t filled_ = 0;
};

// The field `key` of `object` as an integer >= 0, else an error message.
std::optional<std::string> take_time(const json& object, const char* key, std::int64_t& out) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_number_integer() || it->get<std::int64_t>() < 0) {
    return fmt::format("missing or bad \"{}\" (an integer >= 0)", key);
  }
  out = it->get<std::int64_t>();
  return std::nullopt;
}

std::optional<std::string> take_string(const json& object, const char* key, std::string& out) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return fmt::format("missing or bad \"{}\" (a string)", key);
  out = it->get<std::string>();
  return std::nullopt;
}

// An optional field: left as is when absent, an error when present with the wrong type.
std::optional<std::string> take_optional_time(const json& object, const char* key, std::int64_t& out) {
  return object.contains(key) ? take_time(object, key, out) : std::nullopt;
}
std::optional<std::string> take_optional_string(const json& object, const char* key, std::string& out) {
  return object.contains(key) ? take_string(object, key, out) : std::nullopt;
}

std::optional<std::string> take_interval(const json& object, Record& record) {
  if (auto bad = take_time(object, "start", record.start)) return bad;
  if (auto bad = take_time(object, "end", record.end)) return bad;
  if (record.end < record.start) return std::string("\"end\" before \"start\"");
  return std::nullopt;
}

std::optional<std::string> take_gpu(const json& object, Record& record) {
  std::int64_t gpu = 0;
  if (auto bad = take_time(object, "gpu", gpu)) return bad;
  if (gpu > 1'000'000) return std::string("\"gpu\" out of range");
  record.gpu = static_cast<int>(gpu);
  return std::nullopt;
}

// The checks of each kind; nullopt when the record is whole.
std::optional<std::string> take_fields(const json& object, Record& record) {
  std::optional<std::string> bad;
  switch (record.kind) {
    case RecordKind::kProcess:
      if ((bad = take_time(object, "pid", record.pid)) || (bad = take_string(object, "tenant", record.tenant))) break;
      bad = take_optional_string(object, "host", record.host);
      break;
    case RecordKind::kGpu: {
      std::int64_t id = 0;
      if ((bad = take_time(object, "id", id)) || (bad = take_string(object, "uuid", record.uuid))) break;
      if (id > 1'000'000) {
        bad = "\"id\" out of range";
        break;
      }
      record.gpu = static_cast<int>(id);
      bad = take_optional_string(object, "name", record.name);
      break;
    }
    case RecordKind::kKernel:
      if ((bad = take_gpu(object, record)) || (bad = take_interval(object, record)) ||
          (bad = take_string(object, "name", record.name)) ||
          (bad = take_optional_time(object, "stream", record.stream))) {
        break;
      }
      bad = take_optional_time(object, "corr", record.correlation);
      break;
    case RecordKind::kMemcpy:
    case RecordKind::kMemset:
      if ((bad = take_gpu(object, record)) || (bad = take_interval(object, record)) ||
          (bad = take_time(object, "bytes", record.bytes))) {
        break;
      }
      if (record.kind == RecordKind::kMemcpy) bad = take_optional_string(object, "dir", record.direction);
      break;
    case RecordKind::kGpushare:
      if ((bad = take_gpu(object, record)) || (bad = take_time(object, "at", record.at)) ||
          (bad = take_string(object, "what", record.what))) {
        break;
      }
      bad = take_optional_time(object, "bytes", record.bytes);
      break;
    case RecordKind::kRange:
      if ((bad = take_interval(object, record))) break;
      record.name = "request";
      bad = take_optional_string(object, "name", record.name);
      break;
    case RecordKind::kNote:
      if ((bad = take_time(object, "at", record.at))) break;
      bad = take_string(object, "text", record.text);
      break;
  }
  return bad;
}

std::optional<RecordKind> kind_named(const std::string& name) {
  static const std::pair<const char*, RecordKind> kKinds[] = {
      {"process", RecordKind::kProcess}, {"gpu", RecordKind::kGpu},     {"kernel", RecordKind::kKernel},
      {"memcpy", RecordKind::kMemcpy},   {"memset", RecordKind::kMemset}, {"gs", RecordKind::kGpushare},
      {"range", RecordKind::kRange},     {"note", RecordKind::kNote}};
  for (const auto& [kind_name, kind] : kKinds) {
    if (name == kind_name) return kind;
  }
  return std::nullopt;
}

}  // namespace

Result<ParsedLine> parse_trace_line(const std::string& line) {
  ParsedLine parsed;
  json object = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (object.is_discarded()) return Error{kNotJson};
  if (!object.is_object()) return Error{"not a JSON object"};
  const auto kind = object.find("k");
  if (kind == object.end() || !kind->is_string()) return Error{"missing or bad \"k\" (the record's kind)"};
  const std::string kind_text = kind->get<std::string>();
  const auto known = kind_named(kind_text);
  if (!known) {
    parsed.skipped = true;
    return parsed;
  }
  parsed.record.kind = *known;
  if (auto bad = take_fields(object, parsed.record)) return Error{fmt::format("{}: {}", kind_text, *bad)};
  return parsed;
}

Status read_trace_file(const std::filesystem::path& path, std::size_t file_index, const RecordVisitor& visit,
                       const NoteSink& note) {
  const std::string name = path.string();
  std::error_code error;
  const auto size = std::filesystem::file_size(path, error);
  if (error) return Error{fmt::format("{}: {}", name, error.message())};
  if (size > kMaxTraceFileBytes) return Error{fmt::format("{}: larger than 2 GiB ({} bytes), refused", name, size)};
  const std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(name.c_str(), "rb"), &std::fclose);
  if (!file) return Error{fmt::format("{}: cannot open", name)};

  LineReader reader(file.get());
  std::string line;
  std::size_t line_number = 0;
  bool seen_process = false;
  std::set<int> declared_gpus;
  for (;;) {
    const auto outcome = reader.next(line);
    if (outcome == LineReader::Outcome::kEnd) break;
    ++line_number;
    if (outcome == LineReader::Outcome::kReadError) return Error{fmt::format("{}:{}: read error", name, line_number)};
    if (outcome == LineReader::Outcome::kTooLong) {
      return Error{fmt::format("{}:{}: line longer than 1 MiB, refused", name, line_number)};
    }
    if (line.empty()) continue;
    auto parsed = parse_trace_line(line);
    if (!parsed) {
      // Partial last line: what a process killed mid-write leaves behind.
      if (parsed.error().message == kNotJson && reader.at_end()) {
        note(fmt::format("{}:{}: partial last line skipped", name, line_number));
        break;
      }
      return Error{fmt::format("{}:{}: {}", name, line_number, parsed.error().message)};
    }
    if (parsed->skipped) continue;
    const Record& record = parsed->record;
    if (seen_process == (record.kind == RecordKind::kProcess)) {
      return Error{fmt::format("{}:{}: {}", name, line_number,
                               seen_process ? "a second \"process\" record" : "the first record must be \"process\"")};
    }
    seen_process = true;
    if (record.kind == RecordKind::kGpu) {
      declared_gpus.insert(record.gpu);
    } else if ((record.kind == RecordKind::kKernel || record.kind == RecordKind::kMemcpy ||
                record.kind == RecordKind::kMemset || record.kind == RecordKind::kGpushare) &&
               !declared_gpus.contains(record.gpu)) {
      return Error{fmt::format("{}:{}: gpu {} not declared by a \"gpu\" record before", name, line_number,
                               record.gpu)};
    }
    visit(record, file_index, line_number);
  }
  if (!seen_process) note(fmt::format("{}: no records, skipped", name));
  return Ok{};
}

Result<std::vector<std::filesystem::path>> list_trace_files(const std::filesystem::path& dir) {
  std::error_code error;
  if (!std::filesystem::exists(dir, error)) return Error{fmt::format("{}: no such directory", dir.string())};
  if (!std::filesystem::is_directory(dir, error)) return Error{fmt::format("{}: not a directory", dir.string())};
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    if (entry.path().extension() == ".gstrace" && entry.is_regular_file()) files.push_back(entry.path());
  }
  if (error) return Error{fmt::format("{}: {}", dir.string(), error.message())};
  if (files.empty()) return Error{fmt::format("{}: no .gstrace files (is it a trace directory?)", dir.string())};
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace gpushare::trace
