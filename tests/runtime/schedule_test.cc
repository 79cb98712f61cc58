// Named schedules through the runtime: delivery, persistence, retries, transactions, limits.
#include "cron.h"
#include "runtime/test_objects.h"

namespace dohost::testing {
namespace {

// What the host index holds for the object: its earliest wake-up.
std::optional<int64_t> indexedWake(const std::string& dataDir, const std::string& name = "alpha") {
  auto index = storage::AlarmIndex::open(dataDir + "/_dohost/alarms.sqlite");
  REQUIRE(index.isOk());
  auto all = index.value()->all();
  REQUIRE(all.isOk());
  for (const storage::AlarmEntry& e : all.value()) {
    if (e.id == idFromName("Counter", name)) return e.timeMs;
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE_FIXTURE(RuntimeFixture, "a one-off schedule wakes an evicted object with its payload") {
  TimePoint start = clock.now();
  CHECK(body("/schedule?name=remind&ms=60000&payload=hello") == "scheduled");
  CHECK(body("/schedules") == "remind=" + std::to_string(toUnixMillis(start + Duration(60'000))) + "/0");
  advance(Duration(11'000));
  CHECK_FALSE(live());
  advance(Duration(50'000));
  REQUIRE(journal.scheduleRuns.size() == 1);
  CHECK(journal.scheduleRuns[0].name == "remind");
  CHECK(journal.scheduleRuns[0].payload == "hello");
  CHECK(journal.scheduleRuns[0].info.scheduledTime == start + Duration(60'000));
  CHECK(journal.scheduleRuns[0].at == start + Duration(60'000));
  CHECK_FALSE(journal.scheduleRuns[0].info.isRetry());
  CHECK(journal.namesSeen.back() == "alpha");
  CHECK(body("/schedules").empty());
  CHECK(metrics().schedulesFired == 1);
  advance(Duration(120'000));
  CHECK(journal.scheduleRuns.size() == 1);  // once
  CHECK_FALSE(indexedWake(dir.path()));
}

TEST_CASE_FIXTURE(RuntimeFixture, "many named schedules, each on its own time, beside the alarm") {
  TimePoint start = clock.now();
  body("/schedule?name=b&ms=3000");
  body("/schedule?name=a&ms=1000");
  body("/schedule?name=c&ms=2000");
  body("/alarm?ms=1500");
  body("/schedule?name=c&ms=5000");  // the same name replaces
  advance(Duration(10'000));
  REQUIRE(journal.scheduleRuns.size() == 3);
  CHECK(journal.scheduleRuns[0].name == "a");
  CHECK(journal.scheduleRuns[0].at == start + Duration(1000));
  CHECK(journal.scheduleRuns[1].name == "b");
  CHECK(journal.scheduleRuns[1].at == start + Duration(3000));
  CHECK(journal.scheduleRuns[2].name == "c");
  CHECK(journal.scheduleRuns[2].at == start + Duration(5000));
  REQUIRE(journal.alarms.size() == 1);
  CHECK(journal.alarmTimes[0] == start + Duration(1500));
}

TEST_CASE_FIXTURE(RuntimeFixture, "the index holds the earliest of the alarm and the schedules") {
  TimePoint start = clock.now();
  body("/alarm?ms=60000");
  CHECK(indexedWake(dir.path()) == toUnixMillis(start + Duration(60'000)));
  body("/schedule?name=soon&ms=5000");
  CHECK(indexedWake(dir.path()) == toUnixMillis(start + Duration(5000)));
  body("/alarm?ms=30000");  // the alarm moves, the schedule is still earlier
  CHECK(indexedWake(dir.path()) == toUnixMillis(start + Duration(5000)));
  advance(Duration(6000));
  REQUIRE(journal.scheduleRuns.size() == 1);
  CHECK(indexedWake(dir.path()) == toUnixMillis(start + Duration(30'000)));
  advance(Duration(30'000));
  CHECK(journal.alarms.size() == 1);
  CHECK_FALSE(indexedWake(dir.path()));
}

TEST_CASE_FIXTURE(RuntimeFixture, "schedules survive a restart, also behind a later alarm") {
  TimePoint start = clock.now();
  body("/alarm?ms=60000");
  body("/schedule?name=first&ms=5000&payload=p1");
  body("/every?name=tick&ms=20000");
  restart();
  CHECK(journal.scheduleRuns.empty());
  advance(Duration(6000));
  REQUIRE(journal.scheduleRuns.size() == 1);
  CHECK(journal.scheduleRuns[0].payload == "p1");
  CHECK(journal.namesSeen.back() == "alpha");
  restart();
  advance(Duration(15'000));
  REQUIRE(journal.scheduleRuns.size() == 2);
  CHECK(journal.scheduleRuns[1].name == "tick");
  CHECK(journal.scheduleRuns[1].at == start + Duration(20'000));
  advance(Duration(40'000));
  CHECK(journal.alarms.size() == 1);
  CHECK(journal.scheduleRuns.size() == 4);  // tick at 40 s and 60 s
}

TEST_CASE_FIXTURE(RuntimeFixture, "an interval does not drift and skips the runs missed while down") {
  TimePoint t0 = clock.now();
  body("/every?name=tick&ms=10000");
  advance(Duration(30'500));
  REQUIRE(journal.scheduleRuns.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(journal.scheduleRuns[i].info.scheduledTime == t0 + Duration(10'000 * (i + 1)));
    CHECK(journal.scheduleRuns[i].at == t0 + Duration(10'000 * (i + 1)));
  }
  // The host is down from 30.5 s to 75 s: the run planned for 40 s runs once, late, and the
  // next one is on the same grid (80 s), not 10 s after the late run.
  runtime.reset();
  clock.advance(Duration(44'500));
  start();
  advance(Duration(0));
  REQUIRE(journal.scheduleRuns.size() == 4);
  CHECK(journal.scheduleRuns[3].info.scheduledTime == t0 + Duration(40'000));
  CHECK(journal.scheduleRuns[3].at == t0 + Duration(75'000));
  CHECK(body("/schedules") == "tick=" + std::to_string(toUnixMillis(t0 + Duration(80'000))) + "/0");
  advance(Duration(5'000));
  REQUIRE(journal.scheduleRuns.size() == 5);
  CHECK(journal.scheduleRuns[4].at == t0 + Duration(80'000));
}

TEST_CASE_FIXTURE(RuntimeFixture, "a cron schedule runs on the minutes it names, in UTC") {
  // The fixture's clock starts at 2023-11-14 22:13:20 UTC.
  journal.action = [](ObjectState& s) { s.scheduleEvery("five", "*/5 * * * *", "cron!"); };
  CHECK(body("/do") == "done");
  advance(Duration(8 * 60'000));
  REQUIRE(journal.scheduleRuns.size() == 2);
  CHECK(toUnixMillis(journal.scheduleRuns[0].at) == utcMillis(2023, 11, 14, 22, 15));
  CHECK(toUnixMillis(journal.scheduleRuns[1].at) == utcMillis(2023, 11, 14, 22, 20));
  CHECK(journal.scheduleRuns[1].payload == "cron!");
  CHECK(toUnixMillis(journal.scheduleRuns[1].info.scheduledTime) == utcMillis(2023, 11, 14, 22, 20));
  journal.action = [](ObjectState& s) {
    std::vector<Schedule> all = s.schedules();
    REQUIRE(all.size() == 1);
    CHECK(all[0].kind == Schedule::Kind::kCron);
    CHECK(all[0].cron == "*/5 * * * *");
    CHECK(toUnixMillis(*all[0].nextRun) == utcMillis(2023, 11, 14, 22, 25));
  };
  body("/do");
  // Midnight and the month's end: an expression for the first of the month.
  journal.action = [](ObjectState& s) {
    s.cancel("five");
    s.scheduleEvery("monthly", "0 0 1 * *");
  };
  body("/do");
  advance(Duration(int64_t{17} * 86'400'000));
  bool monthly = false;
  for (const auto& r : journal.scheduleRuns) {
    if (r.name == "monthly") {
      CHECK(toUnixMillis(r.at) == utcMillis(2023, 12, 1));
      monthly = true;
    }
  }
  CHECK(monthly);
}

TEST_CASE_FIXTURE(RuntimeFixture, "a failing schedule is retried with backoff, then kept as failed") {
  journal.scheduleFailuresLeft = 100;
  TimePoint start = clock.now();
  body("/schedule?name=once&ms=1000");
  advance(Duration(200'000));
  REQUIRE(journal.scheduleRuns.size() == 7);
  std::vector<int64_t> expectedGaps = {2000, 4000, 8000, 16000, 32000, 64000};
  CHECK(journal.scheduleRuns[0].at == start + Duration(1000));
  for (size_t i = 1; i < 7; ++i) {
    CHECK(journal.scheduleRuns[i].info.retryCount == static_cast<int>(i));
    CHECK(journal.scheduleRuns[i].info.isRetry());
    CHECK(journal.scheduleRuns[i].info.scheduledTime == start + Duration(1000));
    CHECK((journal.scheduleRuns[i].at - journal.scheduleRuns[i - 1].at).count() ==
          expectedGaps[i - 1]);
  }
  CHECK(metrics().scheduleRetries == 6);
  CHECK(body("/get") == "0");
  CHECK(body("/schedules") == "once=-/6");  // kept, failed, with its last error
  journal.action = [](ObjectState& s) {
    std::vector<Schedule> all = s.schedules();
    REQUIRE(all.size() == 1);
    CHECK(all[0].lastError == std::optional<std::string>("schedule failed on purpose"));
  };
  body("/do");
  CHECK_FALSE(indexedWake(dir.path()));
  // Setting it again starts over.
  journal.scheduleFailuresLeft = 0;
  body("/schedule?name=once&ms=10");
  advance(Duration(100));
  CHECK(journal.scheduleRuns.size() == 8);
  CHECK(body("/schedules").empty());
}

TEST_CASE_FIXTURE(RuntimeFixture, "a recurring schedule retries, and goes on after giving a run up") {
  options.alarmMaxRetries = 2;
  restart();
  TimePoint start = clock.now();
  journal.scheduleFailuresLeft = 1;
  body("/every?name=tick&ms=60000");
  advance(Duration(63'000));
  // Failed at 60 s, retried 2 s later, succeeded: the next run stays on the grid.
  REQUIRE(journal.scheduleRuns.size() == 2);
  CHECK(journal.scheduleRuns[1].info.retryCount == 1);
  CHECK(journal.scheduleRuns[1].info.scheduledTime == start + Duration(60'000));
  CHECK(journal.scheduleRuns[1].at == start + Duration(62'000));
  CHECK(body("/schedules") == "tick=" + std::to_string(toUnixMillis(start + Duration(120'000))) + "/0");
  journal.scheduleFailuresLeft = 100;
  advance(Duration(67'000));  // 120 s fails, retries at 122 s and 126 s fail: given up
  CHECK(journal.scheduleRuns.size() == 5);
  CHECK(body("/schedules") == "tick=" + std::to_string(toUnixMillis(start + Duration(180'000))) + "/0");
  journal.scheduleFailuresLeft = 0;
  advance(Duration(60'000));
  REQUIRE(journal.scheduleRuns.size() == 6);
  CHECK(journal.scheduleRuns[5].at == start + Duration(180'000));
  CHECK_FALSE(journal.scheduleRuns[5].info.isRetry());
}

TEST_CASE_FIXTURE(RuntimeFixture, "a schedule set in an event that fails does not exist") {
  CHECK(fetch("/schedule?name=lost&ms=1000&fail=1").status() == 500);
  CHECK(body("/schedules").empty());
  journal.action = [](ObjectState& s) {
    try {
      s.storage().transaction([&] {
        s.schedule("inner", s.now() + Duration(1000));
        throw std::runtime_error("roll the inner transaction back");
      });
    } catch (const std::runtime_error&) {
    }
  };
  body("/do");
  CHECK(body("/schedules").empty());
  advance(Duration(5000));
  CHECK(journal.scheduleRuns.empty());
  restart();
  advance(Duration(5000));
  CHECK(journal.scheduleRuns.empty());
}

TEST_CASE_FIXTURE(RuntimeFixture, "cancel and replace, also from inside onSchedule") {
  body("/every?name=tick&ms=1000");
  body("/schedule?name=other&ms=500");
  CHECK(body("/cancel?name=other") == "yes");
  CHECK(body("/cancel?name=other") == "no");
  journal.onScheduleDoes = [](ObjectState& s, const std::string& name) {
    if (name == "tick") s.cancel("tick");
  };
  advance(Duration(5000));
  CHECK(journal.scheduleRuns.size() == 1);
  CHECK(body("/schedules").empty());
  // A one-off schedule that sets itself again from its handler runs again.
  int left = 2;
  journal.onScheduleDoes = [&left](ObjectState& s, const std::string& name) {
    if (left-- > 0) s.schedule(name, s.now() + Duration(1000), "again");
  };
  body("/schedule?name=chain&ms=1000");
  advance(Duration(10'000));
  REQUIRE(journal.scheduleRuns.size() == 4);
  CHECK(journal.scheduleRuns[3].payload == "again");
}

TEST_CASE_FIXTURE(RuntimeFixture, "bad names, payloads, intervals and cron expressions store nothing") {
  auto refused = [&](std::function<void(ObjectState&)> f) {
    journal.action = std::move(f);
    return body("/do");
  };
  TimePoint soon = clock.now() + Duration(1000);
  CHECK(refused([&](ObjectState& s) { s.schedule("", soon); }) ==
        "a schedule name has 1 to 128 characters");
  CHECK(refused([&](ObjectState& s) { s.schedule(std::string(129, 'n'), soon); }) ==
        "a schedule name has 1 to 128 characters");
  CHECK(refused([&](ObjectState& s) { s.schedule(std::string(128, 'n'), soon); }) == "done");
  CHECK(refused([&](ObjectState& s) { s.schedule("with space", soon); }) ==
        "a schedule name may only use A-Z a-z 0-9 _ . : -");
  CHECK(refused([&](ObjectState& s) { s.schedule("slash/", soon); }) ==
        "a schedule name may only use A-Z a-z 0-9 _ . : -");
  CHECK(refused([&](ObjectState& s) {
          s.schedule("big", soon, std::string(kMaxSchedulePayloadBytes + 1, 'x'));
        }) == "a schedule payload is at most 16384 bytes");
  CHECK(refused([&](ObjectState& s) { s.schedule("epoch", fromUnixMillis(0)); }) ==
        "schedule() needs a time after the Unix epoch");
  CHECK(refused([&](ObjectState& s) { s.scheduleEvery("fast", Duration(999)); }) ==
        "a schedule interval is between 1000 ms and 3650 days");
  CHECK(refused([&](ObjectState& s) { s.scheduleEvery("cron", "61 * * * *"); }) ==
        "bad cron expression: cron minute field: '61' is outside 0-59");
  CHECK(body("/schedules") == std::string(128, 'n') + "=" + std::to_string(toUnixMillis(soon)) + "/0");
}

TEST_CASE_FIXTURE(RuntimeFixture, "the number of schedules per object is bounded") {
  options.maxSchedulesPerObject = 3;
  restart();
  for (const char* n : {"a", "b", "c"}) body(std::string("/schedule?name=") + n + "&ms=5000");
  journal.action = [](ObjectState& s) { s.schedule("d", s.now() + Duration(1000)); };
  CHECK(body("/do") == "an object has at most 3 schedules (max_schedules_per_object)");
  journal.action = [](ObjectState& s) { s.scheduleEvery("a", Duration(2000)); };  // replaces
  CHECK(body("/do") == "done");
  CHECK(body("/cancel?name=b") == "yes");
  journal.action = [](ObjectState& s) { s.schedule("d", s.now() + Duration(1000)); };
  CHECK(body("/do") == "done");
  journal.action = [](ObjectState& s) { CHECK(s.schedules().size() == 3); };
  body("/do");
}

TEST_CASE_FIXTURE(RuntimeFixture, "deleteAll removes the schedules") {
  body("/schedule?name=gone&ms=1000");
  journal.action = [](ObjectState& s) { s.storage().deleteAll(); };
  body("/do");
  CHECK(body("/schedules").empty());
  advance(Duration(5000));
  CHECK(journal.scheduleRuns.empty());
  CHECK_FALSE(indexedWake(dir.path()));
}

}  // namespace dohost::testing
