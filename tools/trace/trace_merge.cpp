// Writing a TraceModel and its files' records as Chrome Trace Event Format JSON.
#include "trace_merge.hpp"

#include <cxxabi.h>

#include <cstdlib>
#include <map>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace gpushare::trace {
namespace {

// A kernel's name as people read it: CUPTI reports C++ kernels by their mangled names
// (_Z4spinx is spin(long long)); the mangled name stays in args.mangled.
std::string demangled(const std::string& name) {
  if (!name.starts_with("_Z")) return name;
  int status = 0;
  const std::unique_ptr<char, decltype(&std::free)> text(abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status),
                                                         &std::free);
  return status == 0 && text != nullptr ? std::string(text.get()) : name;
}

// The track numbers: a process per GPU (pid from 1), three threads per tenant (tid from 1).
enum class TenantTrack { kActivity = 1, kSlices = 2, kRequests = 3 };

class ChromeTraceWriter {
 public:
  ChromeTraceWriter(const TraceModel& model, std::FILE* out) : model_(model), out_(out) {
    int pid = 1;
    for (const GpuTrace* gpu : model.ordered_gpus()) pid_of_gpu_[gpu->uuid] = pid++;
    int index = 0;
    for (const std::string& tenant : model.tenants()) tenant_index_[tenant] = index++;
  }

  int pid(const std::string& uuid) const { return pid_of_gpu_.at(uuid); }
  int tid(const std::string& tenant, TenantTrack track) const {
    return 3 * tenant_index_.at(tenant) + static_cast<int>(track);
  }

  // Microseconds after the origin with three decimals: exact, never a float's rounding.
  std::string micros(std::int64_t ns) const {
    const std::int64_t after = ns - model_.origin;
    return fmt::format("{}.{:03}", after / 1000, after % 1000);
  }

  void begin() { std::fputs("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n", out_); }
  void end() {
    std::fputs(fmt::format("\n],\"otherData\":{{\"origin_ns\":{}}}}}\n", model_.origin).c_str(), out_);
  }
  void event(const std::string& text) {
    if (!first_) std::fputs(",\n", out_);
    first_ = false;
    std::fputs(text.c_str(), out_);
  }

  void metadata(int pid, int tid, const char* what, const std::string& name, int sort_index) {
    const char* sort_what = std::string_view(what) == "process_name" ? "process_sort_index" : "thread_sort_index";
    event(fmt::format(R"({{"ph":"M","pid":{},"tid":{},"name":"{}","args":{{"name":{}}}}})", pid, tid, what,
                      quoted(name)));
    event(fmt::format(R"({{"ph":"M","pid":{},"tid":{},"name":"{}","args":{{"sort_index":{}}}}})", pid, tid,
                      sort_what, sort_index));
  }

  void complete(int pid, int tid, const std::string& name, const char* category, std::int64_t start,
                std::int64_t end, const std::string& args) {
    event(fmt::format(R"({{"ph":"X","pid":{},"tid":{},"name":{},"cat":"{}","ts":{},"dur":{},"args":{{{}}}}})", pid,
                      tid, quoted(name), category, micros(start), duration(start, end), args));
  }

  void instant(int pid, int tid, const std::string& name, const char* category, std::int64_t at,
               const std::string& args) {
    event(fmt::format(R"({{"ph":"i","s":"t","pid":{},"tid":{},"name":{},"cat":"{}","ts":{},"args":{{{}}}}})", pid,
                      tid, quoted(name), category, micros(at), args));
  }

  static std::string quoted(const std::string& text) {
    return nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }

 private:
  static std::string duration(std::int64_t start, std::int64_t end) {
    const std::int64_t ns = end - start;
    return fmt::format("{}.{:03}", ns / 1000, ns % 1000);
  }

  const TraceModel& model_;
  std::FILE* out_;
  bool first_ = true;
  std::map<std::string, int> pid_of_gpu_;
  std::map<std::string, int> tenant_index_;
};

std::string bytes_arg(std::int64_t bytes) { return bytes >= 0 ? fmt::format(R"("bytes":{})", bytes) : ""; }

void write_tracks(const TraceModel& model, ChromeTraceWriter& writer) {
  for (const GpuTrace* gpu : model.ordered_gpus()) {
    const int pid = writer.pid(gpu->uuid);
    writer.metadata(pid, 0, "process_name", fmt::format("GPU {} {}", gpu->id, gpu->uuid), pid);
  }
  for (const auto& [key, activity] : model.activity) {
    const auto& [uuid, tenant] = key;
    const int pid = writer.pid(uuid);
    for (const auto& [track, suffix] : {std::pair{TenantTrack::kActivity, ""}, std::pair{TenantTrack::kSlices, " slices"},
                                        std::pair{TenantTrack::kRequests, " requests"}}) {
      const int tid = writer.tid(tenant, track);
      writer.metadata(pid, tid, "thread_name", tenant + suffix, tid);
    }
  }
}

void write_gpushare_events(const TraceModel& model, ChromeTraceWriter& writer) {
  for (const GpuTrace* gpu : model.ordered_gpus()) {
    const int pid = writer.pid(gpu->uuid);
    for (const Slice& slice : slices_from(gpu->events, gpu->last)) {
      writer.complete(pid, writer.tid(slice.tenant, TenantTrack::kSlices), "slice", "gpushare", slice.start,
                      slice.end, "");
    }
    for (const GpushareEvent& event : gpu->events) {
      if (event.what == "handover_asked" || event.what == "oom_refused") {
        writer.instant(pid, writer.tid(event.tenant, TenantTrack::kSlices), event.what, "gpushare", event.at, "");
      }
    }
  }
  for (const auto& [key, activity] : model.activity) {
    const int pid = writer.pid(key.first);
    for (const Interval& range : activity.requests) {
      writer.complete(pid, writer.tid(key.second, TenantTrack::kRequests), "request", "request", range.start,
                      range.end, "");
    }
    for (const auto& [at, text] : activity.notes) {
      writer.instant(pid, writer.tid(key.second, TenantTrack::kActivity), text, "note", at, "");
    }
  }
}

}  // namespace

Status write_chrome_trace(const TraceModel& model, std::FILE* out, const NoteSink& note) {
  ChromeTraceWriter writer(model, out);
  writer.begin();
  write_tracks(model, writer);
  write_gpushare_events(model, writer);
  // Second pass: the records themselves, streamed.
  for (std::size_t index = 0; index < model.paths.size(); ++index) {
    const TraceFile& file = model.files[index];
    const auto visit = [&](const Record& record, std::size_t, std::size_t) {
      if (record.kind != RecordKind::kKernel && record.kind != RecordKind::kMemcpy &&
          record.kind != RecordKind::kMemset) {
        return;
      }
      const int pid = writer.pid(file.uuid_of_gpu.at(record.gpu));
      const int tid = writer.tid(file.tenant, TenantTrack::kActivity);
      if (record.kind == RecordKind::kKernel) {
        std::string args = fmt::format(R"("pid":{})", file.pid);
        if (record.stream >= 0) args += fmt::format(R"(,"stream":{})", record.stream);
        if (record.correlation >= 0) args += fmt::format(R"(,"corr":{})", record.correlation);
        std::string name = demangled(record.name);
        if (name != record.name) args += R"(,"mangled":)" + ChromeTraceWriter::quoted(record.name);
        writer.complete(pid, tid, name, "kernel", record.start, record.end, args);
      } else if (record.kind == RecordKind::kMemcpy) {
        const std::string direction = record.direction.empty() ? "?" : record.direction;
        writer.complete(pid, tid, "memcpy " + direction, "memcpy", record.start, record.end,
                        bytes_arg(record.bytes) + R"(,"dir":)" + ChromeTraceWriter::quoted(direction));
      } else {
        writer.complete(pid, tid, "memset", "memset", record.start, record.end, bytes_arg(record.bytes));
      }
    };
    // The first pass accepted these files; a file changed since then is refused now.
    if (auto read = read_trace_file(model.paths[index], index, visit, note); !read) return read.error();
  }
  writer.end();
  if (std::ferror(out)) return Error{"write failed"};
  return Ok{};
}

}  // namespace gpushare::trace
