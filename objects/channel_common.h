// Small helpers shared by the ChannelWebSocket object and its app router.
#pragma once

#include <charconv>
#include <cctype>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "dohost/dohost.h"

namespace dohost::objects::channel {

using nlohmann::json;

// Never throws on odd bytes.
inline std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

inline Response jsonError(int status, std::string message) {
  return Response::json(status, dump(json{{"error", std::move(message)}}));
}

inline Response unauthorized(const std::string& reason) {
  Response r = Response::json(401, dump(json{{"error", "Unauthorized"}, {"reason", reason}}));
  r.setHeader("www-authenticate", "Bearer");
  return r;
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

inline std::optional<int64_t> parseInt(std::string_view text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace dohost::objects::channel
