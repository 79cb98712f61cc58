// WebSocketBridge (seed 000, app `bridge`): one object per projectId connecting `runtime`
// clients to data `agent`s: queries go to an agent, answers come back to the client that
// asked (by requestId), and without an agent the object answers with dummy data itself.
// `admin` clients see a copy of every forwarded message. Users' reference:
// docs/apps/bridge.md.
#include <cctype>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "dohost/dohost.h"
#include "objects/project_app.h"
#include "objects/register_all.h"

namespace dohost::objects {
namespace {

using project::Json;

const std::vector<std::string> kBridgeClientTypes = {"runtime", "agent", "admin"};

// An unanswered request is forgotten after this long (or when its client leaves).
constexpr int64_t kPendingRequestTtlMs = 10 * 60 * 1000;

// A requestId as a table key: strings as they are, other JSON values as their JSON text.
std::string requestKey(const Json& requestId) {
  return requestId.is_string() ? requestId.get<std::string>() : dump(requestId);
}

std::string isoTime(int64_t unixMs) {
  std::time_t seconds = static_cast<std::time_t>(unixMs / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[40];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(unixMs % 1000));
  return out;
}

// What a runtime gets for a graphql_query when no agent is connected: a fixed data set
// chosen by the words in the query, so a runtime can be developed without an agent.
Json dummyQueryData(const std::string& query, const std::string& projectId, int64_t now) {
  std::string lower = query;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  constexpr int64_t kDay = 24 * 60 * 60 * 1000;
  if (lower.find("posts") != std::string::npos) {
    Json posts = Json::array();
    const char* titles[] = {"Hello world", "Durable Objects are great",
                            "One object per project", "Routing by requestId"};
    for (int i = 0; i < 4; ++i) {
      posts.push_back({{"id", std::to_string(i + 1)},
                       {"title", titles[i]},
                       {"content", std::string("Sample content for post ") + std::to_string(i + 1)},
                       {"author", {{"id", i == 3 ? projectId : "user" + std::to_string(i + 1)},
                                   {"name", i == 3 ? "Current User" : "Sample Author"}}},
                       {"createdAt", isoTime(now - (i + 1) * kDay)},
                       {"published", i != 3}});
    }
    return Json{{"posts", posts}};
  }
  if (lower.find("users") != std::string::npos) {
    return Json{{"users",
                 {{{"id", "user1"}, {"name", "Ada Example"}, {"email", "ada@example.com"},
                   {"role", "admin"}, {"createdAt", isoTime(now - 30 * kDay)}},
                  {{"id", "user2"}, {"name", "Lin Example"}, {"email", "lin@example.com"},
                   {"role", "editor"}, {"createdAt", isoTime(now - 20 * kDay)}},
                  {{"id", projectId}, {"name", "Current User"}, {"email", "current@example.com"},
                   {"role", "user"}, {"createdAt", isoTime(now - 10 * kDay)}}}}};
  }
  return Json{{"message", "Dummy data response"},
              {"query", query},
              {"projectId", projectId},
              {"timestamp", isoTime(now)},
              {"note", "This is test data - no data agent connected"}};
}

// What a runtime gets for get_docs when no agent is connected.
Json dummyDocs(const std::string& projectId) {
  auto column = [](const char* type, bool required, const char* description) {
    return Json{{"type", type}, {"required", required}, {"description", description}};
  };
  return Json{
      {"databaseName", "project_" + projectId + "_database"},
      {"version", "1.0.0"},
      {"documentation", "Sample database documentation (no data agent connected)"},
      {"tables",
       {{"users",
         {{"description", "User accounts"},
          {"columns",
           {{"id", column("UUID", true, "User id")},
            {"email", column("VARCHAR(255)", true, "Email address")},
            {"name", column("VARCHAR(100)", true, "Full name")},
            {"role", column("VARCHAR(50)", false, "Role")},
            {"created_at", column("TIMESTAMP", true, "Creation time")}}}}},
        {"posts",
         {{"description", "Posts written by users"},
          {"columns",
           {{"id", column("UUID", true, "Post id")},
            {"title", column("VARCHAR(200)", true, "Title")},
            {"content", column("TEXT", false, "Body")},
            {"author_id", column("UUID", true, "The author (users.id)")},
            {"published", column("BOOLEAN", true, "Visible to readers")},
            {"created_at", column("TIMESTAMP", true, "Creation time")}}}}}}},
      {"queries",
       {{{"name", "posts"}, {"example", "query { posts { id title author { name } } }"}},
        {{"name", "users"}, {"example", "query { users { id name email } }"}}}},
      {"dummy", true}};
}

// Message flow (types as in the seed):
//   runtime -> graphql_query / get_docs -> one agent (the earliest connected), with runtimeId
//   agent   -> query_response / docs    -> the client that asked, found by requestId
//   any     -> ping                     -> pong to the sender
// Every forwarded message (and every dummy answer) goes to the admins too, in the same
// broadcast: the frame is built once.
class WebSocketBridge final : public project::ProjectObject {
 public:
  explicit WebSocketBridge(ObjectState& state) : ProjectObject(state) {}

  Response fetch(Request& request) override {
    if (request.path() == "/websocket") return upgrade(request);
    if (request.path() == "/status") return status();
    if (request.path() == "/health") {
      return project::jsonResponse(200, Json{{"status", "healthy"},
                                             {"projectId", projectId()},
                                             {"timestamp", nowMs()},
                                             {"hasRuntime", state_.countWebSockets("runtime") > 0},
                                             {"agentCount", state_.countWebSockets("agent")},
                                             {"clientCount", state_.countWebSockets()},
                                             {"lastActivity", lastActivityJson()}});
    }
    return project::jsonResponse(404, project::errorBody("Not found"));
  }

  void webSocketMessage(WebSocket ws, const Message& message) override {
    std::optional<project::ClientInfo> sender = project::clientInfo(ws);
    if (!sender) return;
    touchActivity();

    JsonError error;
    std::optional<Json> parsed = parseJson<Json>(message.data, jsonLimits(), &error);
    if (!parsed) return sendError(ws, "invalid_json", project::jsonErrorText(error));
    Json& msg = *parsed;
    if (!msg.is_object()) return sendError(ws, "invalid_message", "Message must be a JSON object");
    auto type = msg.find("type");
    if (type == msg.end() || !type->is_string() || type->get_ref<const std::string&>().empty()) {
      return sendError(ws, "missing_type", "Message type is required", requestIdOf(msg));
    }
    const std::string kind = type->get<std::string>();
    if (kind == "graphql_query" || kind == "get_docs") return askAgent(ws, *sender, msg, kind);
    if (kind == "query_response" || kind == "docs") return answerAsker(ws, *sender, msg, kind);
    if (kind == "ping") {
      Json pong = {{"type", "pong"}, {"timestamp", nowMs()}};
      if (Json id = requestIdOf(msg); !id.is_null()) pong["requestId"] = id;
      ws.send(dump(pong));
      return;
    }
    if (kind == "pong") return;  // a heartbeat answer: nothing to do
    sendError(ws, "unknown_type", "Unknown message type: " + kind, requestIdOf(msg));
  }

  void webSocketClose(WebSocket ws, const CloseInfo& info) override { leave(ws); }
  void webSocketError(WebSocket ws, std::string_view reason) override { leave(ws); }

 protected:
  void afterDeleteAll() override { schemaReady_ = false; }

 private:
  Response upgrade(Request& request) {
    std::optional<std::string> type = request.queryParam("type");
    if (!request.isWebSocketUpgrade()) {
      return project::jsonResponse(426, project::errorBody("Expected Upgrade: websocket"));
    }
    if (!type || std::find(kBridgeClientTypes.begin(), kBridgeClientTypes.end(), *type) == kBridgeClientTypes.end()) {
      return project::jsonResponse(400, project::errorBody("Invalid type parameter"));
    }
    auto [ws, client] = acceptClient(request, *type);
    ws.send(dump(Json{{"type", "connected"},
                               {"clientId", client.id},
                               {"clientType", client.type},
                               {"projectId", projectId()},
                               {"message", "Connected as " + client.type + " for project " +
                                               projectId()},
                               {"clientCount", state_.countWebSockets()},
                               {"timestamp", nowMs()}}));
    return Response::upgrade(ws);
  }

  void leave(const WebSocket& ws) {
    std::optional<project::ClientInfo> client = project::clientInfo(ws);
    if (client && tableExists()) {
      Sql& sql = state_.storage().sql();
      if (client->type == "agent") {
        // Whoever waits for this agent would wait forever: tell them now.
        SqlCursor rows = sql.exec(
            "SELECT request_json, client_id FROM pending_requests WHERE agent_id = ?", client->id);
        for (const SqlRow& row : rows) {
          Json requestId = parseJson<Json>(row.text(0)).value_or(Json(nullptr));
          std::vector<WebSocket> askers = state_.getWebSockets(project::clientTag(row.text(1)));
          for (WebSocket& asker : askers) {
            sendError(asker, "agent_gone", "The agent handling this request disconnected",
                      requestId);
          }
        }
        sql.exec("DELETE FROM pending_requests WHERE agent_id = ?", client->id);
      } else {
        sql.exec("DELETE FROM pending_requests WHERE client_id = ?", client->id);
      }
    }
    clientGone(ws);
  }

  // graphql_query / get_docs from a runtime (or an admin): to the earliest connected agent,
  // or answered here with dummy data.
  void askAgent(WebSocket& ws, const project::ClientInfo& sender, Json& msg,
                const std::string& kind) {
    if (sender.type == "agent") {
      return sendError(ws, "wrong_sender", kind + " is sent by runtime clients, not agents",
                       requestIdOf(msg));
    }
    if (!msg.contains("requestId") || msg["requestId"].is_null()) {
      msg["requestId"] = project::newUuid();  // so the answer can still find its way back
    }
    msg["projectId"] = projectId();
    std::vector<WebSocket> agents = state_.getWebSockets("agent");
    std::optional<project::ClientInfo> agent;
    for (const WebSocket& a : agents) {
      if (a.isOpen() && (agent = project::clientInfo(a))) break;
    }
    if (!agent) {
      Json reply = {{"type", kind == "graphql_query" ? "query_response" : "docs"},
                    {"requestId", msg["requestId"]},
                    {"projectId", projectId()}};
      if (kind == "graphql_query") {
        std::string query = msg.contains("query") && msg["query"].is_string()
                                ? msg["query"].get<std::string>()
                                : std::string();
        reply["data"] = dummyQueryData(query, projectId(), nowMs());
      } else {
        reply["data"] = dummyDocs(projectId());
      }
      reply["timestamp"] = nowMs();
      reply["dummy"] = true;
      // The asker and the admins; an admin asker gets it once.
      state_.broadcast(dump(reply), {{project::clientTag(sender.id), "admin"}, {}});
      return;
    }
    msg["runtimeId"] = sender.id;
    ensureTable();
    int64_t now = nowMs();
    Sql& sql = state_.storage().sql();
    sql.exec("DELETE FROM pending_requests WHERE created_at < ?", now - kPendingRequestTtlMs);
    sql.exec("INSERT OR REPLACE INTO pending_requests "
             "(request_id, client_id, agent_id, request_json, created_at) VALUES (?, ?, ?, ?, ?)",
             requestKey(msg["requestId"]), sender.id, agent->id, dump(msg["requestId"]),
             now);
    state_.broadcast(dump(msg), {{project::clientTag(agent->id), "admin"}, {ws}});
  }

  // query_response / docs from an agent: back to the client that asked. The pending request
  // names it; an agent may also name it with `runtimeId` (which it received with the query).
  // Without either, every runtime of the project gets the answer (one runtime is the usual
  // case, and the seed's bridge had exactly one).
  void answerAsker(WebSocket& ws, const project::ClientInfo& sender, Json& msg,
                   const std::string& kind) {
    if (sender.type != "agent") {
      return sendError(ws, "wrong_sender", kind + " is sent by agents", requestIdOf(msg));
    }
    msg["projectId"] = projectId();
    std::optional<std::string> named;
    if (auto r = msg.find("runtimeId"); r != msg.end() && r->is_string()) {
      named = r->get<std::string>();
    }
    std::optional<std::string> target;
    Json requestId = requestIdOf(msg);
    if (!requestId.is_null() && tableExists()) {
      std::string key = requestKey(requestId);
      SqlCursor rows = state_.storage().sql().exec(
          "SELECT client_id FROM pending_requests WHERE request_id = ? "
          "ORDER BY created_at, rowid", key);
      for (const SqlRow& row : rows) {
        if (!target || (named && row.text(0) == *named)) target = row.text(0);
      }
      if (target) {
        state_.storage().sql().exec(
            "DELETE FROM pending_requests WHERE request_id = ? AND client_id = ?", key, *target);
      }
    }
    if (!target && named && state_.countWebSockets(project::clientTag(*named)) > 0) target = named;
    std::string text = dump(msg);
    if (target) {
      if (state_.countWebSockets(project::clientTag(*target)) == 0) {
        return sendError(ws, "requester_gone", "The client that asked has disconnected",
                         requestId);
      }
      state_.broadcast(text, {{project::clientTag(*target), "admin"}, {ws}});
      return;
    }
    if (state_.countWebSockets("runtime") == 0) {
      return sendError(ws, "no_runtime", "No runtime is connected to receive " + kind,
                       requestId);
    }
    state_.broadcast(text, {{"runtime", "admin"}, {ws}});
  }

  Response status() {
    int64_t now = nowMs();
    Json runtimes = Json::array(), agents = Json::array(), admins = Json::array();
    for (const auto& [ws, c] : clients()) {
      Json entry = clientJson(c, now);
      if (c.type == "runtime") runtimes.push_back(entry);
      if (c.type == "agent") agents.push_back(entry);
      if (c.type == "admin") admins.push_back(entry);
    }
    Json connections = {{"runtime", runtimes.empty() ? Json(nullptr) : runtimes[0]},
                        {"runtimes", runtimes},
                        {"agents", agents},
                        {"admins", admins}};
    return project::jsonResponse(
        200,
        Json{{"projectId", projectId()},
             {"hasRuntime", !runtimes.empty()},
             {"runtimeCount", runtimes.size()},
             {"agentCount", agents.size()},
             {"adminCount", admins.size()},
             {"clientCount", runtimes.size() + agents.size() + admins.size()},
             {"lastActivity", lastActivityJson()},
             {"connections", connections},
             {"timestamp", now}},
        2);
  }

  static Json requestIdOf(const Json& msg) {
    if (!msg.is_object()) return nullptr;
    auto it = msg.find("requestId");
    return it == msg.end() ? Json(nullptr) : *it;
  }

  // `error` as in the seed's bridge: flat, with the requestId it concerns when known.
  void sendError(WebSocket& ws, std::string_view code, const std::string& text,
                 const Json& requestId = nullptr) {
    Json err = {{"type", "error"}, {"code", code}, {"message", text}};
    if (!requestId.is_null()) err["requestId"] = requestId;
    err["projectId"] = projectId();
    err["timestamp"] = nowMs();
    ws.send(dump(err));
  }

  // The pending-request table (the only table), made on the first forwarded request.
  void ensureTable() {
    if (schemaReady_) return;
    state_.storage().sql().exec(
        "CREATE TABLE IF NOT EXISTS pending_requests (request_id TEXT NOT NULL, "
        "client_id TEXT NOT NULL, agent_id TEXT NOT NULL, request_json TEXT NOT NULL, "
        "created_at INTEGER NOT NULL, PRIMARY KEY (request_id, client_id))");
    schemaReady_ = true;
  }

  bool tableExists() {
    if (schemaReady_) return true;
    SqlCursor c = state_.storage().sql().exec(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'pending_requests'");
    schemaReady_ = c.size() > 0;
    return schemaReady_;
  }

  bool schemaReady_ = false;  // cache: the table exists
};

}  // namespace

void registerWebSocketBridge(Registry& registry) {
  registry.addClass<WebSocketBridge>("WebSocketBridge");
  registry.addApp({"bridge", "127.0.0.1:8790", [](const AppSettings& settings) {
                     return std::make_unique<project::ProjectApp>(settings, "bridge",
                                                                  "WebSocketBridge", kBridgeClientTypes);
                   }});
}

}  // namespace dohost::objects
