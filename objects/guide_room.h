// GuideRoom: what the `guide` app's three room classes (ChatRoom, AnalyticsRoom,
// CollaborationRoom) share. One room object per contextId and service. A room knows its
// sockets by their attachments (identity, message window, the room's own per-socket state),
// cached per instance, so it can be evicted between any two messages and lose nothing;
// it answers `ping` and a repeated `auth`, keeps the per-connection message limit and the
// per-room broadcast limit, and speaks the seed's envelope. The protocol is in
// docs/apps/guide.md.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "objects/guide_common.h"

namespace dohost::objects::guide {

// Sockets by group (a metric's subscribers, a session's participants), in the order they
// joined the group.
class SocketGroups {
 public:
  void add(const std::string& group, const WebSocket& ws);
  void remove(const std::string& group, const WebSocket& ws);
  const std::vector<WebSocket>& of(const std::string& group) const;  // empty: nobody
  void clear() { groups_.clear(); }

 private:
  std::unordered_map<std::string, std::vector<WebSocket>> groups_;
};

// Thread: the loop thread, like every object.
class GuideRoom : public DurableObject {
 public:
  GuideRoom(ObjectState& state, SharedSettings settings);

  Response fetch(Request& request) final;
  void webSocketMessage(WebSocket ws, const Message& message) final;
  void webSocketClose(WebSocket ws, const CloseInfo& info) final;
  void webSocketError(WebSocket ws, std::string_view reason) final;

 protected:
  // One socket as the room knows it. `state` is the JSON the attachment keeps: userId,
  // username, joinedAt, plus what the room adds (subscriptions, session).
  struct Member {
    User user;
    RateWindow rate;
    json state = json::object();
    std::string stateText;  // `state` serialized, so the per-message rewrite does not dump
    std::string buffer;     // the attachment bytes of the last rewrite (memory reused)
  };

  // --- what each room adds ----------------------------------------------------------------
  // Requests that are not upgrades (HTTP from the router, calls from other objects).
  virtual Response request(Request& request) { return jsonError(404, "not found"); }
  // A socket was accepted (auth_success, if due, is already on its way).
  virtual void joined(WebSocket& ws, Member& member) {}
  // A message of `type` other than ping and auth. False: an unknown type.
  virtual bool handle(WebSocket& ws, Member& member, const std::string& type,
                      const json& message) = 0;
  // A socket closed (it is no longer among getWebSockets()).
  virtual void left(const WebSocket& ws, const Member& member) {}
  // The groups a member belongs to, read from its state (to rebuild groups() after a wake).
  virtual std::vector<std::string> groupsOf(const Member& member) const { return {}; }

  // --- helpers ------------------------------------------------------------------------------
  Member& member(const WebSocket& ws);
  // Writes the attachment again after a change of member.state.
  void saveState(WebSocket& ws, Member& member);
  SocketGroups& groups();
  const std::string& contextId() const { return contextId_; }
  int64_t nowMs() const { return toUnixMillis(state_.now()); }
  std::string newId() { return newUuid(random_); }
  // An envelope with a fresh id and the current time.
  std::string frame(std::string_view type, const json& data) {
    return envelope(type, data, newId(), state_.now());
  }
  void send(WebSocket& ws, std::string_view type, const json& data) { ws.send(frame(type, data)); }
  void sendError(WebSocket& ws, std::string_view reason, const json& data = json::object()) {
    ws.send(errorEnvelope(reason, data, newId(), state_.now()));
  }
  // Counts one broadcast against the room's limit. At the limit: false, and the sender (if
  // any) is told; the caller then sends nothing. The count is kept in storage.
  bool admitBroadcast(WebSocket* sender, int64_t* retryAfterMs = nullptr);
  static std::string userTag(const std::string& userId) { return "u:" + userId; }

  ObjectState& state_;  // outlives this instance (the runtime's slot)
  SharedSettings settings_;

 private:
  Response connect(Request& request);
  bool admitMessage(WebSocket& ws, Member& member);
  void repeatAuth(WebSocket& ws, Member& member, const json& message);
  void gone(const WebSocket& ws);

  std::string contextId_;
  std::mt19937_64 random_;
  // Caches, rebuilt after eviction (the truth is in attachments and storage).
  std::unordered_map<uint64_t, Member> members_;  // by socket id
  std::optional<SocketGroups> groups_;
  std::optional<RateWindow> broadcasts_;
};

}  // namespace dohost::objects::guide
