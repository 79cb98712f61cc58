// Small RAII helpers over the SQLite C API for the host's own statements. Private to storage/.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <type_traits>
#include <utility>
#include <variant>

#include <sqlite3.h>

#include "dohost/sql_value.h"
#include "dohost/status.h"

namespace dohost::storage {

// The Status for the connection's most recent error. Writing to a read-only database is a
// refusal (kNotAllowed), not a malfunction.
inline Status errorFrom(sqlite3* db) {
  int code = sqlite3_extended_errcode(db);
  std::string message = sqlite3_errmsg(db);
  if ((code & 0xFF) == SQLITE_READONLY) return Status::notAllowed(message, code);
  return Status::sqlError(code, message);
}

// Runs one or more statements that return no rows the caller needs.
inline Status execSql(sqlite3* db, const std::string& sql) {
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) return errorFrom(db);
  return Status::ok();
}

// "name" with embedded quotes doubled, for identifiers that cannot be bound as parameters.
inline std::string quoteIdent(std::string_view name) {
  std::string quoted = "\"";
  for (char c : name) {
    quoted += c;
    if (c == '"') quoted += '"';
  }
  return quoted + "\"";
}

// Reads column `i` of the current row as the SqlValue matching its storage class.
inline SqlValue columnValue(sqlite3_stmt* stmt, int i) {
  switch (sqlite3_column_type(stmt, i)) {
    case SQLITE_INTEGER:
      return int64_t{sqlite3_column_int64(stmt, i)};
    case SQLITE_FLOAT:
      return sqlite3_column_double(stmt, i);
    case SQLITE_TEXT: {
      const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, i));
      return std::string(text, static_cast<size_t>(sqlite3_column_bytes(stmt, i)));
    }
    case SQLITE_BLOB: {
      const auto* bytes = static_cast<const char*>(sqlite3_column_blob(stmt, i));
      size_t size = static_cast<size_t>(sqlite3_column_bytes(stmt, i));
      return Blob{size == 0 ? std::string() : std::string(bytes, size)};
    }
    default:
      return nullptr;
  }
}

// Binds `value` to parameter `i`. Empty strings and blobs are bound with a non-null pointer,
// because SQLite binds a null pointer as NULL rather than as an empty value.
inline int bindValue(sqlite3_stmt* stmt, int i, const SqlValue& value) {
  return std::visit(
      [&](const auto& v) -> int {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::nullptr_t>) {
          return sqlite3_bind_null(stmt, i);
        } else if constexpr (std::is_same_v<T, int64_t>) {
          return sqlite3_bind_int64(stmt, i, v);
        } else if constexpr (std::is_same_v<T, double>) {
          return sqlite3_bind_double(stmt, i, v);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return sqlite3_bind_text64(stmt, i, v.empty() ? "" : v.data(), v.size(),
                                     SQLITE_TRANSIENT, SQLITE_UTF8);
        } else {
          if (v.bytes.empty()) return sqlite3_bind_zeroblob(stmt, i, 0);
          return sqlite3_bind_blob64(stmt, i, v.bytes.data(), v.bytes.size(), SQLITE_TRANSIENT);
        }
      },
      value);
}

// The prepared statements of the hot paths (get, put, remove), kept for the connection's life
// so each call skips the SQL compiler. Keyed by the address of the statement's literal.
class StatementCache {
 public:
  StatementCache() = default;
  ~StatementCache() {
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
  }
  StatementCache(const StatementCache&) = delete;
  StatementCache& operator=(const StatementCache&) = delete;

  // The cached statement for `sql`, preparing it the first time; null on a prepare error.
  sqlite3_stmt* get(sqlite3* db, const char* sql) {
    auto it = statements_.find(sql);
    if (it != statements_.end()) return it->second;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) {
      return nullptr;
    }
    statements_.emplace(sql, stmt);
    return stmt;
  }

 private:
  std::unordered_map<const char*, sqlite3_stmt*> statements_;
};

// One prepared statement, finalized on destruction (or, when borrowed from a StatementCache,
// reset for its next use). Errors (from prepare, bind or step) are kept in status(); once it
// is not ok, step() returns false and binds are ignored.
class Statement {
 public:
  Statement(sqlite3* db, std::string_view sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr) !=
        SQLITE_OK) {
      status_ = errorFrom(db);
    }
  }
  // REQUIRES: `sql` is a string literal (the cache keys on its address).
  Statement(sqlite3* db, StatementCache& cache, const char* sql) : db_(db), borrowed_(true) {
    stmt_ = cache.get(db, sql);
    if (stmt_ == nullptr) status_ = errorFrom(db);
  }
  ~Statement() {
    if (!borrowed_) {
      sqlite3_finalize(stmt_);
    } else if (stmt_ != nullptr) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  const Status& status() const { return status_; }

  Statement& bindValue(int i, const SqlValue& value) {
    if (status_.isOk() && storage::bindValue(stmt_, i, value) != SQLITE_OK) status_ = errorFrom(db_);
    return *this;
  }
  // As a BLOB, so keys compare bytewise. Empty is bound as a zero-length blob, not NULL.
  Statement& bindBytes(int i, std::string_view bytes) {
    if (!status_.isOk()) return *this;
    int rc = bytes.empty() ? sqlite3_bind_zeroblob(stmt_, i, 0)
                           : sqlite3_bind_blob64(stmt_, i, bytes.data(), bytes.size(),
                                                 SQLITE_TRANSIENT);
    if (rc != SQLITE_OK) status_ = errorFrom(db_);
    return *this;
  }
  Statement& bindText(int i, std::string_view text) {
    if (!status_.isOk()) return *this;
    if (sqlite3_bind_text64(stmt_, i, text.empty() ? "" : text.data(), text.size(),
                            SQLITE_TRANSIENT, SQLITE_UTF8) != SQLITE_OK) {
      status_ = errorFrom(db_);
    }
    return *this;
  }
  Statement& bindInt(int i, int64_t value) { return bindValue(i, value); }

  // True when a row is ready; false when done or failed (see status()).
  bool step() {
    if (!status_.isOk()) return false;
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) status_ = errorFrom(db_);
    return false;
  }
  // Steps to completion, discarding rows.
  Status run() {
    while (step()) {
    }
    return status_;
  }
  // Makes the statement ready to bind and run again.
  void reset() {
    if (stmt_ == nullptr) return;
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  SqlValue columnValue(int i) const { return storage::columnValue(stmt_, i); }
  bool columnIsNull(int i) const { return sqlite3_column_type(stmt_, i) == SQLITE_NULL; }
  int64_t columnInt(int i) const { return sqlite3_column_int64(stmt_, i); }
  // TEXT or BLOB contents as bytes.
  std::string columnBytes(int i) const {
    const auto* bytes = static_cast<const char*>(sqlite3_column_blob(stmt_, i));
    size_t size = static_cast<size_t>(sqlite3_column_bytes(stmt_, i));
    return size == 0 ? std::string() : std::string(bytes, size);
  }
  // Any value converted to text, the way SQLite renders it.
  std::string columnText(int i) const {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, i));
    size_t size = static_cast<size_t>(sqlite3_column_bytes(stmt_, i));
    return text == nullptr ? std::string() : std::string(text, size);
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  bool borrowed_ = false;
  Status status_;
};

// Checkpoints the write-ahead log after commits, as SQLite's own hook does (once the log
// holds 1000 pages), but keeps a failed checkpoint in `*lastError` instead of dropping it
// silently: a disk that fails only there would otherwise let the log grow without a word.
// The commit itself stands either way; the next commit tries the checkpoint again.
inline void checkpointAfterCommits(sqlite3* db, Status* lastError) {
  constexpr int kCheckpointPages = 1000;
  sqlite3_wal_hook(
      db,
      [](void* arg, sqlite3* handle, const char* schema, int pages) -> int {
        if (pages < kCheckpointPages) return SQLITE_OK;
        int rc = sqlite3_wal_checkpoint_v2(handle, schema, SQLITE_CHECKPOINT_PASSIVE, nullptr,
                                           nullptr);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY) *static_cast<Status*>(arg) = errorFrom(handle);
        return SQLITE_OK;
      },
      lastError);
}

// Runs `body` (returning Status) inside a savepoint, so a failure part-way leaves nothing
// behind whether or not an outer transaction is open. `commits` counts the transaction when
// the savepoint was the outermost one.
template <typename Body>
Status atomically(sqlite3* db, int64_t& commits, Body&& body) {
  bool outermost = sqlite3_get_autocommit(db) != 0;
  if (Status s = execSql(db, "SAVEPOINT _do_atomic"); !s.isOk()) return s;
  Status result = body();
  if (result.isOk()) result = execSql(db, "RELEASE _do_atomic");
  if (!result.isOk()) {
    (void)execSql(db, "ROLLBACK TO _do_atomic; RELEASE _do_atomic");
    return result;
  }
  if (outermost) ++commits;
  return Status::ok();
}

}  // namespace dohost::storage
