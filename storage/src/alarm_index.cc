#include "dohost/storage/alarm_index.h"

#include <chrono>
#include <filesystem>
#include <thread>

#include <sqlite3.h>

#include "sqlite_util.h"

namespace dohost::storage {
namespace {

constexpr int kBusyTimeoutMs = 5000;
constexpr int kSetupRetryMs = 50;

// The index must not lose a wake-up, so it is as durable as an object's database.
constexpr char kSetup[] = R"sql(
  PRAGMA synchronous=FULL;
  CREATE TABLE IF NOT EXISTS alarms(
    class   TEXT NOT NULL,
    id      TEXT NOT NULL,
    name    TEXT,
    time_ms INTEGER NOT NULL,
    PRIMARY KEY(class, id)
  );
  CREATE INDEX IF NOT EXISTS alarms_by_time ON alarms(time_ms);
)sql";

}  // namespace

Result<std::unique_ptr<AlarmIndex>> AlarmIndex::open(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code error;
  fs::path parent = fs::path(path).parent_path();
  if (!parent.empty() && !fs::create_directories(parent, error) && error) {
    return Status::ioError("cannot create " + parent.string() + ": " + error.message());
  }
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    Status status = Status::ioError("cannot open " + path + ": " + sqlite3_errstr(rc));
    sqlite3_close_v2(db);
    return status;
  }
  // Owns `db` from here on, so every early return below closes it.
  std::unique_ptr<AlarmIndex> index(new AlarmIndex(db));
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  // The hosts of a cluster share this file and may all open it at once when they start. On a
  // file being created, SQLite can answer "database is locked" without waiting for the busy
  // timeout (a lock upgrade that would deadlock), or leave the journal mode unchanged: then
  // the switch and the schema are tried again, for as long as the busy timeout.
  Status last = Status::ok();
  for (int waitedMs = 0;; waitedMs += kSetupRetryMs) {
    Statement wal(db, "PRAGMA journal_mode=WAL");
    bool isWal = wal.step() && wal.columnText(0) == "wal";
    last = isWal ? Status::ok()
                 : wal.status().isOk() ? Status::ioError("cannot switch " + path + " to WAL mode")
                                       : wal.status();
    if (isWal) last = execSql(db, kSetup);
    if (last.isOk()) return index;
    if (waitedMs >= kBusyTimeoutMs) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(kSetupRetryMs));
  }
}

AlarmIndex::~AlarmIndex() { sqlite3_close_v2(db_); }

Status AlarmIndex::upsert(const AlarmEntry& entry) {
  Statement stmt(db_, R"sql(
      INSERT INTO alarms(class, id, name, time_ms) VALUES(?1, ?2, ?3, ?4)
      ON CONFLICT(class, id) DO UPDATE SET name = excluded.name, time_ms = excluded.time_ms)sql");
  stmt.bindText(1, entry.className).bindText(2, entry.id);
  stmt.bindValue(3, entry.name ? SqlValue(*entry.name) : SqlValue(nullptr));
  stmt.bindInt(4, entry.timeMs);
  return stmt.run();
}

Status AlarmIndex::remove(const std::string& className, const std::string& id) {
  Statement stmt(db_, "DELETE FROM alarms WHERE class = ?1 AND id = ?2");
  stmt.bindText(1, className).bindText(2, id);
  return stmt.run();
}

Result<std::vector<AlarmEntry>> AlarmIndex::all() {
  // Ties are broken by class and id so the order is deterministic.
  Statement stmt(db_, "SELECT class, id, name, time_ms FROM alarms ORDER BY time_ms, class, id");
  std::vector<AlarmEntry> entries;
  while (stmt.step()) {
    AlarmEntry& entry = entries.emplace_back();
    entry.className = stmt.columnText(0);
    entry.id = stmt.columnText(1);
    if (!stmt.columnIsNull(2)) entry.name = stmt.columnText(2);
    entry.timeMs = stmt.columnInt(3);
  }
  if (!stmt.status().isOk()) return stmt.status();
  return entries;
}

}  // namespace dohost::storage
