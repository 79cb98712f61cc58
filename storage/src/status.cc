#include "dohost/status.h"

#include <sqlite3.h>

namespace dohost {

std::string Status::toString() const {
  switch (code_) {
    case Code::kOk: return "ok";
    case Code::kInvalidArgument: return "invalid argument: " + message_;
    case Code::kNotFound: return "not found: " + message_;
    case Code::kNotAllowed: return "not allowed: " + message_;
    case Code::kSqlError: return "SQL error: " + message_;
    case Code::kIoError: return "I/O error: " + message_;
  }
  return message_;
}

bool Status::isStorageFault() const {
  if (code_ == Code::kIoError) return true;
  switch (sqliteCode_ & 0xFF) {
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_NOMEM:
    case SQLITE_PROTOCOL:
    case SQLITE_BUSY:
    case SQLITE_PERM:
      return true;
    default:
      return false;
  }
}

bool Status::needsReopen() const {
  switch (sqliteCode_ & 0xFF) {
    case SQLITE_READONLY:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
      return true;
    default:
      return false;
  }
}

}  // namespace dohost
