// GuideLobby: sockets that authenticate with a first `auth` message wait here (one lobby
// object per service) until they send it; then the lobby hands each to its context's room
// (ObjectState::transferWebSocket). A socket that sends anything else, a bad token or a bad
// contextId gets an error and close 1008; one that sends nothing within auth_timeout_ms is
// closed by the lobby's alarm (the deadline is in the socket's attachment, so an evicted
// lobby forgets nothing).
#include <algorithm>

#include "objects/guide.h"

namespace dohost::objects::guide {
namespace {

constexpr char kAuthRequired[] = "Authentication required";

}  // namespace

const char* roomClassOf(std::string_view service) {
  if (service == "chat") return kChatRoomClass;
  if (service == "analytics") return kAnalyticsRoomClass;
  if (service == "collaboration") return kCollaborationRoomClass;
  return nullptr;
}

GuideLobby::GuideLobby(ObjectState& state, SharedSettings settings)
    : state_(state), settings_(std::move(settings)), random_(std::random_device{}()) {}

Response GuideLobby::fetch(Request& request) {
  if (!request.isWebSocketUpgrade() || roomClassOf(state_.name().value_or("")) == nullptr) {
    return jsonError(404, "not found");
  }
  WebSocket ws = state_.acceptWebSocket(request, {"pending"});
  int64_t deadline = toUnixMillis(state_.now()) + settings_->authTimeoutMs;
  json pending = {{"deadline", deadline}};
  if (auto context = request.header(kContextHeader)) pending["contextId"] = *context;
  ws.serializeAttachment(SocketAttachment{RateWindow{}, dump(pending)}.encode());
  armFor(deadline);
  return Response::upgrade(ws);
}

void GuideLobby::armFor(int64_t deadlineMs) {
  std::optional<TimePoint> armed = state_.storage().getAlarm();
  if (!armed || toUnixMillis(*armed) > deadlineMs)
    state_.storage().setAlarm(fromUnixMillis(deadlineMs));
}

void GuideLobby::refuse(WebSocket& ws, std::string_view reason, std::string_view closeReason) {
  ws.send(errorEnvelope(reason, json{{"type", "auth"}}, newUuid(random_), state_.now()));
  ws.close(1008, closeReason);
}

void GuideLobby::webSocketMessage(WebSocket ws, const Message& message) {
  if (!ws.isOpen()) return;
  std::optional<SocketAttachment> attachment =
      SocketAttachment::decode(ws.deserializeAttachment().value_or(""));
  if (!attachment) {
    refuse(ws, "Internal error", "Internal error");
    return;
  }
  // The auth message is the connection's first message: it counts toward its limit.
  attachment->rate.admit(toUnixMillis(state_.now()), settings_->messagesPerMinute,
                         settings_->rateWindowMs);
  std::optional<json> msg = message.binary ? std::nullopt : parseObject(message.text());
  if (!msg || stringField(*msg, "type") != "auth") {
    refuse(ws,
           "Authentication required: the first message must be {\"type\":\"auth\", \"token\", "
           "\"contextId\"}",
           kAuthRequired);
    return;
  }
  const json* data =
      msg->contains("data") && (*msg)["data"].is_object() ? &(*msg)["data"] : nullptr;
  auto field = [&](const char* key) {
    std::string v = stringField(*msg, key);
    return v.empty() && data ? stringField(*data, key) : v;
  };
  std::string error = "missing token";
  std::string token = field("token");
  std::optional<User> user;
  if (!token.empty()) user = verifyToken(token, *settings_, state_.now(), &error);
  if (!user) {
    refuse(ws, "Invalid token: " + error, "Invalid token");
    return;
  }
  std::string contextId = field("contextId");
  if (contextId.empty()) {
    if (auto pending = parseObject(attachment->state))
      contextId = stringField(*pending, "contextId");
  }
  if (contextId.empty()) contextId = settings_->defaultContextId;
  if (!validId(contextId)) {
    refuse(ws,
           contextId.empty() ? "Invalid contextId: none given"
                             : "Invalid contextId: 1-128 characters of A-Z a-z 0-9 . _ : @ ~ -",
           "Invalid contextId");
    return;
  }
  Request handOver("GET", "/", "",
                   {{kUserHeader, dump(user->toJson())},
                    {kAuthHeader, "message"},
                    {kRateHeader, attachment->rate.encode()}});
  state_.transferWebSocket(ws, roomClassOf(*state_.name()), contextId, std::move(handOver));
}

void GuideLobby::alarm(const AlarmInfo& info) {
  int64_t now = toUnixMillis(state_.now());
  int64_t next = INT64_MAX;
  for (WebSocket ws : state_.getWebSockets()) {
    if (!ws.isOpen()) continue;
    std::optional<SocketAttachment> attachment =
        SocketAttachment::decode(ws.deserializeAttachment().value_or(""));
    std::optional<json> pending = attachment ? parseObject(attachment->state) : std::nullopt;
    int64_t deadline = pending ? pending->value("deadline", int64_t{0}) : 0;
    if (deadline <= now) {
      refuse(ws,
             "Authentication timeout: no auth message within " +
                 std::to_string(settings_->authTimeoutMs) + " ms",
             "Authentication timeout");
    } else {
      next = std::min(next, deadline);
    }
  }
  if (next != INT64_MAX) state_.storage().setAlarm(fromUnixMillis(next));
}

}  // namespace dohost::objects::guide
