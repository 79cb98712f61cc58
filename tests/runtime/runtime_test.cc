#include <filesystem>

#include "runtime/test_objects.h"

namespace dohost::testing {

TEST_CASE_FIXTURE(RuntimeFixture, "storage survives eviction and the constructor runs again") {
  CHECK(body("/inc") == "1");
  CHECK(body("/inc") == "2");
  CHECK(journal.constructed == 1);
  CHECK(live());

  advance(Duration(9'000));
  CHECK(live());  // not idle long enough
  advance(Duration(1'500));
  CHECK_FALSE(live());
  CHECK(metrics().evictions == 1);

  CHECK(body("/inc") == "3");
  CHECK(journal.constructed == 2);
  CHECK(metrics().rehydrations == 1);
  REQUIRE(journal.namesSeen.size() == 2);
  CHECK(journal.namesSeen[1] == "alpha");  // the name is known in the constructor after eviction
}

TEST_CASE_FIXTURE(RuntimeFixture, "a throwing handler rolls back its writes and replaces the instance") {
  CHECK(body("/inc") == "1");
  Response failed = fetch("/fail");
  CHECK(failed.status() == 500);
  CHECK(body("/get") == "1");      // the put of 1000 was rolled back
  CHECK(journal.constructed == 2);  // a fresh instance after the failure
  CHECK(body("/inc") == "2");
}

TEST_CASE_FIXTURE(RuntimeFixture, "an explicit transaction rolls back alone") {
  CHECK(body("/txn") == "-y");
  CHECK(body("/get") == "0");
  restart();
  CHECK(body("/txn") == "-y");  // and what the event committed is on disk
}

TEST_CASE_FIXTURE(RuntimeFixture, "each event commits once, and only when it wrote") {
  body("/inc");
  body("/inc");
  int64_t commits = metrics().commits;
  CHECK(commits >= 2);
  body("/inc");
  CHECK(metrics().commits == commits + 1);
}

TEST_CASE_FIXTURE(RuntimeFixture, "objects are isolated from each other") {
  CHECK(body("/inc", "a") == "1");
  CHECK(body("/inc", "a") == "2");
  CHECK(body("/inc", "b") == "1");
  CHECK(body("/get", "a") == "2");
}

TEST_CASE_FIXTURE(RuntimeFixture, "a pending timer keeps the object in memory, then it is evicted") {
  CHECK(body("/timer?ms=30000") == "armed");
  advance(Duration(15'000));
  CHECK(live());
  CHECK(slot().evictionBlocker() == std::optional<std::string>("pending timer"));
  advance(Duration(16'000));  // the timer fired (an event) and incremented
  CHECK(body("/get") == "1");
  advance(Duration(11'000));
  CHECK_FALSE(live());
}

TEST_CASE_FIXTURE(RuntimeFixture, "a deferred response keeps the object in memory until answered") {
  Response r = fetch("/defer");
  CHECK(r.isDeferred());
  advance(Duration(20'000));
  CHECK(live());
  CHECK(slot().evictionBlocker() == std::optional<std::string>("pending response"));
  journal.pending.send(Response::text(200, "late"));
  CHECK(delivered == std::vector<std::string>{"late"});
  CHECK_FALSE(journal.pending.isOpen());
  advance(Duration(11'000));
  CHECK_FALSE(live());
}

TEST_CASE_FIXTURE(RuntimeFixture, "the name survives a restart and reaching the object by id") {
  body("/inc");
  restart();
  auto resolved = runtime->resolve("Counter", std::nullopt, idFromName("Counter", "alpha"));
  REQUIRE(resolved.isOk());
  Request request("GET", "/name");
  CHECK(runtime->fetch(**resolved, request).body() == "alpha");
  CHECK(journal.namesSeen.back() == "alpha");
}

TEST_CASE_FIXTURE(RuntimeFixture, "resolve refuses unknown classes and malformed ids") {
  CHECK(runtime->resolve("Nope", std::string("x"), std::nullopt).status().code() ==
        Status::Code::kNotFound);
  CHECK(runtime->resolve("Counter", std::nullopt, std::string("abc")).status().code() ==
        Status::Code::kInvalidArgument);
  CHECK(runtime->resolve("Counter", std::nullopt, idFromName("Other", "x")).status().code() ==
        Status::Code::kInvalidArgument);
}

TEST_CASE_FIXTURE(RuntimeFixture, "a call to another object leaves only if the caller's event commits") {
  CHECK(fetch("/call?fail=1").status() == 500);
  advance(Duration(0));
  CHECK(body("/get", "beta") == "0");  // the failed event's call was dropped with its writes
  CHECK(body("/call") == "called");
  CHECK(slot().evictionBlocker() == std::optional<std::string>("pending call to another object"));
  advance(Duration(0));
  CHECK(body("/get", "beta") == "1");
  CHECK(body("/reply") == "1");  // the reply arrived as an event of the caller
  CHECK_FALSE(slot().evictionBlocker());
}

TEST_CASE_FIXTURE(RuntimeFixture, "events of one loop turn share one commit") {
  body("/timer?ms=100");
  body("/timer?ms=100");
  body("/timer?ms=100");
  int64_t commits = metrics().commits;
  advance(Duration(100));  // three timer events fall due together
  CHECK(metrics().commits == commits + 1);
  CHECK(body("/get") == "3");
  restart();
  CHECK(body("/get") == "3");  // and the grouped commit is on disk
}

TEST_CASE_FIXTURE(RuntimeFixture, "an object that only reads leaves no file behind") {
  std::string path = dir.path() + "/Counter/" + idFromName("Counter", "reader") + ".sqlite";
  CHECK(body("/get", "reader") == "0");
  CHECK(body("/alarm/get", "reader") == "none");
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK(body("/inc", "reader") == "1");  // the first write creates it
  CHECK(std::filesystem::exists(path));
  CHECK(body("/get", "reader") == "1");
}

TEST_CASE_FIXTURE(RuntimeFixture, "admin eviction drops the instance and keeps storage") {
  body("/inc");
  CHECK(runtime->evictNow(slot()));
  CHECK_FALSE(live());
  CHECK(body("/inc") == "2");
  CHECK(metrics().rehydrations == 1);
}

}  // namespace dohost::testing
