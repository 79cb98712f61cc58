// The schedules example of docs/api.md (see counter.h): reminders, each a named one-off
// schedule, and a daily digest on a cron schedule, delivered to the owner's WebSockets.
#pragma once

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "dohost/dohost.h"

namespace counter_example {

// [doc:reminders]
// POST /reminders/<name>?id=<id>&in=<seconds>&text=<what> sets (or replaces) the reminder <id>;
// DELETE with ?id= cancels it. A WebSocket to /reminders/<name> hears {"reminder": "<what>"}
// when one is due, and every day at 08:00 UTC {"digest": <reminders delivered so far>}.
class Reminders final : public dohost::DurableObject {
 public:
  explicit Reminders(dohost::ObjectState& state) : state_(state) {}

  dohost::Response fetch(dohost::Request& request) override {
    if (request.isWebSocketUpgrade()) {
      return dohost::Response::upgrade(state_.acceptWebSocket(request, {"owner"}));
    }
    std::string id = request.queryParam("id").value_or("");
    if (request.method() == "DELETE") {
      bool existed = state_.cancel("reminder:" + id);
      return dohost::Response::json(existed ? 200 : 404, nlohmann::json{{"cancelled", existed}}.dump());
    }
    std::string in = request.queryParam("in").value_or("");
    if (request.method() != "POST" || in.empty() || in.size() > 9 ||
        !std::all_of(in.begin(), in.end(), [](unsigned char c) { return std::isdigit(c); })) {
      return dohost::Response::text(400, "POST ?id=&in=SECONDS&text=\n");
    }
    try {
      // The schedule is stored with this event's writes: if the event failed, it would not exist.
      state_.schedule("reminder:" + id, state_.now() + std::chrono::seconds(std::stoll(in)),
                      request.queryParam("text").value_or(""));
      state_.scheduleEvery("digest", "0 8 * * *");  // setting it again keeps one digest
    } catch (const dohost::UsageError& e) {  // a bad id (name), a long text, too many
      return dohost::Response::text(400, std::string(e.what()) + "\n");
    }
    return dohost::Response::json(201, R"({"scheduled":true})");
  }

  // At least once: a run that throws is retried, so delivering twice must be harmless.
  void onSchedule(std::string_view name, std::string_view payload,
                  const dohost::ScheduleInfo& info) override {
    if (name == "digest") {
      state_.broadcast(nlohmann::json{{"digest", delivered()}}.dump());
      return;
    }
    state_.storage().put("delivered", std::to_string(delivered() + 1));
    state_.broadcast(nlohmann::json{{"reminder", std::string(payload)},
                                    {"late", info.isRetry()}}.dump());
  }

 private:
  int64_t delivered() { return std::stoll(state_.storage().get("delivered").value_or("0")); }

  dohost::ObjectState& state_;
};
// [/doc:reminders]

}  // namespace counter_example
