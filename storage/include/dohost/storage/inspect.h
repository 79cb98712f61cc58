// Read-only inspection of an object's database, shared by `doctl sql` / `doctl show` and the
// admin API's SQL and table endpoints (the dashboard). Arbitrary SQL is safe here because the
// database is open read-only: SQLite itself refuses any statement that would write, and
// ATTACH (so also VACUUM INTO) is switched off, so no other file can be written either.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dohost/sql_value.h"
#include "dohost/status.h"
#include "dohost/storage/object_db.h"

namespace dohost::storage {

struct InspectLimits {
  int64_t maxRows = 0;    // rows kept per statement (0: all); the rest are not read
  int64_t maxBytes = 0;   // text and blob bytes kept per statement (0: all); the row that
                          // passes it is the last one kept
  int64_t timeoutMs = 0;  // the whole run is interrupted after this long (0: never)
};

// What one statement returned.
struct StatementOutput {
  std::vector<std::string> columns;
  std::vector<std::vector<SqlValue>> rows;
  bool truncated = false;  // maxRows or maxBytes was reached: more rows were there
};

// Runs `sql` (one or more ';'-separated statements, in order) on `db`, which must be open
// read-only (else kInvalidArgument, and nothing runs). The reserved _do_ tables are readable.
// `params` are bound by position (?1, ?2...) in every statement that has parameters.
// `each` gets the output of every statement that returns columns, as soon as it finished.
// Errors: a statement that would write is kNotAllowed (SQLite's own "attempt to write a
// readonly database"); ATTACH is kSqlError ("too many attached databases"); running past
// timeoutMs is kSqlError with SQLITE_INTERRUPT. Statements before the failing one have run.
Status runReadOnlySql(ObjectDatabase& db, std::string_view sql, const InspectLimits& limits,
                      const std::function<void(StatementOutput&)>& each,
                      const std::vector<SqlValue>& params = {});

struct TableRows {
  std::string name;
  std::optional<int64_t> rows;  // nullopt: counting failed (e.g. a virtual table's module is missing)
};
// Every table of the database (sqlite_schema), by name, with its row count.
Result<std::vector<TableRows>> tableRowCounts(ObjectDatabase& db);

}  // namespace dohost::storage
