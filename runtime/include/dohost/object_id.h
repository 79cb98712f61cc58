// Object ids: 64 lowercase hex characters. idFromName is deterministic and keyed by class, so
// two classes never share an id; the last 16 bytes are a MAC of the first 16, so
// idFromString can tell a valid id of this class from a typo or an id of another class.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace dohost {

// Names longer than this are hashed into the id but not kept (as Cloudflare does).
inline constexpr size_t kMaxStoredNameBytes = 1024;

std::string idFromName(std::string_view className, std::string_view name);
std::string newUniqueId(std::string_view className);
// The normalized (lowercase) id, or nullopt with `error` set to why it is not valid.
std::optional<std::string> idFromString(std::string_view className, std::string_view text,
                                        std::string* error = nullptr);

}  // namespace dohost
