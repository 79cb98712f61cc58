// The test kit (dohost/testing.h) against what the real host does: deferred answers and their
// bound, alarms with retries on the manual clock, the server's message checks (1009, 1007),
// closes from either side, hibernation, a restart on the same data folder, and refusals.
#include <doctest/doctest.h>

#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>

#include "dohost/dohost.h"
#include "dohost/testing.h"

namespace {

using namespace std::chrono_literals;
using dohost::Duration;
using dohost::Request;
using dohost::Response;
using dohost::testing::TestHost;
using dohost::testing::TestHostOptions;

int64_t count(dohost::Storage& s, std::string_view key) {
  return std::stoll(s.get(key).value_or("0"));
}
void bump(dohost::Storage& s, std::string_view key) {
  s.put(key, std::to_string(count(s, key) + 1));
}

// Runs of alarm() that failed: their writes roll back, so they are counted here.
int gFailedAlarmRuns = 0;

// GET /put?k=&v=, /get?k=, /alarm?ms= (alarm() counts "fired"; with "fail" stored it throws),
// /defer (answered by the alarm 5 s later), /never (deferred, never answered). WebSockets get
// tag "t"; a message is echoed, "close" closes 4001, "attach:X" stores attachment X.
class KitObject final : public dohost::DurableObject {
 public:
  explicit KitObject(dohost::ObjectState& state) : state_(state) {}

  Response fetch(Request& request) override {
    dohost::Storage& s = state_.storage();
    if (request.isWebSocketUpgrade()) {
      dohost::WebSocket ws = state_.acceptWebSocket(request, {"t"});
      return Response::upgrade(ws);
    }
    const std::string& p = request.path();
    if (p == "/put") {
      s.put(request.queryParam("k").value_or(""), request.queryParam("v").value_or(""));
      return Response::text(200, "ok");
    }
    if (p == "/get") return Response::text(200, s.get(request.queryParam("k").value_or("")).value_or("-"));
    if (p == "/count") return Response::text(200, std::to_string(count(s, request.queryParam("k").value_or(""))));
    if (p == "/alarm") {
      s.setAlarm(state_.now() + Duration(std::stoll(request.queryParam("ms").value_or("0"))));
      if (request.queryParam("fail")) s.put("fail", "1");
      return Response::text(200, "set");
    }
    if (p == "/defer") {
      pending_ = request.defer();
      s.setAlarm(state_.now() + 5s);
      return Response::deferred();
    }
    if (p == "/never") {
      never_ = request.defer();
      return Response::deferred();
    }
    return Response::text(404, "no");
  }

  void alarm(const dohost::AlarmInfo& info) override {
    dohost::Storage& s = state_.storage();
    bump(s, "fired");
    if (pending_) {
      pending_->send(Response::text(200, "late answer"));
      pending_.reset();
    }
    if (s.get("fail")) {
      ++gFailedAlarmRuns;
      throw std::runtime_error("alarm fails on purpose");
    }
  }

  void webSocketMessage(dohost::WebSocket ws, const dohost::Message& m) override {
    if (m.text() == "close") return ws.close(4001, "asked");
    if (m.text().starts_with("attach:")) {
      ws.serializeAttachment(std::string(m.text().substr(7)));
      return;
    }
    ws.send(m.text());
  }
  void webSocketClose(dohost::WebSocket, const dohost::CloseInfo& info) override {
    state_.storage().put("lastClose", std::to_string(info.code) + " " + info.reason +
                                          (info.wasClean ? " clean" : " unclean"));
  }
  void webSocketError(dohost::WebSocket, std::string_view reason) override {
    state_.storage().put("lastError", std::string(reason));
  }

 private:
  dohost::ObjectState& state_;
  std::optional<dohost::PendingResponse> pending_, never_;
};

void registerKit(dohost::Registry& r) { r.addClass<KitObject>("Kit"); }

std::string get(TestHost& host, const std::string& key, const std::string& name = "o") {
  return host.fetch("Kit", name, Request("GET", "/get", "k=" + key)).body();
}

}  // namespace

TEST_CASE("test kit: a deferred answer comes when the object gives it, the clock moved to it") {
  TestHost host;
  registerKit(host.registry());
  dohost::TimePoint start = host.now();
  Response r = host.fetch("Kit", "o", Request("GET", "/defer"));
  CHECK(r.status() == 200);
  CHECK(r.body() == "late answer");
  CHECK(host.now() - start >= Duration(5s));
  CHECK(host.now() - start < Duration(6s));
}

TEST_CASE("test kit: a deferred answer that never comes is a 503 after the server's 600 s") {
  TestHost host;
  registerKit(host.registry());
  dohost::TimePoint start = host.now();
  Response r = host.fetch("Kit", "o", Request("GET", "/never"));
  CHECK(r.status() == 503);
  CHECK(r.body().find("did not answer in time") != std::string::npos);
  CHECK(host.now() - start == Duration(600s));
}

TEST_CASE("test kit: alarms fire on the manual clock and failures are retried with backoff") {
  TestHostOptions o;
  o.alarmRetryBase = Duration(1s);
  o.alarmMaxRetries = 2;
  TestHost host(o);
  registerKit(host.registry());
  host.fetch("Kit", "o", Request("GET", "/alarm", "ms=60000"));
  REQUIRE(host.alarm("Kit", "o"));
  CHECK(*host.alarm("Kit", "o") == host.now() + Duration(60s));
  host.advance(59s);
  CHECK(get(host, "fired") == "-");
  host.advance(1s);
  CHECK(get(host, "fired") == "1");
  CHECK_FALSE(host.alarm("Kit", "o"));

  // A failing alarm (its writes roll back): the first run and two retries, 1 s and then 2 s
  // later, then it is given up.
  gFailedAlarmRuns = 0;
  host.fetch("Kit", "o", Request("GET", "/alarm", "ms=1000&fail=1"));
  host.advance(1s);
  CHECK(gFailedAlarmRuns == 1);
  host.advance(999ms);
  CHECK(gFailedAlarmRuns == 1);
  host.advance(1ms);
  CHECK(gFailedAlarmRuns == 2);
  host.advance(2s);
  CHECK(gFailedAlarmRuns == 3);
  host.advance(1h);
  CHECK(gFailedAlarmRuns == 3);
  CHECK(get(host, "fired") == "1");
  CHECK_FALSE(host.alarm("Kit", "o"));

  // runAlarm runs one now; with none set nothing runs.
  host.fetch("Kit", "p", Request("GET", "/alarm", "ms=3600000"));
  CHECK(host.runAlarm("Kit", "p"));
  CHECK(get(host, "fired", "p") == "1");
  CHECK_FALSE(host.runAlarm("Kit", "q"));
  CHECK_FALSE(host.runAlarm("NoSuchClass", "o"));
}

TEST_CASE("test kit: the server's message checks: the limit, one byte past it, and bad UTF-8") {
  TestHostOptions o;
  o.maxMessageBytes = 16;
  TestHost host(o);
  registerKit(host.registry());

  auto a = host.connect("Kit", "o");
  REQUIRE(a.socket);
  CHECK(a.response.status() == 101);
  CHECK(a.socket->tags() == std::vector<std::string>{"t"});
  std::string exact(16, 'x');
  CHECK(a.socket->send(exact));
  auto echoed = a.socket->receive();
  REQUIRE(echoed);
  CHECK(echoed->data == exact);

  CHECK(a.socket->send(exact + "x"));
  REQUIRE(a.socket->closed());
  CHECK(a.socket->closed()->code == 1009);
  CHECK_FALSE(a.socket->isOpen());
  CHECK_FALSE(a.socket->send("more"));  // closed: nothing more goes
  CHECK(get(host, "lastError") == "message too big");
  CHECK(get(host, "lastClose") == "-");  // an error, not a close event

  auto b = host.connect("Kit", "o");
  REQUIRE(b.socket);
  b.socket->send(std::string("\xc3\x28", 2));
  REQUIRE(b.socket->closed());
  CHECK(b.socket->closed()->code == 1007);
}

TEST_CASE("test kit: closes from the object and from the client, and a dropped connection") {
  TestHost host;
  registerKit(host.registry());
  auto a = host.connect("Kit", "o");
  auto b = host.connect("Kit", "o");
  auto c = host.connect("Kit", "o");
  REQUIRE((a.socket && b.socket && c.socket));

  a.socket->send("close");
  REQUIRE(a.socket->closed());
  CHECK(a.socket->closed()->code == 4001);
  CHECK(a.socket->closed()->reason == "asked");
  CHECK(get(host, "lastClose") == "4001 asked clean");

  b.socket->close(4002, "client leaves");
  CHECK(get(host, "lastClose") == "4002 client leaves clean");

  c.socket->drop();
  CHECK(get(host, "lastClose") == "1006 WebSocket disconnected without sending Close frame. unclean");
}

TEST_CASE("test kit: a socket keeps its tags and attachment across an eviction") {
  TestHost host;
  registerKit(host.registry());
  auto a = host.connect("Kit", "o");
  REQUIRE(a.socket);
  a.socket->send("attach:ann");
  CHECK(a.socket->attachment() == std::optional<std::string>("ann"));
  REQUIRE(host.evict("Kit", "o"));
  CHECK_FALSE(host.isLive("Kit", "o"));
  CHECK_FALSE(host.evict("Kit", "o"));  // nothing live to evict
  a.socket->send("after");
  CHECK(host.isLive("Kit", "o"));
  auto m = a.socket->receive();
  REQUIRE(m);
  CHECK(m->data == "after");
  CHECK(a.socket->attachment() == std::optional<std::string>("ann"));

  // Idle eviction on the clock: 10 s by default.
  host.advance(11s);
  CHECK_FALSE(host.isLive("Kit", "o"));
  CHECK(a.socket->isOpen());
}

TEST_CASE("test kit: a second host on the same data folder finds what the first committed") {
  std::string dir = (std::filesystem::temp_directory_path() / "dohost-kit-restart-XXXXXX").string();
  REQUIRE(::mkdtemp(dir.data()) != nullptr);
  TestHostOptions o;
  o.dataDir = dir;
  {
    TestHost first(o);
    registerKit(first.registry());
    first.fetch("Kit", "o", Request("GET", "/put", "k=color&v=blue"));
    first.fetch("Kit", "o", Request("GET", "/alarm", "ms=30000"));
    CHECK(first.storage("Kit", "o").get("color") == std::optional<std::string>("blue"));
  }
  {
    TestHost second(o);
    registerKit(second.registry());
    CHECK(second.storage("Kit", "o").exists());
    CHECK(get(second, "color") == "blue");
    second.advance(30s);  // the alarm set before the restart fires
    CHECK(get(second, "fired") == "1");
    auto list = second.storage("Kit", "o").list();
    CHECK(list.size() == 2);  // color and fired
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST_CASE("test kit: refusals are answers, as from a router") {
  TestHost host;
  registerKit(host.registry());
  CHECK(host.fetch("NoSuchClass", "o", Request("GET", "/")).status() == 404);
  CHECK(host.request("no-such-app", Request("GET", "/")).status() == 404);
  auto refused = host.connectApp("no-such-app", Request("GET", "/"));
  CHECK(refused.socket == nullptr);
  CHECK(refused.response.status() == 404);
  CHECK_FALSE(host.storage("Kit", "never-used").exists());
  CHECK_FALSE(host.storage("Kit", "never-used").query("SELECT 1").isOk());
  CHECK_FALSE(host.isLive("Kit", "never-used"));
}

TEST_CASE("test kit: a temporary data folder goes with its host") {
  std::string dir;
  {
    TestHost host;
    registerKit(host.registry());
    host.fetch("Kit", "o", Request("GET", "/put", "k=a&v=b"));
    dir = host.dataDir();
    CHECK(host.storage("Kit", "o").exists());
  }
  CHECK_FALSE(std::filesystem::exists(dir));
}
