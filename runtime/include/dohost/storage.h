// What an object can keep: key-value pairs, SQL tables and one alarm, all in its own SQLite
// database. Every write an event makes commits when the event ends (or rolls back if it
// throws); messages the event sent leave only after that commit (the output gate).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dohost/errors.h"
#include "dohost/sql_value.h"
#include "dohost/time.h"

namespace dohost {

struct ListOptions {
  std::optional<std::string> start;       // inclusive
  std::optional<std::string> startAfter;  // exclusive; not together with start
  std::optional<std::string> end;         // exclusive
  std::optional<std::string> prefix;
  bool reverse = false;                   // descending order over the same range
  std::optional<int64_t> limit;           // > 0
};

using KvPairs = std::vector<std::pair<std::string, std::string>>;

// One row of an exec() result. A row owns its values, so it may outlive the cursor it came
// from: `SqlRow r = sql.exec(...).one();` keeps the row. The accessors that return a reference
// return a value instead when called on a temporary row, so `const std::string& t =
// sql.exec(...).one().text(0);` binds to a string that lives as long as `t`; on a const
// temporary (nothing to move from, nothing to keep the value alive) they do not compile.
// Copyable value.
class SqlRow {
 public:
  size_t size() const { return values_.size(); }
  const std::vector<std::string>& columnNames() const& { return *columns_; }
  std::vector<std::string> columnNames() const&& { return *columns_; }

  const SqlValue& operator[](size_t i) const& { return values_.at(i); }
  SqlValue operator[](size_t i) && { return std::move(values_.at(i)); }
  const SqlValue& operator[](size_t i) const&& = delete;
  const SqlValue& operator[](std::string_view column) const&;  // throws SqlError if no such column
  SqlValue operator[](std::string_view column) && { return std::move(values_.at(indexOf(column))); }
  const SqlValue& operator[](std::string_view column) const&& = delete;

  bool isNull(size_t i) const;
  int64_t integer(size_t i) const;  // throws SqlError unless INTEGER
  double real(size_t i) const;      // INTEGER or REAL
  const std::string& text(size_t i) const&;  // TEXT (or BLOB bytes); throws SqlError otherwise
  std::string text(size_t i) &&;
  const std::string& text(size_t i) const&& = delete;

 private:
  friend class SqlCursor;
  SqlRow(std::vector<SqlValue> values, std::shared_ptr<const std::vector<std::string>> columns)
      : values_(std::move(values)), columns_(std::move(columns)) {}
  size_t indexOf(std::string_view column) const;  // throws SqlError if no such column

  std::vector<SqlValue> values_;
  std::shared_ptr<const std::vector<std::string>> columns_;  // shared by the cursor's rows
};

// The result of exec(): rows are read when exec() returns, so the cursor stays valid after
// later statements and across events. Rows are reached by reference (`const SqlRow&`) while
// the cursor lives; from a temporary cursor, row() and one() hand the row over by value.
// Copyable value.
class SqlCursor {
 public:
  explicit SqlCursor(SqlResult result);

  const std::vector<std::string>& columnNames() const& { return *columns_; }
  std::vector<std::string> columnNames() const&& { return *columns_; }
  size_t size() const { return rows_.size(); }
  const SqlRow& row(size_t i) const& { return rows_.at(i); }
  SqlRow row(size_t i) && { return std::move(rows_.at(i)); }
  const SqlRow& row(size_t i) const&& = delete;
  // Throws SqlError unless exactly one row.
  const SqlRow& one() const&;
  SqlRow one() &&;
  const SqlRow& one() const&& = delete;
  int64_t rowsRead() const { return rowsRead_; }
  int64_t rowsWritten() const { return rowsWritten_; }

  // `for (const SqlRow& row : sql.exec(...))` is fine (the loop keeps the cursor); an
  // iterator taken from a temporary cursor would not be, so that does not compile.
  using const_iterator = std::vector<SqlRow>::const_iterator;
  const_iterator begin() const& { return rows_.begin(); }
  const_iterator end() const& { return rows_.end(); }
  const_iterator begin() const&& = delete;
  const_iterator end() const&& = delete;

 private:
  void requireOne() const;

  std::shared_ptr<const std::vector<std::string>> columns_;
  std::vector<SqlRow> rows_;
  int64_t rowsRead_ = 0;
  int64_t rowsWritten_ = 0;
};

class Sql {
 public:
  virtual ~Sql() = default;
  // One or more ';'-separated statements; params bind to the last. Throws SqlError.
  virtual SqlCursor execParams(std::string_view query, const std::vector<SqlValue>& params) = 0;
  // Bytes the database uses.
  virtual int64_t databaseSize() = 0;

  template <typename... Args>
  SqlCursor exec(std::string_view query, Args&&... args) {
    return execParams(query, std::vector<SqlValue>{toValue(std::forward<Args>(args))...});
  }

 private:
  static SqlValue toValue(std::nullptr_t) { return nullptr; }
  static SqlValue toValue(const std::string& s) { return s; }
  static SqlValue toValue(std::string_view s) { return std::string(s); }
  static SqlValue toValue(const char* s) { return std::string(s); }
  static SqlValue toValue(const Blob& b) { return b; }
  static SqlValue toValue(const SqlValue& v) { return v; }
  static SqlValue toValue(double d) { return d; }
  static SqlValue toValue(bool b) { return int64_t{b}; }
  template <typename T>
    requires std::is_integral_v<T>
  static SqlValue toValue(T i) { return static_cast<int64_t>(i); }
};

// Key-value storage with Cloudflare's semantics; values are bytes (JSON is typical).
// Failures throw StorageError (limits: status().code() == Status::Code::kInvalidArgument).
class Storage {
 public:
  virtual ~Storage() = default;

  virtual std::optional<std::string> get(std::string_view key) = 0;
  virtual KvPairs get(const std::vector<std::string>& keys) = 0;  // key order, missing omitted
  virtual void put(std::string_view key, std::string_view value) = 0;
  virtual void put(const KvPairs& entries) = 0;
  virtual bool remove(std::string_view key) = 0;                    // existed?
  virtual int64_t remove(const std::vector<std::string>& keys) = 0;  // how many existed
  virtual KvPairs list(const ListOptions& options = {}) = 0;
  // Deletes every key, table and the alarm, atomically. Not inside transaction().
  virtual void deleteAll() = 0;

  // Runs fn in a nested transaction: if fn throws, its writes roll back (the event's other
  // writes stay) and the exception propagates.
  virtual void transaction(const std::function<void()>& fn) = 0;

  virtual Sql& sql() = 0;

  // One alarm per object. A time in the past fires as soon as possible. The alarm survives
  // eviction and restarts. During alarm(), getAlarm() is empty unless the handler set a new one.
  virtual std::optional<TimePoint> getAlarm() = 0;
  virtual void setAlarm(TimePoint when) = 0;
  virtual void deleteAlarm() = 0;
};

}  // namespace dohost
