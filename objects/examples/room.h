// The WebSocket example of docs/api.md (see counter.h): a chat room that keeps each member's
// name in its socket attachment, so it can be evicted between messages and forget no one.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "dohost/dohost.h"
#include "dohost/json.h"

namespace counter_example {

// [doc:room]
// Clients connect to /room/<name>?user=<who> and send {"text": "..."}; every other member
// gets {"from": "<who>", "text": "..."}, and {"left": "<who>"} when someone leaves.
class Room final : public dohost::DurableObject {
 public:
  explicit Room(dohost::ObjectState& state) : state_(state) {}

  dohost::Response fetch(dohost::Request& request) override {
    if (!request.isWebSocketUpgrade()) return dohost::Response::text(426, "upgrade\n");
    std::string user = request.queryParam("user").value_or("anonymous");
    if (user.empty() || user.size() > 64 || !dohost::isValidIdText(user)) {
      return dohost::Response::text(400, "bad user\n");  // also refuses the upgrade
    }
    dohost::WebSocket ws = state_.acceptWebSocket(request, {"member"});
    ws.serializeAttachment(nlohmann::json{{"user", user}}.dump());
    return dohost::Response::upgrade(ws);  // any other response refuses the upgrade
  }

  void webSocketMessage(dohost::WebSocket ws, const dohost::Message& m) override {
    dohost::JsonError error;
    std::optional<nlohmann::json> msg = dohost::parseJson(m.text(), dohost::jsonLimits(), &error);
    if (!msg) return (void)ws.send(nlohmann::json{{"error", error.message}}.dump());
    if (!msg->is_object() || !msg->contains("text") || !(*msg)["text"].is_string()) {
      return (void)ws.send(R"({"error":"send {\"text\": \"...\"}"})");
    }
    nlohmann::json out{{"from", userOf(ws)}, {"text", (*msg)["text"]}};
    state_.broadcast(out.dump(), {.tags = {"member"}, .except = {ws}});
  }

  // Once per accepted socket; `ws` is no longer among getWebSockets().
  void webSocketClose(dohost::WebSocket ws, const dohost::CloseInfo& info) override {
    state_.broadcast(nlohmann::json{{"left", userOf(ws)}}.dump());
  }

 private:
  static std::string userOf(const dohost::WebSocket& ws) {
    // The attachment is kept by the host, so it is there after an eviction too.
    auto parsed = dohost::parseJson(ws.deserializeAttachment().value_or("{}"));
    return parsed ? parsed->value("user", "anonymous") : "anonymous";
  }

  dohost::ObjectState& state_;
};
// [/doc:room]

}  // namespace counter_example
