// ChatRoom: the chat of one context (see guide.h).
#include <algorithm>

#include "objects/guide.h"

namespace dohost::objects::guide {
namespace {

constexpr char kChatSchema[] = R"(
CREATE TABLE IF NOT EXISTS chat_messages (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  user_id TEXT NOT NULL,
  username TEXT NOT NULL,
  content TEXT NOT NULL,
  message_type TEXT NOT NULL,
  timestamp INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_messages_by_time ON chat_messages (timestamp))";

constexpr size_t kMaxMessageTypeBytes = 32;

json messageData(const std::string& id, const std::string& content, const std::string& type,
                 const json& author, int64_t timestamp) {
  return json{{"id", id},
              {"content", content},
              {"messageType", type},
              {"author", author},
              {"timestamp", isoTime(fromUnixMillis(timestamp))}};
}

const json* dataOf(const json& message) {
  auto it = message.find("data");
  return it != message.end() && it->is_object() ? &*it : nullptr;
}

void ignoreReply(Response) {}

}  // namespace

ChatRoom::ChatRoom(ObjectState& state, SharedSettings settings)
    : GuideRoom(state, std::move(settings)) {}

void ChatRoom::ensureSchema() {
  if (schemaReady_) return;
  state_.storage().sql().exec(kChatSchema);
  lastTimestamp_ = state_.storage()
                       .sql()
                       .exec("SELECT coalesce(max(timestamp), 0) FROM chat_messages")
                       .one()
                       .integer(0);
  schemaReady_ = true;
}

void ChatRoom::joined(WebSocket& ws, Member& member) {
  // Others hear of a user once: when the first of its sockets joins.
  if (state_.countWebSockets(userTag(member.user.userId)) == 1) {
    BroadcastOptions others;
    others.except.push_back(ws);
    state_.broadcast(frame("user_joined", member.user.toJson()), others);
  }
  metricsChanged();
}

void ChatRoom::left(const WebSocket& ws, const Member& member) {
  if (!member.user.userId.empty() && state_.countWebSockets(userTag(member.user.userId)) == 0) {
    state_.broadcast(frame("user_left", member.user.toJson()));
  }
  metricsChanged();
}

bool ChatRoom::handle(WebSocket& ws, Member& member, const std::string& type, const json& message) {
  static const json kEmpty = json::object();
  const json* data = dataOf(message);
  if (type == "message" || type == "typing") {
    if (data == nullptr) {
      sendError(ws, "Invalid message format: data must be an object", json{{"type", type}});
    } else if (type == "message") {
      post(ws, member, *data);
    } else {
      typing(ws, member, *data);
    }
    return true;
  }
  if (type == "history") {
    if (message.contains("data") && !message["data"].is_null() && data == nullptr) {
      sendError(ws, "Invalid message format: data must be an object", json{{"type", type}});
    } else {
      history(ws, data ? *data : kEmpty);
    }
    return true;
  }
  return false;
}

void ChatRoom::post(WebSocket& ws, Member& member, const json& data) {
  auto content = data.find("content");
  if (content == data.end() || !content->is_string() ||
      content->get_ref<const std::string&>().find_first_not_of(" \t\r\n") == std::string::npos) {
    sendError(ws, "Invalid message: content must be a non-empty string", json{{"type", "message"}});
    return;
  }
  if (static_cast<int64_t>(content->get_ref<const std::string&>().size()) >
      settings_->maxContentBytes) {
    sendError(ws,
              "Message too long: at most " + std::to_string(settings_->maxContentBytes) + " bytes",
              json{{"type", "message"}});
    return;
  }
  std::optional<std::string> messageType =
      optionalString(data, "messageType", kMaxMessageTypeBytes, "text");
  if (!messageType) {
    sendError(ws, "Invalid message: messageType must be a string of 1 to 32 characters",
              json{{"type", "message"}});
    return;
  }
  if (!admitBroadcast(&ws)) return;
  ensureSchema();
  // Strictly increasing per room: `before` the oldest timestamp a client has is exact.
  int64_t timestamp = std::max(nowMs(), lastTimestamp_ + 1);
  std::string id = newId();
  const std::string& text = content->get_ref<const std::string&>();
  state_.storage().sql().exec(
      "INSERT INTO chat_messages (id, user_id, username, content, message_type, timestamp) "
      "VALUES (?, ?, ?, ?, ?, ?)",
      id, member.user.userId, member.user.username, text, *messageType, timestamp);
  lastTimestamp_ = timestamp;
  // Stored first; the host sends the broadcast only after this event's commit.
  state_.broadcast(envelope("message",
                            messageData(id, text, *messageType, member.user.toJson(), timestamp),
                            id, fromUnixMillis(timestamp)));
  metricsChanged();
}

void ChatRoom::typing(WebSocket& ws, Member& member, const json& data) {
  bool isTyping = true;
  if (auto it = data.find("isTyping"); it != data.end() && !it->is_null()) {
    if (!it->is_boolean()) {
      sendError(ws, "Invalid typing: isTyping must be a boolean", json{{"type", "typing"}});
      return;
    }
    isTyping = it->get<bool>();
  }
  if (!admitBroadcast(&ws)) return;
  BroadcastOptions others;
  others.except.push_back(ws);
  state_.broadcast(frame("typing", json{{"userId", member.user.userId},
                                        {"username", member.user.username},
                                        {"isTyping", isTyping}}),
                   others);
}

void ChatRoom::history(WebSocket& ws, const json& data) {
  int64_t limit = kHistoryDefaultLimit;
  if (auto it = data.find("limit"); it != data.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 1) {
      sendError(ws, "Invalid history: limit must be a positive integer", json{{"type", "history"}});
      return;
    }
    limit = std::min<int64_t>(it->get<int64_t>(), kHistoryMaxLimit);
  }
  int64_t before = INT64_MAX;  // absent: now, and anything stored
  if (auto it = data.find("before"); it != data.end() && !it->is_null()) {
    std::optional<TimePoint> t =
        it->is_string() ? parseIsoTime(it->get_ref<const std::string&>()) : std::nullopt;
    if (!t) {
      sendError(ws, "Invalid history: before must be an ISO 8601 time", json{{"type", "history"}});
      return;
    }
    before = toUnixMillis(*t);
  }
  ensureSchema();
  SqlCursor rows = state_.storage().sql().exec(
      "SELECT id, user_id, username, content, message_type, timestamp FROM chat_messages "
      "WHERE timestamp < ? ORDER BY timestamp DESC LIMIT ?",
      before, limit + 1);
  bool hasMore = static_cast<int64_t>(rows.size()) > limit;
  size_t count = std::min<size_t>(rows.size(), static_cast<size_t>(limit));
  json messages = json::array();
  for (size_t i = count; i-- > 0;) {  // oldest first
    const SqlRow& row = rows.row(i);
    messages.push_back(messageData(row.text(0), row.text(3), row.text(4),
                                   json{{"userId", row.text(1)}, {"username", row.text(2)}},
                                   row.integer(5)));
  }
  send(ws, "history", json{{"messages", std::move(messages)}, {"hasMore", hasMore}});
}

// --- built-in metrics -------------------------------------------------------------------------

void ChatRoom::metricsChanged() {
  if (pushScheduled_) return;
  pushScheduled_ = true;
  state_.setTimeout(Duration(0), [this] {
    pushScheduled_ = false;
    pushMetrics();
  });
}

void ChatRoom::pushMetrics() {
  ensureSchema();
  int64_t activity = static_cast<int64_t>(state_.countWebSockets());
  int64_t since = nowMs() - settings_->engagementWindowMs;
  SqlCursor window = state_.storage().sql().exec(
      "SELECT count(*), min(timestamp) FROM chat_messages WHERE timestamp > ?", since);
  const SqlRow& row = window.one();
  int64_t engagement = row.integer(0);
  if (!pushed_ || pushed_->first != activity || pushed_->second != engagement) {
    pushed_ = std::make_pair(activity, engagement);
    Request request("POST", "/internal/builtin", "", {{kInternalHeader, "1"}},
                    dump(json{{"activity", activity}, {"engagement", engagement}}));
    state_.stubByName(kAnalyticsRoomClass, contextId())->fetch(std::move(request), ignoreReply);
  }
  // Wake when the oldest message in the window leaves it, to push the lower count.
  std::optional<TimePoint> armed = state_.storage().getAlarm();
  if (engagement > 0) {
    TimePoint due = fromUnixMillis(row.integer(1) + settings_->engagementWindowMs);
    if (armed != due) state_.storage().setAlarm(due);
  } else if (armed) {
    state_.storage().deleteAlarm();
  }
}

void ChatRoom::alarm(const AlarmInfo& info) { pushMetrics(); }

}  // namespace dohost::objects::guide
