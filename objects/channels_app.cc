// ChannelsApp: the router of the `channels` app (authentication, the demo page, shards).
#include <algorithm>
#include <memory>

#include "dohost/json.h"
#include "objects/channel_common.h"
#include "objects/channel_websocket.h"
#include "objects/channels_demo_page.h"
#include "objects/register_all.h"

namespace dohost::objects {

using nlohmann::json;

// --- the app --------------------------------------------------------------------------------

namespace {

bool validChannelId(std::string_view id) {
  if (id.empty() || id.size() > kChannelMaxIdBytes) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
           c == ':' || c == '@' || c == '~';
  });
}

}  // namespace

ChannelsApp::ChannelsApp(const AppSettings& settings) {
  if (auto it = settings.find("jwt_secret"); it != settings.end()) jwtSecret_ = it->second;
  if (jwtSecret_.empty()) {
    logLine(LogLevel::kWarn, "channels: no jwt_secret (JWT_SECRET) set; every client is refused");
  }
  maxConnections_ = static_cast<size_t>(appSetting(settings, "max_connections", {1, 1'000'000, true},
                                                   static_cast<double>(maxConnections_)));
  shards_ = static_cast<int>(appSetting(settings, "shards", {1, kChannelMaxShards, true}, shards_));
}

int ChannelsApp::shardOf(std::string_view userId, int shards) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (char c : userId) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return static_cast<int>(h % static_cast<uint64_t>(std::max(shards, 1)));
}

std::optional<nlohmann::json> ChannelsApp::authenticate(const Request& request,
                                                        std::string* error) const {
  std::optional<std::string> payload = verifyRequestJwtHs256(request, jwtSecret_, clock().now(), error);
  if (!payload) return std::nullopt;
  json claims = parseJson(*payload).value_or(json());
  if (!claims.is_object()) {
    *error = "the token payload is not a JSON object";
    return std::nullopt;
  }
  std::string userId;
  for (const char* key : {"userId", "sub"}) {
    auto it = claims.find(key);
    if (it == claims.end()) continue;
    if (it->is_string()) userId = it->get<std::string>();
    if (it->is_number_integer()) userId = std::to_string(it->get<int64_t>());
    if (!userId.empty()) break;
  }
  if (userId.empty() || userId.size() > 200) {
    *error = "the token needs a userId (or sub) claim of 1 to 200 characters";
    return std::nullopt;
  }
  std::string username = userId;
  if (auto it = claims.find("username"); it != claims.end() && !it->is_null()) {
    if (!it->is_string() || it->get_ref<const std::string&>().size() > 200) {
      *error = "username must be a string of at most 200 characters";
      return std::nullopt;
    }
    if (!it->get_ref<const std::string&>().empty()) username = it->get<std::string>();
  }
  json permissions = json::array();
  if (auto it = claims.find("permissions"); it != claims.end() && !it->is_null()) {
    if (!it->is_array() || it->size() > 64) {
      *error = "permissions must be an array of at most 64 strings";
      return std::nullopt;
    }
    for (const json& p : *it) {
      if (!p.is_string() || p.get_ref<const std::string&>().size() > 64) {
        *error = "permissions must be an array of strings of at most 64 characters";
        return std::nullopt;
      }
      permissions.push_back(p);
    }
  }
  return json{{"userId", userId}, {"username", username}, {"permissions", permissions}};
}

Route ChannelsApp::route(Request& request) {
  // Only the router (and objects among themselves) may set these.
  std::vector<std::string> own;
  for (const auto& [name, value] : request.headers()) {
    if (name.starts_with("x-channel-")) own.push_back(name);
  }
  for (const std::string& name : own) request.removeHeader(name);

  const std::string& path = request.path();
  if (path == "/" || path == "/index.html") {
    if (request.method() != "GET" && request.method() != "HEAD") {
      return Route::respond(jsonError(405, "method not allowed"));
    }
    Response page(200, kChannelsDemoPage, "text/html; charset=utf-8");
    page.setHeader("cache-control", "no-store");
    return Route::respond(std::move(page));
  }
  if (path == "/health") return Route::respond(Response::json(200, R"({"ok":true})"));

  // /channel/{channelId}/websocket and /channel/{channelId}/messages; nothing else.
  constexpr std::string_view kPrefix = "/channel/";
  if (!path.starts_with(kPrefix)) return Route::respond(jsonError(404, "not found"));
  std::string_view rest = std::string_view(path).substr(kPrefix.size());
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return Route::respond(jsonError(404, "not found"));
  std::string_view channelId = rest.substr(0, slash);
  std::string_view action = rest.substr(slash + 1);
  if (action != "websocket" && action != "messages") {
    return Route::respond(jsonError(404, "not found"));
  }
  if (!validChannelId(channelId)) {
    return Route::respond(jsonError(
        400, "a channel id has 1 to 128 characters: letters, digits and - _ . : @ ~"));
  }
  if (action == "websocket" && !request.isWebSocketUpgrade()) {
    Response r = jsonError(426, "expected a WebSocket upgrade");
    r.setHeader("upgrade", "websocket");
    return Route::respond(std::move(r));
  }
  if (action == "messages" && (request.isWebSocketUpgrade() || request.method() != "GET")) {
    Response r = jsonError(405, "method not allowed");
    r.setHeader("allow", "GET");
    return Route::respond(std::move(r));
  }
  if (jwtSecret_.empty()) return Route::respond(jsonError(503, "JWT_SECRET is not configured"));
  std::string error;
  std::optional<json> identity = authenticate(request, &error);
  if (!identity) return Route::respond(unauthorized(error));

  request.setHeader(kChannelUserHeader, dump(*identity));
  request.setHeader(kChannelMaxConnectionsHeader, std::to_string(maxConnections_));
  std::string name(channelId);
  if (action == "websocket" && shards_ > 1) {
    name += "#" + std::to_string(shardOf((*identity)["userId"].get<std::string>(), shards_));
  }
  return Route::toName(kChannelClass, name);
}

void registerChannels(Registry& registry) {
  registry.addClass<ChannelWebSocket>(kChannelClass);
  registry.addApp({"channels", "127.0.0.1:8789", [](const AppSettings& settings) {
                     return std::make_unique<ChannelsApp>(settings);
                   }});
}

}  // namespace dohost::objects
