// HopeFlow Realtime (seed 003): per-user WebSocket fan-out with an authenticated publish API.
// The app router authenticates every request with an HS256 JWT and hands it to the user's
// object; the object keeps the user's sockets, their subscription filters (in the socket
// attachments, so they survive hibernation) and the publishes still waiting for acks.
// The wire protocol is described in docs/apps/hopeflow.md.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "dohost/dohost.h"

namespace dohost::objects {

inline constexpr const char* kHopeFlowClass = "HopeFlowRealtime";

// Set by the router after it verified the token; a copy sent by the client is removed first,
// so the object can trust it.
inline constexpr const char* kHopeFlowUserHeader = "x-hopeflow-user";
// The app's ack timeout (setting `ack_timeout_ms`), passed to the object with each publish
// because settings belong to the app, not to the object class.
inline constexpr const char* kHopeFlowAckTimeoutHeader = "x-hopeflow-ack-timeout-ms";

// The seed's limit: a subscribe or unsubscribe message handles at most this many filters;
// the rest of its list is ignored.
inline constexpr size_t kMaxFiltersPerMessage = 50;
// The seed waits up to 5 s for acks before it answers /publish with what arrived.
inline constexpr int64_t kDefaultAckTimeoutMs = 5000;
inline constexpr int64_t kMaxAckTimeoutMs = 600000;

// One user's object (one per userId). Thread: the loop thread, like every object.
class HopeFlowRealtime final : public DurableObject {
 public:
  explicit HopeFlowRealtime(ObjectState& state);
  // The instance can go with publishes still waiting only when it is forced out (the admin
  // API's evict, host shutdown); their callers then get the acks that arrived so far.
  ~HopeFlowRealtime() override;

  Response fetch(Request& request) override;
  void webSocketMessage(WebSocket ws, const Message& message) override;
  void webSocketClose(WebSocket ws, const CloseInfo& info) override;
  void webSocketError(WebSocket ws, std::string_view reason) override;

 private:
  // A publish waiting for its acks. Kept only in memory: the runtime does not evict an object
  // with a pending response or a pending timer, so the instance lives until it is answered.
  struct PendingPublish {
    PendingResponse response;
    std::set<uint64_t> awaiting;  // ids of matched sockets that have not acked yet
    nlohmann::json results = nlohmann::json::array();
    size_t clientCount = 0;
    TimerId deadline = 0;
  };

  Response connect(Request& request);
  Response publish(Request& request);
  void changeFilters(WebSocket& ws, const nlohmann::json& message, bool subscribe);
  void acknowledge(WebSocket& ws, const nlohmann::json& message);
  // Answers the publish `envelopeId` with the acks that arrived, and forgets it.
  void finish(const std::string& envelopeId);
  // A socket that went away will never ack: stop waiting for it.
  void forgetSocket(const WebSocket& ws);
  // The socket's filters, read from its attachment once per instance and cached.
  const std::vector<nlohmann::json>& filtersOf(const WebSocket& ws);
  std::string newEnvelopeId();

  ObjectState& state_;  // outlives this instance (owned by the runtime's slot)
  std::map<uint64_t, std::vector<nlohmann::json>> filterCache_;  // by socket id
  std::map<std::string, PendingPublish> pending_;                // by envelopeId
  std::mt19937_64 random_;
};

// The `hopeflow` app: authentication, request validation, routing to the user's object, CORS.
class HopeFlowApp final : public App {
 public:
  explicit HopeFlowApp(const AppSettings& settings);
  Route route(Request& request) override;

 private:
  // The verified userId of the request's token, or nullopt with `error` set.
  std::optional<std::string> authenticate(const Request& request, std::string* error) const;
  Route publish(Request& request) const;

  std::string jwtSecret_;
  int64_t ackTimeoutMs_ = kDefaultAckTimeoutMs;
};

// True if the envelope (type + payload) satisfies the filter: every key must match exactly,
// `type` against the envelope's type, any other key against the payload field of that name.
bool hopeFlowFilterMatches(const nlohmann::json& filter, const std::string& type,
                           const nlohmann::json* payload);

}  // namespace dohost::objects
