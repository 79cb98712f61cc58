#include "objects/channel_websocket.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <memory>
#include <random>
#include <set>
#include <utility>

#include "dohost/json.h"
#include "objects/channel_common.h"
#include "objects/register_all.h"

namespace dohost::objects {
namespace {

using nlohmann::json;
using channel::After;

void sendJson(WebSocket& ws, const json& message) { ws.send(dump(message)); }

// The seed's error messages, word for word.
constexpr char kInvalidFormat[] = "Invalid message format";
constexpr char kUnknownType[] = "Unknown message type";
constexpr char kNoWrite[] = "No write permission";
// dohost's: a sync from an id this channel never stored.
constexpr char kUnknownId[] = "Unknown message id";

void sendError(WebSocket& ws, std::string_view message) {
  sendJson(ws, json{{"type", "error"}, {"message", message}});
}

// The id is echoed so that a client can tell which request failed (and fall back to a seq).
void sendUnknownId(WebSocket& ws, const std::string& id) {
  sendJson(ws, json{{"type", "error"}, {"message", kUnknownId}, {"afterMessageId", id}});
}

// Identifies the current host process. Member rows of sharded channels carry it, so rows
// written by an earlier process (whose sockets all died with it) are recognised and dropped.
int64_t processEpoch() {
  static const int64_t epoch = [] {
    std::random_device rd;
    uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
    return static_cast<int64_t>(v >> 1);
  }();
  return epoch;
}

bool hasPermission(const json& attachment, std::string_view permission) {
  auto it = attachment.find("permissions");
  if (it == attachment.end() || !it->is_array()) return false;
  return std::any_of(it->begin(), it->end(), [&](const json& p) {
    return p.is_string() && p.get_ref<const std::string&>() == permission;
  });
}

// A member's value, or null when it is missing.
json field(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() ? *it : json();
}

std::string str(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

json attachmentOf(const WebSocket& ws) {
  if (auto bytes = ws.deserializeAttachment()) {
    std::optional<json> a = parseJson(*bytes);
    if (a && a->is_object()) return std::move(*a);
  }
  return json::object();
}

std::string userTag(const std::string& userId) { return "user:" + userId; }

json userConnected(const json& attachment) {
  return json{{"type", "user_connected"},
              {"userId", str(attachment, "userId")},
              {"username", str(attachment, "username")},
              {"joinedAt", attachment.value("joinedAt", int64_t{0})}};
}

json userDisconnected(const json& attachment) {
  return json{{"type", "user_disconnected"},
              {"userId", str(attachment, "userId")},
              {"username", str(attachment, "username")}};
}

json onlineUserFrom(const json& attachment) {
  json u = {{"userId", str(attachment, "userId")},
            {"username", str(attachment, "username")},
            {"joinedAt", attachment.value("joinedAt", int64_t{0})}};
  if (auto it = attachment.find("status"); it != attachment.end() && it->is_string()) {
    u["status"] = *it;
  }
  return u;
}

// Sends `messages` (ascending seqs after `afterSeq`, the message `afterId` or null) as sync
// pages; `hasMore` says whether the history holds more after the last one (the client then
// asks again from there).
void sendSyncPages(WebSocket& ws, const json& afterId, int64_t afterSeq, const json& messages,
                   bool hasMore) {
  size_t total = messages.size();
  size_t pages = std::max<size_t>(1, (total + kChannelSyncPageSize - 1) / kChannelSyncPageSize);
  for (size_t page = 0; page < pages; ++page) {
    size_t begin = page * kChannelSyncPageSize;
    size_t end = std::min(total, begin + kChannelSyncPageSize);
    json slice = json::array();
    for (size_t i = begin; i < end; ++i) slice.push_back(messages[i]);
    bool last = page + 1 == pages;
    sendJson(ws, json{{"type", "sync"},
                      {"afterMessageId", afterId},
                      {"afterSeq", afterSeq},
                      {"page", page},
                      {"messages", std::move(slice)},
                      {"done", last},
                      {"hasMore", last ? hasMore : true}});
  }
}

// `seq` is the channel's order (the rowid, so a replay reads a range of the primary key);
// `id` is the UUID clients see. The previous version had `id INTEGER PRIMARY KEY` (what is
// now `seq`) and no UUID; ensureSchema() migrates such a table.
const char kMessagesSchema[] = R"(
CREATE TABLE IF NOT EXISTS channel_messages (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  channel TEXT NOT NULL,
  user_id TEXT NOT NULL,
  username TEXT NOT NULL,
  content TEXT NOT NULL,
  timestamp INTEGER NOT NULL,
  thread_id
))";

const char kMembersSchema[] = R"(
CREATE TABLE IF NOT EXISTS channel_members (
  epoch INTEGER NOT NULL,
  shard INTEGER NOT NULL,
  socket_id INTEGER NOT NULL,
  user_id TEXT NOT NULL,
  username TEXT NOT NULL,
  joined_at INTEGER NOT NULL,
  status TEXT,
  PRIMARY KEY (epoch, shard, socket_id)
))";

// Old rows are copied into the new table this many at a time.
constexpr int64_t kMigrationBatch = 1000;

const char kMessageColumns[] =
    "seq, id, channel, user_id, username, content, timestamp, thread_id";

json messageFromRow(const SqlRow& row) {
  json m = {{"id", row.text(1)},
            {"seq", row.integer(0)},
            {"channelId", row.text(2)},
            {"userId", row.text(3)},
            {"username", row.text(4)},
            {"content", row.text(5)},
            {"timestamp", row.integer(6)}};
  const SqlValue& thread = row[7];
  if (auto* i = std::get_if<int64_t>(&thread)) {
    m["threadId"] = *i;
  } else if (auto* s = std::get_if<std::string>(&thread)) {
    m["threadId"] = *s;
  }
  return m;
}

Request internalRequest(const std::string& path, std::string body,
                        std::optional<int64_t> seq = std::nullopt) {
  Request::Headers headers = {{kChannelInternalHeader, "1"}};
  if (seq) headers.emplace_back(kChannelSeqHeader, std::to_string(*seq));
  return Request("POST", path, "", std::move(headers), std::move(body));
}

void ignoreReply(Response) {}

}  // namespace

// --- the object: both roles -----------------------------------------------------------------

ChannelWebSocket::ChannelWebSocket(ObjectState& state) : state_(state) {
  std::string name = state_.name().value_or(state_.id());
  size_t hash = name.rfind('#');
  if (hash != std::string::npos) {
    if (auto k = parseInt(std::string_view(name).substr(hash + 1)); k && *k >= 0) {
      shard_ = static_cast<int>(*k);
      name.resize(hash);
    }
  }
  channelId_ = std::move(name);
}

Response ChannelWebSocket::fetch(Request& request) {
  if (request.path().starts_with("/internal/")) {
    if (!request.header(kChannelInternalHeader)) return jsonError(404, "not found");
    return internal(request);
  }
  if (request.isWebSocketUpgrade()) return connect(request);
  if (request.method() == "GET" && request.path().ends_with("/messages") && !shard_) {
    return history(request);
  }
  return jsonError(404, "not found");
}

Response ChannelWebSocket::connect(Request& request) {
  std::optional<std::string> user = request.header(kChannelUserHeader);
  json identity = user ? parseJson(*user).value_or(json()) : json();
  if (!identity.is_object() || str(identity, "userId").empty()) {
    return unauthorized("no verified user");
  }
  size_t maxConnections = kChannelDefaultMaxConnections;
  if (auto header = request.header(kChannelMaxConnectionsHeader)) {
    if (auto n = parseInt(*header); n && *n > 0) maxConnections = static_cast<size_t>(*n);
  }
  if (shard_) return connectShard(request, identity, maxConnections);

  if (state_.countWebSockets() >= maxConnections) return Response::text(503, "Channel full");
  std::string userId = str(identity, "userId");
  WebSocket ws = state_.acceptWebSocket(request, {userTag(userId)});
  json attachment = {{"userId", userId},
                     {"username", str(identity, "username")},
                     {"joinedAt", toUnixMillis(state_.now())},
                     {"permissions", identity.value("permissions", json::array())}};
  ws.serializeAttachment(dump(attachment));
  json last = lastMessage();
  sendJson(ws, json{{"type", "initial_state"},
                    {"channelId", channelId_},
                    {"messages", recentMessages(kChannelRecentMessages)},
                    {"onlineUsers", onlineUsers()},
                    {"lastMessageId", last["id"]},
                    {"lastSeq", last["seq"]}});
  // Others hear of a user once, when their first socket joins.
  if (state_.countWebSockets(userTag(userId)) == 1) publishEvent(dump(userConnected(attachment)), &ws);
  return Response::upgrade(ws);
}

void ChannelWebSocket::webSocketMessage(WebSocket ws, const Message& message) {
  if (message.binary) {
    sendError(ws, kInvalidFormat);
    return;
  }
  JsonError error;
  std::optional<json> parsed = parseJson(message.text(), jsonLimits(), &error);
  if (!parsed && error.kind != JsonError::Kind::kSyntax) {
    // Past a limit: the seed's words, and which limit.
    sendJson(ws, json{{"type", "error"}, {"message", kInvalidFormat}, {"reason", error.message}});
    return;
  }
  if (!parsed || !parsed->is_object()) {
    sendError(ws, kInvalidFormat);
    return;
  }
  const json& msg = *parsed;
  json attachment = attachmentOf(ws);
  auto typeIt = msg.find("type");
  std::string type = typeIt != msg.end() && typeIt->is_string() ? typeIt->get<std::string>() : "";
  if (type == "message") {
    handleChat(ws, attachment, msg);
  } else if (type == "typing") {
    handleTyping(ws, attachment, msg);
  } else if (type == "presence") {
    handlePresence(ws, std::move(attachment), msg);
  } else if (type == "sync") {
    handleSync(ws, msg);
  } else if (type == "ping") {
    sendJson(ws, json{{"type", "pong"}});
  } else {
    sendError(ws, kUnknownType);
  }
}

void ChannelWebSocket::handleChat(WebSocket& ws, const json& attachment, const json& message) {
  if (!hasPermission(attachment, "write")) {
    sendError(ws, kNoWrite);
    return;
  }
  auto contentIt = message.find("content");
  if (contentIt == message.end() || !contentIt->is_string() ||
      trim(contentIt->get_ref<const std::string&>()).empty()) {
    sendError(ws, kInvalidFormat);
    return;
  }
  const std::string& content = contentIt->get_ref<const std::string&>();
  if (content.size() > kChannelMaxContentBytes) {
    sendError(ws, "Message too long");
    return;
  }
  json threadId;  // null: none
  if (auto it = message.find("threadId"); it != message.end() && !it->is_null()) {
    bool ok = (it->is_string() && !it->get_ref<const std::string&>().empty() &&
               it->get_ref<const std::string&>().size() <= kChannelMaxThreadIdBytes) ||
              it->is_number_integer();
    if (!ok) {
      sendError(ws, kInvalidFormat);
      return;
    }
    threadId = *it;
  }
  std::string userId = str(attachment, "userId");
  std::string username = str(attachment, "username");
  if (!shard_) {
    // Stored first; the runtime sends the broadcast only after this event's commit.
    json stored = storeMessage(userId, username, content, threadId);
    std::string frame = dump(json{{"type", "message"}, {"message", stored}});
    state_.broadcast(frame);
    fanOut(frame, std::nullopt, stored["seq"].get<int64_t>());
    return;
  }
  // A shard forwards to the channel object, which stores and fans out to every shard (this
  // one included, so every member sees the channel's order).
  json body = {{"shard", *shard_}, {"userId", userId}, {"username", username}, {"content", content}};
  if (!threadId.is_null()) body["threadId"] = threadId;
  callChannel("/internal/post", dump(body), [ws](Response reply) mutable {
    if (reply.status() == 200) return;
    json error = parseJson(reply.body()).value_or(json());
    sendError(ws, error.is_object() ? str(error, "error") : "Message not stored");
  });
}

void ChannelWebSocket::handleTyping(WebSocket& ws, const json& attachment, const json& message) {
  bool isTyping = true;
  if (auto it = message.find("isTyping"); it != message.end() && !it->is_null()) {
    if (!it->is_boolean()) {
      sendError(ws, kInvalidFormat);
      return;
    }
    isTyping = it->get<bool>();
  }
  publishEvent(dump(json{{"type", "typing"},
                         {"userId", str(attachment, "userId")},
                         {"username", str(attachment, "username")},
                         {"isTyping", isTyping}}),
               &ws);
}

void ChannelWebSocket::handlePresence(WebSocket& ws, json attachment, const json& message) {
  auto it = message.find("status");
  if (it == message.end() || !it->is_string() || it->get_ref<const std::string&>().empty() ||
      it->get_ref<const std::string&>().size() > kChannelMaxStatusBytes) {
    sendError(ws, kInvalidFormat);
    return;
  }
  attachment["status"] = *it;
  ws.serializeAttachment(dump(attachment));
  json event = {{"type", "presence"},
                {"userId", str(attachment, "userId")},
                {"username", str(attachment, "username")},
                {"status", *it}};
  if (!shard_) {
    publishEvent(dump(event), &ws);
    return;
  }
  state_.broadcast(dump(event), liveSockets(&ws));
  callChannel("/internal/relay",
              dump(json{{"shard", *shard_},
                        {"frame", dump(event)},
                        {"socketId", ws.id()},
                        {"status", *it}}),
              ignoreReply);
}

void ChannelWebSocket::handleSync(WebSocket& ws, const json& message) {
  std::optional<After> after = channel::syncAfter(message);
  if (!after) {
    sendError(ws, kInvalidFormat);
    return;
  }
  if (!shard_) {
    if (!resolve(*after)) {
      sendUnknownId(ws, after->id);
      return;
    }
    json messages = messagesAfter(after->seq, kChannelSyncMaxPerRequest + 1);
    bool more = messages.size() > kChannelSyncMaxPerRequest;
    if (more) messages.erase(messages.size() - 1);
    sendSyncPages(ws, idOf(*after), after->seq, messages, more);
    return;
  }
  // The history is the channel object's: it resolves the id and reads the pages.
  json ask = {{"limit", kChannelSyncMaxPerRequest + 1}};
  if (!after->id.empty()) {
    ask["afterMessageId"] = after->id;
  } else {
    ask["afterSeq"] = after->seq;
  }
  callChannel("/internal/history", dump(ask), [ws, id = after->id](Response reply) mutable {
    if (!ws.isOpen()) return;
    if (reply.status() == 404 && !id.empty()) {
      sendUnknownId(ws, id);
      return;
    }
    json body = parseJson(reply.body()).value_or(json());
    if (reply.status() != 200 || !body.is_object() || !body["messages"].is_array()) {
      sendError(ws, "History not available");
      return;
    }
    json& messages = body["messages"];
    bool more = messages.size() > kChannelSyncMaxPerRequest;
    if (more) messages.erase(messages.size() - 1);
    sendSyncPages(ws, field(body, "afterMessageId"), body.value("afterSeq", int64_t{0}),
                  messages, more);
  });
}

void ChannelWebSocket::webSocketClose(WebSocket ws, const CloseInfo& info) { socketGone(ws); }

void ChannelWebSocket::webSocketError(WebSocket ws, std::string_view reason) { socketGone(ws); }

void ChannelWebSocket::socketGone(WebSocket& ws) {
  joining_.erase(ws.id());
  json attachment = attachmentOf(ws);
  std::string userId = str(attachment, "userId");
  if (userId.empty()) return;
  // Others hear of a user leaving when their last socket goes (the closed one is already gone
  // from the count).
  bool last = state_.countWebSockets(userTag(userId)) == 0;
  if (!shard_) {
    if (last) publishEvent(dump(userDisconnected(attachment)), nullptr);
    return;
  }
  std::string frame = dump(userDisconnected(attachment));
  if (last) state_.broadcast(frame, liveSockets(nullptr));
  json body = {{"shard", *shard_}, {"socketId", ws.id()}};
  if (last) body["frame"] = frame;
  callChannel("/internal/leave", dump(body), ignoreReply);
}

void ChannelWebSocket::publishEvent(const std::string& frame, const WebSocket* except) {
  state_.broadcast(frame, liveSockets(except));
  if (!shard_) {
    fanOut(frame, std::nullopt, std::nullopt);
    return;
  }
  callChannel("/internal/relay", dump(json{{"shard", *shard_}, {"frame", frame}}), ignoreReply);
}

BroadcastOptions ChannelWebSocket::liveSockets(const WebSocket* except) const {
  BroadcastOptions options;
  if (except) options.except.push_back(*except);
  for (const auto& [id, ws] : joining_) options.except.push_back(ws);
  return options;
}

// --- channel role ---------------------------------------------------------------------------

void ChannelWebSocket::ensureSchema() {
  if (schemaReady_) return;
  Sql& sql = state_.storage().sql();
  SqlCursor columns = sql.exec("PRAGMA table_info(channel_messages)");
  bool hasSeq = false;
  for (const SqlRow& column : columns) hasSeq = hasSeq || column.text(1) == "seq";
  if (columns.size() > 0 && !hasSeq) migrateIntegerIds();
  sql.exec(kMessagesSchema);
  sql.exec(kMembersSchema);
  schemaReady_ = true;
}

// A history the previous version wrote: `id INTEGER PRIMARY KEY` was the order and there was
// no UUID. The table is rebuilt in the new shape in one transaction (all of it or nothing,
// also if the host dies half-way): each old id becomes the row's `seq`, so a position a
// client kept still names the same message, and each row gets a new UUID as its `id`.
void ChannelWebSocket::migrateIntegerIds() {
  Sql& sql = state_.storage().sql();
  int64_t migrated = 0;
  state_.storage().transaction([&] {
    sql.exec("ALTER TABLE channel_messages RENAME TO channel_messages_v1");
    sql.exec(kMessagesSchema);
    std::optional<int64_t> last;
    while (true) {
      SqlCursor page =
          last ? sql.exec("SELECT id FROM channel_messages_v1 WHERE id > ? ORDER BY id LIMIT ?",
                          *last, kMigrationBatch)
               : sql.exec("SELECT id FROM channel_messages_v1 ORDER BY id LIMIT ?",
                          kMigrationBatch);
      if (page.size() == 0) break;
      // [[old id, new UUID], ...]: one statement per batch, however long the history.
      json pairs = json::array();
      for (const SqlRow& row : page) pairs.push_back(json::array({row.integer(0), newUuid()}));
      last = page.row(page.size() - 1).integer(0);
      sql.exec(
          "INSERT INTO channel_messages "
          "(seq, id, channel, user_id, username, content, timestamp, thread_id) "
          "SELECT old.id, json_extract(p.value, '$[1]'), old.channel, old.user_id, "
          "old.username, old.content, old.timestamp, old.thread_id "
          "FROM json_each(?) AS p JOIN channel_messages_v1 AS old "
          "ON old.id = json_extract(p.value, '$[0]')",
          dump(pairs));
      migrated += static_cast<int64_t>(page.size());
    }
    sql.exec("DROP TABLE channel_messages_v1");
  });
  logLine(LogLevel::kInfo,
          "channel history migrated to UUID message ids: " + std::to_string(migrated) +
              " messages, each old id kept as its seq",
          state_.className(), state_.id());
}

bool ChannelWebSocket::resolve(After& after) {
  if (after.id.empty()) return true;
  ensureSchema();
  SqlCursor c = state_.storage().sql().exec("SELECT seq FROM channel_messages WHERE id = ?",
                                            after.id);
  if (c.size() == 0) return false;
  after.seq = c.row(0).integer(0);
  return true;
}

ChannelWebSocket::json ChannelWebSocket::idOf(const After& after) {
  if (!after.id.empty()) return after.id;
  if (after.seq <= 0) return nullptr;
  ensureSchema();
  SqlCursor c = state_.storage().sql().exec("SELECT id FROM channel_messages WHERE seq = ?",
                                            after.seq);
  return c.size() == 0 ? json() : json(c.row(0).text(0));
}

ChannelWebSocket::json ChannelWebSocket::storeMessage(const std::string& userId,
                                                      const std::string& username,
                                                      const std::string& content,
                                                      const json& threadId) {
  ensureSchema();
  int64_t timestamp = toUnixMillis(state_.now());
  SqlValue thread = nullptr;
  if (threadId.is_string()) thread = threadId.get<std::string>();
  if (threadId.is_number_integer()) thread = threadId.get<int64_t>();
  // A new UUID for every message (the UNIQUE column makes sure it is never reused); the seq
  // is the next rowid, one more than the last message's.
  std::string id = newUuid();
  SqlCursor c = state_.storage().sql().exec(
      "INSERT INTO channel_messages "
      "(id, channel, user_id, username, content, timestamp, thread_id) "
      "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING seq",
      id, channelId_, userId, username, content, timestamp, thread);
  json m = {{"id", id},
            {"seq", c.one().integer(0)},
            {"channelId", channelId_},
            {"userId", userId},
            {"username", username},
            {"content", content},
            {"timestamp", timestamp}};
  if (!threadId.is_null()) m["threadId"] = threadId;
  return m;
}

ChannelWebSocket::json ChannelWebSocket::recentMessages(size_t count) {
  ensureSchema();
  SqlCursor c = state_.storage().sql().exec(
      std::string("SELECT ") + kMessageColumns +
          " FROM channel_messages ORDER BY seq DESC LIMIT ?",
      static_cast<int64_t>(count));
  json out = json::array();
  for (size_t i = c.size(); i-- > 0;) out.push_back(messageFromRow(c.row(i)));
  return out;
}

ChannelWebSocket::json ChannelWebSocket::messagesAfter(int64_t afterSeq, size_t limit) {
  ensureSchema();
  SqlCursor c = state_.storage().sql().exec(
      std::string("SELECT ") + kMessageColumns +
          " FROM channel_messages WHERE seq > ? ORDER BY seq LIMIT ?",
      afterSeq, static_cast<int64_t>(limit));
  json out = json::array();
  for (const SqlRow& row : c) out.push_back(messageFromRow(row));
  return out;
}

ChannelWebSocket::json ChannelWebSocket::lastMessage() {
  ensureSchema();
  SqlCursor c = state_.storage().sql().exec(
      "SELECT seq, id FROM channel_messages ORDER BY seq DESC LIMIT 1");
  if (c.size() == 0) return json{{"id", nullptr}, {"seq", 0}};
  return json{{"id", c.row(0).text(1)}, {"seq", c.row(0).integer(0)}};
}

ChannelWebSocket::json ChannelWebSocket::onlineUsers() {
  json users = json::array();
  std::set<std::string> seen;
  for (const WebSocket& ws : state_.getWebSockets()) {
    json a = attachmentOf(ws);
    std::string userId = str(a, "userId");
    if (userId.empty() || !seen.insert(userId).second) continue;
    users.push_back(onlineUserFrom(a));
  }
  checkOldMembers();
  SqlCursor c = state_.storage().sql().exec(
      "SELECT user_id, username, min(joined_at), max(status) FROM channel_members "
      "WHERE epoch = ? GROUP BY user_id ORDER BY min(rowid)",
      processEpoch());
  for (const SqlRow& row : c) {
    if (!seen.insert(row.text(0)).second) continue;
    json u = {{"userId", row.text(0)}, {"username", row.text(1)}, {"joinedAt", row.integer(2)}};
    if (!row.isNull(3)) u["status"] = row.text(3);
    users.push_back(std::move(u));
  }
  return users;
}

void ChannelWebSocket::checkOldMembers() {
  ensureSchema();
  if (oldMembersChecked_) return;
  oldMembersChecked_ = true;
  SqlCursor c = state_.storage().sql().exec(
      "SELECT DISTINCT shard FROM channel_members WHERE epoch <> ?", processEpoch());
  std::vector<int> shards;
  for (const SqlRow& row : c) shards.push_back(static_cast<int>(row.integer(0)));
  for (int shard : shards) {
    state_.stubByName(kChannelClass, channelId_ + "#" + std::to_string(shard))
        ->fetch(internalRequest("/internal/members", "{}"),
                [this, shard](Response reply) { confirmMembers(shard, reply); });
  }
}

void ChannelWebSocket::confirmMembers(int shard, const Response& reply) {
  json body = parseJson(reply.body()).value_or(json());
  // Without an answer the rows stay unconfirmed; the next instance asks again.
  if (reply.status() != 200 || !body.is_object() || !body.contains("sockets") ||
      !body["sockets"].is_array()) {
    return;
  }
  Sql& sql = state_.storage().sql();
  // Socket ids start again in a new process, so the user and join time must match too.
  for (const json& s : body["sockets"]) {
    if (!s.is_object()) continue;
    sql.exec(
        "UPDATE OR IGNORE channel_members SET epoch = ? "
        "WHERE epoch <> ? AND shard = ? AND socket_id = ? AND user_id = ? AND joined_at = ?",
        processEpoch(), processEpoch(), shard, s.value("socketId", int64_t{0}), str(s, "userId"),
        s.value("joinedAt", int64_t{0}));
  }
  sql.exec("DELETE FROM channel_members WHERE epoch <> ? AND shard = ?", processEpoch(), shard);
  memberShards_.reset();
}

const std::vector<int>& ChannelWebSocket::memberShards() {
  if (!memberShards_) {
    checkOldMembers();
    SqlCursor c = state_.storage().sql().exec(
        "SELECT shard, sum(epoch = ?) FROM channel_members GROUP BY shard ORDER BY shard",
        processEpoch());
    std::vector<int> shards;
    int64_t members = 0;
    for (const SqlRow& row : c) {
      shards.push_back(static_cast<int>(row.integer(0)));
      members += row.integer(1);
    }
    memberShards_ = std::move(shards);
    memberCount_ = members;
  }
  return *memberShards_;
}

int64_t ChannelWebSocket::memberCount() {
  memberShards();
  return memberCount_ + static_cast<int64_t>(state_.countWebSockets());
}

void ChannelWebSocket::fanOut(const std::string& frame, std::optional<int> exceptShard,
                              std::optional<int64_t> seq) {
  const std::vector<int>& shards = memberShards();
  if (shards.empty()) return;
  // Every delivery also tells the shard how many members the channel has (connection limit).
  std::string members = std::to_string(memberCount());
  for (int shard : shards) {
    if (exceptShard && shard == *exceptShard) continue;
    Request request = internalRequest("/internal/deliver", frame, seq);
    request.setHeader(kChannelMembersHeader, members);
    state_.stubByName(kChannelClass, channelId_ + "#" + std::to_string(shard))
        ->fetch(std::move(request), ignoreReply);
  }
}

Response ChannelWebSocket::history(Request& request) {
  After after;
  if (auto text = request.queryParam("after")) {
    std::optional<After> v = channel::afterParam(*text);
    if (!v) {
      return jsonError(400, "after must be a message id (a UUID) or a seq (an integer >= 0)");
    }
    after = std::move(*v);
  }
  size_t limit = kChannelHistoryDefaultLimit;
  if (auto text = request.queryParam("limit"); text && !text->empty()) {
    std::optional<int64_t> v = parseInt(*text);
    if (!v || *v < 1 || *v > static_cast<int64_t>(kChannelHistoryMaxLimit)) {
      return jsonError(400, "limit must be 1.." + std::to_string(kChannelHistoryMaxLimit));
    }
    limit = static_cast<size_t>(*v);
  }
  if (!resolve(after)) return jsonError(404, "no message " + after.id + " in this channel");
  json afterId = idOf(after);
  json messages = messagesAfter(after.seq, limit + 1);
  bool more = messages.size() > limit;
  if (more) messages.erase(messages.size() - 1);
  json lastId = messages.empty() ? afterId : messages.back()["id"];
  json lastSeq = messages.empty() ? json(after.seq) : messages.back()["seq"];
  return Response::json(200, dump(json{{"channelId", channelId_},
                                       {"afterMessageId", std::move(afterId)},
                                       {"afterSeq", after.seq},
                                       {"messages", std::move(messages)},
                                       {"hasMore", more},
                                       {"lastMessageId", std::move(lastId)},
                                       {"lastSeq", std::move(lastSeq)}}));
}

// Requests from other objects of this class (never from outside: see ChannelsApp::route).
Response ChannelWebSocket::internal(Request& request) {
  const std::string& path = request.path();
  if (shard_) {
    if (path == "/internal/members") {  // the channel object checks its rows (checkOldMembers)
      json sockets = json::array();
      for (const WebSocket& ws : state_.getWebSockets()) {
        json a = attachmentOf(ws);
        sockets.push_back({{"socketId", ws.id()},
                           {"userId", str(a, "userId")},
                           {"joinedAt", field(a, "joinedAt")}});
      }
      return Response::json(200, dump(json{{"sockets", std::move(sockets)}}));
    }
    if (path != "/internal/deliver") return jsonError(404, "not found");
    if (auto seq = request.header(kChannelSeqHeader)) {
      std::optional<int64_t> n = parseInt(*seq);
      // Each message reaches a shard once and in order; a repeat would be a bug upstream.
      if (n && lastSeq_ != 0 && *n <= lastSeq_) {
        logLine(LogLevel::kWarn, "message delivered twice to a shard; dropped", state_.className(),
                state_.id());
        return Response::json(200, "{}");
      }
      if (n) lastSeq_ = *n;
    }
    if (auto header = request.header(kChannelMembersHeader)) {
      int64_t members = parseInt(*header).value_or(0);
      int64_t local = static_cast<int64_t>(state_.countWebSockets());
      othersKnown_ = members > local ? static_cast<size_t>(members - local) : 0;
    }
    state_.broadcast(request.body(), liveSockets(nullptr));
    return Response::json(200, "{}");
  }

  json body = parseJson(request.body()).value_or(json());
  if (!body.is_object()) return jsonError(400, "body must be a JSON object");
  std::optional<int> origin;
  if (auto it = body.find("shard"); it != body.end() && it->is_number_integer()) {
    origin = it->get<int>();
  }

  if (path == "/internal/post") {
    std::string content = str(body, "content");
    if (content.empty() || content.size() > kChannelMaxContentBytes) {
      return jsonError(400, kInvalidFormat);
    }
    json threadId = body.value("threadId", json());
    json stored = storeMessage(str(body, "userId"), str(body, "username"), content, threadId);
    std::string frame = dump(json{{"type", "message"}, {"message", stored}});
    state_.broadcast(frame);
    fanOut(frame, std::nullopt, stored["seq"].get<int64_t>());
    return Response::json(200, dump(json{{"id", stored["id"]}, {"seq", stored["seq"]}}));
  }
  if (path == "/internal/join") {
    if (!origin) return jsonError(400, "shard missing");
    checkOldMembers();
    int64_t members = memberCount();
    int64_t max = body.value("maxConnections", int64_t{0});
    if (max > 0 && members >= max) return jsonError(503, "Channel full");
    state_.storage().sql().exec(
        "INSERT OR REPLACE INTO channel_members "
        "(epoch, shard, socket_id, user_id, username, joined_at) VALUES (?, ?, ?, ?, ?, ?)",
        processEpoch(), *origin, body.value("socketId", int64_t{0}), str(body, "userId"),
        str(body, "username"), body.value("joinedAt", int64_t{0}));
    memberShards_.reset();
    if (body.value("announce", false)) {
      std::string frame = dump(userConnected(body));
      state_.broadcast(frame);
      fanOut(frame, origin, std::nullopt);
    }
    json last = lastMessage();
    return Response::json(200, dump(json{{"messages", recentMessages(kChannelRecentMessages)},
                                         {"onlineUsers", onlineUsers()},
                                         {"lastMessageId", last["id"]},
                                         {"lastSeq", last["seq"]},
                                         {"memberCount", members + 1}}));
  }
  if (path == "/internal/leave") {
    if (!origin) return jsonError(400, "shard missing");
    checkOldMembers();
    state_.storage().sql().exec(
        "DELETE FROM channel_members WHERE shard = ? AND socket_id = ?", *origin,
        body.value("socketId", int64_t{0}));
    memberShards_.reset();
    if (auto frame = body.find("frame"); frame != body.end() && frame->is_string()) {
      state_.broadcast(frame->get<std::string>());
      fanOut(frame->get<std::string>(), origin, std::nullopt);
    }
    return Response::json(200, "{}");
  }
  if (path == "/internal/relay") {
    std::string frame = str(body, "frame");
    if (frame.empty()) return jsonError(400, "frame missing");
    if (auto status = body.find("status"); status != body.end() && status->is_string() && origin) {
      checkOldMembers();
      state_.storage().sql().exec(
          "UPDATE channel_members SET status = ? WHERE shard = ? AND socket_id = ?",
          status->get<std::string>(), *origin, body.value("socketId", int64_t{0}));
    }
    state_.broadcast(frame);
    fanOut(frame, origin, std::nullopt);
    return Response::json(200, "{}");
  }
  if (path == "/internal/history") {
    After after;
    if (auto id = body.find("afterMessageId"); id != body.end() && id->is_string()) {
      after.id = id->get<std::string>();
    } else if (auto seq = body.find("afterSeq"); seq != body.end() && seq->is_number_integer()) {
      after.seq = std::max<int64_t>(0, seq->get<int64_t>());
    }
    int64_t limit = std::clamp<int64_t>(body.value("limit", int64_t{1}), 1,
                                        static_cast<int64_t>(kChannelSyncMaxPerRequest + 1));
    if (!resolve(after)) return jsonError(404, kUnknownId);
    return Response::json(200, dump(json{{"messages", messagesAfter(after.seq, limit)},
                                         {"afterMessageId", idOf(after)},
                                         {"afterSeq", after.seq}}));
  }
  return jsonError(404, "not found");
}

// --- shard role -----------------------------------------------------------------------------

Response ChannelWebSocket::connectShard(Request& request, const json& identity,
                                        size_t maxConnections) {
  // The channel object has the exact count and refuses a join beyond the limit; this early
  // check uses the last count it reported, so most refusals are a plain 503.
  if (state_.countWebSockets() + othersKnown_ >= maxConnections) {
    return Response::text(503, "Channel full");
  }
  std::string userId = str(identity, "userId");
  WebSocket ws = state_.acceptWebSocket(request, {userTag(userId)});
  json attachment = {{"userId", userId},
                     {"username", str(identity, "username")},
                     {"joinedAt", toUnixMillis(state_.now())},
                     {"permissions", identity.value("permissions", json::array())}};
  ws.serializeAttachment(dump(attachment));
  bool first = state_.countWebSockets(userTag(userId)) == 1;
  if (first) state_.broadcast(dump(userConnected(attachment)), liveSockets(&ws));
  joining_.emplace(ws.id(), ws);
  json body = {{"shard", *shard_},
               {"socketId", ws.id()},
               {"userId", userId},
               {"username", attachment["username"]},
               {"joinedAt", attachment["joinedAt"]},
               {"announce", first},
               {"maxConnections", maxConnections}};
  callChannel("/internal/join", dump(body), [this, ws](Response reply) { joined(ws, reply); });
  return Response::upgrade(ws);
}

// The channel object answered a join: the socket gets initial_state and from now on live
// traffic. Messages committed before the join were delivered here before this answer (calls
// between two objects arrive in order), while the socket was still left out.
void ChannelWebSocket::joined(WebSocket ws, const Response& reply) {
  joining_.erase(ws.id());
  if (!ws.isOpen()) return;
  json body = parseJson(reply.body()).value_or(json());
  if (reply.status() == 503) {
    ws.close(4503, "Channel full");
    return;
  }
  if (reply.status() != 200 || !body.is_object()) {
    sendError(ws, "Channel not available");
    ws.close(4500, "Channel not available");
    return;
  }
  int64_t members = body.value("memberCount", int64_t{0});
  int64_t local = static_cast<int64_t>(state_.countWebSockets());
  othersKnown_ = members > local ? static_cast<size_t>(members - local) : 0;
  sendJson(ws, json{{"type", "initial_state"},
                    {"channelId", channelId_},
                    {"messages", body.value("messages", json::array())},
                    {"onlineUsers", body.value("onlineUsers", json::array())},
                    {"lastMessageId", field(body, "lastMessageId")},
                    {"lastSeq", body.value("lastSeq", int64_t{0})}});
}

void ChannelWebSocket::callChannel(const std::string& path, std::string body,
                                   std::function<void(Response)> onResponse) {
  state_.stubByName(kChannelClass, channelId_)
      ->fetch(internalRequest(path, std::move(body)), std::move(onResponse));
}

}  // namespace dohost::objects
