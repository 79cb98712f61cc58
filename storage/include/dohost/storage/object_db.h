// ObjectDatabase: one object's SQLite file. Key-value storage with Cloudflare's semantics,
// user SQL behind an authorizer, the object's identity and its alarm, and transactions.
//
// File schema (see docs/storage-format.md). Tables whose names start with "_do_" are the
// host's own; user SQL cannot read or write them:
//   _do_meta(key TEXT PRIMARY KEY, value ANY)        class, id, name, alarm, alarm failure,
//                                                    fencing token (cluster)
//   _do_kv(key BLOB PRIMARY KEY, value BLOB) WITHOUT ROWID
//   _do_schedules(name TEXT PRIMARY KEY, ...)       the object's named schedules (one row each;
//                                                    made by the first putSchedule)
// Keys are compared as bytes (memcmp), which is UTF-8 code point order.
//
// Thread: one thread at a time (the loop thread in the host; doctl's thread when read-only).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dohost/sql_value.h"
#include "dohost/status.h"
#include "dohost/storage/wal_capture.h"

struct sqlite3;

namespace dohost::storage {

class StatementCache;

// Limits enforced with kInvalidArgument and a message naming the limit.
struct Limits {
  size_t maxKeyBytes = 2048;             // Cloudflare's key limit
  size_t maxValueBytes = 2 * 1024 * 1024;  // SQLite-backed objects: 2 MB per value
  size_t maxBatch = 128;                 // keys per multi-key get/put/delete
};

enum class Durability {
  kFull,    // PRAGMA synchronous=FULL: a committed transaction survives power loss
  kNormal,  // synchronous=NORMAL: survives a process crash, may lose the last commits on power loss
};

struct OpenOptions {
  bool readOnly = false;  // doctl: SQLITE_OPEN_READONLY, never creates or writes
  Durability durability = Durability::kFull;
  Limits limits;
  // Capture mode (for a page store that replicates the file): no automatic checkpoint and
  // none when the handle closes, so every committed frame stays in the write-ahead log until
  // captureCommits() has read it and checkpointCaptured() is called. Off: checkpoints follow
  // commits (once the log holds 1000 pages), as always.
  bool captureWal = false;
};

struct ListOptions {
  std::optional<std::string> start;       // inclusive
  std::optional<std::string> startAfter;  // exclusive; combining with start is kInvalidArgument
  std::optional<std::string> end;         // exclusive
  std::optional<std::string> prefix;      // clamps the range to keys with this prefix
  bool reverse = false;                   // descending; does not change what start/end mean
  std::optional<int64_t> limit;           // must be > 0
};

using KvEntry = std::pair<std::string, std::string>;

struct AlarmFailure {
  int64_t scheduledMs = 0;  // the alarm time that failed
  int retries = 0;          // retries made before giving up
  std::string lastError;
  int64_t failedAtMs = 0;
};

// One named schedule as stored in _do_schedules. The runtime interprets kind and spec; the
// database only keeps the row.
struct ScheduleRecord {
  std::string name;
  std::string kind;     // "once", "every" or "cron"
  std::string spec;     // every: the interval in milliseconds; cron: the expression; once: ""
  std::string payload;  // opaque bytes, handed to onSchedule
  int64_t plannedMs = 0;          // the planned time of the run that is due next
  std::optional<int64_t> nextMs;  // when it runs (a retry runs after plannedMs); nullopt: given up
  int retryCount = 0;             // failed attempts of the planned run so far
  std::optional<std::string> lastError;  // of the last failed run (kept after a success)
  std::optional<int64_t> lastErrorMs;
};

class ObjectDatabase {
 public:
  // Opens (creating, unless readOnly) the file and its parent folder, sets WAL mode and the
  // durability, creates the _do_ tables. A read-only open of a missing file is kNotFound.
  static Result<std::unique_ptr<ObjectDatabase>> open(const std::string& path,
                                                      const OpenOptions& options);
  ~ObjectDatabase();
  ObjectDatabase(const ObjectDatabase&) = delete;
  ObjectDatabase& operator=(const ObjectDatabase&) = delete;

  const std::string& path() const { return path_; }

  // Identity, written once by the host when the object is first created.
  Status setIdentity(std::string_view className, std::string_view id,
                     std::optional<std::string_view> name);
  Result<std::optional<std::string>> meta(std::string_view key);

  // Key-value API. Values are opaque bytes.
  Result<std::optional<std::string>> get(std::string_view key);
  Result<std::vector<KvEntry>> get(const std::vector<std::string>& keys);  // sorted, missing omitted
  Status put(std::string_view key, std::string_view value);
  Status put(const std::vector<KvEntry>& entries);  // atomic
  Result<bool> remove(std::string_view key);        // existed?
  Result<int64_t> remove(const std::vector<std::string>& keys);  // how many existed
  Result<std::vector<KvEntry>> list(const ListOptions& options);
  Result<int64_t> keyCount();
  // Deletes every key, every user table, the alarm and the schedules; keeps the identity.
  Status deleteAll();

  // User SQL: one or more ';'-separated statements; params bind to the last one, whose result
  // is returned. Runs under the authorizer: _do_ tables, ATTACH/DETACH and transaction control
  // statements are refused (kNotAllowed). On a read-only database a writing statement is
  // refused by SQLite itself (kNotAllowed).
  Result<SqlResult> exec(std::string_view sql, const std::vector<SqlValue>& params = {});

  // The alarm (milliseconds since the Unix epoch), stored in _do_meta.
  Result<std::optional<int64_t>> alarm();
  Status setAlarm(std::optional<int64_t> ms);  // nullopt deletes it (and any failure record)
  Result<std::optional<AlarmFailure>> alarmFailure();
  Status setAlarmFailure(const std::optional<AlarmFailure>& failure);

  // Named schedules, in _do_schedules, which the first putSchedule makes (in the caller's
  // transaction): a file whose object never scheduled anything has no such table and reads an
  // empty list.
  Result<std::vector<ScheduleRecord>> schedules();  // by name
  Result<std::optional<ScheduleRecord>> schedule(std::string_view name);
  Status putSchedule(const ScheduleRecord& record);  // inserts or replaces by name
  Result<bool> removeSchedule(std::string_view name);  // existed?
  Result<int64_t> scheduleCount();
  Result<std::optional<int64_t>> nextScheduleMs();  // the earliest nextMs, if any

  // The fencing token of the host that owns the object in a cluster (the revision of its
  // ownership key in etcd), in _do_meta "fence_token". The host writes its token in the first
  // transaction it runs after a claim and compares it in every later one, so a host whose
  // claim is older than the one recorded here cannot commit. deleteAll() keeps it.
  Result<std::optional<int64_t>> fenceToken();
  Status setFenceToken(int64_t token);

  // Transactions. begin() opens the outer transaction (BEGIN IMMEDIATE); nested scopes use
  // savepoints so an explicit transaction inside an event can roll back alone.
  Status begin();
  Status commit();
  Status rollback();
  bool inTransaction() const;
  Status savepoint(std::string_view name);
  Status release(std::string_view name);
  Status rollbackTo(std::string_view name);  // rolls back and releases the savepoint

  // Bytes in use: (page_count - freelist_count) * page_size.
  Result<int64_t> sizeBytes();
  // Number of transactions this handle committed (for metrics).
  int64_t commits() const { return commits_; }
  // Why the last checkpoint (copying the write-ahead log into the database file, which follows
  // commits) failed, once; ok if it did not. A failed checkpoint loses nothing: the commits
  // are in the log, and the next commit tries again.
  Status takeCheckpointError() { return std::exchange(checkpointError_, Status::ok()); }

  // Capture mode only (OpenOptions::captureWal). The page images the transactions committed
  // since the last capture wrote, read from the write-ahead log; nullopt when nothing was
  // committed since (a rolled-back transaction writes nothing that counts). The first capture
  // after open reads every committed frame the log holds, so frames a closed handle left
  // there are captured again. A failed capture keeps its position: the next one reads the
  // same frames again. kNotAllowed outside capture mode or inside a transaction.
  Result<std::optional<CapturedPages>> captureCommits();
  // Capture mode only: the captured frames are stored elsewhere, so the log may be copied into
  // the database file (a passive checkpoint; it never waits for readers). kNotAllowed while
  // commits are not captured yet, outside capture mode, or inside a transaction.
  Status checkpointCaptured();

  sqlite3* handle() { return db_; }  // for tools that read the file directly

 private:
  ObjectDatabase(sqlite3* db, std::string path, OpenOptions options);
  Result<SqlResult> run(std::string_view sql, const std::vector<SqlValue>& params, bool user);

  sqlite3* db_;
  std::unique_ptr<StatementCache> statements_;  // hot-path statements, prepared once
  std::string path_;
  OpenOptions options_;
  int64_t commits_ = 0;
  Status checkpointError_;

  // Capture mode: set by the WAL hook after each commit of this handle.
  struct WalState {
    bool uncaptured = true;               // commits since the last capture (open counts as one)
    std::optional<int64_t> frames;        // frames in the log after the last commit, if known
    bool checkpointed = false;            // a checkpoint ran since the last capture
    WalPosition position;                 // after the last captured commit frame
  };
  WalState wal_;
};

}  // namespace dohost::storage
