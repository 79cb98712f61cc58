// What the Broadcaster (seed 001) and the WebSocketBridge (seed 000) share: one object per
// `projectId`, clients of a few named types on `GET /websocket?type=T&projectId=P`, `/status`
// and `/health`, client identity kept in the socket attachment, and the inactivity cleanup
// alarm. Header-only; both object files include it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "dohost/dohost.h"
#include "dohost/json.h"
#include "objects/app_util.h"
#include "objects/uuid.h"

namespace dohost::objects::project {

using Json = nlohmann::ordered_json;

// The header the router uses to tell the object its cleanup delay (the object has no access
// to the app settings). The router always overwrites it, so a client cannot choose the value.
inline constexpr std::string_view kCleanupHeader = "x-dohost-cleanup-ms";
// The seeds clean an empty project up after 5 minutes of inactivity.
inline constexpr int64_t kDefaultCleanupMs = 5 * 60 * 1000;
// lastActivity is written to storage at most this often while clients talk (it is always
// written when the last client leaves), so chatty projects do not commit on every message.
inline constexpr int64_t kActivityWriteIntervalMs = 1000;
// Longer names are hashed into the object id but not kept, and the object needs its name.
inline constexpr size_t kMaxProjectIdBytes = 1024;
inline constexpr std::string_view kActivityKey = "lastActivity";
// The cleanup delay of the project's clients, for the alarm (it may run with none connected).
inline constexpr std::string_view kCleanupDelayKey = "cleanupMs";

// A random (version 4) UUID, like crypto.randomUUID() in the seeds' Workers.
using objects::newUuid;

// JSON answers carry a permissive CORS header, so a browser dashboard can read /status.
inline Response jsonResponse(int status, const Json& body, int indent = -1) {
  Response r = Response::json(status, dump(body, indent));
  r.setHeader("access-control-allow-origin", "*");
  return r;
}

inline Json errorBody(std::string_view error) { return Json{{"error", error}}; }

// The `message` of an invalid_json error: the seeds' words for a frame that is not JSON,
// or the limit it passed ("JSON nested deeper than 64 levels").
inline std::string jsonErrorText(const JsonError& error) {
  return error.kind == JsonError::Kind::kSyntax ? "Invalid JSON message format" : error.message;
}

// Who a socket is, as kept in its attachment (so it survives eviction).
struct ClientInfo {
  std::string id;
  std::string type;
  int64_t connectedAt = 0;
  int64_t cleanupMs = kDefaultCleanupMs;
};

inline std::string clientTag(std::string_view id) { return "client:" + std::string(id); }

inline std::optional<ClientInfo> clientInfo(const WebSocket& ws) {
  std::optional<std::string> bytes = ws.deserializeAttachment();
  if (!bytes) return std::nullopt;
  std::optional<Json> parsed = parseJson<Json>(*bytes);
  if (!parsed || !parsed->is_object()) return std::nullopt;
  const Json& j = *parsed;
  ClientInfo info;
  info.id = j.value("id", "");
  info.type = j.value("type", "");
  info.connectedAt = j.value("connectedAt", int64_t{0});
  info.cleanupMs = j.value("cleanupMs", kDefaultCleanupMs);
  if (info.id.empty()) return std::nullopt;
  return info;
}

// The router of both apps. Answers what it can itself (CORS preflight, 426, 400, 401, host
// /health, 404) and hands the rest to the project's object.
class ProjectApp : public App {
 public:
  // `appName` is the app (for the host /health), `clientTypes` the valid `type` values.
  ProjectApp(const AppSettings& settings, std::string appName, std::string className,
             std::vector<std::string> clientTypes)
      : appName_(std::move(appName)),
        className_(std::move(className)),
        clientTypes_(std::move(clientTypes)) {
    if (auto it = settings.find("admin_token"); it != settings.end() && !it->second.empty()) {
      adminToken_ = it->second;
    }
    // At most ten years, so the milliseconds fit comfortably.
    cleanupMs_ = static_cast<int64_t>(
        appSetting(settings, "cleanup_seconds", {0, 315'360'000, false, "seconds"},
                   static_cast<double>(cleanupMs_) / 1000) *
        1000);
  }

  Route route(Request& request) override {
    const std::string& path = request.path();
    if (request.method() == "OPTIONS") {
      Response r(204, "");
      r.setHeader("access-control-allow-origin", "*");
      r.setHeader("access-control-allow-methods", "GET, OPTIONS");
      r.setHeader("access-control-allow-headers", "*");
      return Route::respond(std::move(r));
    }
    if (path == "/websocket") return routeUpgrade(request);
    if (path == "/status" || path == "/health") {
      if (request.method() != "GET" && request.method() != "HEAD") {
        return Route::respond(jsonResponse(405, errorBody("Method not allowed")));
      }
      std::optional<std::string> projectId = request.queryParam("projectId");
      if (!projectId || projectId->empty()) {
        if (path == "/health") {
          return Route::respond(jsonResponse(
              200, Json{{"status", "healthy"}, {"service", appName_}, {"timestamp", nowMillis()}}));
        }
        return Route::respond(jsonResponse(400, missingProjectId()));
      }
      if (auto bad = badProjectId(*projectId)) return Route::respond(std::move(*bad));
      return Route::toName(className_, *projectId);
    }
    return Route::respond(jsonResponse(404, errorBody("Not found")));
  }

  const std::vector<std::string>& clientTypes() const { return clientTypes_; }

 private:
  Route routeUpgrade(Request& request) {
    if (!request.isWebSocketUpgrade()) {
      Response r = jsonResponse(426, errorBody("Expected Upgrade: websocket"));
      r.setHeader("upgrade", "websocket");
      return Route::respond(std::move(r));
    }
    std::optional<std::string> projectId = request.queryParam("projectId");
    if (!projectId || projectId->empty()) {
      return Route::respond(jsonResponse(400, missingProjectId()));
    }
    if (auto bad = badProjectId(*projectId)) return Route::respond(std::move(*bad));
    std::optional<std::string> type = request.queryParam("type");
    if (!type || type->empty()) {
      return Route::respond(jsonResponse(
          400, Json{{"error", "Missing type parameter"}, {"validTypes", clientTypes_}}));
    }
    if (std::find(clientTypes_.begin(), clientTypes_.end(), *type) == clientTypes_.end()) {
      return Route::respond(jsonResponse(400, Json{{"error", "Invalid type parameter"},
                                                   {"type", *type},
                                                   {"validTypes", clientTypes_}}));
    }
    if (*type == "admin" && adminToken_ && !adminTokenMatches(request)) {
      return Route::respond(jsonResponse(401, errorBody("Invalid or missing admin token")));
    }
    request.setHeader(std::string(kCleanupHeader), std::to_string(cleanupMs_));
    return Route::toName(className_, *projectId);
  }

  // `Authorization: Bearer` (what a server can send), or `?token=` (what a browser can).
  bool adminTokenMatches(const Request& request) const {
    std::optional<std::string> token = request.bearerToken();
    return token && constantTimeEquals(*token, *adminToken_);
  }

  static std::optional<Response> badProjectId(const std::string& projectId) {
    if (projectId.size() > kMaxProjectIdBytes) {
      return jsonResponse(400, errorBody("projectId is longer than 1024 bytes"));
    }
    if (!isValidIdText(projectId)) {
      return jsonResponse(400, errorBody("projectId must be UTF-8 text without NUL bytes"));
    }
    return std::nullopt;
  }

  static Json missingProjectId() {
    return Json{{"error", "Missing projectId parameter"},
                {"required", "Please provide ?projectId=your-project-id"}};
  }

  int64_t nowMillis() const { return toUnixMillis(clock().now()); }

  std::string appName_;
  std::string className_;
  std::vector<std::string> clientTypes_;
  std::optional<std::string> adminToken_;
  int64_t cleanupMs_ = kDefaultCleanupMs;
};

// The part of both objects that is about clients coming and going: accepting a client (id,
// tags, attachment, `connected`), last activity, and the cleanup alarm.
//
// Nothing here lives only in members: the client list is the host's socket list (tags and
// attachments), last activity and the alarm are in storage. Members are caches.
//
// The cleanup alarm is always pending while the project has storage: armed by the first
// client, moved to "leave time + delay" whenever the last client leaves, and re-armed by
// itself while clients are connected. So even a host killed with clients connected (no close
// events) leaves an alarm that cleans the project up after the restart. The project is deleted
// only after a whole delay of inactivity: an alarm that finds no client but recent activity
// (it fired right after a restart, before the clients came back) waits for the rest of the
// delay instead.
class ProjectObject : public DurableObject {
 public:
  explicit ProjectObject(ObjectState& state) : state_(state) {}

  void alarm(const AlarmInfo& info) override {
    std::vector<WebSocket> sockets = state_.getWebSockets();
    if (!sockets.empty()) {
      // Active connections prevent cleanup: look again one delay later.
      std::optional<ClientInfo> any = clientInfo(sockets.front());
      int64_t delay = any ? any->cleanupMs : kDefaultCleanupMs;
      state_.storage().setAlarm(state_.now() + Duration(delay));
      return;
    }
    // The delay of the last client, kept with the activity; the last activity it counts from.
    int64_t delay = kDefaultCleanupMs;
    if (std::optional<std::string> v = state_.storage().get(kCleanupDelayKey)) {
      try {
        delay = std::stoll(*v);
      } catch (const std::exception&) {
      }
    }
    Json last = lastActivityJson();
    if (last.is_number_integer() && nowMs() - last.get<int64_t>() < delay) {
      state_.storage().setAlarm(fromUnixMillis(last.get<int64_t>() + delay));
      return;
    }
    // Every key and table goes, with the alarm: the project starts from nothing.
    logLine(LogLevel::kInfo, "no client for the cleanup delay: deleting the project's storage",
            state_.className(), state_.id());
    state_.storage().deleteAll();
    lastActivity_.reset();
    persistedActivity_ = 0;
    storedCleanupMs_.reset();
    afterDeleteAll();
  }

 protected:
  const std::string& projectId() const {
    static const std::string kNone;
    return state_.name() ? *state_.name() : kNone;
  }

  int64_t nowMs() const { return toUnixMillis(state_.now()); }

  // Accepts the upgrade as a client of `type`: tags [type, client:<id>], identity in the
  // attachment, any pending cleanup cancelled.
  std::pair<WebSocket, ClientInfo> acceptClient(Request& request, const std::string& type) {
    ClientInfo info;
    info.id = newUuid();
    info.type = type;
    info.connectedAt = nowMs();
    if (auto h = request.header(kCleanupHeader)) {
      try {
        info.cleanupMs = std::stoll(*h);
      } catch (const std::exception&) {
      }
    }
    rememberCleanupDelay(info.cleanupMs);
    WebSocket ws = state_.acceptWebSocket(request, {type, clientTag(info.id)});
    ws.serializeAttachment(dump(Json{{"id", info.id},
                                     {"type", info.type},
                                     {"connectedAt", info.connectedAt},
                                     {"cleanupMs", info.cleanupMs}}));
    if (!state_.storage().getAlarm()) {
      state_.storage().setAlarm(state_.now() + Duration(info.cleanupMs));
    }
    touchActivity();
    return {ws, info};
  }

  // A client left (close or error). When it was the last, the cleanup alarm is armed.
  void clientGone(const WebSocket& ws) {
    std::optional<ClientInfo> info = clientInfo(ws);
    if (state_.countWebSockets() == 0) {
      touchActivity(true);
      int64_t delay = info ? info->cleanupMs : kDefaultCleanupMs;
      state_.storage().setAlarm(state_.now() + Duration(delay));
    } else {
      touchActivity();
    }
  }

  void touchActivity(bool persist = false) {
    int64_t now = nowMs();
    // After a wake-up the instance is new: learn what storage already holds before deciding
    // to write (a read costs no commit; a write would cost an fsync on the first message).
    if (!lastActivity_) lastActivityJson();
    lastActivity_ = now;
    if (persist || now - persistedActivity_ >= kActivityWriteIntervalMs) {
      state_.storage().put(kActivityKey, std::to_string(now));
      persistedActivity_ = now;
    }
  }

  // Last connect, message or disconnect, in Unix milliseconds; null if none is known.
  Json lastActivityJson() {
    if (!lastActivity_) {
      if (std::optional<std::string> v = state_.storage().get(kActivityKey)) {
        try {
          lastActivity_ = std::stoll(*v);
          persistedActivity_ = *lastActivity_;
        } catch (const std::exception&) {
        }
      }
    }
    return lastActivity_ ? Json(*lastActivity_) : Json(nullptr);
  }

  // Sockets of the project as clients: in accept order, skipping any without an identity.
  std::vector<std::pair<WebSocket, ClientInfo>> clients() {
    std::vector<std::pair<WebSocket, ClientInfo>> out;
    for (WebSocket& ws : state_.getWebSockets()) {
      if (!ws.isOpen()) continue;
      if (std::optional<ClientInfo> info = clientInfo(ws)) out.emplace_back(ws, std::move(*info));
    }
    return out;
  }

  static Json clientJson(const ClientInfo& c, int64_t now) {
    return Json{{"id", c.id},
                {"type", c.type},
                {"connectedAt", c.connectedAt},
                {"connectedFor", now - c.connectedAt}};
  }

  // The cleanup delay in storage, for an alarm that finds no client to read it from; written
  // only when it differs from what is stored (the first client, or a changed setting).
  void rememberCleanupDelay(int64_t ms) {
    if (!storedCleanupMs_) {
      storedCleanupMs_ = -1;
      if (std::optional<std::string> v = state_.storage().get(kCleanupDelayKey)) {
        try {
          storedCleanupMs_ = std::stoll(*v);
        } catch (const std::exception&) {
        }
      }
    }
    if (*storedCleanupMs_ != ms) {
      state_.storage().put(kCleanupDelayKey, std::to_string(ms));
      storedCleanupMs_ = ms;
    }
  }

  // For subclasses that keep more than the activity key (the bridge's table).
  virtual void afterDeleteAll() {}

  ObjectState& state_;

 private:
  // Caches of storage; both are re-read after the instance is rebuilt.
  std::optional<int64_t> lastActivity_;
  int64_t persistedActivity_ = 0;
  std::optional<int64_t> storedCleanupMs_;  // what storage holds; -1: nothing
};

}  // namespace dohost::objects::project
