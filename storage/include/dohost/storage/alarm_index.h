// AlarmIndex: the host-wide table "which object wakes next", in DATA/_dohost/alarms.sqlite.
// The object's own database is the source of truth; this index only makes sure an evicted
// object, or one whose host restarted, is woken. Wake-ups may be spurious, never missed: the
// runtime writes the index before the object's commit and clears it only after.
//
// Thread: the loop thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dohost/status.h"

struct sqlite3;

namespace dohost::storage {

struct AlarmEntry {
  std::string className;
  std::string id;
  std::optional<std::string> name;
  int64_t timeMs = 0;
};

class AlarmIndex {
 public:
  static Result<std::unique_ptr<AlarmIndex>> open(const std::string& path);
  ~AlarmIndex();
  AlarmIndex(const AlarmIndex&) = delete;
  AlarmIndex& operator=(const AlarmIndex&) = delete;

  Status upsert(const AlarmEntry& entry);
  Status remove(const std::string& className, const std::string& id);
  Result<std::vector<AlarmEntry>> all();  // ordered by time

 private:
  explicit AlarmIndex(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

}  // namespace dohost::storage
