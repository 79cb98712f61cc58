#include "dohost/status.h"

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

}  // namespace dohost
