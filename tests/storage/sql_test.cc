// User SQL through ObjectDatabase::exec: results, parameters, errors, the authorizer, the SQL
// limits, and read-only databases.
#include "dohost/storage/object_db.h"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <filesystem>
#include <string>
#include <vector>

#include "test_support.h"

namespace dohost::storage {
namespace {

using testing::openDb;
using testing::TempDir;
using testing::valueOf;
using Row = std::vector<SqlValue>;

const std::string kTransactionMessage =
    "use the storage transaction API instead of BEGIN/COMMIT/SAVEPOINT";

// The journal mode, read on the raw handle (outside the user authorizer).
std::string journalMode(ObjectDatabase& db) {
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db.handle(), "PRAGMA journal_mode", -1, &stmt, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  std::string mode = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  sqlite3_finalize(stmt);
  return mode;
}

// Expects `sql` to be refused by the authorizer with a message containing `words`.
void checkRefused(ObjectDatabase& db, const std::string& sql, const std::string& words) {
  CAPTURE(sql);
  Status status = db.exec(sql).status();
  CHECK(status.code() == Status::Code::kNotAllowed);
  CHECK_MESSAGE(status.message().find(words) != std::string::npos, status.message());
}

TEST_CASE("exec returns column names, typed rows and counts") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  SqlResult created = valueOf(db->exec("CREATE TABLE t(i INTEGER, r REAL, s TEXT, b BLOB, n)"));
  CHECK(created.columns.empty());
  CHECK(created.rowsWritten == 0);

  SqlResult inserted = valueOf(db->exec(
      "INSERT INTO t VALUES(?, ?, ?, ?, ?)",
      {int64_t{-7}, 2.5, std::string("text"), Blob{std::string("\0\x01", 2)}, nullptr}));
  CHECK(inserted.rowsWritten == 1);
  CHECK(inserted.rowsRead == 0);

  SqlResult rows = valueOf(db->exec("SELECT i, r, s AS label, b, n FROM t"));
  CHECK(rows.columns == std::vector<std::string>{"i", "r", "label", "b", "n"});
  REQUIRE(rows.rows.size() == 1);
  CHECK(rows.rows[0] == Row{int64_t{-7}, 2.5, std::string("text"),
                            Blob{std::string("\0\x01", 2)}, nullptr});
  CHECK(rows.rowsRead == 1);
  CHECK(rows.rowsWritten == 0);
}

TEST_CASE("rowsRead counts returned rows and rowsWritten counts changed rows") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  REQUIRE(db->exec("CREATE TABLE t(x)").isOk());
  for (int64_t i = 0; i < 5; ++i) REQUIRE(db->exec("INSERT INTO t VALUES(?)", {i}).isOk());
  CHECK(valueOf(db->exec("UPDATE t SET x = x + 10 WHERE x >= 2")).rowsWritten == 3);
  CHECK(valueOf(db->exec("SELECT x FROM t WHERE x > 12")).rowsRead == 2);
  SqlResult deleted = valueOf(db->exec("DELETE FROM t WHERE x < 10 RETURNING x"));
  CHECK(deleted.rowsWritten == 2);
  CHECK(deleted.rowsRead == 2);
  // DDL after DML in one call writes no rows (sqlite3_changes alone would repeat the 2).
  CHECK(valueOf(db->exec("DELETE FROM t; CREATE INDEX t_x ON t(x)")).rowsWritten == 0);
}

TEST_CASE("several statements run in order and parameters bind to the last one") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  SqlResult result = valueOf(db->exec(
      "CREATE TABLE t(x); INSERT INTO t VALUES(1); INSERT INTO t VALUES(2);\n"
      "SELECT x FROM t WHERE x > ? ORDER BY x; -- trailing comment\n /* and a block */ ;",
      {int64_t{1}}));
  CHECK(result.columns == std::vector<std::string>{"x"});
  REQUIRE(result.rows.size() == 1);
  CHECK(result.rows[0] == Row{int64_t{2}});
  // Only the last statement's result comes back.
  CHECK(valueOf(db->exec("SELECT 1; SELECT 'two' AS n")).rows == std::vector<Row>{{"two"}});
  CHECK(valueOf(db->exec("  ;  -- nothing\n")).columns.empty());
}

TEST_CASE("empty text and empty blobs bind as values, not NULL") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  SqlResult result =
      valueOf(db->exec("SELECT ?1, typeof(?1), ?2, typeof(?2)", {std::string(), Blob{}}));
  CHECK(result.rows[0] == Row{std::string(), std::string("text"), Blob{}, std::string("blob")});
}

TEST_CASE("mismatched parameters are invalid arguments") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  CHECK(db->exec("SELECT ?, ?", {int64_t{1}}).status().code() ==
        Status::Code::kInvalidArgument);
  CHECK(db->exec("SELECT 1", {int64_t{1}}).status().code() == Status::Code::kInvalidArgument);
  CHECK(db->exec("", {int64_t{1}}).status().code() == Status::Code::kInvalidArgument);
  Status early = db->exec("SELECT ?; SELECT ?", {int64_t{1}}).status();
  CHECK(early.code() == Status::Code::kInvalidArgument);
  CHECK(early.message() == "only the last statement can have parameters");
}

TEST_CASE("SQLite errors keep their extended code and message") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  Status syntax = db->exec("SELEC 1").status();
  CHECK(syntax.code() == Status::Code::kSqlError);
  CHECK(syntax.sqliteCode() == SQLITE_ERROR);
  CHECK(syntax.message().find("syntax error") != std::string::npos);

  REQUIRE(db->exec("CREATE TABLE t(id INTEGER PRIMARY KEY, u UNIQUE)").isOk());
  REQUIRE(db->exec("INSERT INTO t VALUES(1, 'a')").isOk());
  CHECK(db->exec("INSERT INTO t VALUES(1, 'b')").status().sqliteCode() ==
        SQLITE_CONSTRAINT_PRIMARYKEY);
  CHECK(db->exec("INSERT INTO t VALUES(2, 'a')").status().sqliteCode() ==
        SQLITE_CONSTRAINT_UNIQUE);
  CHECK(db->exec("SELECT * FROM missing").status().code() == Status::Code::kSqlError);
}

TEST_CASE("user SQL cannot touch the host's _do_ tables") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  REQUIRE_OK(db->put("secret", "v"));
  REQUIRE(db->exec("CREATE TABLE t(x, _do_column)").isOk());  // columns may use the prefix

  Status read = db->exec("SELECT * FROM _do_kv").status();
  CHECK(read.code() == Status::Code::kNotAllowed);
  CHECK(read.message() ==
        "access to _do_kv is not allowed: tables starting with _do_ belong to the host");
  checkRefused(*db, "SELECT value FROM main._DO_KV", "_do_kv");  // any case
  checkRefused(*db, "SELECT count(*) FROM _do_meta", "_do_meta");
  checkRefused(*db, "INSERT INTO _do_kv VALUES(x'00', x'00')", "_do_kv");
  checkRefused(*db, "UPDATE _do_kv SET value = x'00'", "_do_kv");
  checkRefused(*db, "DELETE FROM _do_meta", "_do_meta");
  checkRefused(*db, "DROP TABLE _do_kv", "_do_kv");
  checkRefused(*db, "CREATE TABLE _do_mine(x)", "_do_mine");
  checkRefused(*db, "CREATE INDEX kv_values ON _do_kv(value)", "_do_kv");
  checkRefused(*db, "CREATE INDEX _do_idx ON t(x)", "_do_idx");
  checkRefused(*db, "CREATE VIEW _do_view AS SELECT 1", "_do_view");
  checkRefused(*db, "CREATE TRIGGER spy AFTER INSERT ON _do_kv BEGIN SELECT 1; END", "_do_kv");
  checkRefused(*db, "ALTER TABLE _do_kv RENAME TO stolen", "_do_kv");
  checkRefused(*db, "ALTER TABLE _do_kv ADD COLUMN extra", "_do_kv");
  checkRefused(*db, "PRAGMA table_info(_do_kv)", "_do_kv");
  checkRefused(*db, "PRAGMA main.index_list('_do_meta')", "_do_meta");
  checkRefused(*db, "WITH k AS (SELECT key FROM _do_kv) SELECT * FROM k", "_do_kv");

  CHECK(valueOf(db->get("secret")) == std::optional<std::string>("v"));
  CHECK(valueOf(db->keyCount()) == 1);
  // The user may see that the tables exist, as on Cloudflare.
  SqlResult schema = valueOf(db->exec("SELECT name FROM sqlite_schema WHERE name = '_do_kv'"));
  CHECK(schema.rows.size() == 1);
  CHECK(valueOf(db->exec("PRAGMA table_info(t)")).rows.size() == 2);
}

TEST_CASE("renaming a user table into the _do_ namespace is undone") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  REQUIRE(db->exec("CREATE TABLE t(x); INSERT INTO t VALUES(1)").isOk());
  checkRefused(*db, "ALTER TABLE t RENAME TO _do_t", "_do_t");
  checkRefused(*db, "ALTER TABLE t RENAME TO \"_Do_quoted\"", "_Do_quoted");
  CHECK(valueOf(db->exec("SELECT x FROM t")).rows == std::vector<Row>{{int64_t{1}}});
  CHECK(valueOf(db->exec("SELECT name FROM sqlite_schema WHERE name LIKE '%t'")).rows ==
        std::vector<Row>{{std::string("t")}});
  CHECK_FALSE(db->inTransaction());

  // Inside an open transaction, the refused rename leaves earlier writes alone.
  REQUIRE_OK(db->begin());
  REQUIRE(db->exec("INSERT INTO t VALUES(2)").isOk());
  checkRefused(*db, "ALTER TABLE t RENAME TO _do_t", "_do_t");
  CHECK(db->inTransaction());
  REQUIRE_OK(db->commit());
  CHECK(valueOf(db->exec("SELECT count(*) FROM t")).rows == std::vector<Row>{{int64_t{2}}});

  // Ordinary renames still work.
  REQUIRE(db->exec("ALTER TABLE t RENAME TO t2; ALTER TABLE t2 RENAME COLUMN x TO y").isOk());
  CHECK(valueOf(db->exec("SELECT y FROM t2")).rows.size() == 2);
}

TEST_CASE("a user trigger or view cannot reach _do_ tables either") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  REQUIRE_OK(db->put("k", "v"));
  // SQLite does not authorize a trigger's body or a view's query when they are created, only
  // when a statement that runs them is prepared; that is where they must be refused.
  REQUIRE(db->exec("CREATE TABLE t(x)").isOk());
  REQUIRE(db->exec("CREATE TRIGGER leak AFTER INSERT ON t BEGIN DELETE FROM _do_kv; END").isOk());
  REQUIRE(db->exec("CREATE VIEW peek AS SELECT * FROM _do_kv").isOk());
  checkRefused(*db, "INSERT INTO t VALUES(1)", "_do_kv");
  checkRefused(*db, "SELECT * FROM peek", "_do_kv");
  CHECK(valueOf(db->keyCount()) == 1);
  CHECK(valueOf(db->exec("SELECT count(*) FROM t")).rows == std::vector<Row>{{int64_t{0}}});
}

TEST_CASE("user SQL cannot control transactions, attach files or create TEMP objects") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  for (const char* sql : {"BEGIN", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK", "SAVEPOINT s",
                          "RELEASE s", "ROLLBACK TO s", "END"}) {
    CAPTURE(sql);
    Status status = db->exec(sql).status();
    CHECK(status.code() == Status::Code::kNotAllowed);
    CHECK(status.message() == kTransactionMessage);
  }
  CHECK_FALSE(db->inTransaction());

  const std::string other = dir.file("other.sqlite");
  checkRefused(*db, "ATTACH DATABASE '" + other + "' AS other", "ATTACH");
  CHECK_FALSE(std::filesystem::exists(other));
  checkRefused(*db, "DETACH DATABASE other", "DETACH");
  checkRefused(*db, "CREATE TEMP TABLE scratch(x)", "temporary");
  checkRefused(*db, "CREATE TEMPORARY VIEW v AS SELECT 1", "temporary");
}

TEST_CASE("only allow-listed pragmas and virtual table modules run") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  checkRefused(*db, "PRAGMA journal_mode=DELETE", "PRAGMA journal_mode is not allowed");
  checkRefused(*db, "PRAGMA synchronous=OFF", "synchronous");
  checkRefused(*db, "PRAGMA writable_schema=ON", "writable_schema");
  checkRefused(*db, "CREATE VIRTUAL TABLE v USING nosuchmodule(x)", "nosuchmodule");
  checkRefused(*db, "PRAGMA journal_mode", "journal_mode");  // even reading it
  CHECK(journalMode(*db) == "wal");  // the refused pragma changed nothing
  CHECK(valueOf(db->exec("SELECT 1 FROM pragma_table_list WHERE name = '_do_kv'")).rows.size() ==
        1);
  CHECK(valueOf(db->exec("PRAGMA integrity_check")).rows == std::vector<Row>{{"ok"}});
  CHECK(valueOf(db->exec("PRAGMA FOREIGN_KEYS")).rows == std::vector<Row>{{int64_t{1}}});

  REQUIRE(db->exec("CREATE VIRTUAL TABLE docs USING fts5(body)").isOk());
  REQUIRE(db->exec("INSERT INTO docs VALUES('durable objects'), ('other')").isOk());
  CHECK(valueOf(db->exec("SELECT body FROM docs WHERE docs MATCH 'durable'")).rows ==
        std::vector<Row>{{std::string("durable objects")}});
}

TEST_CASE("the host's own statements run unrestricted after refused user SQL") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  checkRefused(*db, "SELECT * FROM _do_kv", "_do_kv");
  checkRefused(*db, "BEGIN", "transaction");
  REQUIRE_OK(db->begin());  // the host still controls transactions
  REQUIRE_OK(db->put("k", "v"));
  REQUIRE_OK(db->setAlarm(10));
  REQUIRE_OK(db->commit());
  CHECK(valueOf(db->get("k")) == std::optional<std::string>("v"));
}

TEST_CASE("the SQL limits from Cloudflare's documentation apply to user SQL") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  std::string columns = "c0";
  for (int i = 1; i <= 100; ++i) columns += ", c" + std::to_string(i);
  CHECK(db->exec("CREATE TABLE wide(" + columns + ")").status().code() ==
        Status::Code::kSqlError);

  std::string longSql = "SELECT '" + std::string(100'000, 'x') + "'";
  CHECK(db->exec(longSql).status().sqliteCode() == SQLITE_TOOBIG);

  std::vector<SqlValue> params(101, int64_t{1});
  std::string placeholders = "?";
  for (int i = 1; i < 101; ++i) placeholders += ", ?";
  CHECK(db->exec("SELECT " + placeholders, params).status().code() == Status::Code::kSqlError);
  params.resize(100);
  placeholders.resize(placeholders.size() - 3);
  CHECK(valueOf(db->exec("SELECT " + placeholders, params)).columns.size() == 100);

  CHECK(db->exec("SELECT 'a' LIKE ?", {std::string(51, '%')}).status().code() ==
        Status::Code::kSqlError);
  CHECK(valueOf(db->exec("SELECT 'a' LIKE ?", {std::string(50, '%')})).rows ==
        std::vector<Row>{{int64_t{1}}});
}

TEST_CASE("a read-only database reads but refuses every write") {
  TempDir dir;
  const std::string path = dir.file("o.sqlite");
  {
    auto db = openDb(path);
    REQUIRE_OK(db->put("k", "v"));
    REQUIRE(db->exec("CREATE TABLE t(x); INSERT INTO t VALUES(1)").isOk());
  }
  OpenOptions readOnly;
  readOnly.readOnly = true;
  {
    auto db = openDb(path, readOnly);
    CHECK(valueOf(db->get("k")) == std::optional<std::string>("v"));
    CHECK(valueOf(db->exec("SELECT x FROM t")).rows == std::vector<Row>{{int64_t{1}}});
    CHECK(db->exec("INSERT INTO t VALUES(2)").status().code() == Status::Code::kNotAllowed);
    CHECK(db->exec("CREATE TABLE u(y)").status().code() == Status::Code::kNotAllowed);
    CHECK(db->put("k", "changed").code() == Status::Code::kNotAllowed);
    CHECK(db->setAlarm(5).code() == Status::Code::kNotAllowed);
    REQUIRE_OK(db->begin());  // a deferred read transaction
    CHECK(valueOf(db->keyCount()) == 1);
    REQUIRE_OK(db->commit());
  }
  auto db = openDb(path);
  CHECK(valueOf(db->get("k")) == std::optional<std::string>("v"));
  CHECK(valueOf(db->exec("SELECT count(*) FROM t")).rows == std::vector<Row>{{int64_t{1}}});
  CHECK(valueOf(db->alarm()) == std::nullopt);
}

TEST_CASE("opening a missing file read-only is notFound and creates nothing") {
  TempDir dir;
  OpenOptions readOnly;
  readOnly.readOnly = true;
  const std::string path = dir.file("absent/o.sqlite");
  auto db = ObjectDatabase::open(path, readOnly);
  CHECK(db.status().code() == Status::Code::kNotFound);
  CHECK_FALSE(std::filesystem::exists(dir.file("absent")));
}

}  // namespace
}  // namespace dohost::storage
