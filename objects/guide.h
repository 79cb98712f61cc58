// The `guide` app (seed 002, Atomic Guide): chat, live analytics and collaborative editing
// for a learning context. One object of each room class per contextId:
//   ChatRoom           /api/chat/ws           messages in SQLite, history, typing, presence
//   AnalyticsRoom      /api/analytics/ws      metric subscriptions; POST /api/analytics/metrics
//   CollaborationRoom  /api/collaboration/ws  shared texts with operational transformation
// Clients authenticate with ?token= at the upgrade (the router routes them to their room), or
// with a first `auth` message: then a GuideLobby object holds the socket until it names its
// token and context, and hands it to the room. The protocol is in docs/apps/guide.md.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>

#include "objects/guide_common.h"
#include "objects/guide_ot.h"
#include "objects/guide_room.h"

namespace dohost::objects::guide {

// Chat of one context. Messages are rows of `chat_messages`, with strictly increasing
// timestamps (so paging `before` the oldest one seen is exact). Tells the context's
// AnalyticsRoom the built-in metrics `activity` (sockets in the chat) and `engagement` (chat
// messages within the last engagement window) when they change; an alarm notices messages
// leaving the window.
class ChatRoom final : public GuideRoom {
 public:
  ChatRoom(ObjectState& state, SharedSettings settings);
  void alarm(const AlarmInfo& info) override;

 private:
  void joined(WebSocket& ws, Member& member) override;
  bool handle(WebSocket& ws, Member& member, const std::string& type, const json& message) override;
  void left(const WebSocket& ws, const Member& member) override;

  void post(WebSocket& ws, Member& member, const json& data);
  void typing(WebSocket& ws, Member& member, const json& data);
  void history(WebSocket& ws, const json& data);
  void ensureSchema();
  // Activity or engagement may have changed: one push for this loop turn.
  void metricsChanged();
  void pushMetrics();

  bool schemaReady_ = false;
  int64_t lastTimestamp_ = 0;  // of the newest stored message (valid with schemaReady_)
  bool pushScheduled_ = false;
  std::optional<std::pair<int64_t, int64_t>> pushed_;  // (activity, engagement) last pushed
};

// Metrics of one context: per-socket subscriptions (kept in the attachments), the last value
// of each metric (table `metric_values`), updates from POST /api/analytics/metrics and from
// the context's ChatRoom.
class AnalyticsRoom final : public GuideRoom {
 public:
  AnalyticsRoom(ObjectState& state, SharedSettings settings);

 private:
  Response request(Request& request) override;
  bool handle(WebSocket& ws, Member& member, const std::string& type, const json& message) override;
  std::vector<std::string> groupsOf(const Member& member) const override;

  void subscribe(WebSocket& ws, Member& member, const json& data, bool add);
  // Stores the value and sends it to the metric's subscribers; how many it reached.
  size_t publish(const std::string& metric, const json& value);
  std::optional<std::pair<json, int64_t>> lastValue(const std::string& metric);
  void ensureSchema();

  bool schemaReady_ = false;
};

// Collaborative texts of one context, one per sessionId: the text and its version in
// `collab_sessions`, the edits that made each version in `collab_ops` (the last
// `edit_history` of them, to transform edits made against older versions).
class CollaborationRoom final : public GuideRoom {
 public:
  CollaborationRoom(ObjectState& state, SharedSettings settings);

 private:
  struct Session {
    std::u16string text;
    int64_t version = 0;
    int64_t oldestVersion = 0;  // edits against older versions can no longer be transformed
  };

  bool handle(WebSocket& ws, Member& member, const std::string& type, const json& message) override;
  void left(const WebSocket& ws, const Member& member) override;
  std::vector<std::string> groupsOf(const Member& member) const override;

  void join(WebSocket& ws, Member& member, const json& data);
  void leave(WebSocket& ws, Member& member, const json& data);
  void edit(WebSocket& ws, Member& member, const json& data);
  // Takes the socket out of its session (participant_left to the others, if it was the
  // user's last socket there).
  void quit(const WebSocket& ws, const Member& member, const std::string& sessionId);
  Session& session(const std::string& sessionId);
  json participants(const std::string& sessionId);
  // The length of the session's text at `version`; nullopt if that version is too old.
  std::optional<int64_t> lengthAt(const std::string& sessionId, const Session& s, int64_t version);
  // Stores one applied edit as version s.version (already bumped) and the text.
  void record(const std::string& sessionId, const Session& s, const ot::Edit& e,
              const User& author);
  void ensureSchema();

  bool schemaReady_ = false;
  std::map<std::string, Session> sessions_;  // cache of the sessions that have members
};

// The sockets of one service that authenticate with a first message, until they do.
class GuideLobby final : public DurableObject {
 public:
  GuideLobby(ObjectState& state, SharedSettings settings);

  Response fetch(Request& request) override;
  void webSocketMessage(WebSocket ws, const Message& message) override;
  void alarm(const AlarmInfo& info) override;

 private:
  void refuse(WebSocket& ws, std::string_view reason, std::string_view closeReason);
  void armFor(int64_t deadlineMs);

  ObjectState& state_;
  SharedSettings settings_;
  std::mt19937_64 random_;
};

// The app's router: paths, the connection limit per client IP, token checks at the upgrade,
// the metrics endpoint, and which object gets each request.
class GuideApp final : public App {
 public:
  GuideApp(const AppSettings& settings, std::shared_ptr<Settings> shared);
  Route route(Request& request) override;

 private:
  Route upgrade(Request& request, const char* roomClass, const char* service);
  Route postMetric(Request& request);
  // Counts one upgrade from `address`; false when the address is over its limit.
  bool admitConnection(const std::string& address, int64_t nowMs, int64_t* retryAfterMs);

  SharedSettings settings_;
  std::unordered_map<std::string, RateWindow> connections_;  // by client address
  size_t sweepAt_ = 1024;  // prune expired windows when the map grows past this
};

// The room class serving `service` ("chat", "analytics", "collaboration"), or nullptr.
const char* roomClassOf(std::string_view service);

}  // namespace dohost::objects::guide
