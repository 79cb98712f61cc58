// The examples of docs/api.md, as real code: Counter (HTTP and SQL), Room (WebSockets) and the
// app that routes to them. counter_host.cc builds a host of one's own with them,
// counter_plugin.cc a plugin for dohost; tests/integration/test_host.py runs both, and
// tools/check_docs.py fails when docs/api.md no longer shows this file as it is.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "dohost/dohost.h"
#include "objects/examples/reminders.h"
#include "objects/examples/room.h"

namespace counter_example {

// [doc:counter]
// Counts visits per object; the count lives in SQL, so eviction and restarts lose nothing.
class Counter final : public dohost::DurableObject {
 public:
  explicit Counter(dohost::ObjectState& state) : state_(state) {
    // Runs on every wake-up: keep it idempotent and cheap.
    state_.storage().sql().exec("CREATE TABLE IF NOT EXISTS visits (at INTEGER NOT NULL)");
  }

  dohost::Response fetch(dohost::Request& request) override {
    auto& sql = state_.storage().sql();
    sql.exec("INSERT INTO visits (at) VALUES (?)", dohost::toUnixMillis(state_.now()));
    int64_t n = sql.exec("SELECT count(*) FROM visits").one().integer(0);
    // name() is empty for an object reached by an id from newUniqueId.
    nlohmann::json body{{"id", state_.id()}, {"name", nullptr}, {"visits", n}};
    if (state_.name()) body["name"] = *state_.name();
    return dohost::Response::json(200, body.dump());
  }

 private:
  dohost::ObjectState& state_;  // owned by the runtime; outlives this instance
};

// The app: a router, like a Worker's fetch.
//   GET  /counter/<name>     the counter of that name
//   POST /counter            a new counter with a unique id (the answer says which)
//   GET  /counter/id/<id>    the counter of that id
//   GET  /room/<name>        a WebSocket to the chat room of that name (Room, below)
//   /reminders/<name>        the reminders of that name (Reminders, in reminders.h)
class CounterApp final : public dohost::App {
 public:
  explicit CounterApp(size_t maxNameBytes) : maxNameBytes_(maxNameBytes) {}

  dohost::Route route(dohost::Request& request) override {
    std::string_view path = request.path();
    if (path == "/counter" && request.method() == "POST") {
      return dohost::Route::toId("Counter", dohost::newUniqueId("Counter"));
    }
    if (path.starts_with("/counter/id/")) {
      std::optional<std::string> id = dohost::idFromString("Counter", path.substr(12));
      if (!id) return notFound();
      return dohost::Route::toId("Counter", *id);
    }
    if (auto name = nameAfter(path, "/counter/")) return dohost::Route::toName("Counter", *name);
    if (auto name = nameAfter(path, "/room/")) return dohost::Route::toName("Room", *name);
    if (auto name = nameAfter(path, "/reminders/")) {
      return dohost::Route::toName("Reminders", *name);
    }
    return notFound();
  }

 private:
  // The rest of `path` after `prefix`, if it can name an object: not empty, not too long, and
  // UTF-8 without NUL (the path is percent-decoded, so it can hold any bytes).
  std::optional<std::string> nameAfter(std::string_view path, std::string_view prefix) const {
    if (!path.starts_with(prefix)) return std::nullopt;
    std::string_view name = path.substr(prefix.size());
    if (name.empty() || name.size() > maxNameBytes_ || !dohost::isValidIdText(name)) {
      return std::nullopt;
    }
    return std::string(name);
  }

  static dohost::Route notFound() {
    return dohost::Route::respond(dohost::Response::json(404, R"({"error":"not found"})"));
  }

  size_t maxNameBytes_;
};
// [/doc:counter]

// [doc:register]
// The classes and the app; a host's main or a plugin calls this.
inline void registerCounter(dohost::Registry& registry) {
  registry.addClass<Counter>("Counter");
  registry.addClass<Room>("Room");
  registry.addClass<Reminders>("Reminders");
  registry.addApp({"counter", "127.0.0.1:8800", [](const dohost::AppSettings& settings) {
                     // [apps.counter] max_name_bytes = 64, or DOHOST_COUNTER_MAX_NAME_BYTES=64
                     size_t maxNameBytes = static_cast<size_t>(
                         dohost::appSetting(settings, "max_name_bytes", {1, 1024, true}, 64));
                     return std::make_unique<CounterApp>(maxNameBytes);
                   }});
}
// [/doc:register]

}  // namespace counter_example
