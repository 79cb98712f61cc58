// The example of docs/testing.md: unit tests of the classes of counter.h and room.h with the
// test kit (dohost/testing.h), in doctest. Built and run by tools/test (suite `examples`);
// tools/check_docs.py keeps the doc equal to this file.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "objects/examples/counter.h"

// [doc:testing]
#include "dohost/testing.h"

using dohost::Request;
using dohost::testing::TestHost;
using namespace std::chrono_literals;

TEST_CASE("a counter counts visits and keeps them across an eviction") {
  TestHost host;
  counter_example::registerCounter(host.registry());

  CHECK(host.fetch("Counter", "a", Request("GET", "/")).body().find("\"visits\":1") !=
        std::string::npos);
  REQUIRE(host.evict("Counter", "a"));  // as idle eviction would
  CHECK_FALSE(host.isLive("Counter", "a"));
  auto body = dohost::parseJson(host.fetch("Counter", "a", Request("GET", "/")).body()).value();
  CHECK(body["visits"] == 2);
  CHECK(body["name"] == "a");

  // What is on disk, through a connection of its own.
  auto rows = host.storage("Counter", "a").query("SELECT count(*) FROM visits");
  REQUIRE(rows.isOk());
  CHECK(std::get<int64_t>(rows->rows[0][0]) == 2);
}

TEST_CASE("the app routes by name and refuses what it cannot route") {
  TestHost host;
  counter_example::registerCounter(host.registry());

  CHECK(host.request("counter", Request("GET", "/counter/b")).status() == 200);
  CHECK(host.request("counter", Request("GET", "/nowhere")).status() == 404);
  CHECK(host.request("counter", Request("GET", "/counter/id/not-an-id")).status() == 404);
}

TEST_CASE("room members hear each other, also after the room was evicted") {
  TestHost host;
  counter_example::registerCounter(host.registry());

  auto ann = host.connectApp("counter", Request("GET", "/room/r1", "user=ann"));
  auto bob = host.connectApp("counter", Request("GET", "/room/r1", "user=bob"));
  REQUIRE(ann.socket != nullptr);
  REQUIRE(bob.socket != nullptr);
  CHECK(ann.socket->tags() == std::vector<std::string>{"member"});

  host.advance(30s);  // idle: the room is evicted, the sockets stay open
  CHECK_FALSE(host.isLive("Room", "r1"));

  ann.socket->send(R"({"text":"hi"})");
  auto heard = bob.socket->receive();
  REQUIRE(heard);
  CHECK(dohost::parseJson(heard->data) == nlohmann::json{{"from", "ann"}, {"text", "hi"}});
  CHECK(ann.socket->pending() == 0);  // not back to the sender

  bob.socket->close(1000, "bye");
  auto left = ann.socket->receive();
  REQUIRE(left);
  CHECK(dohost::parseJson(left->data) == nlohmann::json{{"left", "bob"}});

  // A bad user name refuses the upgrade with the object's own answer.
  auto refused = host.connectApp("counter", Request("GET", "/room/r1", "user="));
  CHECK(refused.socket == nullptr);
  CHECK(refused.response.status() == 400);
}
// [/doc:testing]
