// Writing .gstrace files in tests: a file from its lines, and the records the tests use most.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace gpushare::testing {

// Writes `lines`, each followed by '\n' unless `last_newline` is false for the last one.
inline void write_trace(const std::string& path, const std::vector<std::string>& lines, bool last_newline = true) {
  std::ofstream out(path, std::ios::binary);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    out << lines[i];
    if (i + 1 < lines.size() || last_newline) out << '\n';
  }
}

inline std::string process_line(int pid, const std::string& tenant) {
  return fmt::format(R"({{"k":"process","pid":{},"tenant":"{}","host":"node-a","clock":"cupti"}})", pid, tenant);
}
inline std::string gpu_line(int id, const std::string& uuid) {
  return fmt::format(R"({{"k":"gpu","id":{},"uuid":"{}","name":"Fake GPU"}})", id, uuid);
}
inline std::string kernel_line(std::int64_t start, std::int64_t end, int gpu = 0) {
  return fmt::format(R"({{"k":"kernel","gpu":{},"start":{},"end":{},"name":"k","stream":7,"corr":1}})", gpu, start,
                     end);
}
inline std::string gs_line(std::int64_t at, const std::string& what, int gpu = 0) {
  return fmt::format(R"({{"k":"gs","gpu":{},"at":{},"what":"{}"}})", gpu, at, what);
}
inline std::string range_line(std::int64_t start, std::int64_t end) {
  return fmt::format(R"({{"k":"range","start":{},"end":{},"name":"request"}})", start, end);
}

}  // namespace gpushare::testing
