// CollaborationRoom: shared texts of one context, edited concurrently (see guide.h and
// guide_ot.h).
#include <algorithm>
#include <set>

#include "objects/guide.h"

namespace dohost::objects::guide {
namespace {

constexpr char kCollaborationSchema[] = R"(
CREATE TABLE IF NOT EXISTS collab_sessions (
  session_id TEXT PRIMARY KEY,
  text TEXT NOT NULL,
  version INTEGER NOT NULL,
  oldest_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS collab_ops (
  session_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  op TEXT NOT NULL,
  position INTEGER NOT NULL,
  length INTEGER NOT NULL,
  content TEXT,
  length_after INTEGER NOT NULL,
  user_id TEXT NOT NULL,
  PRIMARY KEY (session_id, version)
))";

constexpr size_t kMaxRoleBytes = 32;
constexpr char kNotInSession[] = "Not in a session: send join_session first";

std::optional<int64_t> nonNegative(const json& data, const char* key) {
  auto it = data.find(key);
  if (it == data.end() || !it->is_number_integer() || it->get<int64_t>() < 0) return std::nullopt;
  return it->get<int64_t>();
}

}  // namespace

CollaborationRoom::CollaborationRoom(ObjectState& state, SharedSettings settings)
    : GuideRoom(state, std::move(settings)) {}

void CollaborationRoom::ensureSchema() {
  if (schemaReady_) return;
  state_.storage().sql().exec(kCollaborationSchema);
  schemaReady_ = true;
}

std::vector<std::string> CollaborationRoom::groupsOf(const Member& member) const {
  std::string session = stringField(member.state, "sessionId");
  if (session.empty()) return {};
  return {session};
}

bool CollaborationRoom::handle(WebSocket& ws, Member& member, const std::string& type,
                               const json& message) {
  if (type != "join_session" && type != "leave_session" && type != "edit") return false;
  static const json kEmpty = json::object();
  auto data = message.find("data");
  bool isObject = data != message.end() && data->is_object();
  if (!isObject && (type != "leave_session" || (data != message.end() && !data->is_null()))) {
    sendError(ws, "Invalid message format: data must be an object", json{{"type", type}});
    return true;
  }
  const json& d = isObject ? *data : kEmpty;
  if (type == "join_session") {
    join(ws, member, d);
  } else if (type == "leave_session") {
    leave(ws, member, d);
  } else {
    edit(ws, member, d);
  }
  return true;
}

CollaborationRoom::Session& CollaborationRoom::session(const std::string& sessionId) {
  auto it = sessions_.find(sessionId);
  if (it != sessions_.end()) return it->second;
  ensureSchema();
  Session s;
  SqlCursor c = state_.storage().sql().exec(
      "SELECT text, version, oldest_version FROM collab_sessions WHERE session_id = ?", sessionId);
  if (c.size() == 1) {
    s.text = ot::toUtf16(c.row(0).text(0)).value_or(std::u16string());
    s.version = c.row(0).integer(1);
    s.oldestVersion = c.row(0).integer(2);
  }
  return sessions_.emplace(sessionId, std::move(s)).first->second;
}

json CollaborationRoom::participants(const std::string& sessionId) {
  json out = json::array();
  std::set<std::string> seen;
  for (const WebSocket& ws : groups().of(sessionId)) {
    Member& m = member(ws);
    if (!seen.insert(m.user.userId).second) continue;
    out.push_back(json{{"userId", m.user.userId},
                       {"username", m.user.username},
                       {"role", stringField(m.state, "role")}});
  }
  return out;
}

void CollaborationRoom::join(WebSocket& ws, Member& member, const json& data) {
  std::string sessionId = stringField(data, "sessionId");
  if (!validId(sessionId)) {
    sendError(ws,
              "Invalid join_session: sessionId must be 1-128 characters of A-Z a-z 0-9 . _ : @ ~ -",
              json{{"type", "join_session"}});
    return;
  }
  std::optional<std::string> role = optionalString(data, "role", kMaxRoleBytes, "participant");
  if (!role) {
    sendError(ws, "Invalid join_session: role must be a string of 1 to 32 characters",
              json{{"type", "join_session"}});
    return;
  }
  std::string current = stringField(member.state, "sessionId");
  if (!current.empty() && current != sessionId) {
    groups().remove(current, ws);
    quit(ws, member, current);
  }
  SocketGroups& sessions = groups();
  // Announced once per user and session: when its first socket joins.
  bool first = std::none_of(
      sessions.of(sessionId).begin(), sessions.of(sessionId).end(), [&](const WebSocket& other) {
        return !(other == ws) && this->member(other).user.userId == member.user.userId;
      });
  member.state["sessionId"] = sessionId;
  member.state["role"] = *role;
  saveState(ws, member);
  sessions.add(sessionId, ws);
  Session& s = session(sessionId);
  send(ws, "session_state",
       json{{"sessionId", sessionId},
            {"text", ot::toUtf8(s.text)},
            {"version", s.version},
            {"participants", participants(sessionId)}});
  if (first && current != sessionId) {
    BroadcastOptions others;
    others.only = &sessions.of(sessionId);
    others.except.push_back(ws);
    state_.broadcast(frame("participant_joined", json{{"sessionId", sessionId},
                                                      {"userId", member.user.userId},
                                                      {"username", member.user.username},
                                                      {"role", *role}}),
                     others);
  }
}

void CollaborationRoom::leave(WebSocket& ws, Member& member, const json& data) {
  std::string current = stringField(member.state, "sessionId");
  std::string named = stringField(data, "sessionId");
  if (current.empty() || (!named.empty() && named != current)) {
    sendError(ws, current.empty() ? kNotInSession : "Not in that session",
              json{{"type", "leave_session"}});
    return;
  }
  groups().remove(current, ws);
  member.state.erase("sessionId");
  member.state.erase("role");
  saveState(ws, member);
  quit(ws, member, current);
  send(ws, "session_left", json{{"sessionId", current}});
}

void CollaborationRoom::left(const WebSocket& ws, const Member& member) {
  std::string current = stringField(member.state, "sessionId");
  if (!current.empty()) quit(ws, member, current);
}

void CollaborationRoom::quit(const WebSocket& ws, const Member& member,
                             const std::string& sessionId) {
  const std::vector<WebSocket>& rest = groups().of(sessionId);
  if (rest.empty()) {
    sessions_.erase(sessionId);  // nobody edits it now; it is read again on the next join
    return;
  }
  bool last = std::none_of(rest.begin(), rest.end(), [&](const WebSocket& other) {
    return this->member(other).user.userId == member.user.userId;
  });
  if (!last) return;
  BroadcastOptions options;
  options.only = &rest;
  state_.broadcast(frame("participant_left", json{{"sessionId", sessionId},
                                                  {"userId", member.user.userId},
                                                  {"username", member.user.username}}),
                   options);
}

std::optional<int64_t> CollaborationRoom::lengthAt(const std::string& sessionId, const Session& s,
                                                   int64_t version) {
  if (version == s.version) return static_cast<int64_t>(s.text.size());
  if (version < s.oldestVersion) return std::nullopt;
  if (version == 0) return 0;
  SqlCursor c = state_.storage().sql().exec(
      "SELECT length_after FROM collab_ops WHERE session_id = ? AND version = ?", sessionId,
      version);
  if (c.size() != 1) return std::nullopt;
  return c.row(0).integer(0);
}

void CollaborationRoom::edit(WebSocket& ws, Member& member, const json& data) {
  auto fail = [&](const std::string& why) {
    sendError(ws, "Invalid edit: " + why, json{{"type", "edit"}});
  };
  std::string sessionId = stringField(member.state, "sessionId");
  if (sessionId.empty()) {
    sendError(ws, kNotInSession, json{{"type", "edit"}});
    return;
  }
  if (auto named = stringField(data, "sessionId"); !named.empty() && named != sessionId) {
    return fail("sessionId is not the session this connection joined");
  }
  std::string operation = stringField(data, "operation");
  if (operation != "insert" && operation != "delete")
    return fail("operation must be insert or delete");
  std::optional<int64_t> position = nonNegative(data, "position");
  if (!position) return fail("position must be a non-negative integer");
  std::optional<int64_t> version = nonNegative(data, "version");
  if (!version) return fail("version must be a non-negative integer");
  ot::Edit requested;
  if (operation == "insert") {
    auto content = data.find("content");
    if (content == data.end() || !content->is_string() ||
        content->get_ref<const std::string&>().empty()) {
      return fail("content must be a non-empty string");
    }
    requested.kind = ot::Edit::Kind::kInsert;
    requested.text = ot::toUtf16(content->get_ref<const std::string&>()).value_or(std::u16string());
    requested.length = static_cast<int64_t>(requested.text.size());
  } else {
    std::optional<int64_t> length = nonNegative(data, "length");
    if (!length || *length == 0) return fail("length must be a positive integer");
    requested.kind = ot::Edit::Kind::kDelete;
    requested.length = *length;
  }
  requested.position = *position;

  Session& s = session(sessionId);
  if (*version > s.version) {
    return fail("version " + std::to_string(*version) + " is ahead of the session (version " +
                std::to_string(s.version) + ")");
  }
  ensureSchema();
  std::optional<int64_t> length = lengthAt(sessionId, s, *version);
  if (!length) {
    return fail("version " + std::to_string(*version) + " is too old to transform (the oldest is " +
                std::to_string(s.oldestVersion) + "); join_session again");
  }
  int64_t span = requested.kind == ot::Edit::Kind::kDelete ? requested.length : 0;
  if (requested.position > *length || span > *length - requested.position) {  // no overflow
    return fail("position outside the text (length " + std::to_string(*length) + " at version " +
                std::to_string(*version) + ")");
  }
  // Over every edit applied since the client's version, in order.
  int64_t at = requested.position;
  ot::Ranges ranges = {{requested.position, requested.position + span}};
  SqlCursor since = state_.storage().sql().exec(
      "SELECT op, position, length, content FROM collab_ops WHERE session_id = ? AND version > ? "
      "ORDER BY version",
      sessionId, *version);
  for (const SqlRow& row : since) {
    ot::Edit applied;
    applied.kind = row.text(0) == "insert" ? ot::Edit::Kind::kInsert : ot::Edit::Kind::kDelete;
    applied.position = row.integer(1);
    applied.length = row.integer(2);
    at = ot::transformInsert(at, applied);
    if (requested.kind == ot::Edit::Kind::kDelete) ot::transformDelete(ranges, applied);
  }
  if (requested.kind == ot::Edit::Kind::kInsert) {
    if (static_cast<int64_t>(s.text.size()) + requested.length > settings_->maxDocumentUnits) {
      return fail("the text would be longer than " + std::to_string(settings_->maxDocumentUnits) +
                  " characters");
    }
    if (ot::splitsSurrogatePair(s.text, at)) return fail("position splits a character");
  } else {
    for (auto [a, b] : ranges) {
      if (ot::splitsSurrogatePair(s.text, a) || ot::splitsSurrogatePair(s.text, b)) {
        return fail("position splits a character");
      }
    }
  }
  if (!admitBroadcast(&ws)) return;

  std::vector<ot::Edit> edits;
  if (requested.kind == ot::Edit::Kind::kInsert) {
    requested.position = at;
    edits.push_back(std::move(requested));
  } else {
    // Last range first, so the earlier ranges keep their positions.
    for (auto it = ranges.rbegin(); it != ranges.rend(); ++it) {
      ot::Edit e;
      e.kind = ot::Edit::Kind::kDelete;
      e.position = it->first;
      e.length = it->second - it->first;
      edits.push_back(e);
    }
  }
  json author = member.user.toJson();
  if (edits.empty()) {
    // What it meant to delete is gone already: nothing changes; the sender gets its answer.
    send(ws, "edit",
         json{{"sessionId", sessionId},
              {"operation", "delete"},
              {"position", at},
              {"length", 0},
              {"author", author},
              {"version", s.version}});
    return;
  }
  const std::vector<WebSocket>& to = groups().of(sessionId);
  BroadcastOptions options;
  options.only = &to;
  for (const ot::Edit& e : edits) {
    ot::apply(s.text, e);
    ++s.version;
    record(sessionId, s, e, member.user);
    json out = {{"sessionId", sessionId},
                {"operation", e.kind == ot::Edit::Kind::kInsert ? "insert" : "delete"},
                {"position", e.position}};
    if (e.kind == ot::Edit::Kind::kInsert) {
      out["content"] = ot::toUtf8(e.text);
    } else {
      out["length"] = e.length;
    }
    out["author"] = author;
    out["version"] = s.version;
    state_.broadcast(frame("edit", out), options);
  }
  // Forget edits too old to transform against, a tenth of the history at a time.
  int64_t keep = settings_->editHistory;
  if (s.version - s.oldestVersion > keep + std::max<int64_t>(1, keep / 10)) {
    s.oldestVersion = s.version - keep;
    state_.storage().sql().exec("DELETE FROM collab_ops WHERE session_id = ? AND version < ?",
                                sessionId, s.oldestVersion);
  }
  state_.storage().sql().exec(
      "INSERT INTO collab_sessions (session_id, text, version, oldest_version) VALUES (?, ?, ?, ?) "
      "ON CONFLICT (session_id) DO UPDATE SET text = excluded.text, version = excluded.version, "
      "oldest_version = excluded.oldest_version",
      sessionId, ot::toUtf8(s.text), s.version, s.oldestVersion);
}

void CollaborationRoom::record(const std::string& sessionId, const Session& s, const ot::Edit& e,
                               const User& author) {
  SqlValue content = nullptr;
  if (e.kind == ot::Edit::Kind::kInsert) content = ot::toUtf8(e.text);
  state_.storage().sql().exec(
      "INSERT INTO collab_ops (session_id, version, op, position, length, content, length_after, "
      "user_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
      sessionId, s.version, e.kind == ot::Edit::Kind::kInsert ? "insert" : "delete", e.position,
      e.length, content, static_cast<int64_t>(s.text.size()), author.userId);
}

}  // namespace dohost::objects::guide
