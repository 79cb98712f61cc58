// Crash loops: an object whose constructor, fetch or alarm throws every time is put in the
// failed state with backoff, its clients are told, and it is tried again after the backoff.
#include "runtime/test_objects.h"

namespace dohost::testing {

namespace {

struct CrashLoopFixture : RuntimeFixture {
  CrashLoopFixture() {
    options.objectFailureLimit = 3;
    options.objectFailureWindow = Duration(60'000);
    options.objectFailureBackoff = Duration(10'000);
    options.objectFailureBackoffMax = Duration(25'000);
    restart();
  }
  ObjectSlot& alpha() { return slot("alpha"); }
};

}  // namespace

TEST_CASE_FIXTURE(CrashLoopFixture, "a constructor that always throws puts the object in the failed state") {
  journal.constructorThrows = true;
  for (int i = 0; i < 3; ++i) CHECK(fetch("/inc").status() == 500);
  CHECK(journal.constructed == 3);
  CHECK(metrics().objectFailures == 3);
  REQUIRE(alpha().failedUntil());
  CHECK(*alpha().failedUntil() == clock.now() + Duration(10'000));
  CHECK(alpha().failure()->lastError == "constructor failed on purpose");

  // Failed: nothing is built, the answer says why and when, and nothing more is counted.
  Response refused = fetch("/inc");
  CHECK(refused.status() == 503);
  CHECK(refused.body().find("constructor failed on purpose") != std::string::npos);
  CHECK(refused.header("retry-after") == std::optional<std::string>("10"));
  CHECK(journal.constructed == 3);
  CHECK(metrics().objectFailures == 3);

  // After the backoff it is tried once; failing again fails it at once, for twice as long.
  advance(Duration(10'000));
  CHECK_FALSE(alpha().failedUntil());
  CHECK(fetch("/inc").status() == 500);
  CHECK(journal.constructed == 4);
  REQUIRE(alpha().failedUntil());
  CHECK(*alpha().failedUntil() == clock.now() + Duration(20'000));
  advance(Duration(20'000));
  CHECK(fetch("/inc").status() == 500);
  CHECK(*alpha().failedUntil() == clock.now() + Duration(25'000));  // the maximum

  // Fixed: the next try after the backoff succeeds and clears the record.
  journal.constructorThrows = false;
  CHECK(fetch("/inc").status() == 503);
  advance(Duration(25'000));
  CHECK(body("/inc") == "1");
  CHECK_FALSE(alpha().failure());
  CHECK(body("/inc") == "2");
}

TEST_CASE_FIXTURE(CrashLoopFixture, "failures outside the window, or with a success between, do not add up") {
  journal.fetchThrows = true;
  CHECK(fetch("/inc").status() == 500);
  CHECK(fetch("/inc").status() == 500);
  journal.fetchThrows = false;
  CHECK(body("/inc") == "1");  // a success clears the count
  CHECK_FALSE(alpha().failure());
  journal.fetchThrows = true;
  CHECK(fetch("/inc").status() == 500);
  CHECK(fetch("/inc").status() == 500);
  advance(Duration(61'000));  // the window passed
  CHECK(fetch("/inc").status() == 500);
  CHECK_FALSE(alpha().failedUntil());
  CHECK(alpha().failure()->count == 1);
  CHECK(fetch("/inc").status() == 500);
  CHECK(fetch("/inc").status() == 500);
  CHECK(alpha().failedUntil());
}

TEST_CASE_FIXTURE(CrashLoopFixture, "a failed object closes its sockets with 1011; other objects carry on") {
  auto socket = accept();
  RecordingTransport& t = bind(socket);
  auto other = accept("beta");
  RecordingTransport& ot = bind(other);
  journal.fetchThrows = true;
  for (int i = 0; i < 3; ++i) CHECK(fetch("/inc").status() == 500);
  REQUIRE(alpha().failedUntil());
  REQUIRE(t.closed);
  CHECK(t.closed->first == 1011);
  // Its socket's messages and close are not delivered: the object is not run.
  runtime->onMessage(socket, Message{false, "hello"});
  runtime->onClose(socket, CloseInfo{1011, "", true});
  CHECK(journal.closeCodes.empty());
  CHECK(alpha().countWebSockets({}) == 0);
  // A new upgrade is refused with 503.
  Request upgrade("GET", "/ws");
  detail::UpgradeContext context;
  detail::ApiAccess::setUpgradeContext(upgrade, &context);
  CHECK(runtime->fetch(alpha(), upgrade).status() == 503);
  CHECK_FALSE(context.accepted);
  // The other object is untouched.
  journal.fetchThrows = false;
  CHECK_FALSE(ot.closed);
  CHECK(body("/inc", "beta") == "1");
  runtime->onClose(other, CloseInfo{1000, "", true});
  CHECK(journal.closeCodes == std::vector<int>{1000});
}

TEST_CASE_FIXTURE(CrashLoopFixture, "a failing alarm counts, and waits for the retry time once the object is failed") {
  options.alarmRetryBase = Duration(1000);
  restart();
  CHECK(body("/alarm?ms=1000") == "set");
  journal.alarmFailuresLeft = 100;
  advance(Duration(1000));  // fails
  advance(Duration(1000));  // first retry, fails
  CHECK_FALSE(alpha().failedUntil());
  advance(Duration(2000));  // second retry, fails: the third failure
  REQUIRE(alpha().failedUntil());
  size_t runs = journal.alarms.size();
  CHECK(runs == 3);
  TimePoint retryAt = *alpha().failedUntil();
  advance(Duration(9'000));  // the next alarm retry (4 s) falls in the failed period: it waits
  CHECK(journal.alarms.size() == runs);
  journal.alarmFailuresLeft = 0;
  advance(retryAt - clock.now());
  CHECK(journal.alarms.size() == runs + 1);  // run at the retry time, and it succeeded
  CHECK_FALSE(alpha().failure());
  CHECK(body("/alarm/get") == "none");
}

TEST_CASE_FIXTURE(CrashLoopFixture, "a failed object with no sockets stays known until its record expires") {
  journal.constructorThrows = true;
  for (int i = 0; i < 3; ++i) fetch("/inc");
  advance(Duration(1));
  CHECK(runtime->findSlot("Counter", idFromName("Counter", "alpha")) != nullptr);
  advance(Duration(10'000 + 60'000 + 1));  // the backoff, then a window without failures
  CHECK(runtime->findSlot("Counter", idFromName("Counter", "alpha")) == nullptr);
  journal.constructorThrows = false;
  CHECK(body("/inc") == "1");  // a fresh start
}

}  // namespace dohost::testing
