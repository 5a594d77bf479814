// The lines of a trace file (docs/tracing.md, "Trace files"), as the recorder in the preload library
// writes them: one JSON object per line, ended by '\n'. Strings are escaped for JSON, and bytes that
// are not UTF-8 become U+FFFD, so that a tenant or kernel name can never make a line unreadable.
// No allocation beyond the returned string; no exception but std::bad_alloc.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace gpushare::trace_lines {

// Appends `text` as a JSON string, quotes included.
void append_json_string(std::string& out, std::string_view text);

std::string process(std::int64_t pid, std::string_view tenant, std::string_view host);
std::string gpu(int id, std::string_view uuid, std::string_view name);
// `stream` and `correlation`: left out when negative.
std::string kernel(int gpu, std::uint64_t start, std::uint64_t end, std::string_view name, std::int64_t stream,
                   std::int64_t correlation);
// `direction`: HtoD, DtoH, ... (left out when empty).
std::string memcpy(int gpu, std::uint64_t start, std::uint64_t end, std::uint64_t bytes, std::string_view direction);
std::string memset(int gpu, std::uint64_t start, std::uint64_t end, std::uint64_t bytes);
// gpushare's own event; `bytes` left out when negative.
std::string gpushare_event(int gpu, std::uint64_t at, std::string_view what, std::int64_t bytes = -1);
std::string range(std::uint64_t start, std::uint64_t end, std::string_view name);
std::string note(std::uint64_t at, std::string_view text);

}  // namespace gpushare::trace_lines
