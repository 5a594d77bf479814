// See trace_lines.hpp.
#include "core/trace_lines.hpp"

#include <fmt/format.h>

namespace gpushare::trace_lines {
namespace {

// The length of the valid UTF-8 sequence at the start of `text`, or 0 if it is not one (overlong
// forms, surrogates and code points past U+10FFFF included).
std::size_t utf8_sequence(std::string_view text) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(0);
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;  // bounds of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return 0;
  }
  if (text.size() < length || byte(1) < low || byte(1) > high) return 0;
  for (std::size_t i = 2; i < length; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xBF) return 0;
  }
  return length;
}

std::string optional_int(std::string_view key, std::int64_t value) {
  return value < 0 ? std::string() : fmt::format(",\"{}\":{}", key, value);
}

}  // namespace

void append_json_string(std::string& out, std::string_view text) {
  out += '"';
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      if (const std::size_t length = utf8_sequence(text.substr(i)); length != 0) {
        out.append(text.substr(i, length));
        i += length;
      } else {
        out += "\\ufffd";
        ++i;
      }
      continue;
    }
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7F) {
      out += fmt::format("\\u{:04x}", c);
    } else {
      out += static_cast<char>(c);
    }
    ++i;
  }
  out += '"';
}

std::string process(std::int64_t pid, std::string_view tenant, std::string_view host) {
  std::string line = fmt::format("{{\"k\":\"process\",\"pid\":{},\"tenant\":", pid);
  append_json_string(line, tenant);
  if (!host.empty()) {
    line += ",\"host\":";
    append_json_string(line, host);
  }
  line += ",\"clock\":\"cupti\"}\n";
  return line;
}

std::string gpu(int id, std::string_view uuid, std::string_view name) {
  std::string line = fmt::format("{{\"k\":\"gpu\",\"id\":{},\"uuid\":", id);
  append_json_string(line, uuid);
  if (!name.empty()) {
    line += ",\"name\":";
    append_json_string(line, name);
  }
  line += "}\n";
  return line;
}

std::string kernel(int gpu, std::uint64_t start, std::uint64_t end, std::string_view name, std::int64_t stream,
                   std::int64_t correlation) {
  std::string line = fmt::format("{{\"k\":\"kernel\",\"gpu\":{},\"start\":{},\"end\":{},\"name\":", gpu, start, end);
  append_json_string(line, name);
  line += optional_int("stream", stream) + optional_int("corr", correlation) + "}\n";
  return line;
}

std::string memcpy(int gpu, std::uint64_t start, std::uint64_t end, std::uint64_t bytes, std::string_view direction) {
  std::string line =
      fmt::format("{{\"k\":\"memcpy\",\"gpu\":{},\"start\":{},\"end\":{},\"bytes\":{}", gpu, start, end, bytes);
  if (!direction.empty()) {
    line += ",\"dir\":";
    append_json_string(line, direction);
  }
  line += "}\n";
  return line;
}

std::string memset(int gpu, std::uint64_t start, std::uint64_t end, std::uint64_t bytes) {
  return fmt::format("{{\"k\":\"memset\",\"gpu\":{},\"start\":{},\"end\":{},\"bytes\":{}}}\n", gpu, start, end, bytes);
}

std::string gpushare_event(int gpu, std::uint64_t at, std::string_view what, std::int64_t bytes) {
  std::string line = fmt::format("{{\"k\":\"gs\",\"gpu\":{},\"at\":{},\"what\":", gpu, at);
  append_json_string(line, what);
  line += optional_int("bytes", bytes) + "}\n";
  return line;
}

std::string range(std::uint64_t start, std::uint64_t end, std::string_view name) {
  std::string line = fmt::format("{{\"k\":\"range\",\"start\":{},\"end\":{},\"name\":", start, end);
  append_json_string(line, name);
  line += "}\n";
  return line;
}

std::string note(std::uint64_t at, std::string_view text) {
  std::string line = fmt::format("{{\"k\":\"note\",\"at\":{},\"text\":", at);
  append_json_string(line, text);
  line += "}\n";
  return line;
}

}  // namespace gpushare::trace_lines
