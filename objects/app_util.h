// Helpers every bundled app uses, in one place: JSON text that never throws on client bytes,
// JSON error answers, strict integers, trimming, and a constant-time compare for secrets.
// Header-only. Bearer tokens come from Request::bearerToken() (the author's API), not from
// here.
#pragma once

#include <cctype>
#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "dohost/dohost.h"

namespace dohost::objects {

// Serializes JSON built from client input (json or ordered_json): invalid UTF-8 is replaced
// rather than thrown.
template <class JsonT>
std::string dump(const JsonT& value, int indent = -1) {
  return value.dump(indent, ' ', false, JsonT::error_handler_t::replace);
}

// {"error": message} with the status.
inline Response jsonError(int status, std::string_view message) {
  return Response::json(status, dump(nlohmann::json{{"error", message}}));
}

// 401 {"error":"Unauthorized","reason":...} with `WWW-Authenticate: Bearer`.
inline Response unauthorized(std::string_view reason) {
  Response r =
      Response::json(401, dump(nlohmann::json{{"error", "Unauthorized"}, {"reason", reason}}));
  r.setHeader("www-authenticate", "Bearer");
  return r;
}

// The answer with a permissive CORS origin, for apps whose seed's Worker sends one.
inline Response withCors(Response r) {
  r.setHeader("access-control-allow-origin", "*");
  return r;
}

// ASCII white space off both ends.
inline std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// A decimal integer that is the whole text ("12abc", "", " 1" and overflow are nullopt).
inline std::optional<int64_t> parseInt(std::string_view text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Compares secrets without leaking where they differ through timing (the length is not secret).
inline bool constantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  volatile unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = diff | static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

}  // namespace dohost::objects
