// Small object classes and a fixture for the runtime's own tests: a real Runtime on real
// SQLite files in a temporary folder, driven by a ManualClock.
#pragma once

#include <doctest/doctest.h>

#include <deque>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dohost/dohost.h"
#include "object_slot.h"
#include "runtime.h"
#include "support/temp_dir.h"

namespace dohost::testing {

struct Journal {
  int constructed = 0;
  std::vector<std::optional<std::string>> namesSeen;  // name() at each constructor
  std::vector<AlarmInfo> alarms;
  std::vector<TimePoint> alarmTimes;
  int alarmFailuresLeft = 0;
  bool alarmSetsNext = false;
  struct ScheduleRun {
    std::string name;
    std::string payload;
    ScheduleInfo info;
    TimePoint at;
  };
  std::vector<ScheduleRun> scheduleRuns;
  int scheduleFailuresLeft = 0;
  // Run by onSchedule after it recorded the run (before any failure it is told to make).
  std::function<void(ObjectState&, const std::string& name)> onScheduleDoes;
  // Run by GET /do inside a fetch event; a UsageError it throws is answered 400 with its text.
  std::function<void(ObjectState&)> action;
  std::vector<int> closeCodes;  // webSocketClose, in order
  bool constructorThrows = false;
  bool fetchThrows = false;
  PendingResponse pending;
};

inline Journal* gJournal = nullptr;

// Counts in storage; paths select what a request does.
class Counter final : public DurableObject {
 public:
  explicit Counter(ObjectState& state) : state_(state) {
    ++gJournal->constructed;
    gJournal->namesSeen.push_back(state.name());
    if (gJournal->constructorThrows) throw std::runtime_error("constructor failed on purpose");
  }

  Response fetch(Request& request) override {
    Storage& s = state_.storage();
    const std::string& path = request.path();
    if (gJournal->fetchThrows) throw std::runtime_error("fetch failed on purpose");
    if (request.isWebSocketUpgrade()) return Response::upgrade(state_.acceptWebSocket(request, {}));
    if (path == "/inc") return Response::text(200, std::to_string(increment()));
    if (path == "/get") return Response::text(200, s.get("n").value_or("0"));
    if (path == "/fail") {
      s.put("n", "1000");
      throw std::runtime_error("handler failed on purpose");
    }
    if (path == "/txn") {
      try {
        s.transaction([&] {
          s.put("inner", "x");
          throw std::runtime_error("inner rollback");
        });
      } catch (const std::runtime_error&) {
      }
      s.put("outer", "y");
      return Response::text(200, s.get("inner").value_or("-") + s.get("outer").value_or("-"));
    }
    if (path == "/alarm") {
      s.setAlarm(state_.now() + Duration(std::stoll(request.queryParam("ms").value_or("0"))));
      return Response::text(200, "set");
    }
    if (path == "/alarm/delete") {
      s.deleteAlarm();
      return Response::text(200, "deleted");
    }
    if (path == "/alarm/get") {
      auto a = s.getAlarm();
      return Response::text(200, a ? std::to_string(toUnixMillis(*a)) : "none");
    }
    if (path == "/timer") {
      state_.setTimeout(Duration(std::stoll(request.queryParam("ms").value_or("0"))),
                        [this] { increment(); });
      return Response::text(200, "armed");
    }
    if (path == "/defer") {
      gJournal->pending = request.defer();
      return Response::deferred();
    }
    if (path == "/call") {  // increments "beta" through a stub; the reply is stored here
      state_.stubByName("Counter", "beta")->fetch(Request("GET", "/inc"), [this](Response r) {
        state_.storage().put("reply", r.body());
      });
      if (request.queryParam("fail")) throw std::runtime_error("failed after calling");
      return Response::text(200, "called");
    }
    if (path == "/reply") return Response::text(200, s.get("reply").value_or("none"));
    if (path == "/name") return Response::text(200, state_.name().value_or("<none>"));
    if (path == "/do") {
      try {
        gJournal->action(state_);
      } catch (const UsageError& e) {
        return Response::text(400, e.what());
      }
      return Response::text(200, "done");
    }
    if (path == "/schedule") {  // ?name=&ms=[&fail=1]: a one-off schedule in ms from now
      state_.schedule(request.queryParam("name").value_or("s"),
                      state_.now() + Duration(std::stoll(request.queryParam("ms").value_or("0"))),
                      request.queryParam("payload").value_or(""));
      if (request.queryParam("fail")) throw std::runtime_error("failed after scheduling");
      return Response::text(200, "scheduled");
    }
    if (path == "/every") {  // ?name=&ms=
      state_.scheduleEvery(request.queryParam("name").value_or("s"),
                           Duration(std::stoll(request.queryParam("ms").value_or("1000"))));
      return Response::text(200, "scheduled");
    }
    if (path == "/cancel") {
      return Response::text(200, state_.cancel(request.queryParam("name").value_or("s")) ? "yes" : "no");
    }
    if (path == "/schedules") {  // name=next(ms or -)/retries, ...
      std::string out;
      for (const Schedule& sc : state_.schedules()) {
        if (!out.empty()) out += ",";
        out += sc.name + "=" + (sc.nextRun ? std::to_string(toUnixMillis(*sc.nextRun)) : "-") +
               "/" + std::to_string(sc.retryCount);
      }
      return Response::text(200, out);
    }
    return Response::text(404, "no such path");
  }

  void webSocketClose(WebSocket ws, const CloseInfo& info) override {
    gJournal->closeCodes.push_back(info.code);
    increment();  // a write, so the close commits like any event
  }

  void onSchedule(std::string_view name, std::string_view payload,
                  const ScheduleInfo& info) override {
    gJournal->scheduleRuns.push_back(
        {std::string(name), std::string(payload), info, state_.now()});
    state_.storage().put("schedule-ran", std::to_string(gJournal->scheduleRuns.size()));
    if (gJournal->onScheduleDoes) gJournal->onScheduleDoes(state_, std::string(name));
    if (gJournal->scheduleFailuresLeft > 0) {
      --gJournal->scheduleFailuresLeft;
      throw std::runtime_error("schedule failed on purpose");
    }
  }

  void alarm(const AlarmInfo& info) override {
    gJournal->alarms.push_back(info);
    gJournal->alarmTimes.push_back(state_.now());
    CHECK_FALSE(state_.storage().getAlarm());  // cleared while the handler runs
    state_.storage().put("alarm-ran", std::to_string(gJournal->alarms.size()));
    if (gJournal->alarmFailuresLeft > 0) {
      --gJournal->alarmFailuresLeft;
      throw std::runtime_error("alarm failed on purpose");
    }
    if (gJournal->alarmSetsNext) {
      gJournal->alarmSetsNext = false;
      state_.storage().setAlarm(state_.now() + Duration(1000));
    }
  }

 private:
  int64_t increment() {
    int64_t n = std::stoll(state_.storage().get("n").value_or("0")) + 1;
    state_.storage().put("n", std::to_string(n));
    return n;
  }
  ObjectState& state_;
};

class RuntimeFixture {
 public:
  RuntimeFixture() {
    gJournal = &journal;
    registry.addClass<Counter>("Counter");
    start();
  }
  ~RuntimeFixture() { gJournal = nullptr; }

  void start() {
    RuntimeOptions o = options;
    o.dataDir = dir.path();
    runtime = std::make_unique<Runtime>(o, registry, clock);
    REQUIRE(runtime->start().isOk());
  }
  // A host restart: every instance and slot is gone; storage and the alarm index stay.
  void restart() {
    runtime.reset();
    start();
  }

  ObjectSlot& slot(const std::string& name = "alpha") {
    return runtime->slot("Counter", idFromName("Counter", name), name);
  }
  Response fetch(const std::string& url, const std::string& name = "alpha") {
    size_t q = url.find('?');
    Request request("GET", url.substr(0, q), q == std::string::npos ? "" : url.substr(q + 1));
    detail::ApiAccess::setPendingState(request, std::make_shared<detail::PendingResponseState>());
    detail::ApiAccess::pendingState(request)->deliver = [this](Response r) { delivered.push_back(r.body()); };
    return runtime->fetch(slot(name), request);
  }
  // A WebSocket accepted by the object `name`, as the server's upgrade would get it.
  std::shared_ptr<detail::SocketRecord> accept(const std::string& name = "alpha") {
    Request request("GET", "/ws");
    detail::UpgradeContext upgrade;
    detail::ApiAccess::setUpgradeContext(request, &upgrade);
    Response r = runtime->fetch(slot(name), request);
    REQUIRE(r.status() == 101);
    REQUIRE(upgrade.accepted);
    return upgrade.accepted;
  }
  std::string body(const std::string& url, const std::string& name = "alpha") {
    return fetch(url, name).body();
  }
  // Moves the clock in small steps, running what falls due, like the real loop would.
  void advance(Duration d) {
    TimePoint end = clock.now() + d;
    while (true) {
      runtime->runDue();
      auto next = runtime->timers().next();
      if (!next || *next > end) break;
      if (*next > clock.now()) clock.set(*next);
    }
    clock.set(end);
    runtime->runDue();
  }
  bool live(const std::string& name = "alpha") {
    ObjectSlot* s = runtime->findSlot("Counter", idFromName("Counter", name));
    return s != nullptr && s->isLive();
  }
  ClassMetrics& metrics() { return runtime->metrics("Counter"); }
  // Sockets accept frames and closes as a connection would, and keep them for the test.
  struct RecordingTransport final : detail::Transport {
    std::vector<std::string> frames;
    std::optional<std::pair<int, std::string>> closed;
    SendResult send(const FramePtr& frame) override {
      frames.emplace_back(frame->payload());
      return SendResult::kQueued;
    }
    void close(int code, const std::string& reason) override { closed.emplace(code, reason); }
    size_t queuedBytes() const override { return 0; }
  };
  RecordingTransport& bind(const std::shared_ptr<detail::SocketRecord>& socket) {
    RecordingTransport& t = transports.emplace_back();
    socket->transport = &t;
    return t;
  }

  RuntimeOptions options = [] {
    RuntimeOptions o;
    o.idleEvict = Duration(10'000);
    return o;
  }();  // restart() applies changes
  TempDir dir;
  ManualClock clock;
  Registry registry;
  Journal journal;
  std::deque<RecordingTransport> transports;  // outlive the runtime, which may close them
  std::unique_ptr<Runtime> runtime;
  std::vector<std::string> delivered;
};

}  // namespace dohost::testing
