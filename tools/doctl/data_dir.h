// The data folder as doctl sees it: DATA/<class>/<64-hex-id>.sqlite, one SQLite database per
// object (WAL mode), plus the host's own folder DATA/_dohost, which is not a class.
//
// Every database is opened read-only (SQLITE_OPEN_READONLY): in WAL mode a reader never
// blocks the host's writer, and doctl cannot change a file even by mistake.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dohost/sql_value.h"
#include "dohost/storage/object_db.h"

namespace doctl {

// One object's file.
struct ObjectFile {
  std::string className;
  std::string id;
  std::string path;
};

// What `ls` and `show` print about an object.
struct ObjectInfo {
  ObjectFile file;
  bool readable = true;  // false if the file could not be read (error says why)
  std::string error;
  std::vector<std::pair<std::string, dohost::SqlValue>> meta;  // every _do_meta row, by key
  std::optional<std::string> name;
  std::optional<int64_t> createdMs;
  std::optional<int64_t> alarmMs;
  std::optional<dohost::storage::AlarmFailure> alarmFailure;
  int64_t fileBytes = 0;  // the database file and its WAL, as the admin API counts them
  int64_t usedBytes = 0;  // pages in use times the page size
  int64_t keyCount = 0;
  // Tables with their row counts (nullopt if counting failed, e.g. a virtual table whose
  // module doctl lacks). Only filled with `detail`.
  std::vector<std::pair<std::string, std::optional<int64_t>>> tables;
  std::vector<dohost::storage::ScheduleRecord> schedules;  // by name; only with `detail`
};

class DataDir {
 public:
  // Throws CliError when the folder does not exist.
  explicit DataDir(std::string root);

  const std::string& root() const { return root_; }
  // Class folders, sorted; "_dohost" and hidden folders are skipped.
  std::vector<std::string> classes() const;
  // The objects of a class, sorted by id. Throws CliError when the class has no folder.
  std::vector<ObjectFile> objects(const std::string& className) const;
  // The object named by `nameOrId` (see resolve()), or nullopt when there is none.
  std::optional<ObjectFile> find(const std::string& className, const std::string& nameOrId) const;
  // Like find(), but throws CliError (exit 1) for an unknown class or object. Tried in order:
  // a 64-hex id; the name turned into an id with the host's idFromName; a scan of the class
  // for an object whose stored name is `nameOrId`; a unique id prefix of at least 8 hex digits.
  ObjectFile resolve(const std::string& className, const std::string& nameOrId) const;
  // The path the object with this name would have (whether or not it exists).
  ObjectFile fileForName(const std::string& className, const std::string& name) const;

 private:
  void requireClass(const std::string& className) const;
  std::string classPath(const std::string& className) const;

  std::string root_;
};

// Opens an object's database read-only. Throws CliError (exit 1) on failure.
std::unique_ptr<dohost::storage::ObjectDatabase> openReadOnly(const std::string& path);
// Reads an object's identity, alarm, sizes and key count; with `detail`, its tables too.
// Never throws: a file that cannot be read comes back with readable = false.
ObjectInfo readObject(const ObjectFile& file, bool detail);

// True if `text` is 64 hex digits.
bool looksLikeId(const std::string& text);

}  // namespace doctl
