// Pieces shared by the `guide` app's router and its object classes (seed 002): settings, the
// message envelope, times in ISO 8601, identities from tokens, and the rate windows that
// the limits count in.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "dohost/json.h"
#include "dohost/dohost.h"
#include "objects/app_util.h"

namespace dohost::objects::guide {

using nlohmann::json;

inline constexpr char kChatRoomClass[] = "ChatRoom";
inline constexpr char kAnalyticsRoomClass[] = "AnalyticsRoom";
inline constexpr char kCollaborationRoomClass[] = "CollaborationRoom";
// Holds sockets that authenticate with a first `auth` message until they do; one object per
// service ("chat", "analytics", "collaboration"). See guide_lobby.cc.
inline constexpr char kLobbyClass[] = "GuideLobby";

// Headers only the router (or a lobby, or a room calling another) sets; the router removes
// any x-guide-* header a client sent.
inline constexpr char kUserHeader[] = "x-guide-user";        // verified {userId, username}
inline constexpr char kAuthHeader[] = "x-guide-auth";        // "query" or "message"
inline constexpr char kRateHeader[] = "x-guide-rate";        // the socket's message window
inline constexpr char kContextHeader[] = "x-guide-context";  // contextId from the query
inline constexpr char kInternalHeader[] = "x-guide-internal";

inline constexpr size_t kMaxContextIdBytes = 128;
inline constexpr size_t kMaxNameBytes = 200;  // userId and username
inline constexpr size_t kHistoryDefaultLimit = 50;
inline constexpr size_t kHistoryMaxLimit = 200;

// The app's settings ([apps.guide] in the config, DOHOST_GUIDE_<KEY>, JWT_SECRET), parsed once
// by the app and shared with its object classes: objects need some of them outside any
// request (the JWT secret in the lobby, the limits on every message), and a secret must not
// travel in headers or sit in socket attachments (the admin API shows those).
struct Settings {
  std::string jwtSecret;
  std::string devToken;                 // a token accepted as the user "dev"; empty: none
  std::string defaultContextId;         // used when a client names no contextId; empty: none
  int64_t connectionsPerMinute = 10;    // per client IP, WebSocket upgrades
  int64_t messagesPerMinute = 100;      // per connection
  int64_t broadcastsPerMinute = 1000;   // per room
  int64_t rateWindowMs = 60'000;        // the "minute" of the three limits
  int64_t authTimeoutMs = 10'000;       // for the first-message `auth`
  int64_t maxContentBytes = 4000;       // a chat message's content
  int64_t engagementWindowMs = 60'000;  // the built-in metric `engagement` counts this far back
  int64_t maxMetricsPerSocket = 50;
  int64_t maxMetricValueBytes = 4096;
  int64_t maxDocumentUnits = 100'000;  // a collaboration text, in UTF-16 code units
  int64_t editHistory = 1000;          // versions an edit may lag behind and still be transformed

  // Throws std::invalid_argument naming the key on a value out of range or of the wrong type.
  static Settings parse(const AppSettings& settings);
};

using SharedSettings = std::shared_ptr<const Settings>;

// --- JSON ------------------------------------------------------------------------------------

// The JSON object in `text`, or nullopt if it is not valid JSON or not an object.
std::optional<json> parseObject(std::string_view text);

// The string member `key` of `object`, or empty.
std::string stringField(const json& object, const char* key);
// An optional short string member (messageType, role): `fallback` when absent or null, nullopt
// when it is not a string of 1 to `maxBytes` bytes.
std::optional<std::string> optionalString(const json& object, const char* key, size_t maxBytes,
                                          const char* fallback);

// --- time ------------------------------------------------------------------------------------

// "2024-01-01T00:00:00.000Z", as JavaScript's Date.prototype.toISOString.
std::string isoTime(TimePoint t);
// ISO 8601 as clients send it: a date ("2024-01-01"), or a date and time with optional
// seconds, fraction and zone (Z or +hh:mm / -hh:mm / +hhmm; none: UTC). nullopt otherwise.
std::optional<TimePoint> parseIsoTime(std::string_view text);

// --- ids and names ---------------------------------------------------------------------------

// A random (version 4) UUID, like crypto.randomUUID().
std::string newUuid(std::mt19937_64& random);

// 1-128 characters of A-Z a-z 0-9 . _ : @ ~ - (contextId, sessionId).
bool validId(std::string_view id);
// 1-64 characters of A-Z a-z 0-9 . _ : -.
bool validMetricName(std::string_view name);

// --- identity --------------------------------------------------------------------------------

struct User {
  std::string userId;
  std::string username;
  json toJson() const { return json{{"userId", userId}, {"username", username}}; }
};

// The user of a token: an HS256 JWT signed with the app's secret (user from `sub` or
// `userId`, name from `name` or `username`, `exp`/`nbf` honoured), or the app's dev token.
std::optional<User> verifyToken(std::string_view token, const Settings& settings, TimePoint now,
                                std::string* error);
// The identity the router or a lobby put in kUserHeader.
std::optional<User> userFromHeader(const Request& request);

// --- rate limits -----------------------------------------------------------------------------

// A fixed window: it starts at its first event and lasts `windowMs`; at most `limit` events
// are admitted in it. 16 bytes, so it travels in socket attachments and storage cheaply.
struct RateWindow {
  int64_t startMs = 0;
  int64_t count = 0;

  // Counts one event at `nowMs` if the window has room; false (nothing counted) if not.
  bool admit(int64_t nowMs, int64_t limit, int64_t windowMs) {
    if (count == 0 || nowMs - startMs >= windowMs || nowMs < startMs) {
      startMs = nowMs;
      count = 0;
    }
    if (count >= limit) return false;
    ++count;
    return true;
  }
  // Milliseconds until the window has room again.
  int64_t retryAfterMs(int64_t nowMs, int64_t windowMs) const {
    return std::max<int64_t>(0, startMs + windowMs - nowMs);
  }

  // A fixed-width text form: 16 hex digits of start, 8 of count.
  static constexpr size_t kEncodedBytes = 24;
  void encode(char* out) const;
  std::string encode() const;
  static std::optional<RateWindow> decode(std::string_view text);
};

// A socket attachment of the guide's classes: the socket's message window (rewritten on every
// message, so a hibernated room keeps each connection's count) followed by the room's JSON
// state of the socket (rewritten only when it changes). 'g', the window, '\n', then the JSON.
struct SocketAttachment {
  RateWindow rate;
  std::string state;  // JSON object text

  std::string encode() const;
  // The same into `out`, reusing its memory (the per-message path allocates nothing).
  void encodeInto(std::string& out) const;
  static std::optional<SocketAttachment> decode(std::string_view bytes);
};

// The per-message check of the connection limit, as a room runs it: counts the message in the
// connection's window and, when admitted, writes the attachment bytes to keep (the window and
// `state`) into `out`. False: over the limit, nothing counted, `out` untouched.
inline bool admitMessage(RateWindow& rate, const std::string& state, int64_t nowMs,
                         const Settings& settings, std::string& out) {
  if (!rate.admit(nowMs, settings.messagesPerMinute, settings.rateWindowMs)) return false;
  SocketAttachment{rate, {}}.encodeInto(out);
  out += state;
  return true;
}

// --- envelopes -------------------------------------------------------------------------------

// {"type", "id", "timestamp", "data"}: every message the guide sends.
std::string envelope(std::string_view type, const json& data, std::string_view id, TimePoint now);
// {"type":"error", "id", "timestamp", "data", "error"}.
std::string errorEnvelope(std::string_view reason, const json& data, std::string_view id,
                          TimePoint now);

}  // namespace dohost::objects::guide
