// GuideApp: the router of the `guide` app (see guide.h), and the registration of its classes.
#include <memory>

#include "objects/guide.h"
#include "objects/register_all.h"

namespace dohost::objects {
namespace guide {
namespace {

constexpr char kBuiltInMetricError[] =
    "activity and engagement are computed by the host from the context's chat";

Response methodNotAllowed(const char* allow) {
  Response r = jsonError(405, "method not allowed");
  r.setHeader("allow", allow);
  return r;
}

}  // namespace

GuideApp::GuideApp(const AppSettings& settings, std::shared_ptr<Settings> shared) {
  *shared = Settings::parse(settings);  // the classes' factories hold the same Settings
  settings_ = std::move(shared);
  if (settings_->jwtSecret.empty() && settings_->devToken.empty()) {
    logLine(LogLevel::kWarn, "guide: no jwt_secret (JWT_SECRET) set; every client is refused");
  }
  if (!settings_->devToken.empty()) {
    logLine(LogLevel::kWarn, "guide: dev_token is set; anyone who knows it is the user \"dev\"");
  }
}

Route GuideApp::route(Request& request) {
  // Only the router, lobbies and rooms may set these.
  std::vector<std::string> own;
  for (const auto& [name, value] : request.headers()) {
    if (name.starts_with("x-guide-")) own.push_back(name);
  }
  for (const std::string& name : own) request.removeHeader(name);

  const std::string& path = request.path();
  if (path == "/api/chat/ws") return upgrade(request, kChatRoomClass, "chat");
  if (path == "/api/analytics/ws") return upgrade(request, kAnalyticsRoomClass, "analytics");
  if (path == "/api/collaboration/ws") {
    return upgrade(request, kCollaborationRoomClass, "collaboration");
  }
  if (path == "/api/analytics/metrics") return postMetric(request);
  if (path == "/health") return Route::respond(Response::json(200, R"({"ok":true})"));
  return Route::respond(jsonError(404, "not found"));
}

bool GuideApp::admitConnection(const std::string& address, int64_t nowMs, int64_t* retryAfterMs) {
  if (connections_.size() >= sweepAt_) {
    std::erase_if(connections_, [&](const auto& entry) {
      return nowMs - entry.second.startMs >= settings_->rateWindowMs;
    });
    sweepAt_ = std::max<size_t>(1024, connections_.size() * 2);
  }
  RateWindow& window = connections_[address];
  if (window.admit(nowMs, settings_->connectionsPerMinute, settings_->rateWindowMs)) return true;
  *retryAfterMs = window.retryAfterMs(nowMs, settings_->rateWindowMs);
  return false;
}

Route GuideApp::upgrade(Request& request, const char* roomClass, const char* service) {
  if (!request.isWebSocketUpgrade()) {
    Response r = jsonError(426, "expected a WebSocket upgrade");
    r.setHeader("upgrade", "websocket");
    return Route::respond(std::move(r));
  }
  TimePoint now = clock().now();
  int64_t retryAfterMs = 0;
  if (!admitConnection(request.remoteAddress(), toUnixMillis(now), &retryAfterMs)) {
    Response r = Response::json(429, dump(json{{"error", "Rate limit exceeded"},
                                               {"limit", "connections_per_minute"},
                                               {"retryAfterMs", retryAfterMs}}));
    r.setHeader("retry-after", std::to_string((retryAfterMs + 999) / 1000));
    return Route::respond(std::move(r));
  }
  if (settings_->jwtSecret.empty() && settings_->devToken.empty()) {
    return Route::respond(jsonError(503, "JWT_SECRET is not configured"));
  }
  std::optional<std::string> contextId = request.queryParam("contextId");
  if (contextId && !validId(*contextId)) {
    return Route::respond(
        jsonError(400, "a contextId has 1 to 128 characters: letters, digits and . _ : @ ~ -"));
  }
  std::optional<std::string> token = request.bearerToken();
  if (!token) {
    // Authentication by first message: the service's lobby holds the socket until then.
    if (contextId) request.setHeader(kContextHeader, *contextId);
    return Route::toName(kLobbyClass, service);
  }
  std::string error;
  std::optional<User> user = verifyToken(*token, *settings_, now, &error);
  if (!user) return Route::respond(unauthorized(error));
  std::string context = contextId.value_or(settings_->defaultContextId);
  if (context.empty()) {
    return Route::respond(jsonError(400, "contextId is required (?contextId=)"));
  }
  request.setHeader(kUserHeader, dump(user->toJson()));
  request.setHeader(kAuthHeader, "query");
  return Route::toName(roomClass, context);
}

Route GuideApp::postMetric(Request& request) {
  if (request.isWebSocketUpgrade() || request.method() != "POST") {
    return Route::respond(methodNotAllowed("POST"));
  }
  if (settings_->jwtSecret.empty() && settings_->devToken.empty()) {
    return Route::respond(jsonError(503, "JWT_SECRET is not configured"));
  }
  std::optional<std::string> token = request.bearerToken();
  std::string error = "missing token (Authorization: Bearer <JWT>)";
  if (!token || !verifyToken(*token, *settings_, clock().now(), &error)) {
    return Route::respond(unauthorized(error));
  }
  std::optional<json> body = parseObject(request.body());
  if (!body) return Route::respond(jsonError(400, "the body must be a JSON object"));
  std::string contextId = stringField(*body, "contextId");
  if (!validId(contextId)) {
    return Route::respond(
        jsonError(400, "contextId must be 1 to 128 characters: letters, digits and . _ : @ ~ -"));
  }
  std::string metric = stringField(*body, "metric");
  if (!validMetricName(metric)) {
    return Route::respond(
        jsonError(400, "metric must be 1 to 64 characters: letters, digits and . _ : -"));
  }
  if (metric == "activity" || metric == "engagement") {
    return Route::respond(jsonError(400, kBuiltInMetricError));
  }
  auto value = body->find("value");
  if (value == body->end() || value->is_null()) {
    return Route::respond(jsonError(400, "value is required"));
  }
  if (static_cast<int64_t>(dump(*value).size()) > settings_->maxMetricValueBytes) {
    return Route::respond(jsonError(
        413, "value is larger than " + std::to_string(settings_->maxMetricValueBytes) + " bytes"));
  }
  return Route::toName(kAnalyticsRoomClass, contextId);
}

}  // namespace guide

void registerGuide(Registry& registry) {
  using namespace guide;
  // Written by the app when the host creates it (before any object runs), read by objects.
  auto shared = std::make_shared<Settings>();
  SharedSettings view = shared;
  registry.addClass(kChatRoomClass,
                    [view](ObjectState& s) { return std::make_unique<ChatRoom>(s, view); });
  registry.addClass(kAnalyticsRoomClass,
                    [view](ObjectState& s) { return std::make_unique<AnalyticsRoom>(s, view); });
  registry.addClass(kCollaborationRoomClass, [view](ObjectState& s) {
    return std::make_unique<CollaborationRoom>(s, view);
  });
  registry.addClass(kLobbyClass,
                    [view](ObjectState& s) { return std::make_unique<GuideLobby>(s, view); });
  registry.addApp({"guide", "127.0.0.1:8791", [shared](const AppSettings& settings) {
                     return std::make_unique<GuideApp>(settings, shared);
                   }});
}

}  // namespace dohost::objects
