// A plugin for the host's integration tests: loaded with `dohost --plugin`, it registers the
// class TestEcho and the app `testapp`, which expose the hibernation API to a test client as
// JSON commands, and the class TestCrash, whose constructor, fetch or alarm throws on demand.
// It also proves the plugin path works for users' own classes.
#include <map>
#include <nlohmann/json.hpp>

#include "dohost/dohost.h"

namespace {

using dohost::Request;
using dohost::Response;
using dohost::WebSocket;
using nlohmann::json;

// Every event the object saw, kept in storage so a test can read it after evictions.
void record(dohost::ObjectState& state, const json& event) {
  json log = json::parse(state.storage().get("events").value_or("[]"));
  log.push_back(event);
  state.storage().put("events", log.dump());
}

// The schedule runs that failed on purpose, by object name: a failed run's writes roll back,
// so they are kept in the process (lost when the host restarts).
std::map<std::string, json>& failedScheduleRuns() {
  static std::map<std::string, json> runs;
  return runs;
}

class TestEcho final : public dohost::DurableObject {
 public:
  explicit TestEcho(dohost::ObjectState& state) : state_(state) {
    int64_t n = std::stoll(state_.storage().get("constructed").value_or("0")) + 1;
    state_.storage().put("constructed", std::to_string(n));
  }

  Response fetch(Request& request) override {
    if (request.path().ends_with("/events")) {
      return Response::json(200, state_.storage().get("events").value_or("[]"));
    }
    if (request.path().ends_with("/schedule")) return setSchedule(request);
    if (request.path().ends_with("/failed-runs")) {
      json& runs = failedScheduleRuns()[state_.name().value_or("")];
      return Response::json(200, runs.is_null() ? "[]" : runs.dump());
    }
    if (request.path().ends_with("/cancel")) {
      bool existed = state_.cancel(request.queryParam("name").value_or(""));
      return Response::json(200, json{{"cancelled", existed}}.dump());
    }
    if (!request.isWebSocketUpgrade()) return Response::text(426, "upgrade required\n");
    if (request.header("x-refuse")) return Response::json(403, R"({"error":"refused"})");
    std::vector<std::string> tags;
    std::string list = request.queryParam("tags").value_or("");
    for (size_t i = 0; i < list.size();) {
      size_t j = list.find(',', i);
      if (j == std::string::npos) j = list.size();
      tags.push_back(list.substr(i, j - i));
      i = j + 1;
    }
    WebSocket ws = state_.acceptWebSocket(request, tags);
    if (auto att = request.queryParam("att")) ws.serializeAttachment(*att);
    if (auto code = request.queryParam("refuseWith")) {
      // Accept, explain, and close during the upgrade: the client must get both.
      ws.send(json{{"type", "error"}, {"message", "refused during the upgrade"}}.dump());
      ws.close(std::stoi(*code), "refused");
      return Response::upgrade(ws);
    }
    ws.send(json{{"hello", state_.name().value_or("")}, {"tags", tags}}.dump());
    return Response::upgrade(ws);
  }

  void webSocketMessage(WebSocket ws, const dohost::Message& message) override {
    if (message.binary) {
      ws.sendBinary(message.data);  // binary echo
      return;
    }
    json cmd = json::parse(message.data, nullptr, false);
    if (!cmd.is_object()) {
      ws.send(json{{"echo", message.data}}.dump());
      return;
    }
    std::string op = cmd.value("cmd", "");
    auto& st = state_;
    if (op == "tags") {
      ws.send(json{{"tags", ws.tags()}}.dump());
    } else if (op == "count") {
      ws.send(json{{"count", st.getWebSockets(cmd.value("tag", "")).size()}}.dump());
    } else if (op == "broadcast") {
      dohost::BroadcastOptions options;
      if (cmd.contains("tag")) options.tags.push_back(cmd["tag"]);
      if (cmd.value("exceptSelf", false)) options.except.push_back(ws);
      size_t n = st.broadcast(json{{"broadcast", cmd.value("text", "")}}.dump(), options);
      ws.send(json{{"sentTo", n}}.dump());
    } else if (op == "attachment") {
      auto att = ws.deserializeAttachment();
      ws.send(json{{"attachment", att ? json(*att) : json(nullptr)}}.dump());
    } else if (op == "setAttachment") {
      try {
        ws.serializeAttachment(std::string(cmd.value("size", 0), 'a') + cmd.value("value", ""));
        ws.send(R"({"ok":true})");
      } catch (const dohost::UsageError& e) {
        ws.send(json{{"error", e.what()}}.dump());
      }
    } else if (op == "constructed") {
      ws.send(json{{"constructed", std::stoll(st.storage().get("constructed").value_or("0"))}}.dump());
    } else if (op == "close") {
      ws.close(cmd.value("code", 1000), cmd.value("reason", ""));
    } else if (op == "auto") {
      st.setWebSocketAutoResponse(cmd.value("request", ""), cmd.value("response", ""));
      ws.send(R"({"ok":true})");
    } else if (op == "autoTimestamp") {
      auto t = st.getWebSocketAutoResponseTimestamp(ws);
      ws.send(json{{"autoTimestamp", t ? json(dohost::toUnixMillis(*t)) : json(nullptr)}}.dump());
    } else if (op == "sendThenThrow") {
      st.storage().put("thrown", "yes");
      st.broadcast(R"({"leaked":true})");
      throw std::runtime_error("failed after sending");
    } else if (op == "stored") {
      ws.send(json{{"thrown", st.storage().get("thrown").value_or("no")}}.dump());
    } else if (op == "flood") {
      std::string chunk(cmd.value("size", 65536), 'x');
      for (int i = 0; i < cmd.value("count", 1); ++i) ws.send(chunk);
    } else if (op == "transfer") {
      // Hands this socket to the TestEcho named `to`, whose fetch() sees `query` (tags, att).
      Request moved("GET", "/o/" + cmd.value("to", std::string()), cmd.value("query", std::string()));
      if (cmd.value("refuse", false)) moved.setHeader("x-refuse", "1");
      st.transferWebSocket(ws, "TestEcho", cmd.value("to", std::string()), std::move(moved));
      if (cmd.value("thenThrow", false)) throw std::runtime_error("failed after transferring");
      ws.send(R"({"transferring":true})");  // from the old object, before the hand-over
    } else if (op == "put") {  // a write every socket of the object hears of
      st.storage().put("kv:" + cmd.value("key", ""), cmd.value("value", ""));
      st.broadcast(json{{"put", cmd.value("key", "")}, {"value", cmd.value("value", "")}}.dump());
    } else if (op == "get") {
      auto v = st.storage().get("kv:" + cmd.value("key", ""));
      ws.send(json{{"key", cmd.value("key", "")}, {"value", v ? json(*v) : json(nullptr)}}.dump());
    } else if (op == "alarm") {
      st.storage().setAlarm(st.now() + dohost::Duration(cmd.value("ms", 0)));
      ws.send(R"({"ok":true})");
    } else {
      ws.send(json{{"echo", message.data}}.dump());
    }
  }

  void webSocketClose(WebSocket ws, const dohost::CloseInfo& info) override {
    record(state_, {{"event", "close"}, {"code", info.code}, {"reason", info.reason},
                    {"wasClean", info.wasClean}, {"attachment", ws.deserializeAttachment().value_or("")}});
    state_.broadcast(json{{"closed", ws.deserializeAttachment().value_or("")}, {"code", info.code}}.dump());
  }

  void webSocketError(WebSocket ws, std::string_view reason) override {
    record(state_, {{"event", "error"}, {"reason", std::string(reason)},
                    {"attachment", ws.deserializeAttachment().value_or("")}});
  }

  void alarm(const dohost::AlarmInfo& info) override {
    record(state_, {{"event", "alarm"}, {"retry", info.retryCount}});
    state_.broadcast(R"({"alarm":true})");
  }

  // Recorded, then a payload "fail" throws (the run is retried with backoff; the record rolls
  // back, so the failed run is kept in failedScheduleRuns instead).
  void onSchedule(std::string_view name, std::string_view payload,
                  const dohost::ScheduleInfo& info) override {
    record(state_, {{"event", "schedule"}, {"name", std::string(name)},
                    {"payload", std::string(payload)}, {"retry", info.retryCount},
                    {"scheduledTime", dohost::toUnixMillis(info.scheduledTime)},
                    {"at", dohost::toUnixMillis(state_.now())}});
    state_.broadcast(json{{"schedule", std::string(name)}}.dump());
    if (payload == "fail") {
      failedScheduleRuns()[state_.name().value_or("")].push_back(
          {{"name", std::string(name)}, {"retry", info.retryCount}});
      throw std::runtime_error("the schedule fails on purpose");
    }
  }

 private:
  // POST .../schedule {"name", one of "inMs" / "everyMs" / "cron", "payload"}: 200, or 400 with
  // the API's error.
  Response setSchedule(Request& request) {
    json body = json::parse(request.body(), nullptr, false);
    if (!body.is_object()) return Response::json(400, R"({"error":"a JSON object please"})");
    std::string name = body.value("name", "");
    std::string payload = body.value("payload", "");
    try {
      if (body.contains("inMs")) {
        state_.schedule(name, state_.now() + dohost::Duration(body.value("inMs", 0)), payload);
      } else if (body.contains("everyMs")) {
        state_.scheduleEvery(name, dohost::Duration(body.value("everyMs", 0)), payload);
      } else {
        state_.scheduleEvery(name, body.value("cron", std::string()), payload);
      }
    } catch (const dohost::UsageError& e) {
      return Response::json(400, json{{"error", e.what()}}.dump());
    }
    return Response::json(200, R"({"ok":true})");
  }

  dohost::ObjectState& state_;
};

// What each TestCrash object (by name) throws from: "constructor", "fetch", "alarm", or nothing.
// Set by the app's /mode/<name>?throw=... route; the app and the class share this process.
std::map<std::string, std::string>& crashModes() {
  static std::map<std::string, std::string> modes;
  return modes;
}

bool throwsFrom(const dohost::ObjectState& state, const std::string& where) {
  auto it = crashModes().find(state.name().value_or(""));
  return it != crashModes().end() && it->second == where;
}

class TestCrash final : public dohost::DurableObject {
 public:
  explicit TestCrash(dohost::ObjectState& state) : state_(state) {
    if (throwsFrom(state_, "constructor")) throw std::runtime_error("TestCrash constructor fails on purpose");
  }

  Response fetch(Request& request) override {
    if (throwsFrom(state_, "fetch")) throw std::runtime_error("TestCrash fetch fails on purpose");
    if (request.isWebSocketUpgrade()) return Response::upgrade(state_.acceptWebSocket(request, {}));
    if (request.queryParam("alarm")) state_.storage().setAlarm(state_.now());
    return Response::json(200, json{{"alarmsRun", std::stoll(state_.storage().get("alarms").value_or("0"))}}.dump());
  }

  void webSocketMessage(WebSocket ws, const dohost::Message& message) override {
    ws.send(json{{"echo", message.data}}.dump());
  }

  void alarm(const dohost::AlarmInfo&) override {
    if (throwsFrom(state_, "alarm")) throw std::runtime_error("TestCrash alarm fails on purpose");
    int64_t n = std::stoll(state_.storage().get("alarms").value_or("0")) + 1;
    state_.storage().put("alarms", std::to_string(n));
  }

 private:
  dohost::ObjectState& state_;
};

class TestApp final : public dohost::App {
 public:
  dohost::Route route(Request& request) override {
    // /o/<name>/... goes to the object <name>; everything else is answered here.
    const std::string& p = request.path();
    if (p.rfind("/o/", 0) == 0) {
      size_t end = p.find('/', 3);
      std::string name = p.substr(3, end == std::string::npos ? std::string::npos : end - 3);
      return dohost::Route::toName("TestEcho", name);
    }
    if (p.rfind("/c/", 0) == 0) return dohost::Route::toName("TestCrash", p.substr(3));
    if (p.rfind("/mode/", 0) == 0) {
      crashModes()[p.substr(6)] = request.queryParam("throw").value_or("");
      return dohost::Route::respond(Response::json(200, R"({"ok":true})"));
    }
    if (p == "/throw") throw std::runtime_error("the router failed");
    if (p == "/slow") {
      return dohost::Route::respond(Response::json(200, R"({"ok":true})"));
    }
    return dohost::Route::respond(Response::json(404, R"({"error":"not found"})"));
  }
};

}  // namespace

extern "C" void dohost_register(dohost::Registry& registry) {
  registry.addClass<TestEcho>("TestEcho");
  registry.addClass<TestCrash>("TestCrash");
  registry.addApp({"testapp", "127.0.0.1:8799",
                   [](const dohost::AppSettings&) { return std::make_unique<TestApp>(); }});
}
