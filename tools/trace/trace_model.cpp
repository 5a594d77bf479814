// Loading a trace directory into a TraceModel (trace_model.hpp).
#include "trace_model.hpp"

#include <algorithm>
#include <set>

#include <fmt/format.h>

namespace gpushare::trace {

std::vector<const GpuTrace*> TraceModel::ordered_gpus() const {
  std::vector<const GpuTrace*> ordered;
  for (const auto& [uuid, gpu] : gpus) ordered.push_back(&gpu);
  std::sort(ordered.begin(), ordered.end(), [](const GpuTrace* a, const GpuTrace* b) {
    return a->id != b->id ? a->id < b->id : a->uuid < b->uuid;
  });
  return ordered;
}

std::vector<std::string> TraceModel::tenants() const {
  std::set<std::string> names;
  for (const TraceFile& file : files) names.insert(file.tenant);
  return {names.begin(), names.end()};
}

namespace {

// What one file's pass keeps until the file ends.
struct FileState {
  std::map<int, std::int64_t> wait_begun;  // by ordinal
  std::vector<Interval> ranges;
  std::vector<std::pair<std::int64_t, std::string>> notes;
  std::int64_t last = 0;
};

void widen(std::int64_t& first, std::int64_t& last, std::int64_t from, std::int64_t to) {
  first = std::min(first, from);
  last = std::max(last, to);
}

}  // namespace

Result<TraceModel> load_trace(const std::vector<std::filesystem::path>& paths, KernelIntervals kernels,
                              const NoteSink& note) {
  TraceModel model;
  model.paths = paths;
  model.files.resize(paths.size());
  std::int64_t origin = std::numeric_limits<std::int64_t>::max();
  for (std::size_t index = 0; index < paths.size(); ++index) {
    TraceFile& file = model.files[index];
    FileState state;
    const auto visit = [&](const Record& record, std::size_t, std::size_t) {
      const bool on_gpu = record.kind != RecordKind::kProcess && record.kind != RecordKind::kGpu &&
                          record.kind != RecordKind::kRange && record.kind != RecordKind::kNote;
      const std::int64_t from = record.kind == RecordKind::kGpushare || record.kind == RecordKind::kNote
                                    ? record.at : record.start;
      const std::int64_t to = record.kind == RecordKind::kGpushare || record.kind == RecordKind::kNote
                                  ? record.at : record.end;
      if (record.kind != RecordKind::kProcess && record.kind != RecordKind::kGpu) {
        origin = std::min(origin, from);
        state.last = std::max(state.last, to);
      }
      switch (record.kind) {
        case RecordKind::kProcess:
          file.tenant = record.tenant;
          file.pid = record.pid;
          return;
        case RecordKind::kGpu: {
          file.uuid_of_gpu[record.gpu] = record.uuid;
          if (file.first_gpu_uuid.empty()) file.first_gpu_uuid = record.uuid;
          auto [it, added] = model.gpus.try_emplace(record.uuid);
          if (added) {
            it->second.uuid = record.uuid;
            it->second.id = record.gpu;
            it->second.name = record.name;
          }
          return;
        }
        case RecordKind::kRange:
          state.ranges.push_back({record.start, record.end});
          return;
        case RecordKind::kNote:
          state.notes.emplace_back(record.at, record.text);
          return;
        default:
          break;
      }
      if (!on_gpu) return;
      const std::string& uuid = file.uuid_of_gpu.at(record.gpu);  // declared: the reader checks
      GpuTrace& gpu = model.gpus.at(uuid);
      widen(gpu.first, gpu.last, from, to);
      TenantActivity& activity = model.activity[{uuid, file.tenant}];
      widen(activity.first, activity.last, from, to);
      if (record.kind == RecordKind::kKernel) {
        ++activity.kernel_count;
        if (kernels == KernelIntervals::kKeep) activity.kernels.push_back({record.start, record.end});
      } else if (record.kind == RecordKind::kGpushare) {
        gpu.events.push_back({record.at, file.tenant, record.what});
        if (record.what == "wait_begun") {
          state.wait_begun.try_emplace(record.gpu, record.at);
        } else if (record.what == "wait_ended") {
          const auto begun = state.wait_begun.find(record.gpu);
          if (begun != state.wait_begun.end()) {
            gpu.waits.push_back({begun->second, std::max(begun->second, record.at)});
            state.wait_begun.erase(begun);
          }
        }
      }
    };
    if (auto read = read_trace_file(paths[index], index, visit, note); !read) return read.error();
    // A wait the process never saw end lasts until its last record.
    for (const auto& [gpu, begun] : state.wait_begun) {
      model.gpus.at(file.uuid_of_gpu.at(gpu)).waits.push_back({begun, std::max(begun, state.last)});
    }
    if (file.first_gpu_uuid.empty()) {
      if (!state.ranges.empty() || !state.notes.empty()) {
        note(fmt::format("{}: ranges and notes skipped: the process declared no GPU", paths[index].string()));
      }
      continue;
    }
    TenantActivity& activity = model.activity[{file.first_gpu_uuid, file.tenant}];
    for (const Interval& range : state.ranges) widen(activity.first, activity.last, range.start, range.end);
    activity.requests.insert(activity.requests.end(), state.ranges.begin(), state.ranges.end());
    activity.notes.insert(activity.notes.end(), state.notes.begin(), state.notes.end());
  }
  for (auto& [uuid, gpu] : model.gpus) {
    // Ties keep file order (stable sort): the same input always gives the same slices.
    std::stable_sort(gpu.events.begin(), gpu.events.end(),
                     [](const GpushareEvent& a, const GpushareEvent& b) { return a.at < b.at; });
  }
  model.origin = origin == std::numeric_limits<std::int64_t>::max() ? 0 : origin;
  return model;
}

}  // namespace gpushare::trace
