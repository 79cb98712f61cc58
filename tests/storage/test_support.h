// Helpers shared by the storage tests.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "dohost/storage/object_db.h"

namespace dohost::testing {

// A fresh folder under /tmp for one test, removed with everything in it when the test ends.
class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/dohost-storage-test-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // A path inside the folder (which need not exist yet).
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Fails the test, showing the Status, unless `expr` (a Status) is ok.
#define REQUIRE_OK(expr)                                      \
  do {                                                        \
    const ::dohost::Status& status_ = (expr);                 \
    REQUIRE_MESSAGE(status_.isOk(), status_.toString());      \
  } while (false)

// The value of `result`; fails the test, showing the Status, if there is none.
template <typename T>
T valueOf(Result<T> result) {
  REQUIRE_MESSAGE(result.isOk(), result.status().toString());
  return std::move(result).value();
}

using Keys = std::vector<std::string>;

// The keys of `entries`, in order.
inline Keys keysOf(const std::vector<storage::KvEntry>& entries) {
  Keys keys;
  for (const storage::KvEntry& entry : entries) keys.push_back(entry.first);
  return keys;
}

// Opens `path` and fails the test (REQUIRE) if that does not work.
inline std::unique_ptr<storage::ObjectDatabase> openDb(const std::string& path,
                                                       const storage::OpenOptions& options = {}) {
  Result<std::unique_ptr<storage::ObjectDatabase>> db = storage::ObjectDatabase::open(path, options);
  REQUIRE_MESSAGE(db.isOk(), db.status().toString());
  return std::move(db).value();
}

// Checks `PRAGMA integrity_check` answers "ok".
inline void checkIntegrity(storage::ObjectDatabase& db) {
  SqlResult check = valueOf(db.exec("PRAGMA integrity_check"));
  REQUIRE(check.rows.size() == 1);
  CHECK(check.rows[0][0] == SqlValue(std::string("ok")));
}

}  // namespace dohost::testing
