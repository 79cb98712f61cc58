#include "objects/guide_room.h"

#include <algorithm>
#include <memory>

namespace dohost::objects::guide {
namespace {

constexpr char kBroadcastsKey[] = "guide:broadcasts";
constexpr char kPing[] = R"({"type":"ping"})";

// The seed's own words where it has them.
constexpr char kRateLimited[] = "Rate limit exceeded";
constexpr char kInvalidFormat[] = "Invalid message format";

}  // namespace

// --- SocketGroups -----------------------------------------------------------------------------

void SocketGroups::add(const std::string& group, const WebSocket& ws) {
  std::vector<WebSocket>& list = groups_[group];
  if (std::find(list.begin(), list.end(), ws) == list.end()) list.push_back(ws);
}

void SocketGroups::remove(const std::string& group, const WebSocket& ws) {
  auto it = groups_.find(group);
  if (it == groups_.end()) return;
  std::erase(it->second, ws);
  if (it->second.empty()) groups_.erase(it);
}

const std::vector<WebSocket>& SocketGroups::of(const std::string& group) const {
  static const std::vector<WebSocket> kNobody;
  auto it = groups_.find(group);
  return it == groups_.end() ? kNobody : it->second;
}

// --- GuideRoom --------------------------------------------------------------------------------

GuideRoom::GuideRoom(ObjectState& state, SharedSettings settings)
    : state_(state),
      settings_(std::move(settings)),
      contextId_(state.name().value_or(state.id())),
      random_(std::random_device{}()) {
  // The seed's heartbeat is answered by the host, without waking the room: a pong envelope
  // with its own id and time. The responder outlives instances, so it owns its generator.
  auto random = std::make_shared<std::mt19937_64>(std::random_device{}());
  state_.setWebSocketAutoResponder(kPing, [random](TimePoint now) {
    return envelope("pong", json::object(), newUuid(*random), now);
  });
}

Response GuideRoom::fetch(Request& request) {
  if (request.isWebSocketUpgrade()) return connect(request);
  return this->request(request);
}

Response GuideRoom::connect(Request& request) {
  std::optional<User> user = userFromHeader(request);
  if (!user) return jsonError(401, "no verified user");
  WebSocket ws = state_.acceptWebSocket(request, {userTag(user->userId)});
  Member m;
  m.user = *user;
  if (auto rate = request.header(kRateHeader))
    m.rate = RateWindow::decode(*rate).value_or(RateWindow{});
  m.state = user->toJson();
  m.state["joinedAt"] = nowMs();
  Member& stored = members_[ws.id()] = std::move(m);
  saveState(ws, stored);
  if (request.header(kAuthHeader).value_or("") == "message") {
    send(ws, "auth_success", json{{"userId", stored.user.userId}, {"contextId", contextId_}});
  }
  joined(ws, stored);
  return Response::upgrade(ws);
}

GuideRoom::Member& GuideRoom::member(const WebSocket& ws) {
  auto it = members_.find(ws.id());
  if (it != members_.end()) return it->second;
  Member m;
  if (auto bytes = ws.deserializeAttachment()) {
    if (auto attachment = SocketAttachment::decode(*bytes)) {
      m.rate = attachment->rate;
      if (auto state = parseObject(attachment->state)) {
        m.state = std::move(*state);
        m.stateText = std::move(attachment->state);
      }
    }
  }
  m.user = User{stringField(m.state, "userId"), stringField(m.state, "username")};
  if (m.stateText.empty()) m.stateText = dump(m.state);
  return members_.emplace(ws.id(), std::move(m)).first->second;
}

void GuideRoom::saveState(WebSocket& ws, Member& m) {
  m.stateText = dump(m.state);
  ws.serializeAttachment(SocketAttachment{m.rate, m.stateText}.encode());
}

SocketGroups& GuideRoom::groups() {
  if (!groups_) {
    groups_.emplace();
    for (const WebSocket& ws : state_.getWebSockets()) {
      for (const std::string& group : groupsOf(member(ws))) groups_->add(group, ws);
    }
  }
  return *groups_;
}

// The per-connection limit. The window goes back into the attachment on every message, so a
// room evicted mid-conversation wakes with each connection's count.
bool GuideRoom::admitMessage(WebSocket& ws, Member& m) {
  if (!guide::admitMessage(m.rate, m.stateText, nowMs(), *settings_, m.buffer)) {
    sendError(ws, kRateLimited,
              json{{"limit", "messages_per_minute"},
                   {"retryAfterMs", m.rate.retryAfterMs(nowMs(), settings_->rateWindowMs)}});
    ws.close(1008, kRateLimited);
    return false;
  }
  ws.serializeAttachment(m.buffer);
  return true;
}

bool GuideRoom::admitBroadcast(WebSocket* sender, int64_t* retryAfterMs) {
  if (!broadcasts_) {
    std::optional<std::string> stored = state_.storage().get(kBroadcastsKey);
    broadcasts_ = stored ? RateWindow::decode(*stored).value_or(RateWindow{}) : RateWindow{};
  }
  int64_t now = nowMs();
  if (!broadcasts_->admit(now, settings_->broadcastsPerMinute, settings_->rateWindowMs)) {
    int64_t retry = broadcasts_->retryAfterMs(now, settings_->rateWindowMs);
    if (retryAfterMs) *retryAfterMs = retry;
    if (sender != nullptr) {
      sendError(*sender, kRateLimited,
                json{{"limit", "broadcasts_per_minute"}, {"retryAfterMs", retry}});
    }
    return false;
  }
  state_.storage().put(kBroadcastsKey, broadcasts_->encode());
  return true;
}

void GuideRoom::webSocketMessage(WebSocket ws, const Message& message) {
  if (!ws.isOpen()) return;  // closing (a limit, a bad token): nothing more is taken
  Member& m = member(ws);
  if (!admitMessage(ws, m)) return;
  if (message.binary) {
    sendError(ws, kInvalidFormat);
    return;
  }
  std::optional<json> msg = parseObject(message.text());
  std::string kind = msg ? stringField(*msg, "type") : std::string();
  if (kind.empty()) {
    sendError(ws, kInvalidFormat);
    return;
  }
  if (kind == "ping") {
    send(ws, "pong", json::object());
  } else if (kind == "auth") {
    repeatAuth(ws, m, *msg);
  } else if (!handle(ws, m, kind, *msg)) {
    sendError(ws, "Unknown message type: " + kind.substr(0, 64),
              json{{"type", kind.substr(0, 64)}});
  }
}

// An `auth` on an authenticated socket (a client that sends one on open even with ?token=):
// the same user and context are confirmed again; a bad token ends the connection.
void GuideRoom::repeatAuth(WebSocket& ws, Member& m, const json& message) {
  const json* data =
      message.contains("data") && message["data"].is_object() ? &message["data"] : nullptr;
  std::string token = stringField(message, "token");
  if (token.empty() && data) token = stringField(*data, "token");
  std::string error = "missing token";
  std::optional<User> user;
  if (!token.empty()) user = verifyToken(token, *settings_, state_.now(), &error);
  if (!user) {
    sendError(ws, "Invalid token: " + error, json{{"type", "auth"}});
    ws.close(1008, "Invalid token");
    return;
  }
  std::string context = stringField(message, "contextId");
  if (context.empty() && data) context = stringField(*data, "contextId");
  if (user->userId != m.user.userId || (!context.empty() && context != contextId_)) {
    sendError(ws, "This connection is already authenticated for another user or context",
              json{{"type", "auth"}});
    return;
  }
  send(ws, "auth_success", json{{"userId", m.user.userId}, {"contextId", contextId_}});
}

void GuideRoom::webSocketClose(WebSocket ws, const CloseInfo& info) { gone(ws); }

void GuideRoom::webSocketError(WebSocket ws, std::string_view reason) { gone(ws); }

void GuideRoom::gone(const WebSocket& ws) {
  Member m = member(ws);
  members_.erase(ws.id());
  if (groups_) {
    for (const std::string& group : groupsOf(m)) groups_->remove(group, ws);
  }
  left(ws, m);
}

}  // namespace dohost::objects::guide
