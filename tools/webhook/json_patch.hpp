// The pieces of an admission response's JSONPatch (RFC 6902) that are not JSON itself: path
// tokens escaped as RFC 6901 asks, and the base64 the AdmissionReview carries the patch in.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

namespace gpushare::webhook {

// One reference token of a JSON pointer: '~' becomes "~0" and '/' becomes "~1" (in that order,
// so that "~1" written by a user stays two characters and is not read back as '/').
std::string escape_pointer_token(std::string_view token);

// "/spec/containers/0/env" from {"spec", "containers", "0", "env"}: each token escaped.
std::string json_pointer(std::initializer_list<std::string_view> tokens);

// Standard base64 (RFC 4648, with '=' padding), as Kubernetes decodes AdmissionResponse.patch.
std::string base64_encode(std::string_view bytes);

}  // namespace gpushare::webhook
