// ChannelWebSocket: persisted chat channels with replay (seed 004), and the `channels` app that
// routes clients to them. The protocol is documented in docs/apps/channels.md.
//
// One object per channel keeps the history (its own SQL table; each message has a UUID `id`, as
// in the seed, and an INTEGER `seq`, one sequence, so the channel has a total order) and,
// unsharded, the channel's sockets. With `shards` > 1 the
// sockets are spread by user over shard objects named "<channelId>#<k>"; the channel object
// (named "<channelId>") stays the only writer of the history and fans each committed message
// out to the shards that have members, which broadcast it locally.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "dohost/dohost.h"

namespace dohost::objects {

namespace channel {
struct After;  // objects/channel_common.h
}

inline constexpr char kChannelClass[] = "ChannelWebSocket";

// Headers only the router sets (it removes any copy a client sent): the verified identity
// (JSON {userId, username, permissions}) and the configured connection limit.
inline constexpr char kChannelUserHeader[] = "x-channel-user";
inline constexpr char kChannelMaxConnectionsHeader[] = "x-channel-max-connections";
// Marks requests one channel object sends another (stub calls). The router removes it too and
// never forwards an /internal/ path, so these requests cannot come from outside.
inline constexpr char kChannelInternalHeader[] = "x-channel-internal";
// The `seq` of the message a delivery carries (a shard drops a repeat).
inline constexpr char kChannelSeqHeader[] = "x-channel-seq";
inline constexpr char kChannelMembersHeader[] = "x-channel-members";

inline constexpr size_t kChannelRecentMessages = 50;       // in initial_state
inline constexpr size_t kChannelSyncPageSize = 100;        // messages per sync frame
inline constexpr size_t kChannelSyncMaxPerRequest = 1000;  // then the client asks again
inline constexpr size_t kChannelHistoryDefaultLimit = 100; // GET /messages without limit
inline constexpr size_t kChannelHistoryMaxLimit = 1000;
inline constexpr size_t kChannelDefaultMaxConnections = 1000;
inline constexpr size_t kChannelMaxContentBytes = 4000;
inline constexpr size_t kChannelMaxThreadIdBytes = 128;
inline constexpr size_t kChannelMaxStatusBytes = 64;
inline constexpr int kChannelMaxShards = 256;
inline constexpr size_t kChannelMaxIdBytes = 128;

// The object of one channel, or of one shard of a channel (by its name).
//
// Thread: the loop thread (like every object).
class ChannelWebSocket final : public DurableObject {
 public:
  explicit ChannelWebSocket(ObjectState& state);

  Response fetch(Request& request) override;
  void webSocketMessage(WebSocket ws, const Message& message) override;
  void webSocketClose(WebSocket ws, const CloseInfo& info) override;
  void webSocketError(WebSocket ws, std::string_view reason) override;

 private:
  using json = nlohmann::json;

  // --- both roles --------------------------------------------------------------------
  Response connect(Request& request);
  void socketGone(WebSocket& ws);
  void handleChat(WebSocket& ws, const json& attachment, const json& message);
  void handleTyping(WebSocket& ws, const json& attachment, const json& message);
  void handlePresence(WebSocket& ws, json attachment, const json& message);
  void handleSync(WebSocket& ws, const json& message);
  // Sends a non-stored event to every member of the channel but `except`.
  void publishEvent(const std::string& frame, const WebSocket* except);
  // Sockets that must not get live traffic yet (shard role: waiting for initial_state).
  BroadcastOptions liveSockets(const WebSocket* except) const;

  // --- channel role: the history and the fan-out -------------------------------------
  Response history(Request& request);
  Response internal(Request& request);
  // Creates the tables, or migrates a history the previous version wrote (integer ids).
  void ensureSchema();
  void migrateIntegerIds();
  json storeMessage(const std::string& userId, const std::string& username,
                    const std::string& content, const json& threadId);
  json recentMessages(size_t count);
  json messagesAfter(int64_t afterSeq, size_t limit);
  // Sets after.seq from after.id; false if the channel has no message with that id.
  bool resolve(channel::After& after);
  // The UUID of the message a resolved position names, or null (the start, or past the end).
  json idOf(const channel::After& after);
  // {"id": UUID or null, "seq": 0 when the history is empty} of the newest message.
  json lastMessage();
  json onlineUsers();
  // Member rows carry the id of the process that wrote them. Rows of another process may name
  // sockets that died with it (an earlier run of the host) or sockets that are still open on
  // a shard of another host (in a cluster this object may move between hosts, its shards
  // stay): once per instance, each shard with such rows is asked which sockets it holds.
  void checkOldMembers();
  // The shard's answer: its rows of other processes are kept (now as this process's) for the
  // sockets it still holds, and dropped for the others.
  void confirmMembers(int shard, const Response& reply);
  // Shards with members, those whose rows are not confirmed yet included (a message reaches
  // them rather than being lost; at worst a shard gets it with no socket left), and the
  // number of confirmed members (all shards plus local sockets); cached until the next change
  // of the rows.
  const std::vector<int>& memberShards();
  int64_t memberCount();
  void fanOut(const std::string& frame, std::optional<int> exceptShard,
              std::optional<int64_t> seq);

  // --- shard role ----------------------------------------------------------------------
  Response connectShard(Request& request, const json& identity, size_t maxConnections);
  void joined(WebSocket ws, const Response& reply);
  void callChannel(const std::string& path, std::string body,
                   std::function<void(Response)> onResponse);

  ObjectState& state_;
  std::string channelId_;
  std::optional<int> shard_;  // set in the shard role

  // Caches, rebuilt after eviction (the truth is in storage and attachments).
  bool schemaReady_ = false;
  bool oldMembersChecked_ = false;
  std::optional<std::vector<int>> memberShards_;
  int64_t memberCount_ = 0;  // valid with memberShards_
  // Shard role: sockets accepted but not yet sent initial_state (a join call is pending,
  // which keeps this instance in memory), the highest message seq broadcast here, and the
  // last known number of members on the other shards (for the connection limit).
  std::map<uint64_t, WebSocket> joining_;
  int64_t lastSeq_ = 0;
  size_t othersKnown_ = 0;
};

// The `channels` app: authenticates (HS256 JWT), refuses internal paths, routes a channel's
// requests to its object (or a user's shard of it) and serves the demo page at `/`.
class ChannelsApp final : public App {
 public:
  explicit ChannelsApp(const AppSettings& settings);
  Route route(Request& request) override;

  // Which shard of `shards` a user's sockets go to (stable across restarts).
  static int shardOf(std::string_view userId, int shards);

 private:
  std::optional<nlohmann::json> authenticate(const Request& request, std::string* error) const;

  std::string jwtSecret_;
  size_t maxConnections_ = kChannelDefaultMaxConnections;
  int shards_ = 1;
};

}  // namespace dohost::objects
