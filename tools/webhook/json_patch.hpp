// The pieces of an admission response's JSONPatch (RFC 6902) that are not JSON itself: path
// tokens escaped as RFC 6901 asks, and the base64 the AdmissionReview carries the patch in; and
// how the webhook writes JSON without ever throwing on text that is not UTF-8.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace gpushare::webhook {

// One reference token of a JSON pointer: '~' becomes "~0" and '/' becomes "~1" (in that order,
// so that "~1" written by a user stays two characters and is not read back as '/').
std::string escape_pointer_token(std::string_view token);

// "/spec/containers/0/env" from {"spec", "containers", "0", "env"}: each token escaped.
std::string json_pointer(std::initializer_list<std::string_view> tokens);

// Standard base64 (RFC 4648, with '=' padding), as Kubernetes decodes AdmissionResponse.patch.
std::string base64_encode(std::string_view bytes);

// `value` as compact JSON text; bytes of its strings that are not UTF-8 become U+FFFD rather
// than an exception (nlohmann's plain dump() throws type_error 316 on them).
std::string dump_json(const nlohmann::json& value);

// `text` with every byte that is not part of valid UTF-8 replaced by U+FFFD, for messages built
// from parts of the pod (a refusal quoting one byte of a multi-byte character).
std::string valid_utf8(std::string_view text);

}  // namespace gpushare::webhook
