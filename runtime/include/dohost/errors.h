// Exceptions an object author can see, and the limits that raise them.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

#include "dohost/status.h"

namespace dohost {

// The author used the API in a way it forbids (an 11th tag, a 20 KiB attachment, an
// idFromString of a malformed id). Not retried; the event rolls back.
class UsageError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// A storage call failed: a limit (status().code() == kInvalidArgument), an I/O error, or SQL.
class StorageError : public StatusError {
 public:
  using StatusError::StatusError;
};

// exec() failed in SQLite or was refused by the authorizer.
class SqlError : public StorageError {
 public:
  using StorageError::StorageError;
};

// Cloudflare's hibernation limits, which dohost keeps.
inline constexpr size_t kMaxTagsPerSocket = 10;
inline constexpr size_t kMaxTagLength = 256;
inline constexpr size_t kMaxAutoResponseBytes = 2048;
inline constexpr size_t kMaxCloseReasonBytes = 123;

}  // namespace dohost
