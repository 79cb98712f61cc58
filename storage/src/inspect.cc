#include "dohost/storage/inspect.h"

#include <chrono>
#include <memory>

#include "sqlite_util.h"

namespace dohost::storage {
namespace {

// sqlite3_progress_handler callback: nonzero interrupts the running statement.
int pastDeadline(void* deadline) {
  return std::chrono::steady_clock::now() > *static_cast<std::chrono::steady_clock::time_point*>(deadline);
}

// Sets the inspector's limits on `db` for one run and puts the object's limits back after.
class InspectorLimits {
 public:
  explicit InspectorLimits(sqlite3* db) : db_(db) {
    for (Saved& s : saved_) s.value = sqlite3_limit(db, s.id, s.inspector);
  }
  ~InspectorLimits() {
    for (const Saved& s : saved_) sqlite3_limit(db_, s.id, s.value);
    sqlite3_progress_handler(db_, 0, nullptr, nullptr);
  }
  InspectorLimits(const InspectorLimits&) = delete;
  InspectorLimits& operator=(const InspectorLimits&) = delete;

 private:
  struct Saved {
    int id;
    int inspector;
    int value = 0;
  };
  sqlite3* db_;
  // No ATTACH: the run reads this one file and writes no other. The storage layer holds object
  // code to Cloudflare's SQL limits; an inspector gets SQLite's defaults back.
  Saved saved_[4] = {{SQLITE_LIMIT_ATTACHED, 0},
                     {SQLITE_LIMIT_COLUMN, 2000},
                     {SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 50000},
                     {SQLITE_LIMIT_VARIABLE_NUMBER, 32766}};
};

}  // namespace

Status runReadOnlySql(ObjectDatabase& database, std::string_view sql, const InspectLimits& limits,
                      const std::function<void(StatementOutput&)>& each,
                      const std::vector<SqlValue>& params) {
  sqlite3* db = database.handle();
  if (sqlite3_db_readonly(db, "main") != 1) {
    return Status::invalidArgument("the inspector runs SQL only on a database open read-only");
  }
  InspectorLimits scoped(db);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(limits.timeoutMs);
  if (limits.timeoutMs > 0) sqlite3_progress_handler(db, 1000, &pastDeadline, &deadline);
  auto interrupted = [&] {
    return Status::sqlError(SQLITE_INTERRUPT, "interrupted: the statement ran longer than " +
                                                  std::to_string(limits.timeoutMs) + " ms");
  };
  std::string text(sql);
  const char* next = text.c_str();
  const char* end = next + text.size();
  while (next < end && *next != '\0') {
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    if (sqlite3_prepare_v2(db, next, static_cast<int>(end - next), &raw, &tail) != SQLITE_OK) {
      Status s = errorFrom(db);
      sqlite3_finalize(raw);
      return (s.sqliteCode() & 0xFF) == SQLITE_INTERRUPT ? interrupted() : s;
    }
    std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> stmt(raw, &sqlite3_finalize);
    next = tail;
    if (raw == nullptr) continue;  // whitespace or a comment
    int wanted = sqlite3_bind_parameter_count(raw);
    for (int i = 0; i < wanted && i < static_cast<int>(params.size()); ++i) {
      if (sqlite3_bind_parameter_name(raw, i + 1) == nullptr) continue;  // ?3 not used, say
      if (bindValue(raw, i + 1, params[static_cast<size_t>(i)]) != SQLITE_OK) return errorFrom(db);
    }
    StatementOutput out;
    int64_t bytes = 0;
    int columns = sqlite3_column_count(raw);
    for (int i = 0; i < columns; ++i) {
      const char* name = sqlite3_column_name(raw, i);
      out.columns.emplace_back(name == nullptr ? "" : name);
    }
    int rc;
    while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
      if ((limits.maxRows > 0 && static_cast<int64_t>(out.rows.size()) >= limits.maxRows) ||
          (limits.maxBytes > 0 && bytes > limits.maxBytes)) {
        out.truncated = true;
        rc = SQLITE_DONE;
        break;
      }
      std::vector<SqlValue>& row = out.rows.emplace_back();
      row.reserve(static_cast<size_t>(columns));
      for (int i = 0; i < columns; ++i) {
        const SqlValue& v = row.emplace_back(columnValue(raw, i));
        if (const auto* text = std::get_if<std::string>(&v)) bytes += static_cast<int64_t>(text->size());
        if (const auto* blob = std::get_if<Blob>(&v)) bytes += static_cast<int64_t>(blob->bytes.size());
      }
    }
    if (rc != SQLITE_DONE) {
      Status s = errorFrom(db);
      return (s.sqliteCode() & 0xFF) == SQLITE_INTERRUPT ? interrupted() : s;
    }
    if (columns > 0) each(out);
  }
  return Status::ok();
}

Result<std::vector<TableRows>> tableRowCounts(ObjectDatabase& database) {
  sqlite3* db = database.handle();
  std::vector<TableRows> tables;
  {
    Statement names(db, "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name");
    while (names.step()) tables.push_back({names.columnText(0), std::nullopt});
    if (!names.status().isOk()) return names.status();
  }
  for (TableRows& t : tables) {
    Statement count(db, "SELECT count(*) FROM " + quoteIdent(t.name));
    if (count.step()) t.rows = count.columnInt(0);
  }
  return tables;
}

}  // namespace dohost::storage
