// SqlValue: one SQLite value as C++ sees it. Part of the shared vocabulary (object authors
// bind parameters and read rows with it), so it depends on nothing but the standard library.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace dohost {

// Bytes that SQLite stores as a BLOB rather than TEXT.
struct Blob {
  std::string bytes;
  bool operator==(const Blob&) const = default;
};

// NULL, INTEGER, REAL, TEXT, BLOB.
using SqlValue = std::variant<std::nullptr_t, int64_t, double, std::string, Blob>;

// The materialized result of one statement: column names, rows, and what it touched.
struct SqlResult {
  std::vector<std::string> columns;
  std::vector<std::vector<SqlValue>> rows;
  int64_t rowsRead = 0;     // rows the statement returned or examined for its answer
  int64_t rowsWritten = 0;  // rows inserted, updated or deleted (sqlite3_changes)
};

}  // namespace dohost
