// Small helpers shared by the ChannelWebSocket object and its app router.
#pragma once

#include <charconv>
#include <cctype>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "dohost/dohost.h"
#include "objects/app_util.h"
#include "objects/uuid.h"

namespace dohost::objects::channel {

using nlohmann::json;

// Where a replay starts: after the message whose `id` is this UUID (lowercase), or, when `id`
// is empty, after this `seq` (0: from the start of the history).
struct After {
  int64_t seq = 0;
  std::string id;
};

// A seq a client sent: a non-negative integer, as a JSON number or a decimal string.
inline std::optional<int64_t> seqFrom(const json& value) {
  if (value.is_number_unsigned()) {
    uint64_t v = value.get<uint64_t>();
    if (v > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<int64_t>(v);
  }
  if (value.is_number_integer()) {
    int64_t v = value.get<int64_t>();
    return v < 0 ? std::nullopt : std::optional<int64_t>(v);
  }
  if (value.is_string()) {
    const std::string& text = value.get_ref<const std::string&>();
    if (text.empty() || text.front() < '0' || text.front() > '9') return std::nullopt;
    return parseInt(text);
  }
  return std::nullopt;
}

// A message reference: a UUID is an `id`; an integer or a decimal string is a `seq` (the
// previous version's ids were the seq, so what its clients kept still means the same message;
// a UUID never looks like a number). Anything else is nullopt.
inline std::optional<After> afterFrom(const json& value) {
  if (value.is_string() && isUuid(value.get_ref<const std::string&>())) {
    return After{0, lowerUuid(value.get_ref<const std::string&>())};
  }
  if (std::optional<int64_t> seq = seqFrom(value)) return After{*seq, {}};
  return std::nullopt;
}

// The start of a `sync`: `afterMessageId` (see afterFrom; missing or null: the start) or
// `afterSeq` (a seq), not both. nullopt: the frame is malformed.
inline std::optional<After> syncAfter(const json& message) {
  auto id = message.find("afterMessageId");
  auto seq = message.find("afterSeq");
  bool hasId = id != message.end() && !id->is_null();
  bool hasSeq = seq != message.end() && !seq->is_null();
  if (hasId && hasSeq) return std::nullopt;
  if (hasSeq) {
    std::optional<int64_t> n = seqFrom(*seq);
    if (!n) return std::nullopt;
    return After{*n, {}};
  }
  if (hasId) return afterFrom(*id);
  return After{};
}

// `after=` of GET /messages: a UUID or a seq; empty means the start.
inline std::optional<After> afterParam(std::string_view text) {
  if (text.empty()) return After{};
  return afterFrom(json(std::string(text)));
}

}  // namespace dohost::objects::channel
