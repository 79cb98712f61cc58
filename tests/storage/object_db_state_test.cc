// ObjectDatabase beyond key-value calls: transactions, identity, the alarm, deleteAll, and what
// survives closing the file.
#include "dohost/storage/object_db.h"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <filesystem>
#include <string>
#include <vector>

#include "test_support.h"

namespace dohost::storage {
namespace {

using testing::Keys;
using testing::keysOf;
using testing::openDb;
using testing::TempDir;
using testing::valueOf;

std::optional<std::string> text(const char* value) { return std::string(value); }

// One integer from a query run on the raw handle (outside the user authorizer).
int64_t queryInt(ObjectDatabase& db, const char* sql) {
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db.handle(), sql, -1, &stmt, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  int64_t value = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  return value;
}

TEST_CASE("a rolled-back transaction leaves no trace; a committed one stays") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  CHECK_FALSE(db->inTransaction());
  REQUIRE_OK(db->begin());
  CHECK(db->inTransaction());
  REQUIRE_OK(db->put("lost", "1"));
  REQUIRE_OK(db->put(std::vector<KvEntry>{{"lost2", "2"}}));
  REQUIRE_OK(db->setAlarm(99));
  REQUIRE_OK(db->rollback());
  CHECK_FALSE(db->inTransaction());
  CHECK(valueOf(db->get("lost")) == std::nullopt);
  CHECK(valueOf(db->get("lost2")) == std::nullopt);
  CHECK(valueOf(db->alarm()) == std::nullopt);
  CHECK(db->commits() == 0);

  REQUIRE_OK(db->begin());
  REQUIRE_OK(db->put("kept", "1"));
  REQUIRE_OK(db->commit());
  CHECK(db->commits() == 1);
  CHECK(valueOf(db->get("kept")) == text("1"));
  CHECK(db->commit().code() == Status::Code::kSqlError);  // no transaction is open
}

TEST_CASE("rolling back to a savepoint undoes only the writes made after it") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  REQUIRE_OK(db->begin());
  REQUIRE_OK(db->put("outer", "1"));
  REQUIRE_OK(db->savepoint("inner"));
  REQUIRE_OK(db->put("inner", "2"));
  REQUIRE_OK(db->put("outer", "changed"));
  REQUIRE_OK(db->rollbackTo("inner"));
  CHECK(db->inTransaction());
  // rollbackTo also released the savepoint.
  CHECK(db->release("inner").code() == Status::Code::kSqlError);
  REQUIRE_OK(db->put("after", "3"));
  REQUIRE_OK(db->commit());
  CHECK(keysOf(valueOf(db->list({}))) == Keys{"after", "outer"});
  CHECK(valueOf(db->get("outer")) == text("1"));
}

TEST_CASE("a released savepoint keeps its writes, and odd names are quoted") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  const std::string name = "it's a \"name\"; DROP TABLE _do_kv";
  REQUIRE_OK(db->begin());
  REQUIRE_OK(db->savepoint(name));
  REQUIRE_OK(db->put("k", "v"));
  REQUIRE_OK(db->release(name));
  REQUIRE_OK(db->commit());
  CHECK(valueOf(db->get("k")) == text("v"));
}

TEST_CASE("a savepoint outside a transaction commits when released") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  REQUIRE_OK(db->savepoint("alone"));
  CHECK(db->inTransaction());
  REQUIRE_OK(db->put("k", "v"));
  REQUIRE_OK(db->release("alone"));
  CHECK_FALSE(db->inTransaction());
  CHECK(db->commits() == 1);
}

TEST_CASE("the identity is stored once and read back as text") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  CHECK(valueOf(db->meta("class")) == std::nullopt);
  REQUIRE_OK(db->setIdentity("ChatRoom", "0123abcd", std::string_view("007")));
  CHECK(valueOf(db->meta("class")) == text("ChatRoom"));
  CHECK(valueOf(db->meta("id")) == text("0123abcd"));
  CHECK(valueOf(db->meta("name")) == text("007"));  // stays text: no numeric affinity
  std::optional<std::string> created = valueOf(db->meta("created_ms"));
  REQUIRE(created.has_value());
  CHECK(std::stoll(*created) > 1'600'000'000'000LL);  // milliseconds, not seconds

  // Writing it again (an unnamed object) clears the name but keeps the creation time.
  REQUIRE_OK(db->setIdentity("ChatRoom", "0123abcd", std::nullopt));
  CHECK(valueOf(db->meta("name")) == std::nullopt);
  CHECK(valueOf(db->meta("created_ms")) == created);
  CHECK(valueOf(db->meta("no such key")) == std::nullopt);
}

TEST_CASE("the alarm and its failure record round-trip") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  CHECK(valueOf(db->alarm()) == std::nullopt);
  CHECK_FALSE(valueOf(db->alarmFailure()).has_value());
  REQUIRE_OK(db->setAlarm(1'700'000'000'123LL));
  CHECK(valueOf(db->alarm()) == std::optional<int64_t>(1'700'000'000'123LL));
  CHECK(valueOf(db->meta("alarm")) == text("1700000000123"));

  AlarmFailure failure{.scheduledMs = 1'700'000'000'123LL, .retries = 6,
                       .lastError = "boom: \"quoted\"\nsecond line", .failedAtMs = 42};
  REQUIRE_OK(db->setAlarmFailure(failure));
  std::optional<AlarmFailure> read = valueOf(db->alarmFailure());
  REQUIRE(read.has_value());
  CHECK(read->scheduledMs == failure.scheduledMs);
  CHECK(read->retries == 6);
  CHECK(read->lastError == failure.lastError);
  CHECK(read->failedAtMs == 42);

  SUBCASE("clearing the failure keeps the alarm") {
    REQUIRE_OK(db->setAlarmFailure(std::nullopt));
    CHECK_FALSE(valueOf(db->alarmFailure()).has_value());
    CHECK(valueOf(db->alarm()).has_value());
  }
  SUBCASE("setting a new alarm clears the failure") {
    REQUIRE_OK(db->setAlarm(5));
    CHECK(valueOf(db->alarm()) == std::optional<int64_t>(5));
    CHECK_FALSE(valueOf(db->alarmFailure()).has_value());
  }
  SUBCASE("deleting the alarm deletes the failure too") {
    REQUIRE_OK(db->setAlarm(std::nullopt));
    CHECK(valueOf(db->alarm()) == std::nullopt);
    CHECK_FALSE(valueOf(db->alarmFailure()).has_value());
  }
}

// Builds user SQL objects of every kind, including ones that make drop order matter.
void createUserSchema(ObjectDatabase& db) {
  Result<SqlResult> created = db.exec(R"sql(
      CREATE TABLE parent(id INTEGER PRIMARY KEY);
      CREATE TABLE child(parent_id INTEGER REFERENCES parent(id), note TEXT);
      CREATE INDEX child_by_note ON child(note);
      CREATE VIEW notes AS SELECT note FROM child;
      CREATE TABLE log(line TEXT);
      CREATE TRIGGER child_log AFTER DELETE ON child BEGIN INSERT INTO log VALUES('gone'); END;
      CREATE TABLE counter(id INTEGER PRIMARY KEY AUTOINCREMENT, v);
      CREATE VIRTUAL TABLE docs USING fts5(body);
      INSERT INTO parent VALUES(1);
      INSERT INTO child VALUES(1, 'hello');
      INSERT INTO counter(v) VALUES(1);
      INSERT INTO docs VALUES('some text');
  )sql");
  REQUIRE_MESSAGE(created.isOk(), created.status().toString());
}

int64_t userObjectCount(ObjectDatabase& db) {
  return queryInt(db,
                  "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE '\\_do\\_%' ESCAPE '\\' "
                  "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'");
}

TEST_CASE("deleteAll wipes keys, user SQL objects and the alarm, and keeps the identity") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  REQUIRE_OK(db->setIdentity("Room", "id1", std::string_view("lobby")));
  REQUIRE_OK(db->put(std::vector<KvEntry>{{"a", "1"}, {"b", "2"}}));
  REQUIRE_OK(db->setAlarm(1000));
  REQUIRE_OK(db->setAlarmFailure(AlarmFailure{.scheduledMs = 1000, .retries = 1}));
  createUserSchema(*db);
  REQUIRE(userObjectCount(*db) > 5);
  std::optional<std::string> created = valueOf(db->meta("created_ms"));

  REQUIRE_OK(db->deleteAll());
  CHECK(valueOf(db->keyCount()) == 0);
  CHECK(userObjectCount(*db) == 0);
  CHECK(valueOf(db->alarm()) == std::nullopt);
  CHECK_FALSE(valueOf(db->alarmFailure()).has_value());
  CHECK(valueOf(db->meta("class")) == text("Room"));
  CHECK(valueOf(db->meta("id")) == text("id1"));
  CHECK(valueOf(db->meta("name")) == text("lobby"));
  CHECK(valueOf(db->meta("created_ms")) == created);
  CHECK(queryInt(*db, "PRAGMA defer_foreign_keys") == 0);  // restored
  CHECK(queryInt(*db, "SELECT count(*) FROM sqlite_sequence") == 0);  // AUTOINCREMENT reset

  // The object is usable again, with the same names.
  createUserSchema(*db);
  REQUIRE_OK(db->put("a", "again"));
  CHECK(valueOf(db->get("a")) == text("again"));
}

TEST_CASE("deleteAll inside a transaction is undone by its rollback") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  REQUIRE_OK(db->put("a", "1"));
  createUserSchema(*db);
  int64_t objects = userObjectCount(*db);
  REQUIRE_OK(db->begin());
  REQUIRE_OK(db->deleteAll());
  CHECK(valueOf(db->keyCount()) == 0);
  REQUIRE_OK(db->rollback());
  CHECK(valueOf(db->get("a")) == text("1"));
  CHECK(userObjectCount(*db) == objects);
}

TEST_CASE("everything persists across close and reopen") {
  TempDir dir;
  const std::string path = dir.file("nested/folders/o.sqlite");  // parents are created
  {
    auto db = openDb(path);
    REQUIRE_OK(db->setIdentity("Room", "id1", std::nullopt));
    REQUIRE_OK(db->put("k", "v"));
    REQUIRE_OK(db->setAlarm(77));
    REQUIRE(db->exec("CREATE TABLE t(x); INSERT INTO t VALUES('row')").isOk());
  }
  CHECK(std::filesystem::exists(path));
  auto db = openDb(path);
  CHECK(valueOf(db->get("k")) == text("v"));
  CHECK(valueOf(db->alarm()) == std::optional<int64_t>(77));
  CHECK(valueOf(db->meta("class")) == text("Room"));
  SqlResult rows = valueOf(db->exec("SELECT x FROM t"));
  REQUIRE(rows.rows.size() == 1);
  CHECK(rows.rows[0][0] == SqlValue(std::string("row")));
}

TEST_CASE("open sets WAL mode, the durability and foreign keys") {
  TempDir dir;
  OpenOptions normal;
  normal.durability = Durability::kNormal;
  auto full = openDb(dir.file("full.sqlite"));
  auto relaxed = openDb(dir.file("normal.sqlite"), normal);
  CHECK(queryInt(*full, "PRAGMA synchronous") == 2);     // FULL
  CHECK(queryInt(*relaxed, "PRAGMA synchronous") == 1);  // NORMAL
  CHECK(queryInt(*full, "SELECT journal_mode = 'wal' FROM pragma_journal_mode") == 1);
  CHECK(queryInt(*full, "PRAGMA foreign_keys") == 1);
  CHECK(queryInt(*full, "PRAGMA busy_timeout") == 5000);
  CHECK(full->path() == dir.file("full.sqlite"));
}

TEST_CASE("sizeBytes counts the pages in use") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  int64_t empty = valueOf(db->sizeBytes());
  CHECK(empty > 0);
  CHECK(empty % queryInt(*db, "PRAGMA page_size") == 0);
  REQUIRE_OK(db->put("big", std::string(200'000, 'x')));
  CHECK(valueOf(db->sizeBytes()) >= empty + 200'000);
}

}  // namespace
}  // namespace dohost::storage
