#include "runtime/test_objects.h"

namespace dohost::testing {

TEST_CASE_FIXTURE(RuntimeFixture, "an alarm wakes an evicted object at its time") {
  TimePoint start = clock.now();
  CHECK(body("/alarm?ms=60000") == "set");
  CHECK(body("/alarm/get") == std::to_string(toUnixMillis(start + Duration(60'000))));
  advance(Duration(11'000));
  CHECK_FALSE(live());
  CHECK(journal.alarms.empty());
  advance(Duration(50'000));
  REQUIRE(journal.alarms.size() == 1);
  CHECK(journal.alarms[0].retryCount == 0);
  CHECK_FALSE(journal.alarms[0].isRetry());
  CHECK(journal.alarms[0].scheduledTime == start + Duration(60'000));
  CHECK(journal.namesSeen.back() == "alpha");  // the name is known when an alarm wakes it
  CHECK(body("/alarm/get") == "none");
  CHECK(metrics().alarmsFired == 1);
  advance(Duration(120'000));
  CHECK(journal.alarms.size() == 1);  // once
}

TEST_CASE_FIXTURE(RuntimeFixture, "an alarm survives a host restart, and an overdue one fires at start") {
  body("/alarm?ms=30000", "later");
  body("/alarm?ms=5000", "overdue");
  restart();
  CHECK(journal.alarms.empty());
  clock.advance(Duration(10'000));  // the host was down when "overdue" was due
  restart();
  advance(Duration(0));
  REQUIRE(journal.alarms.size() == 1);
  CHECK(journal.namesSeen.back() == "overdue");
  advance(Duration(21'000));
  CHECK(journal.alarms.size() == 2);
  CHECK(journal.namesSeen.back() == "later");
}

TEST_CASE_FIXTURE(RuntimeFixture, "a failing alarm is retried with backoff, then kept as failed") {
  journal.alarmFailuresLeft = 100;
  TimePoint start = clock.now();
  body("/alarm?ms=1000");
  advance(Duration(200'000));
  // First run plus six retries, 2 s doubling: +2, +4, +8, +16, +32, +64 seconds.
  REQUIRE(journal.alarms.size() == 7);
  std::vector<int64_t> expectedGaps = {2000, 4000, 8000, 16000, 32000, 64000};
  CHECK(journal.alarmTimes[0] == start + Duration(1000));
  for (size_t i = 1; i < 7; ++i) {
    CHECK(journal.alarms[i].retryCount == static_cast<int>(i));
    CHECK(journal.alarms[i].isRetry());
    CHECK(journal.alarms[i].scheduledTime == start + Duration(1000));
    CHECK((journal.alarmTimes[i] - journal.alarmTimes[i - 1]).count() == expectedGaps[i - 1]);
  }
  CHECK(metrics().alarmRetries == 6);
  CHECK(body("/get") == "0");
  auto failure = slot().alarmFailure();
  REQUIRE(failure);
  CHECK(failure->lastError == "alarm failed on purpose");
  CHECK(failure->retries == 6);
  CHECK(failure->scheduledMs == toUnixMillis(start + Duration(1000)));
  CHECK(body("/alarm/get") == "none");
  // Setting the alarm again clears the failure.
  journal.alarmFailuresLeft = 0;
  body("/alarm?ms=10");
  CHECK_FALSE(slot().alarmFailure());
  advance(Duration(100));
  CHECK(journal.alarms.size() == 8);
}

TEST_CASE_FIXTURE(RuntimeFixture, "an alarm that fails twice succeeds on its second retry") {
  journal.alarmFailuresLeft = 2;
  body("/alarm?ms=0");
  advance(Duration(60'000));
  REQUIRE(journal.alarms.size() == 3);
  CHECK(journal.alarms[2].retryCount == 2);
  CHECK_FALSE(slot().alarmFailure());
  // Only the successful run's write stayed.
  CHECK(runtime->slot("Counter", idFromName("Counter", "alpha"), std::nullopt).get("alarm-ran") ==
        std::optional<std::string>("3"));
}

TEST_CASE_FIXTURE(RuntimeFixture, "an alarm handler can set the next alarm") {
  journal.alarmSetsNext = true;
  body("/alarm?ms=500");
  advance(Duration(600));
  CHECK(journal.alarms.size() == 1);
  CHECK(body("/alarm/get") != "none");
  advance(Duration(1000));
  CHECK(journal.alarms.size() == 2);
  CHECK(body("/alarm/get") == "none");
}

TEST_CASE_FIXTURE(RuntimeFixture, "deleting or moving an alarm is honoured, also across a restart") {
  body("/alarm?ms=5000", "deleted");
  body("/alarm/delete", "deleted");
  body("/alarm?ms=5000", "moved");
  body("/alarm?ms=50000", "moved");
  restart();
  advance(Duration(10'000));
  CHECK(journal.alarms.empty());
  advance(Duration(41'000));
  CHECK(journal.alarms.size() == 1);
}

TEST_CASE_FIXTURE(RuntimeFixture, "run-alarm-now fires a future alarm at once") {
  body("/alarm?ms=3600000");
  CHECK(runtime->runAlarmNow(slot()));
  CHECK(journal.alarms.size() == 1);
  CHECK(body("/alarm/get") == "none");
  CHECK_FALSE(runtime->runAlarmNow(slot("nothing-set")));
}

}  // namespace dohost::testing
