// Broadcaster (seed 001, app `broadcaster`): one object per projectId relaying messages
// between `runtime`, `data-agent` and `admin` clients, routed by the message's `to` field.
// The protocol is described for users in docs/apps/broadcaster.md.
#include <string>
#include <vector>

#include "dohost/dohost.h"
#include "objects/project_app.h"
#include "objects/register_all.h"

namespace dohost::objects {
namespace {

using project::Json;

const std::vector<std::string> kBroadcasterClientTypes = {"runtime", "data-agent", "admin"};

bool isClientType(const std::string& type) {
  return std::find(kBroadcasterClientTypes.begin(), kBroadcasterClientTypes.end(), type) != kBroadcasterClientTypes.end();
}

// Routing (the seed's three rules):
//   to.id          -> that client only, plus a copy to every admin;
//   to.type        -> every client of that type but the sender, plus every admin;
//   no `to`        -> every other client except admins.
// Each fan-out is one state.broadcast(): the frame is built once and its bytes shared, and a
// socket matching two tags (an admin targeted by type) gets it once.
class Broadcaster final : public project::ProjectObject {
 public:
  explicit Broadcaster(ObjectState& state) : ProjectObject(state) {}

  Response fetch(Request& request) override {
    if (request.path() == "/websocket") return upgrade(request);
    if (request.path() == "/status") return status();
    if (request.path() == "/health") {
      return project::jsonResponse(200, Json{{"status", "healthy"},
                                             {"projectId", projectId()},
                                             {"clientCount", state_.countWebSockets()},
                                             {"lastActivity", lastActivityJson()},
                                             {"timestamp", nowMs()}});
    }
    return project::jsonResponse(404, project::errorBody("Not found"));
  }

  void webSocketMessage(WebSocket ws, const Message& message) override {
    std::optional<project::ClientInfo> sender = project::clientInfo(ws);
    if (!sender) return;  // not one of ours (cannot happen: every socket gets an attachment)
    touchActivity();

    JsonError error;
    std::optional<Json> parsed = parseJson<Json>(message.data, jsonLimits(), &error);
    if (!parsed) return sendError(ws, "invalid_json", project::jsonErrorText(error));
    Json& msg = *parsed;
    if (!msg.is_object()) return sendError(ws, "invalid_message", "Message must be a JSON object");
    // The client's own message id, echoed in errors so it can tell which message failed.
    std::optional<std::string> messageId;
    if (auto id = msg.find("id"); id != msg.end() && id->is_string() &&
                                  !id->get_ref<const std::string&>().empty()) {
      messageId = id->get<std::string>();
    }
    auto type = msg.find("type");
    if (type == msg.end() || !type->is_string() || type->get_ref<const std::string&>().empty()) {
      return sendError(ws, "missing_type", "Message type is required", messageId);
    }
    if (!messageId) msg["id"] = project::newUuid();
    // The server, not the client, says who sent it.
    if (!msg.contains("from") || !msg["from"].is_object()) msg["from"] = Json::object();
    msg["from"]["type"] = sender->type;
    msg["from"]["id"] = sender->id;

    auto to = msg.find("to");
    if (to == msg.end() || to->is_null()) {
      state_.broadcast(dump(msg), {{"runtime", "data-agent"}, {ws}});
      return;
    }
    if (!to->is_object()) {
      return sendError(ws, "invalid_target", "'to' must be an object with an id or a type",
                       messageId);
    }
    auto field = [&](const char* name) -> const Json* {
      auto it = to->find(name);
      return it == to->end() || it->is_null() ? nullptr : &*it;
    };
    const Json* toId = field("id");
    const Json* toType = field("type");
    if (toId) {
      if (!toId->is_string() || toId->get_ref<const std::string&>().empty()) {
        return sendError(ws, "invalid_target", "to.id must be a non-empty string", messageId);
      }
      const std::string& target = toId->get_ref<const std::string&>();
      std::string tag = project::clientTag(target);
      if (state_.countWebSockets(tag) == 0) {
        return sendError(ws, "unknown_target", "Target client not found: " + target, messageId);
      }
      BroadcastOptions options{{tag, "admin"}, {}};
      if (target != sender->id) options.except.push_back(ws);  // a client may address itself
      state_.broadcast(dump(msg), options);
      return;
    }
    if (toType) {
      if (!toType->is_string() || !isClientType(toType->get_ref<const std::string&>())) {
        std::string shown =
            toType->is_string() ? toType->get<std::string>() : dump(*toType);
        return sendError(ws, "unknown_target", "Unknown target type: " + shown, messageId);
      }
      const std::string& targetType = toType->get_ref<const std::string&>();
      size_t recipients = state_.countWebSockets(targetType) - (sender->type == targetType ? 1 : 0);
      if (recipients == 0) {
        return sendError(ws, "unknown_target", "No connected client of type " + targetType,
                         messageId);
      }
      state_.broadcast(dump(msg), {{targetType, "admin"}, {ws}});
      return;
    }
    sendError(ws, "invalid_target", "'to' needs an id or a type", messageId);
  }

  void webSocketClose(WebSocket ws, const CloseInfo& info) override { leave(ws); }
  void webSocketError(WebSocket ws, std::string_view reason) override { leave(ws); }

 private:
  Response upgrade(Request& request) {
    // The router validated these; checked again so the object stands on its own.
    std::optional<std::string> type = request.queryParam("type");
    if (!request.isWebSocketUpgrade()) {
      return project::jsonResponse(426, project::errorBody("Expected Upgrade: websocket"));
    }
    if (!type || !isClientType(*type)) {
      return project::jsonResponse(400, project::errorBody("Invalid type parameter"));
    }
    auto [ws, client] = acceptClient(request, *type);
    ws.send(dump(Json{{"id", project::newUuid()},
                               {"type", "connected"},
                               {"from", {{"type", "system"}}},
                               {"payload",
                                {{"clientId", client.id},
                                 {"clientType", client.type},
                                 {"projectId", projectId()},
                                 {"message", "Connected to project " + projectId()},
                                 {"clientCount", state_.countWebSockets()},
                                 {"timestamp", nowMs()}}}}));
    return Response::upgrade(ws);
  }

  void leave(const WebSocket& ws) {
    std::optional<project::ClientInfo> client = project::clientInfo(ws);
    clientGone(ws);
    if (!client) return;
    // The closed socket is no longer among the object's sockets: this reaches the rest.
    state_.broadcast(dump(Json{{"id", project::newUuid()},
                                        {"type", "client_left"},
                                        {"from", {{"type", "system"}}},
                                        {"payload",
                                         {{"clientId", client->id},
                                          {"clientType", client->type},
                                          {"projectId", projectId()},
                                          {"clientCount", state_.countWebSockets()},
                                          {"timestamp", nowMs()}}}}));
  }

  Response status() {
    int64_t now = nowMs();
    Json list = Json::array();
    Json counts = {{"runtime", 0}, {"data-agent", 0}, {"admin", 0}};
    for (const auto& [ws, c] : clients()) {
      list.push_back(clientJson(c, now));
      if (counts.contains(c.type)) counts[c.type] = counts[c.type].get<int64_t>() + 1;
    }
    return project::jsonResponse(200,
                                 Json{{"projectId", projectId()},
                                      {"clientCount", list.size()},
                                      {"counts", counts},
                                      {"lastActivity", lastActivityJson()},
                                      {"clients", list},
                                      {"timestamp", now}},
                                 2);
  }

  // An `error` in the seed's envelope, to the sender only; `messageId` is the id the client
  // gave the offending message, if any.
  void sendError(WebSocket& ws, std::string_view code, const std::string& text,
                 const std::optional<std::string>& messageId = std::nullopt) {
    Json payload = {{"code", code},
                    {"message", text},
                    {"projectId", projectId()},
                    {"timestamp", nowMs()}};
    if (messageId) payload["messageId"] = *messageId;
    ws.send(dump(Json{{"id", project::newUuid()},
                               {"type", "error"},
                               {"from", {{"type", "system"}}},
                               {"payload", payload}}));
  }
};

}  // namespace

void registerBroadcaster(Registry& registry) {
  registry.addClass<Broadcaster>("Broadcaster");
  registry.addApp({"broadcaster", "127.0.0.1:8787", [](const AppSettings& settings) {
                     return std::make_unique<project::ProjectApp>(settings, "broadcaster",
                                                                  "Broadcaster", kBroadcasterClientTypes);
                   }});
}

}  // namespace dohost::objects
