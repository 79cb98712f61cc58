// Named schedules in the object's file (_do_schedules): rows, transactions, deleteAll, SQL.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "dohost/storage/object_db.h"
#include "test_support.h"

namespace dohost::storage {
namespace {

using testing::openDb;
using testing::TempDir;
using testing::valueOf;

ScheduleRecord scheduleRow(const std::string& name, int64_t next) {
  ScheduleRecord r;
  r.name = name;
  r.kind = "every";
  r.spec = "1000";
  r.payload = std::string("bytes\0here", 10);
  r.plannedMs = next;
  r.nextMs = next;
  return r;
}

TEST_CASE("schedule rows are stored, replaced by name, listed by name and removed") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  CHECK(valueOf(db->schedules()).empty());
  CHECK(valueOf(db->nextScheduleMs()) == std::nullopt);
  REQUIRE_OK(db->putSchedule(scheduleRow("b", 2000)));
  REQUIRE_OK(db->putSchedule(scheduleRow("a", 3000)));
  ScheduleRecord failed = scheduleRow("c", 0);
  failed.kind = "once";
  failed.spec = "";
  failed.nextMs.reset();
  failed.retryCount = 6;
  failed.lastError = "boom";
  failed.lastErrorMs = 42;
  REQUIRE_OK(db->putSchedule(failed));
  std::vector<ScheduleRecord> all = valueOf(db->schedules());
  REQUIRE(all.size() == 3);
  CHECK(all[0].name == "a");
  CHECK(all[0].payload == std::string("bytes\0here", 10));
  CHECK(all[2].nextMs == std::nullopt);
  CHECK(all[2].retryCount == 6);
  CHECK(all[2].lastError == std::optional<std::string>("boom"));
  CHECK(all[2].lastErrorMs == std::optional<int64_t>(42));
  CHECK(valueOf(db->nextScheduleMs()) == std::optional<int64_t>(2000));  // a failed one has none
  CHECK(valueOf(db->scheduleCount()) == 3);
  REQUIRE_OK(db->putSchedule(scheduleRow("b", 5000)));
  CHECK(valueOf(db->scheduleCount()) == 3);
  CHECK(valueOf(db->schedule("b"))->nextMs == std::optional<int64_t>(5000));
  CHECK(valueOf(db->nextScheduleMs()) == std::optional<int64_t>(3000));
  CHECK(valueOf(db->removeSchedule("a")));
  CHECK_FALSE(valueOf(db->removeSchedule("a")));
  CHECK(valueOf(db->schedule("a")) == std::nullopt);
  CHECK(valueOf(db->scheduleCount()) == 2);
}

TEST_CASE("schedule rows roll back with the transaction and survive a reopen") {
  TempDir dir;
  {
    auto db = openDb(dir.file("o.sqlite"));
    REQUIRE_OK(db->putSchedule(scheduleRow("kept", 1000)));
    REQUIRE_OK(db->begin());
    REQUIRE_OK(db->putSchedule(scheduleRow("lost", 500)));
    REQUIRE_OK(db->rollback());
  }
  auto db = openDb(dir.file("o.sqlite"));
  std::vector<ScheduleRecord> all = valueOf(db->schedules());
  REQUIRE(all.size() == 1);
  CHECK(all[0].name == "kept");
  OpenOptions ro;
  ro.readOnly = true;
  auto reader = ObjectDatabase::open(dir.file("o.sqlite"), ro);
  REQUIRE(reader.isOk());
  CHECK(valueOf(reader.value()->schedules()).size() == 1);
}

TEST_CASE("deleteAll removes the schedules; user SQL cannot reach them") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  REQUIRE_OK(db->putSchedule(scheduleRow("x", 1000)));
  CHECK(db->exec("SELECT * FROM _do_schedules").status().code() == Status::Code::kNotAllowed);
  CHECK(db->exec("DELETE FROM _do_schedules").status().code() == Status::Code::kNotAllowed);
  REQUIRE_OK(db->deleteAll());
  CHECK(valueOf(db->scheduleCount()) == 0);
}

}  // namespace
}  // namespace dohost::storage
