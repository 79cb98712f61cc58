// The inspector's read-only SQL (dohost/storage/inspect.h), as doctl and the admin API use it:
// reads, refused writes, ATTACH, the row, byte and time bounds, parameters, table counts.
#include "dohost/storage/inspect.h"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <string>
#include <vector>

#include "test_support.h"

namespace dohost::storage {
namespace {

using testing::openDb;
using testing::TempDir;
using testing::valueOf;

// An object's file with a table and a key, written and closed, then opened read-only.
struct Fixture {
  TempDir dir;
  std::string path = dir.file("obj.sqlite");
  std::unique_ptr<ObjectDatabase> db;

  Fixture() {
    auto writer = openDb(path);
    REQUIRE(writer->exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)").isOk());
    for (int i = 1; i <= 5; ++i) {
      REQUIRE(writer->exec("INSERT INTO notes (body) VALUES (?)", {SqlValue("note " + std::to_string(i))}).isOk());
    }
    REQUIRE(writer->put("k", "v").isOk());
    writer.reset();
    OpenOptions ro;
    ro.readOnly = true;
    db = openDb(path, ro);
  }

  std::vector<StatementOutput> run(const std::string& sql, Status* status,
                                   const InspectLimits& limits = {},
                                   const std::vector<SqlValue>& params = {}) {
    std::vector<StatementOutput> out;
    *status = runReadOnlySql(*db, sql, limits, [&](StatementOutput& o) { out.push_back(o); }, params);
    return out;
  }
};

int64_t noteCount(const std::string& path) {
  auto db = openDb(path);
  return std::get<int64_t>(valueOf(db->exec("SELECT count(*) FROM notes")).rows[0][0]);
}

}  // namespace

TEST_CASE("the inspector reads every table, the reserved ones too, statement by statement") {
  Fixture f;
  Status s;
  auto out = f.run("SELECT body FROM notes WHERE id <= 2 ORDER BY id; -- a comment\n"
                   "SELECT value FROM _do_kv WHERE key = CAST('k' AS BLOB)",
                   &s);
  REQUIRE(s.isOk());
  REQUIRE(out.size() == 2);
  CHECK(out[0].columns == std::vector<std::string>{"body"});
  CHECK(out[0].rows == std::vector<std::vector<SqlValue>>{{SqlValue("note 1")}, {SqlValue("note 2")}});
  CHECK(out[1].rows == std::vector<std::vector<SqlValue>>{{SqlValue(Blob{"v"})}});
  CHECK_FALSE(out[0].truncated);
}

TEST_CASE("a writing statement is refused by SQLite and the file is unchanged") {
  Fixture f;
  for (const char* sql : {"DELETE FROM notes", "INSERT INTO notes (body) VALUES ('x')",
                          "UPDATE _do_kv SET value = x'00'", "DROP TABLE notes",
                          "CREATE TABLE t (x)", "PRAGMA user_version = 3"}) {
    CAPTURE(sql);
    Status s;
    f.run(sql, &s);
    CHECK(s.code() == Status::Code::kNotAllowed);
    CHECK(s.message().find("readonly database") != std::string::npos);
  }
  // Statements before the refused one ran and were reported.
  Status s;
  auto out = f.run("SELECT 1; DELETE FROM notes; SELECT 2", &s);
  CHECK(s.code() == Status::Code::kNotAllowed);
  REQUIRE(out.size() == 1);
  CHECK(out[0].rows[0][0] == SqlValue(int64_t{1}));
  f.db.reset();
  CHECK(noteCount(f.path) == 5);
}

TEST_CASE("ATTACH and VACUUM INTO cannot reach another file") {
  Fixture f;
  std::string other = f.dir.file("other.sqlite");
  for (const std::string& sql : {"ATTACH '" + other + "' AS o", "VACUUM INTO '" + other + "'"}) {
    CAPTURE(sql);
    Status s;
    f.run(sql, &s);
    CHECK_FALSE(s.isOk());
    CHECK(s.message().find("too many attached databases") != std::string::npos);
  }
  CHECK_FALSE(std::filesystem::exists(other));
}

TEST_CASE("rows and bytes are bounded per statement and the object's own limits come back") {
  Fixture f;
  int attachedBefore = sqlite3_limit(f.db->handle(), SQLITE_LIMIT_ATTACHED, -1);
  int columnsBefore = sqlite3_limit(f.db->handle(), SQLITE_LIMIT_COLUMN, -1);
  Status s;
  InspectLimits rows;
  rows.maxRows = 3;
  auto out = f.run("SELECT id FROM notes ORDER BY id; SELECT id FROM notes WHERE id > 3", &s, rows);
  REQUIRE(s.isOk());
  CHECK(out[0].rows.size() == 3);
  CHECK(out[0].truncated);
  CHECK(out[1].rows.size() == 2);
  CHECK_FALSE(out[1].truncated);
  InspectLimits bytes;
  bytes.maxBytes = 13;  // "note N" is 6 bytes: the third row passes 13 and is the last one kept
  out = f.run("SELECT body FROM notes ORDER BY id", &s, bytes);
  REQUIRE(s.isOk());
  CHECK(out[0].rows.size() == 3);
  CHECK(out[0].truncated);
  CHECK(sqlite3_limit(f.db->handle(), SQLITE_LIMIT_ATTACHED, -1) == attachedBefore);
  CHECK(sqlite3_limit(f.db->handle(), SQLITE_LIMIT_COLUMN, -1) == columnsBefore);
}

TEST_CASE("a statement that runs past the time bound is interrupted") {
  Fixture f;
  InspectLimits limits;
  limits.timeoutMs = 50;
  Status s;
  f.run("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
        &s, limits);
  CHECK(s.code() == Status::Code::kSqlError);
  CHECK((s.sqliteCode() & 0xFF) == SQLITE_INTERRUPT);
  CHECK(s.message().find("50 ms") != std::string::npos);
  // The handle works again afterwards, without the bound.
  auto out = f.run("SELECT count(*) FROM notes", &s);
  REQUIRE(s.isOk());
  CHECK(out[0].rows[0][0] == SqlValue(int64_t{5}));
}

TEST_CASE("parameters bind by position, gaps allowed") {
  Fixture f;
  Status s;
  auto out = f.run("SELECT body FROM notes WHERE id >= ?1 AND id < ?3 ORDER BY id", &s, {},
                   {SqlValue(int64_t{2}), SqlValue("unused"), SqlValue(int64_t{4})});
  REQUIRE(s.isOk());
  CHECK(out[0].rows == std::vector<std::vector<SqlValue>>{{SqlValue("note 2")}, {SqlValue("note 3")}});
}

TEST_CASE("the inspector refuses a handle that is not read-only; tables are counted") {
  TempDir dir;
  auto db = openDb(dir.file("rw.sqlite"));
  REQUIRE(db->exec("CREATE TABLE a (x); INSERT INTO a VALUES (1), (2)").isOk());
  Status s = runReadOnlySql(*db, "SELECT 1", {}, [](StatementOutput&) { FAIL("ran"); });
  CHECK(s.code() == Status::Code::kInvalidArgument);
  auto tables = valueOf(tableRowCounts(*db));
  REQUIRE(tables.size() == 3);
  CHECK(tables[0].name == "_do_kv");
  CHECK(tables[2].name == "a");
  CHECK(tables[2].rows == 2);
}

}  // namespace dohost::storage
