// Query: one prepared SQLite statement, finalized when it goes out of scope, so that a read
// transaction never outlives the function that started it (a reader holding a WAL snapshot
// would keep the host's checkpoints from resetting the WAL).
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "dohost/sql_value.h"
#include "format.h"

namespace doctl {

class Query {
 public:
  // Throws CliError (exit 1) with SQLite's message if the statement cannot be prepared.
  Query(sqlite3* db, std::string_view sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr) !=
        SQLITE_OK) {
      std::string message = sqlite3_errmsg(db);
      sqlite3_finalize(stmt_);
      throw CliError(kExitFailed, message);
    }
  }
  ~Query() { sqlite3_finalize(stmt_); }
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;

  Query& bind(int index, int64_t value) {
    sqlite3_bind_int64(stmt_, index, value);
    return *this;
  }
  Query& bind(int index, std::string_view text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }

  // True while there is a row. Throws CliError with SQLite's message on an error.
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw CliError(kExitFailed, sqlite3_errmsg(db_));
  }

  int64_t integer(int column) { return sqlite3_column_int64(stmt_, column); }
  bool isNull(int column) { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
  std::string bytes(int column) {
    const void* data = sqlite3_column_blob(stmt_, column);
    int size = sqlite3_column_bytes(stmt_, column);
    return data == nullptr ? std::string() : std::string(static_cast<const char*>(data), size);
  }
  dohost::SqlValue value(int column) {
    switch (sqlite3_column_type(stmt_, column)) {
      case SQLITE_INTEGER:
        return sqlite3_column_int64(stmt_, column);
      case SQLITE_FLOAT:
        return sqlite3_column_double(stmt_, column);
      case SQLITE_TEXT:
        return bytes(column);
      case SQLITE_BLOB:
        return dohost::Blob{bytes(column)};
      default:
        return nullptr;
    }
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

}  // namespace doctl
