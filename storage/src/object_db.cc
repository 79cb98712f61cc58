#include "dohost/storage/object_db.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <climits>
#include <filesystem>
#include <memory>
#include <set>

#include <sqlite3.h>

#include "authorizer.h"
#include "sqlite_util.h"

namespace dohost::storage {
namespace {

constexpr int kBusyTimeoutMs = 5000;

// The alarm and its failure record live in _do_meta under these keys.
constexpr char kAlarmKey[] = "alarm";
constexpr char kFailedScheduledKey[] = "alarm_failed_scheduled";
constexpr char kFailedRetriesKey[] = "alarm_failed_retries";
constexpr char kFailedErrorKey[] = "alarm_failed_error";
constexpr char kFailedAtKey[] = "alarm_failed_at";
constexpr char kFenceTokenKey[] = "fence_token";

// _do_meta.value has no declared type on purpose: a column declared ANY in a non-STRICT table
// gets NUMERIC affinity, which would turn a name like "007" into the integer 7.
constexpr char kSchema[] = R"sql(
  CREATE TABLE IF NOT EXISTS _do_meta(key TEXT PRIMARY KEY, value);
  CREATE TABLE IF NOT EXISTS _do_kv(key BLOB PRIMARY KEY, value BLOB) WITHOUT ROWID;
)sql";

// Made by the first schedule an object sets (in that event's transaction), so the files of
// objects that never schedule anything stay as they were.
constexpr char kScheduleSchema[] = R"sql(
  CREATE TABLE IF NOT EXISTS _do_schedules(
    name          TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    spec          TEXT NOT NULL,
    payload       BLOB NOT NULL,
    planned_ms    INTEGER NOT NULL,
    next_ms       INTEGER,
    retry_count   INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    last_error_ms INTEGER
  );
)sql";

constexpr char kScheduleColumns[] =
    "name, kind, spec, payload, planned_ms, next_ms, retry_count, last_error, last_error_ms";

Status checkKey(const Limits& limits, std::string_view key) {
  if (key.size() > limits.maxKeyBytes) {
    return Status::invalidArgument("Keys cannot be larger than " +
                                   std::to_string(limits.maxKeyBytes) + " bytes.");
  }
  return Status::ok();
}

Status checkValue(const Limits& limits, std::string_view value) {
  if (value.size() > limits.maxValueBytes) {
    return Status::invalidArgument("Values cannot be larger than " +
                                   std::to_string(limits.maxValueBytes) + " bytes.");
  }
  return Status::ok();
}

Status checkBatch(const Limits& limits, size_t count) {
  if (count > limits.maxBatch) {
    return Status::invalidArgument("Maximum number of key value pairs is " +
                                   std::to_string(limits.maxBatch) + ".");
  }
  return Status::ok();
}

Status configure(sqlite3* db, const OpenOptions& options) {
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  // The limits Cloudflare documents for user SQL. SQLITE_LIMIT_LENGTH stays at its default:
  // the host's own values are checked against Limits instead.
  sqlite3_limit(db, SQLITE_LIMIT_SQL_LENGTH, 100000);
  sqlite3_limit(db, SQLITE_LIMIT_COLUMN, 100);
  sqlite3_limit(db, SQLITE_LIMIT_VARIABLE_NUMBER, 100);
  sqlite3_limit(db, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 50);
  if (!options.readOnly) {
    Statement wal(db, "PRAGMA journal_mode=WAL");
    if (!wal.step()) return wal.status().isOk() ? Status::ioError("journal_mode gave no row")
                                                : wal.status();
    if (wal.columnText(0) != "wal") {
      return Status::ioError("cannot switch to WAL mode (got " + wal.columnText(0) + ")");
    }
  }
  const char* sync = options.durability == Durability::kFull ? "PRAGMA synchronous=FULL"
                                                             : "PRAGMA synchronous=NORMAL";
  if (Status s = execSql(db, sync); !s.isOk()) return s;
  if (Status s = execSql(db, "PRAGMA foreign_keys=ON"); !s.isOk()) return s;
  if (!options.readOnly) return execSql(db, kSchema);
  return Status::ok();
}

Status putMeta(sqlite3* db, std::string_view key, const SqlValue& value) {
  Statement stmt(db, "INSERT OR REPLACE INTO _do_meta(key, value) VALUES(?1, ?2)");
  stmt.bindText(1, key).bindValue(2, value);
  return stmt.run();
}

Status deleteMeta(sqlite3* db, std::initializer_list<std::string_view> keys) {
  Statement stmt(db, "DELETE FROM _do_meta WHERE key = ?1");
  for (std::string_view key : keys) {
    stmt.reset();
    stmt.bindText(1, key);
    if (Status s = stmt.run(); !s.isOk()) return s;
  }
  return Status::ok();
}

Result<std::optional<SqlValue>> readMeta(sqlite3* db, std::string_view key) {
  Statement stmt(db, "SELECT value FROM _do_meta WHERE key = ?1");
  stmt.bindText(1, key);
  if (!stmt.step()) {
    if (!stmt.status().isOk()) return stmt.status();
    return std::optional<SqlValue>();
  }
  return std::optional<SqlValue>(stmt.columnValue(0));
}

Result<std::optional<int64_t>> readMetaInt(sqlite3* db, std::string_view key) {
  Result<std::optional<SqlValue>> value = readMeta(db, key);
  if (!value.isOk()) return value.status();
  if (!value->has_value() || !std::holds_alternative<int64_t>(**value)) {
    return std::optional<int64_t>();
  }
  return std::optional<int64_t>(std::get<int64_t>(**value));
}

// The smallest string greater than every string that starts with `prefix`, or nullopt when no
// such bound exists (an empty prefix or one made only of 0xFF bytes).
std::optional<std::string> prefixEnd(std::string prefix) {
  while (!prefix.empty() && static_cast<unsigned char>(prefix.back()) == 0xFF) prefix.pop_back();
  if (prefix.empty()) return std::nullopt;
  prefix.back() = static_cast<char>(static_cast<unsigned char>(prefix.back()) + 1);
  return prefix;
}

// Drops every user object. Triggers go first (one could fire during a table's implicit DELETE),
// then views, then virtual tables (which drop their own shadow tables), then ordinary tables,
// which take their indexes with them. Foreign keys are deferred so drop order does not matter.
Status dropUserObjects(sqlite3* db) {
  Statement deferred(db, "PRAGMA defer_foreign_keys");
  int64_t wasDeferred = deferred.step() ? deferred.columnInt(0) : 0;
  if (!deferred.status().isOk()) return deferred.status();
  if (Status s = execSql(db, "PRAGMA defer_foreign_keys=ON"); !s.isOk()) return s;
  struct Kind {
    const char* where;
    const char* keyword;
  };
  constexpr Kind kKinds[] = {
      {"type = 'trigger'", "TRIGGER"},
      {"type = 'view'", "VIEW"},
      {"type = 'table' AND rootpage = 0", "TABLE"},
      {"type = 'table'", "TABLE"},
      {"type = 'index'", "INDEX"},
  };
  for (const Kind& kind : kKinds) {
    std::vector<std::string> names;
    Statement list(db, std::string("SELECT name FROM sqlite_schema WHERE ") + kind.where +
                           " AND name NOT LIKE '\\_do\\_%' ESCAPE '\\'"
                           " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'");
    while (list.step()) names.push_back(list.columnText(0));
    if (!list.status().isOk()) return list.status();
    for (const std::string& name : names) {
      std::string drop = std::string("DROP ") + kind.keyword + " IF EXISTS " + quoteIdent(name);
      if (Status s = execSql(db, drop); !s.isOk()) return s;
    }
  }
  return execSql(db, wasDeferred ? "PRAGMA defer_foreign_keys=ON"
                                 : "PRAGMA defer_foreign_keys=OFF");
}

// True if [p, end) holds nothing SQLite would run: whitespace, ';' and comments. SQLite stops
// reading at a NUL byte, so that ends the text too.
bool onlyTrivia(const char* p, const char* end) {
  while (p < end) {
    if (*p == '\0') return true;
    if (std::isspace(static_cast<unsigned char>(*p)) || *p == ';') {
      ++p;
    } else if (*p == '-' && p + 1 < end && p[1] == '-') {
      while (p < end && *p != '\n') ++p;
    } else if (*p == '/' && p + 1 < end && p[1] == '*') {
      constexpr std::string_view kClose = "*/";
      const char* close = std::search(p + 2, end, kClose.begin(), kClose.end());
      if (close == end) return true;  // SQLite also treats an unclosed comment as the end
      p = close + 2;
    } else {
      return false;
    }
  }
  return true;
}

// Lets the host run its own statements while the user authorizer is installed, without
// calling sqlite3_set_authorizer again (which would expire every prepared statement).
class HostTurn {
 public:
  explicit HostTurn(AuthorizerState& state) : state_(state) { state_.hostTurn = true; }
  ~HostTurn() { state_.hostTurn = false; }
  HostTurn(const HostTurn&) = delete;
  HostTurn& operator=(const HostTurn&) = delete;

 private:
  AuthorizerState& state_;
};

// Installs the user authorizer for its lifetime.
class AuthorizerScope {
 public:
  AuthorizerScope(sqlite3* db, AuthorizerState* state) : db_(db) {
    if (state != nullptr) sqlite3_set_authorizer(db_, userSqlAuthorizer, state);
  }
  ~AuthorizerScope() { sqlite3_set_authorizer(db_, nullptr, nullptr); }
  AuthorizerScope(const AuthorizerScope&) = delete;
  AuthorizerScope& operator=(const AuthorizerScope&) = delete;

 private:
  sqlite3* db_;
};

Result<std::set<std::string>> reservedNames(sqlite3* db) {
  Statement stmt(db, "SELECT name FROM sqlite_schema WHERE name LIKE '\\_do\\_%' ESCAPE '\\'");
  std::set<std::string> names;
  while (stmt.step()) names.insert(stmt.columnText(0));
  if (!stmt.status().isOk()) return stmt.status();
  return names;
}

Status bindParams(sqlite3_stmt* stmt, const std::vector<SqlValue>& params) {
  int expected = sqlite3_bind_parameter_count(stmt);
  if (static_cast<size_t>(expected) != params.size()) {
    return Status::invalidArgument("the statement takes " + std::to_string(expected) +
                                   " parameters but " + std::to_string(params.size()) +
                                   " were given");
  }
  for (size_t i = 0; i < params.size(); ++i) {
    if (bindValue(stmt, static_cast<int>(i) + 1, params[i]) != SQLITE_OK) {
      return errorFrom(sqlite3_db_handle(stmt));
    }
  }
  return Status::ok();
}

// Steps `stmt` to completion. With `out`, collects its columns, rows and counts; the count of
// rows written is the change in total_changes, which is 0 for DDL (sqlite3_changes would
// repeat the previous DML statement's count there) and includes rows written by triggers.
Status stepAll(sqlite3* db, sqlite3_stmt* stmt, SqlResult* out) {
  if (out != nullptr) {
    for (int i = 0; i < sqlite3_column_count(stmt); ++i) {
      const char* name = sqlite3_column_name(stmt, i);
      out->columns.emplace_back(name == nullptr ? "" : name);
    }
  }
  int64_t changesBefore = sqlite3_total_changes64(db);
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    if (out == nullptr) continue;
    std::vector<SqlValue>& row = out->rows.emplace_back();
    for (int i = 0; i < sqlite3_data_count(stmt); ++i) row.push_back(columnValue(stmt, i));
    ++out->rowsRead;
  }
  if (rc != SQLITE_DONE) return errorFrom(db);
  if (out != nullptr && !sqlite3_stmt_readonly(stmt)) {
    out->rowsWritten = sqlite3_total_changes64(db) - changesBefore;
  }
  return Status::ok();
}

// Runs a user ALTER TABLE. SQLite does not show the authorizer the new name of a RENAME, so
// the statement runs inside a savepoint and is undone if it produced a reserved name.
Status stepAlter(sqlite3* db, sqlite3_stmt* stmt, AuthorizerState& auth, SqlResult* out) {
  std::set<std::string> before;
  {
    HostTurn host(auth);
    Result<std::set<std::string>> names = reservedNames(db);
    if (!names.isOk()) return names.status();
    before = std::move(*names);
    if (Status s = execSql(db, "SAVEPOINT _do_alter"); !s.isOk()) return s;
  }
  Status status = stepAll(db, stmt, out);
  HostTurn host(auth);
  if (status.isOk()) {
    Result<std::set<std::string>> after = reservedNames(db);
    if (!after.isOk()) status = after.status();
    for (const std::string& name : after.isOk() ? *after : before) {
      if (!before.contains(name)) {
        status = Status::notAllowed(reservedNameMessage(name));
        break;
      }
    }
  }
  if (!status.isOk()) {
    (void)execSql(db, "ROLLBACK TO _do_alter; RELEASE _do_alter");
    return status;
  }
  return execSql(db, "RELEASE _do_alter");
}

// The connection's own open write-ahead log, read through its VFS (so injected faults reach
// these reads as they reach SQLite's). A connection with no log open reads as an empty file.
class ConnectionWalSource final : public WalSource {
 public:
  explicit ConnectionWalSource(sqlite3_file* file) : file_(file) {}

  Result<int64_t> size() override {
    if (!isOpen()) return int64_t{0};
    sqlite3_int64 bytes = 0;
    if (int rc = file_->pMethods->xFileSize(file_, &bytes); rc != SQLITE_OK) {
      return Status::sqlError(rc, std::string("cannot size the WAL: ") + sqlite3_errstr(rc));
    }
    return int64_t{bytes};
  }

  Status read(int64_t offset, std::span<char> out) override {
    if (!isOpen()) return Status::sqlError(SQLITE_IOERR_SHORT_READ, "the WAL is not open");
    int rc = file_->pMethods->xRead(file_, out.data(), static_cast<int>(out.size()), offset);
    if (rc != SQLITE_OK) {
      return Status::sqlError(rc, std::string("cannot read the WAL: ") + sqlite3_errstr(rc));
    }
    return Status::ok();
  }

 private:
  bool isOpen() const { return file_ != nullptr && file_->pMethods != nullptr; }

  sqlite3_file* file_;  // owned by the connection
};

}  // namespace

Result<std::unique_ptr<ObjectDatabase>> ObjectDatabase::open(const std::string& path,
                                                            const OpenOptions& options) {
  namespace fs = std::filesystem;
  int flags = SQLITE_OPEN_NOMUTEX;
  std::error_code error;
  if (options.readOnly) {
    if (!fs::exists(path, error)) return Status::notFound("no database at " + path);
    flags |= SQLITE_OPEN_READONLY;
  } else {
    fs::path parent = fs::path(path).parent_path();
    if (!parent.empty() && !fs::create_directories(parent, error) && error) {
      return Status::ioError("cannot create " + parent.string() + ": " + error.message());
    }
    flags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  }
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    Status status = Status::ioError("cannot open " + path + ": " + sqlite3_errstr(rc));
    sqlite3_close_v2(db);
    return status;
  }
  // Owns `db` from here on, so every early return below closes it.
  std::unique_ptr<ObjectDatabase> database(new ObjectDatabase(db, path, options));
  if (Status s = configure(db, options); !s.isOk()) return s;
  if (options.readOnly) return database;
  if (!options.captureWal) {
    checkpointAfterCommits(db, &database->checkpointError_);
    return database;
  }
  // Replacing SQLite's own WAL hook turns its automatic checkpoint off.
  sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  sqlite3_wal_hook(
      db,
      [](void* arg, sqlite3*, const char*, int frames) -> int {
        auto* wal = static_cast<WalState*>(arg);
        wal->uncaptured = true;
        wal->frames = frames;
        return SQLITE_OK;
      },
      &database->wal_);
  return database;
}

ObjectDatabase::ObjectDatabase(sqlite3* db, std::string path, OpenOptions options)
    : db_(db),
      statements_(std::make_unique<StatementCache>()),
      path_(std::move(path)),
      options_(std::move(options)) {}

ObjectDatabase::~ObjectDatabase() {
  statements_.reset();  // finalized before the connection closes
  sqlite3_close_v2(db_);
}

Status ObjectDatabase::setIdentity(std::string_view className, std::string_view id,
                                   std::optional<std::string_view> name) {
  return atomically(db_, commits_, [&]() -> Status {
    if (Status s = putMeta(db_, "class", std::string(className)); !s.isOk()) return s;
    if (Status s = putMeta(db_, "id", std::string(id)); !s.isOk()) return s;
    SqlValue nameValue = name ? SqlValue(std::string(*name)) : SqlValue(nullptr);
    if (Status s = putMeta(db_, "name", nameValue); !s.isOk()) return s;
    int64_t nowMs = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
    Statement created(db_, "INSERT OR IGNORE INTO _do_meta(key, value) VALUES('created_ms', ?1)");
    created.bindInt(1, nowMs);
    return created.run();
  });
}

Result<std::optional<std::string>> ObjectDatabase::meta(std::string_view key) {
  Statement stmt(db_, "SELECT value FROM _do_meta WHERE key = ?1");
  stmt.bindText(1, key);
  if (!stmt.step()) {
    if (!stmt.status().isOk()) return stmt.status();
    return std::optional<std::string>();
  }
  if (stmt.columnIsNull(0)) return std::optional<std::string>();
  return std::optional<std::string>(stmt.columnText(0));  // SQLite renders numbers as text
}

Result<std::optional<std::string>> ObjectDatabase::get(std::string_view key) {
  if (Status s = checkKey(options_.limits, key); !s.isOk()) return s;
  Statement stmt(db_, *statements_, "SELECT value FROM _do_kv WHERE key = ?1");
  stmt.bindBytes(1, key);
  if (!stmt.step()) {
    if (!stmt.status().isOk()) return stmt.status();
    return std::optional<std::string>();
  }
  return std::optional<std::string>(stmt.columnBytes(0));
}

Result<std::vector<KvEntry>> ObjectDatabase::get(const std::vector<std::string>& keys) {
  if (Status s = checkBatch(options_.limits, keys.size()); !s.isOk()) return s;
  for (const std::string& key : keys) {
    if (Status s = checkKey(options_.limits, key); !s.isOk()) return s;
  }
  // One lookup per key: an IN list of 128 would exceed SQLITE_LIMIT_VARIABLE_NUMBER.
  std::set<std::string> sorted(keys.begin(), keys.end());
  std::vector<KvEntry> entries;
  Statement stmt(db_, *statements_, "SELECT value FROM _do_kv WHERE key = ?1");
  for (const std::string& key : sorted) {
    stmt.reset();
    stmt.bindBytes(1, key);
    if (stmt.step()) entries.emplace_back(key, stmt.columnBytes(0));
    if (!stmt.status().isOk()) return stmt.status();
  }
  return entries;
}

Status ObjectDatabase::put(std::string_view key, std::string_view value) {
  if (Status s = checkKey(options_.limits, key); !s.isOk()) return s;
  if (Status s = checkValue(options_.limits, value); !s.isOk()) return s;
  Statement stmt(db_, *statements_, "INSERT OR REPLACE INTO _do_kv(key, value) VALUES(?1, ?2)");
  stmt.bindBytes(1, key).bindBytes(2, value);
  return stmt.run();
}

Status ObjectDatabase::put(const std::vector<KvEntry>& entries) {
  if (Status s = checkBatch(options_.limits, entries.size()); !s.isOk()) return s;
  for (const KvEntry& entry : entries) {
    if (Status s = checkKey(options_.limits, entry.first); !s.isOk()) return s;
    if (Status s = checkValue(options_.limits, entry.second); !s.isOk()) return s;
  }
  return atomically(db_, commits_, [&]() -> Status {
    Statement stmt(db_, *statements_, "INSERT OR REPLACE INTO _do_kv(key, value) VALUES(?1, ?2)");
    for (const KvEntry& entry : entries) {
      stmt.reset();
      stmt.bindBytes(1, entry.first).bindBytes(2, entry.second);
      if (Status s = stmt.run(); !s.isOk()) return s;
    }
    return Status::ok();
  });
}

Result<bool> ObjectDatabase::remove(std::string_view key) {
  if (Status s = checkKey(options_.limits, key); !s.isOk()) return s;
  Statement stmt(db_, *statements_, "DELETE FROM _do_kv WHERE key = ?1");
  stmt.bindBytes(1, key);
  if (Status s = stmt.run(); !s.isOk()) return s;
  return sqlite3_changes64(db_) > 0;
}

Result<int64_t> ObjectDatabase::remove(const std::vector<std::string>& keys) {
  if (Status s = checkBatch(options_.limits, keys.size()); !s.isOk()) return s;
  for (const std::string& key : keys) {
    if (Status s = checkKey(options_.limits, key); !s.isOk()) return s;
  }
  int64_t removed = 0;
  Status status = atomically(db_, commits_, [&]() -> Status {
    Statement stmt(db_, *statements_, "DELETE FROM _do_kv WHERE key = ?1");
    for (const std::string& key : keys) {
      stmt.reset();
      stmt.bindBytes(1, key);
      if (Status s = stmt.run(); !s.isOk()) return s;
      removed += sqlite3_changes64(db_);
    }
    return Status::ok();
  });
  if (!status.isOk()) return status;
  return removed;
}

Result<std::vector<KvEntry>> ObjectDatabase::list(const ListOptions& options) {
  if (options.start && options.startAfter) {
    return Status::invalidArgument("list() cannot be called with both start and startAfter.");
  }
  if (options.limit && *options.limit <= 0) {
    return Status::invalidArgument("List limit must be positive.");
  }
  // The range as [lower, upper) or (lower, upper); prefix narrows both ends.
  std::optional<std::string> lower = options.start ? options.start : options.startAfter;
  bool lowerInclusive = !options.startAfter;
  std::optional<std::string> upper = options.end;
  if (options.prefix) {
    if (!lower || *lower < *options.prefix) {
      lower = options.prefix;
      lowerInclusive = true;
    }
    std::optional<std::string> prefixUpper = prefixEnd(*options.prefix);
    if (prefixUpper && (!upper || *prefixUpper < *upper)) upper = prefixUpper;
  }
  // An inverted range needs no special case: no key satisfies both bounds.
  std::string sql = "SELECT key, value FROM _do_kv WHERE 1";
  if (lower) sql += lowerInclusive ? " AND key >= ?1" : " AND key > ?1";
  if (upper) sql += " AND key < ?2";
  sql += options.reverse ? " ORDER BY key DESC LIMIT ?3" : " ORDER BY key LIMIT ?3";
  Statement stmt(db_, sql);
  if (lower) stmt.bindBytes(1, *lower);
  if (upper) stmt.bindBytes(2, *upper);
  stmt.bindInt(3, options.limit.value_or(-1));
  std::vector<KvEntry> entries;
  while (stmt.step()) entries.emplace_back(stmt.columnBytes(0), stmt.columnBytes(1));
  if (!stmt.status().isOk()) return stmt.status();
  return entries;
}

Result<int64_t> ObjectDatabase::keyCount() {
  Statement stmt(db_, "SELECT count(*) FROM _do_kv");
  if (!stmt.step()) return stmt.status();
  return stmt.columnInt(0);
}

namespace {
bool hasScheduleTable(sqlite3* db, bool readOnly);
}  // namespace

Status ObjectDatabase::deleteAll() {
  return atomically(db_, commits_, [&]() -> Status {
    if (Status s = execSql(db_, "DELETE FROM _do_kv"); !s.isOk()) return s;
    if (hasScheduleTable(db_, false)) {
      if (Status s = execSql(db_, "DELETE FROM _do_schedules"); !s.isOk()) return s;
    }
    if (Status s = deleteMeta(db_, {kAlarmKey, kFailedScheduledKey, kFailedRetriesKey,
                                    kFailedErrorKey, kFailedAtKey});
        !s.isOk()) {
      return s;
    }
    return dropUserObjects(db_);
  });
}

namespace {

ScheduleRecord readSchedule(const Statement& stmt) {
  ScheduleRecord r;
  r.name = stmt.columnText(0);
  r.kind = stmt.columnText(1);
  r.spec = stmt.columnText(2);
  r.payload = stmt.columnBytes(3);
  r.plannedMs = stmt.columnInt(4);
  if (!stmt.columnIsNull(5)) r.nextMs = stmt.columnInt(5);
  r.retryCount = static_cast<int>(stmt.columnInt(6));
  if (!stmt.columnIsNull(7)) r.lastError = stmt.columnText(7);
  if (!stmt.columnIsNull(8)) r.lastErrorMs = stmt.columnInt(8);
  return r;
}

// Whether the file has the schedules table: one lookup in sqlite_master (schedule calls are
// rare; a file whose object never scheduled anything has none).
bool hasScheduleTable(sqlite3* db, bool /*readOnly*/) {
  Statement stmt(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_do_schedules'");
  return stmt.step();
}

}  // namespace

Result<std::vector<ScheduleRecord>> ObjectDatabase::schedules() {
  std::vector<ScheduleRecord> out;
  if (!hasScheduleTable(db_, options_.readOnly)) return out;
  Statement stmt(db_, std::string("SELECT ") + kScheduleColumns +
                          " FROM _do_schedules ORDER BY name");
  while (stmt.step()) out.push_back(readSchedule(stmt));
  if (!stmt.status().isOk()) return stmt.status();
  return out;
}

Result<std::optional<ScheduleRecord>> ObjectDatabase::schedule(std::string_view name) {
  if (!hasScheduleTable(db_, options_.readOnly)) return std::optional<ScheduleRecord>();
  Statement stmt(db_, std::string("SELECT ") + kScheduleColumns +
                          " FROM _do_schedules WHERE name = ?1");
  stmt.bindText(1, name);
  if (!stmt.step()) {
    if (!stmt.status().isOk()) return stmt.status();
    return std::optional<ScheduleRecord>();
  }
  return std::optional<ScheduleRecord>(readSchedule(stmt));
}

Status ObjectDatabase::putSchedule(const ScheduleRecord& r) {
  if (Status s = execSql(db_, kScheduleSchema); !s.isOk()) return s;
  Statement stmt(db_, std::string("INSERT OR REPLACE INTO _do_schedules(") + kScheduleColumns +
                          ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
  stmt.bindText(1, r.name).bindText(2, r.kind).bindText(3, r.spec).bindBytes(4, r.payload);
  stmt.bindInt(5, r.plannedMs);
  stmt.bindValue(6, r.nextMs ? SqlValue(*r.nextMs) : SqlValue(nullptr));
  stmt.bindInt(7, r.retryCount);
  stmt.bindValue(8, r.lastError ? SqlValue(*r.lastError) : SqlValue(nullptr));
  stmt.bindValue(9, r.lastErrorMs ? SqlValue(*r.lastErrorMs) : SqlValue(nullptr));
  return stmt.run();
}

Result<bool> ObjectDatabase::removeSchedule(std::string_view name) {
  if (!hasScheduleTable(db_, options_.readOnly)) return false;
  Statement stmt(db_, "DELETE FROM _do_schedules WHERE name = ?1");
  stmt.bindText(1, name);
  if (Status s = stmt.run(); !s.isOk()) return s;
  return sqlite3_changes(db_) > 0;
}

Result<int64_t> ObjectDatabase::scheduleCount() {
  if (!hasScheduleTable(db_, options_.readOnly)) return int64_t{0};
  Statement stmt(db_, "SELECT count(*) FROM _do_schedules");
  if (!stmt.step()) return stmt.status();
  return stmt.columnInt(0);
}

Result<std::optional<int64_t>> ObjectDatabase::nextScheduleMs() {
  if (!hasScheduleTable(db_, options_.readOnly)) return std::optional<int64_t>();
  Statement stmt(db_, "SELECT min(next_ms) FROM _do_schedules");
  if (!stmt.step()) return stmt.status();
  if (stmt.columnIsNull(0)) return std::optional<int64_t>();
  return std::optional<int64_t>(stmt.columnInt(0));
}

Result<std::optional<int64_t>> ObjectDatabase::fenceToken() {
  return readMetaInt(db_, kFenceTokenKey);
}

Status ObjectDatabase::setFenceToken(int64_t token) {
  return atomically(db_, commits_, [&]() -> Status { return putMeta(db_, kFenceTokenKey, token); });
}

Result<std::optional<int64_t>> ObjectDatabase::alarm() { return readMetaInt(db_, kAlarmKey); }

Status ObjectDatabase::setAlarm(std::optional<int64_t> ms) {
  return atomically(db_, commits_, [&]() -> Status {
    Status s = ms ? putMeta(db_, kAlarmKey, *ms) : deleteMeta(db_, {kAlarmKey});
    if (!s.isOk()) return s;
    return deleteMeta(db_, {kFailedScheduledKey, kFailedRetriesKey, kFailedErrorKey,
                            kFailedAtKey});
  });
}

Result<std::optional<AlarmFailure>> ObjectDatabase::alarmFailure() {
  Result<std::optional<int64_t>> scheduled = readMetaInt(db_, kFailedScheduledKey);
  if (!scheduled.isOk()) return scheduled.status();
  if (!scheduled->has_value()) return std::optional<AlarmFailure>();
  Result<std::optional<int64_t>> retries = readMetaInt(db_, kFailedRetriesKey);
  Result<std::optional<std::string>> error = meta(kFailedErrorKey);
  Result<std::optional<int64_t>> failedAt = readMetaInt(db_, kFailedAtKey);
  for (const Status* s : {&retries.status(), &error.status(), &failedAt.status()}) {
    if (!s->isOk()) return *s;
  }
  AlarmFailure failure;
  failure.scheduledMs = **scheduled;
  failure.retries = static_cast<int>(retries->value_or(0));
  failure.lastError = error->value_or("");
  failure.failedAtMs = failedAt->value_or(0);
  return std::optional<AlarmFailure>(std::move(failure));
}

Status ObjectDatabase::setAlarmFailure(const std::optional<AlarmFailure>& failure) {
  return atomically(db_, commits_, [&]() -> Status {
    if (!failure) {
      return deleteMeta(db_, {kFailedScheduledKey, kFailedRetriesKey, kFailedErrorKey,
                              kFailedAtKey});
    }
    if (Status s = putMeta(db_, kFailedScheduledKey, failure->scheduledMs); !s.isOk()) return s;
    if (Status s = putMeta(db_, kFailedRetriesKey, int64_t{failure->retries}); !s.isOk()) {
      return s;
    }
    if (Status s = putMeta(db_, kFailedErrorKey, failure->lastError); !s.isOk()) return s;
    return putMeta(db_, kFailedAtKey, failure->failedAtMs);
  });
}

Status ObjectDatabase::begin() {
  // A read-only handle cannot take the write lock that IMMEDIATE asks for.
  // Deferred: an event that only reads never takes the write lock. One host is the only
  // writer of the file; in a cluster sharing a data folder, a host that lost its claim may
  // still write once, and then the upgrade fails (busy) rather than interleave.
  return execSql(db_, "BEGIN");
}

Status ObjectDatabase::commit() {
  Status s = execSql(db_, "COMMIT");
  if (s.isOk()) ++commits_;
  return s;
}

Result<std::optional<CapturedPages>> ObjectDatabase::captureCommits() {
  if (!options_.captureWal) return Status::notAllowed("the database is not in capture mode");
  if (inTransaction()) return Status::notAllowed("cannot capture inside a transaction");
  if (!wal_.uncaptured) return std::optional<CapturedPages>();
  sqlite3_file* file = nullptr;
  if (sqlite3_file_control(db_, "main", SQLITE_FCNTL_JOURNAL_POINTER, &file) != SQLITE_OK) {
    return errorFrom(db_);
  }
  ConnectionWalSource source(file);
  Result<WalRead> read = readWalCommits(
      source, wal_.position, {.frameCount = wal_.frames, .mayRestart = wal_.checkpointed});
  if (!read.isOk()) return read.status();
  wal_.position = read->next;
  wal_.uncaptured = false;
  wal_.checkpointed = false;
  if (read->captured.commits == 0) return std::optional<CapturedPages>();
  return std::optional<CapturedPages>(std::move(read->captured));
}

Status ObjectDatabase::checkpointCaptured() {
  if (!options_.captureWal) return Status::notAllowed("the database is not in capture mode");
  if (inTransaction()) return Status::notAllowed("cannot checkpoint inside a transaction");
  if (wal_.uncaptured) {
    return Status::notAllowed("commits since the last capture are not captured yet");
  }
  int rc = sqlite3_wal_checkpoint_v2(db_, "main", SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  // Busy: another connection holds the checkpoint lock; the frames stay for the next try.
  if (rc != SQLITE_OK && rc != SQLITE_BUSY) return errorFrom(db_);
  wal_.checkpointed = true;
  return Status::ok();
}

Status ObjectDatabase::rollback() { return execSql(db_, "ROLLBACK"); }

bool ObjectDatabase::inTransaction() const { return sqlite3_get_autocommit(db_) == 0; }

Status ObjectDatabase::savepoint(std::string_view name) {
  return execSql(db_, "SAVEPOINT " + quoteIdent(name));
}

Status ObjectDatabase::release(std::string_view name) {
  bool wasInTransaction = inTransaction();
  Status s = execSql(db_, "RELEASE " + quoteIdent(name));
  // Releasing a savepoint that opened the transaction commits it.
  if (s.isOk() && wasInTransaction && !inTransaction()) ++commits_;
  return s;
}

Status ObjectDatabase::rollbackTo(std::string_view name) {
  std::string quoted = quoteIdent(name);
  return execSql(db_, "ROLLBACK TO " + quoted + "; RELEASE " + quoted);
}

Result<SqlResult> ObjectDatabase::exec(std::string_view sql, const std::vector<SqlValue>& params) {
  return run(sql, params, /*user=*/true);
}

// Prepares and runs one statement at a time (a later statement may use a table an earlier one
// created), binding `params` to the last and returning its result.
Result<SqlResult> ObjectDatabase::run(std::string_view sql, const std::vector<SqlValue>& params,
                                      bool user) {
  if (sql.size() > INT_MAX) return Status::invalidArgument("the SQL text is too long");
  AuthorizerState auth;
  AuthorizerScope scope(db_, user ? &auth : nullptr);
  // SQLite reports an authorizer refusal only as "not authorized"; say why instead.
  auto explain = [&](Status status) {
    return auth.denial.empty() ? status : Status::notAllowed(auth.denial);
  };
  const char* next = sql.data();
  const char* end = next + sql.size();
  SqlResult result;
  bool bound = false;
  while (!onlyTrivia(next, end)) {
    auth = AuthorizerState{};
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    int rc = sqlite3_prepare_v2(db_, next, static_cast<int>(end - next), &raw, &tail);
    std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> stmt(raw, &sqlite3_finalize);
    if (rc != SQLITE_OK) return explain(errorFrom(db_));
    if (tail == nullptr || tail <= next) break;  // no progress; cannot happen with valid input
    next = tail;
    if (raw == nullptr) continue;
    bool last = onlyTrivia(next, end);
    if (last) {
      if (Status s = bindParams(raw, params); !s.isOk()) return s;
      bound = true;
    } else if (sqlite3_bind_parameter_count(raw) > 0) {
      return Status::invalidArgument("only the last statement can have parameters");
    }
    result = SqlResult{};
    SqlResult* out = last ? &result : nullptr;
    Status status = user && auth.sawAlter ? stepAlter(db_, raw, auth, out)
                                          : stepAll(db_, raw, out);
    if (!status.isOk()) return explain(status);
  }
  if (!bound && !params.empty()) {
    return Status::invalidArgument("parameters were given but there is no statement to bind");
  }
  return result;
}

Result<int64_t> ObjectDatabase::sizeBytes() {
  Statement stmt(db_,
                 "SELECT (p.page_count - f.freelist_count) * s.page_size"
                 " FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s");
  if (!stmt.step()) return stmt.status();
  return stmt.columnInt(0);
}

}  // namespace dohost::storage
