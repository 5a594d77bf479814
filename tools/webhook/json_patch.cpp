#include "json_patch.hpp"

#include <cstdint>

namespace gpushare::webhook {

std::string escape_pointer_token(std::string_view token) {
  std::string escaped;
  escaped.reserve(token.size());
  for (const char c : token) {
    if (c == '~') {
      escaped += "~0";
    } else if (c == '/') {
      escaped += "~1";
    } else {
      escaped += c;
    }
  }
  return escaped;
}

std::string json_pointer(std::initializer_list<std::string_view> tokens) {
  std::string pointer;
  for (const std::string_view token : tokens) {
    pointer += '/';
    pointer += escape_pointer_token(token);
  }
  return pointer;
}

std::string base64_encode(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string encoded;
  encoded.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t group = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16 |
                                static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8 |
                                static_cast<unsigned char>(bytes[i + 2]);
    encoded += kAlphabet[group >> 18 & 0x3f];
    encoded += kAlphabet[group >> 12 & 0x3f];
    encoded += kAlphabet[group >> 6 & 0x3f];
    encoded += kAlphabet[group & 0x3f];
  }
  const std::size_t left = bytes.size() - i;
  if (left > 0) {
    std::uint32_t group = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (left == 2) group |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    encoded += kAlphabet[group >> 18 & 0x3f];
    encoded += kAlphabet[group >> 12 & 0x3f];
    encoded += left == 2 ? kAlphabet[group >> 6 & 0x3f] : '=';
    encoded += '=';
  }
  return encoded;
}

std::string dump_json(const nlohmann::json& value) {
  return value.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

std::string valid_utf8(std::string_view text) {
  // Dumped as a JSON string with replacement, then read back: the text nlohmann accepts.
  const std::string quoted = dump_json(nlohmann::json(std::string(text)));
  return nlohmann::json::parse(quoted).get<std::string>();
}

}  // namespace gpushare::webhook
