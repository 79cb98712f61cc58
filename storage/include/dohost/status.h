// Status and Result<T>: the vocabulary for failures a caller is expected to handle. Shared by
// every layer; storage/ returns them, runtime/ turns them into exceptions at the author's API.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

namespace dohost {

class Status {
 public:
  enum class Code {
    kOk,
    kInvalidArgument,  // the caller passed something a rule forbids (limits, bad options)
    kNotFound,
    kNotAllowed,       // refused by the SQL authorizer or a read-only database
    kSqlError,         // SQLite reported an error; sqliteCode() has the extended code
    kIoError,
  };

  Status() = default;
  static Status ok() { return Status(); }
  static Status invalidArgument(std::string m) { return Status(Code::kInvalidArgument, std::move(m)); }
  static Status notFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
  static Status notAllowed(std::string m, int sqliteCode = 0) {
    Status s(Code::kNotAllowed, std::move(m));
    s.sqliteCode_ = sqliteCode;
    return s;
  }
  static Status ioError(std::string m) { return Status(Code::kIoError, std::move(m)); }
  static Status sqlError(int sqliteCode, std::string m) {
    Status s(Code::kSqlError, std::move(m));
    s.sqliteCode_ = sqliteCode;
    return s;
  }

  bool isOk() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  int sqliteCode() const { return sqliteCode_; }
  const std::string& message() const { return message_; }
  // The disk or the file failed, not the request: an I/O error (fsync included), a full disk,
  // a corrupt or unreadable file, a file that cannot be opened or became read-only, a lock
  // held elsewhere. Trying again later may work; what was committed before is on disk.
  bool isStorageFault() const;
  // A storage fault that a fresh open of the file may cure: the file became read-only, is
  // corrupt or not a database, or could not be opened. A handle that met one is replaced.
  bool needsReopen() const;
  std::string toString() const;

 private:
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  Code code_ = Code::kOk;
  int sqliteCode_ = 0;
  std::string message_;
};

// Thrown by Result<T>::value() on a failed result, and by the runtime for storage failures.
class StatusError : public std::runtime_error {
 public:
  explicit StatusError(Status status)
      : std::runtime_error(status.toString()), status_(std::move(status)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {}  // NOLINT: implicit by design

  bool isOk() const { return status_.isOk(); }
  const Status& status() const { return status_; }
  T& value() & {
    if (!isOk()) throw StatusError(status_);
    return *value_;
  }
  T&& value() && {
    if (!isOk()) throw StatusError(status_);
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  T& operator*() { return value(); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace dohost
