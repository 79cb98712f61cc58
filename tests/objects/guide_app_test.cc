// The guide app's rate limits through its router and rooms, on the test kit's manual clock:
// the windows pass in no time, so each limit is checked at the limit, one past it and in the
// next window. (The message limit per connection, with its close frame on a real socket, stays
// in tests/integration/test_guide.py with the rest of the protocol.)
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "dohost/dohost.h"
#include "dohost/json.h"
#include "dohost/testing.h"
#include "objects/register_all.h"

namespace {

using namespace std::chrono_literals;
using dohost::Request;
using dohost::testing::TestHost;
using dohost::testing::TestHostOptions;
using dohost::testing::TestSocket;
using nlohmann::json;

constexpr const char* kSecret = "guide-test-secret";

std::string token(const std::string& user) {
  return dohost::signJwtHs256(json{{"sub", user}, {"name", user}}.dump(), kSecret);
}

TestHostOptions guideOptions(dohost::AppSettings limits) {
  TestHostOptions o;
  o.appSettings = std::move(limits);
  o.appSettings["jwt_secret"] = kSecret;
  return o;
}

Request upgrade(const std::string& service, const std::string& query) {
  return Request("GET", "/api/" + service + "/ws", query);
}

std::string joinQuery(const std::string& user, const std::string& context) {
  return "token=" + token(user) + "&contextId=" + context;
}

json parse(const std::string& text) {
  std::optional<json> j = dohost::parseJson(text);
  REQUIRE(j);
  return *j;
}

// The next message of `type` the socket got (others before it are skipped), or null.
json nextOf(TestSocket& s, const std::string& type) {
  while (std::optional<dohost::Message> m = s.receive()) {
    json j = parse(m->data);
    if (j.value("type", "") == type) return j;
  }
  return nullptr;
}

void send(TestSocket& s, const std::string& type, json data) {
  REQUIRE(s.send(json{{"type", type}, {"data", std::move(data)}}.dump()));
}

std::string fmt_join(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}

dohost::Response postMetric(TestHost& host, const std::string& context, int value) {
  Request r("POST", "/api/analytics/metrics", "",
            {{"authorization", "Bearer " + token("backend")}, {"content-type", "application/json"}},
            json{{"contextId", context}, {"metric", "m"}, {"value", value}}.dump());
  return host.request("guide", std::move(r));
}

}  // namespace

TEST_CASE("guide: connections per IP over the limit get 429 until the next window") {
  TestHost host(guideOptions({{"connections_per_minute", "3"}, {"rate_window_ms", "2000"}}));
  dohost::objects::registerGuide(host.registry());

  auto a = host.connectApp("guide", upgrade("chat", joinQuery("a", "ctx")));
  REQUIRE(a.socket);
  auto lobby = host.connectApp("guide", upgrade("analytics", ""));  // by first message: counted
  REQUIRE(lobby.socket);
  auto bad = host.connectApp("guide", upgrade("chat", "token=bad-token&contextId=ctx"));
  CHECK(bad.socket == nullptr);
  CHECK(bad.response.status() == 401);  // refused, but it was a connection attempt

  host.advance(1500ms);
  auto over = host.connectApp("guide", upgrade("collaboration", joinQuery("a", "ctx")));
  CHECK(over.socket == nullptr);
  CHECK(over.response.status() == 429);
  json body = parse(over.response.body());
  CHECK(body["error"] == "Rate limit exceeded");
  CHECK(body["limit"] == "connections_per_minute");
  CHECK(over.response.header("retry-after") == std::optional<std::string>("1"));

  // HTTP requests are not connections.
  CHECK(host.request("guide", Request("GET", "/health")).status() == 200);

  host.advance(499ms);  // 1 ms before the window ends
  CHECK(host.connectApp("guide", upgrade("collaboration", joinQuery("a", "ctx"))).response.status() == 429);
  host.advance(1ms);
  auto next = host.connectApp("guide", upgrade("collaboration", joinQuery("a", "ctx")));
  CHECK(next.socket != nullptr);
}

TEST_CASE("guide: broadcasts per room: an error to the sender, across an eviction, then the next window") {
  TestHost host(guideOptions({{"connections_per_minute", "100"},
                              {"broadcasts_per_minute", "4"},
                              {"rate_window_ms", "3000"}}));
  dohost::objects::registerGuide(host.registry());
  auto a = host.connectApp("guide", upgrade("chat", joinQuery("alice", "room")));
  auto b = host.connectApp("guide", upgrade("chat", joinQuery("bob", "room")));
  REQUIRE((a.socket && b.socket));
  TestSocket& sa = *a.socket;
  TestSocket& sb = *b.socket;
  CHECK(nextOf(sa, "user_joined")["data"]["userId"] == "bob");
  dohost::TimePoint started = host.now();

  send(sa, "message", {{"content", "1"}});
  send(sb, "typing", {{"isTyping", true}});
  CHECK(nextOf(sa, "typing")["data"]["userId"] == "bob");
  REQUIRE(host.evict("ChatRoom", "room"));  // the count is kept across it
  send(sb, "message", {{"content", "3"}});
  CHECK(nextOf(sb, "message")["data"]["content"] == "1");
  CHECK(nextOf(sb, "message")["data"]["content"] == "3");
  send(sa, "message", {{"content", "4"}});
  CHECK(nextOf(sb, "message")["data"]["content"] == "4");

  // The fifth broadcast of the window: refused to its sender, nobody else hears anything.
  sa.drain();
  send(sa, "message", {{"content", "5"}});
  json err = nextOf(sa, "error");
  CHECK(err["error"] == "Rate limit exceeded");
  CHECK(err["data"]["limit"] == "broadcasts_per_minute");
  send(sb, "typing", {{"isTyping", false}});
  CHECK(nextOf(sb, "error")["error"] == "Rate limit exceeded");
  CHECK(sb.pending() == 0);
  CHECK(sa.pending() == 0);
  CHECK(sa.isOpen());
  CHECK(sb.isOpen());

  // The room carries on in the next window.
  host.advance(started + 3000ms - host.now());
  send(sa, "message", {{"content", "6"}});
  CHECK(nextOf(sb, "message")["data"]["content"] == "6");
  send(sa, "history", json::object());
  std::vector<std::string> contents;
  json history = nextOf(sa, "history");
  for (const json& m : history["data"]["messages"]) contents.push_back(m["content"]);
  CHECK(fmt_join(contents) == "1,3,4,6");

  // The same limit, per room: the context's analytics room answers a backend's fifth POST of
  // the window with 429.
  for (int i = 0; i < 4; ++i) CHECK(postMetric(host, "room", i).status() == 202);
  dohost::Response refused = postMetric(host, "room", 9);
  CHECK(refused.status() == 429);
  CHECK(parse(refused.body())["error"] == "Rate limit exceeded");
  CHECK(refused.header("retry-after"));
  host.advance(3000ms);
  CHECK(postMetric(host, "room", 10).status() == 202);
}
