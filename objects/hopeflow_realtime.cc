#include "objects/hopeflow_realtime.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <memory>
#include <utility>

#include "dohost/json.h"
#include "objects/app_util.h"
#include "objects/register_all.h"

namespace dohost::objects {
namespace {

using nlohmann::json;

// Every JSON answer of the app carries a permissive CORS origin, as the seed's worker does.
Response jsonAnswer(int status, const json& body) {
  return withCors(Response::json(status, dump(body)));
}

Response corsError(int status, std::string_view message) {
  return withCors(jsonError(status, message));
}

Response corsUnauthorized(std::string_view reason) { return withCors(unauthorized(reason)); }

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::optional<int64_t> parsePositive(std::string_view text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value <= 0) return std::nullopt;
  return value;
}

// `application/json`, with or without parameters (`; charset=utf-8`), in any case.
bool isJsonContentType(const std::optional<std::string>& header) {
  if (!header) return false;
  std::string_view v = *header;
  v = trim(v.substr(0, v.find(';')));
  return lowercase(v) == "application/json";
}

// The /publish answer: how many sockets matched, and the ack results in arrival order.
Response publishAnswer(size_t clientCount, json results) {
  return jsonAnswer(200, json{{"clientCount", clientCount}, {"results", std::move(results)}});
}

void replyJson(WebSocket& ws, const json& message) { ws.send(dump(message)); }

// The app's error envelope, {"type":"error","error":...}.
void replyError(WebSocket& ws, std::string_view message) {
  replyJson(ws, json{{"type", "error"}, {"error", message}});
}

// Checks one filter: an object whose values are all strings. Returns the reason if not.
std::optional<std::string> invalidFilter(const json& filter) {
  if (!filter.is_object()) return "a filter must be an object";
  for (const auto& [key, value] : filter.items()) {
    if (!value.is_string()) return "the value of \"" + key + "\" must be a string";
  }
  return std::nullopt;
}

}  // namespace

bool hopeFlowFilterMatches(const json& filter, const std::string& type, const json* payload) {
  for (const auto& [key, value] : filter.items()) {
    if (!value.is_string()) return false;
    if (key == "type") {
      if (value.get_ref<const std::string&>() != type) return false;
      continue;
    }
    if (payload == nullptr || !payload->is_object()) return false;
    auto it = payload->find(key);
    if (it == payload->end() || !it->is_string() ||
        it->get_ref<const std::string&>() != value.get_ref<const std::string&>()) {
      return false;
    }
  }
  return true;
}

// --- the object -----------------------------------------------------------------------------

HopeFlowRealtime::HopeFlowRealtime(ObjectState& state)
    : state_(state), random_(std::random_device{}()) {
  // The common spelling is answered by the host without waking the object; other
  // spellings ("PING", "Ping") reach webSocketMessage.
  state_.setWebSocketAutoResponse("ping", "pong");
}

HopeFlowRealtime::~HopeFlowRealtime() {
  for (auto& [envelopeId, publish] : pending_) {
    publish.response.send(publishAnswer(publish.clientCount, std::move(publish.results)));
  }
}

Response HopeFlowRealtime::fetch(Request& request) {
  if (request.isWebSocketUpgrade()) return connect(request);
  if (request.method() == "POST" && (request.path() == "/publish" || request.path() == "/deliver")) {
    return publish(request);
  }
  return corsError(404, "not found");
}

Response HopeFlowRealtime::connect(Request& request) {
  std::optional<std::string> user = request.header(kHopeFlowUserHeader);
  if (!user || user->empty()) return corsUnauthorized("no verified user");
  if (state_.name() && *state_.name() != *user) {
    return corsError(400, "the verified user does not own this object");
  }
  WebSocket ws = state_.acceptWebSocket(request);
  ws.serializeAttachment(dump(json{{"userId", *user}, {"filters", json::array()}}));
  filterCache_[ws.id()] = {};
  return Response::upgrade(ws);
}

Response HopeFlowRealtime::publish(Request& request) {
  // The router validated the body already; this is the object's own guard.
  std::optional<json> parsed = parseJson(request.body());
  if (!parsed || !parsed->is_object()) return corsError(400, "body must be a JSON object");
  const json& body = *parsed;
  auto userIt = body.find("userId");
  if (userIt == body.end() || !userIt->is_string() || userIt->get<std::string>().empty()) {
    return corsError(400, "userId must be a non-empty string");
  }
  if (state_.name() && *state_.name() != userIt->get<std::string>()) {
    return corsError(400, "this object is not the userId's");
  }
  std::string type = "message";
  if (auto it = body.find("type"); it != body.end() && !it->is_null()) {
    if (!it->is_string() || it->get<std::string>().empty()) {
      return corsError(400, "type must be a non-empty string");
    }
    type = it->get<std::string>();
  }
  int64_t timeoutMs = kDefaultAckTimeoutMs;
  if (auto header = request.header(kHopeFlowAckTimeoutHeader)) {
    timeoutMs = parsePositive(*header).value_or(kDefaultAckTimeoutMs);
  }

  std::string envelopeId = newEnvelopeId();
  json envelope = {{"envelopeId", envelopeId},
                   {"type", type},
                   {"userId", *userIt},
                   {"timestamp", toUnixMillis(state_.now())}};
  const json* payload = nullptr;
  if (auto it = body.find("payload"); it != body.end()) {
    envelope["payload"] = *it;
    payload = &*it;
  }
  std::string text = dump(envelope);

  PendingPublish publish;
  for (WebSocket& ws : state_.getWebSockets()) {
    const std::vector<json>& filters = filtersOf(ws);
    bool matched = std::any_of(filters.begin(), filters.end(), [&](const json& f) {
      return hopeFlowFilterMatches(f, type, payload);
    });
    if (!matched) continue;
    if (ws.send(text) == SendResult::kQueued) {
      ++publish.clientCount;
      publish.awaiting.insert(ws.id());
    }
  }
  if (publish.awaiting.empty()) {
    return publishAnswer(publish.clientCount, json::array());
  }
  publish.response = request.defer();
  publish.deadline =
      state_.setTimeout(Duration(timeoutMs), [this, envelopeId] { finish(envelopeId); });
  pending_.emplace(envelopeId, std::move(publish));
  return Response::deferred();
}

void HopeFlowRealtime::webSocketMessage(WebSocket ws, const Message& message) {
  if (message.binary) {
    replyError(ws, "binary messages are not supported");
    return;
  }
  if (lowercase(trim(message.text())) == "ping") {
    ws.send("pong");
    return;
  }
  JsonError error;
  std::optional<json> parsed = parseJson(message.text(), jsonLimits(), &error);
  if (!parsed || !parsed->is_object()) {
    bool limit = !parsed && error.kind != JsonError::Kind::kSyntax;
    replyError(ws, limit ? error.message : "messages must be JSON objects");
    return;
  }
  const json& msg = *parsed;
  auto typeIt = msg.find("type");
  if (typeIt == msg.end() || !typeIt->is_string()) {
    replyError(ws, "a message needs a string \"type\"");
    return;
  }
  const std::string& type = typeIt->get_ref<const std::string&>();
  if (type == "subscribe" || type == "unsubscribe") {
    changeFilters(ws, msg, type == "subscribe");
  } else if (type == "ack") {
    acknowledge(ws, msg);
  } else if (lowercase(type) == "ping") {
    ws.send("pong");
  } else {
    replyError(ws, "unknown message type: " + type);
  }
}

void HopeFlowRealtime::changeFilters(WebSocket& ws, const json& message, bool subscribe) {
  const char* verb = subscribe ? "subscribe" : "unsubscribe";
  auto listIt = message.find("filters");
  if (listIt == message.end() || !listIt->is_array()) {
    replyError(ws, std::string(verb) + ": \"filters\" must be an array");
    return;
  }
  const json& list = *listIt;
  size_t handled = std::min(list.size(), kMaxFiltersPerMessage);
  // All or nothing: a message with an invalid filter changes nothing.
  for (size_t i = 0; i < handled; ++i) {
    if (auto why = invalidFilter(list[i])) {
      replyError(ws, std::string(verb) + ": filter " + std::to_string(i) + " is invalid: " + *why);
      return;
    }
  }
  std::vector<json> filters = filtersOf(ws);
  for (size_t i = 0; i < handled; ++i) {
    auto it = std::find(filters.begin(), filters.end(), list[i]);
    if (subscribe && it == filters.end()) filters.push_back(list[i]);
    if (!subscribe && it != filters.end()) filters.erase(it);
  }
  std::string userId = state_.name().value_or("");
  if (auto attachment = ws.deserializeAttachment()) {
    std::optional<json> previous = parseJson(*attachment);
    if (previous && previous->is_object() && previous->contains("userId") &&
        (*previous)["userId"].is_string()) {
      userId = (*previous)["userId"].get<std::string>();
    }
  }
  try {
    ws.serializeAttachment(dump(json{{"userId", userId}, {"filters", filters}}));
  } catch (const UsageError&) {
    replyError(ws, std::string(verb) + ": too many filters on this socket");
    return;
  }
  filterCache_[ws.id()] = filters;
  json reply = {{"type", subscribe ? "subscribed" : "unsubscribed"}, {"filters", filters}};
  if (list.size() > handled) reply["ignored"] = list.size() - handled;
  replyJson(ws, reply);
}

void HopeFlowRealtime::acknowledge(WebSocket& ws, const json& message) {
  auto idIt = message.find("envelopeId");
  if (idIt == message.end() || !idIt->is_string()) {
    replyError(ws, "ack: \"envelopeId\" must be a string");
    return;
  }
  auto it = pending_.find(idIt->get<std::string>());
  // A late ack (after the deadline), a second ack, or an ack for an envelope this socket
  // never got: nothing waits for it.
  if (it == pending_.end() || it->second.awaiting.erase(ws.id()) == 0) return;
  auto result = message.find("result");
  it->second.results.push_back(result == message.end() ? json(nullptr) : *result);
  if (it->second.awaiting.empty()) finish(it->first);
}

void HopeFlowRealtime::finish(const std::string& envelopeId) {
  auto it = pending_.find(envelopeId);
  if (it == pending_.end()) return;
  PendingPublish& publish = it->second;
  state_.clearTimeout(publish.deadline);  // a no-op when the deadline itself is running
  publish.response.send(publishAnswer(publish.clientCount, std::move(publish.results)));
  pending_.erase(it);
}

void HopeFlowRealtime::forgetSocket(const WebSocket& ws) {
  filterCache_.erase(ws.id());
  std::vector<std::string> done;
  for (auto& [envelopeId, publish] : pending_) {
    if (publish.awaiting.erase(ws.id()) > 0 && publish.awaiting.empty()) done.push_back(envelopeId);
  }
  for (const std::string& envelopeId : done) finish(envelopeId);
}

void HopeFlowRealtime::webSocketClose(WebSocket ws, const CloseInfo& info) { forgetSocket(ws); }

void HopeFlowRealtime::webSocketError(WebSocket ws, std::string_view reason) { forgetSocket(ws); }

const std::vector<json>& HopeFlowRealtime::filtersOf(const WebSocket& ws) {
  auto it = filterCache_.find(ws.id());
  if (it != filterCache_.end()) return it->second;
  std::vector<json> filters;
  if (auto attachment = ws.deserializeAttachment()) {
    std::optional<json> stored = parseJson(*attachment);
    if (stored && stored->is_object() && stored->contains("filters") &&
        (*stored)["filters"].is_array()) {
      for (const json& f : (*stored)["filters"]) {
        if (!invalidFilter(f)) filters.push_back(f);
      }
    }
  }
  return filterCache_.emplace(ws.id(), std::move(filters)).first->second;
}

// A random (version 4) UUID, like crypto.randomUUID() in the seed's worker.
std::string HopeFlowRealtime::newEnvelopeId() {
  uint64_t hi = random_();
  uint64_t lo = random_();
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
  char out[37];
  std::snprintf(out, sizeof(out), "%08x-%04x-%04x-%04x-%012llx",
                static_cast<unsigned>(hi >> 32), static_cast<unsigned>((hi >> 16) & 0xffff),
                static_cast<unsigned>(hi & 0xffff), static_cast<unsigned>(lo >> 48),
                static_cast<unsigned long long>(lo & 0xffffffffffffULL));
  return out;
}

// --- the app --------------------------------------------------------------------------------

HopeFlowApp::HopeFlowApp(const AppSettings& settings) {
  if (auto it = settings.find("jwt_secret"); it != settings.end()) jwtSecret_ = it->second;
  if (jwtSecret_.empty()) {
    logLine(LogLevel::kWarn, "hopeflow: no jwt_secret (JWT_SECRET) set; every request is refused");
  }
  ackTimeoutMs_ = static_cast<int64_t>(appSetting(settings, "ack_timeout_ms",
                                                  {1, kMaxAckTimeoutMs, true, "milliseconds"},
                                                  static_cast<double>(ackTimeoutMs_)));
}

std::optional<std::string> HopeFlowApp::authenticate(const Request& request,
                                                     std::string* error) const {
  std::optional<std::string> payload = verifyRequestJwtHs256(request, jwtSecret_, clock().now(), error);
  if (!payload) return std::nullopt;
  json claims = parseJson(*payload).value_or(json());
  auto it = claims.is_object() ? claims.find("userId") : claims.end();
  if (!claims.is_object() || it == claims.end() || !it->is_string() ||
      it->get<std::string>().empty()) {
    *error = "the token payload must include a non-empty userId string";
    return std::nullopt;
  }
  if (!isValidIdText(it->get_ref<const std::string&>())) {
    *error = "the token's userId must not contain NUL bytes";
    return std::nullopt;
  }
  return it->get<std::string>();
}

Route HopeFlowApp::route(Request& request) {
  // Only the router may say who the user is or how long to wait.
  request.removeHeader(kHopeFlowUserHeader);
  request.removeHeader(kHopeFlowAckTimeoutHeader);

  if (request.path() == "/publish" && !request.isWebSocketUpgrade()) return publish(request);
  if (request.isWebSocketUpgrade()) {
    if (jwtSecret_.empty()) return Route::respond(corsError(503, "JWT_SECRET is not configured"));
    std::string error;
    std::optional<std::string> user = authenticate(request, &error);
    if (!user) return Route::respond(corsUnauthorized(error));
    request.setHeader(kHopeFlowUserHeader, *user);
    return Route::toName(kHopeFlowClass, *user);
  }
  if (request.path() == "/") {
    Response r = corsError(426, "expected a WebSocket upgrade");
    r.setHeader("upgrade", "websocket");
    return Route::respond(std::move(r));
  }
  return Route::respond(corsError(404, "not found"));
}

Route HopeFlowApp::publish(Request& request) const {
  if (request.method() == "OPTIONS") {
    Response r(204, "");
    r.setHeader("access-control-allow-origin", "*");
    r.setHeader("access-control-allow-methods", "POST, OPTIONS");
    r.setHeader("access-control-allow-headers", "Authorization, Content-Type");
    r.setHeader("access-control-max-age", "86400");
    return Route::respond(std::move(r));
  }
  if (request.method() != "POST") {
    Response r = corsError(405, "method not allowed");
    r.setHeader("allow", "POST, OPTIONS");
    return Route::respond(std::move(r));
  }
  if (jwtSecret_.empty()) return Route::respond(corsError(503, "JWT_SECRET is not configured"));
  std::string error;
  if (!authenticate(request, &error)) return Route::respond(corsUnauthorized(error));
  if (!isJsonContentType(request.header("content-type"))) {
    return Route::respond(corsError(415, "Content-Type must be application/json"));
  }
  JsonError invalid;
  std::optional<json> parsed = parseJson(request.body(), jsonLimits(), &invalid);
  if (!parsed) {
    bool limit = invalid.kind != JsonError::Kind::kSyntax;
    return Route::respond(corsError(400, limit ? "invalid JSON body: " + invalid.message
                                               : std::string("invalid JSON body")));
  }
  const json& body = *parsed;
  if (!body.is_object()) return Route::respond(corsError(400, "body must be a JSON object"));
  auto userIt = body.find("userId");
  if (userIt == body.end() || !userIt->is_string() || userIt->get<std::string>().empty()) {
    return Route::respond(corsError(400, "userId must be a non-empty string"));
  }
  if (!isValidIdText(userIt->get_ref<const std::string&>())) {
    return Route::respond(corsError(400, "userId must not contain NUL bytes"));
  }
  if (auto it = body.find("type");
      it != body.end() && !it->is_null() && (!it->is_string() || it->get<std::string>().empty())) {
    return Route::respond(corsError(400, "type must be a non-empty string"));
  }
  request.setHeader(kHopeFlowAckTimeoutHeader, std::to_string(ackTimeoutMs_));
  return Route::toName(kHopeFlowClass, userIt->get<std::string>());
}

void registerHopeFlow(Registry& registry) {
  registry.addClass<HopeFlowRealtime>(kHopeFlowClass);
  registry.addApp({"hopeflow", "127.0.0.1:8788", [](const AppSettings& settings) {
                     return std::make_unique<HopeFlowApp>(settings);
                   }});
}

}  // namespace dohost::objects
