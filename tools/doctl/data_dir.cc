#include "data_dir.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include <fmt/format.h>

#include "dohost/object_id.h"
#include "dohost/storage/inspect.h"
#include "format.h"
#include "query.h"

namespace doctl {
namespace {

namespace fs = std::filesystem;

constexpr char kHostFolder[] = "_dohost";
constexpr char kExtension[] = ".sqlite";
constexpr size_t kMinIdPrefix = 8;

bool isHex(const std::string& text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

int64_t fileSize(const std::string& path) {
  std::error_code error;
  auto size = fs::file_size(path, error);
  return error ? 0 : static_cast<int64_t>(size);
}

bool tableExists(sqlite3* db, std::string_view table) {
  Query q(db, "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1");
  q.bind(1, table);
  return q.step();
}

std::optional<std::string> storedName(const std::string& path) {
  try {
    auto db = openReadOnly(path);
    if (!tableExists(db->handle(), "_do_meta")) return std::nullopt;
    Query q(db->handle(), "SELECT value FROM _do_meta WHERE key = 'name'");
    if (q.step() && !q.isNull(0)) return q.bytes(0);
  } catch (const CliError&) {
  }
  return std::nullopt;
}

// Rolls back the read transaction readObject() opens, however it ends.
class ReadTransaction {
 public:
  explicit ReadTransaction(sqlite3* db) : db_(db) {
    sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
  }
  ~ReadTransaction() {
    if (sqlite3_get_autocommit(db_) == 0) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  ReadTransaction(const ReadTransaction&) = delete;
  ReadTransaction& operator=(const ReadTransaction&) = delete;

 private:
  sqlite3* db_;
};

}  // namespace

bool looksLikeId(const std::string& text) { return text.size() == 64 && isHex(text); }

DataDir::DataDir(std::string root) : root_(std::move(root)) {
  std::error_code error;
  if (!fs::is_directory(root_, error)) {
    throw CliError(kExitFailed, fmt::format("data folder {} does not exist", root_));
  }
}

std::string DataDir::classPath(const std::string& className) const {
  return (fs::path(root_) / className).string();
}

void DataDir::requireClass(const std::string& className) const {
  std::error_code error;
  bool plain = !className.empty() && className.find('/') == std::string::npos &&
               className != "." && className != ".." && className != kHostFolder;
  if (!plain || !fs::is_directory(classPath(className), error)) {
    std::vector<std::string> known = classes();
    std::string list;
    for (const std::string& c : known) list += (list.empty() ? "" : ", ") + c;
    throw CliError(kExitFailed, fmt::format("no class {} in {} (classes: {})", className, root_,
                                            list.empty() ? "none" : list));
  }
}

std::vector<std::string> DataDir::classes() const {
  std::vector<std::string> out;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(root_, error)) {
    std::string name = entry.path().filename().string();
    if (name == kHostFolder || name.starts_with(".")) continue;
    std::error_code typeError;
    if (entry.is_directory(typeError)) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<ObjectFile> DataDir::objects(const std::string& className) const {
  requireClass(className);
  std::vector<ObjectFile> out;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(classPath(className), error)) {
    const fs::path& path = entry.path();
    if (path.extension() != kExtension) continue;
    std::string id = path.stem().string();
    if (!looksLikeId(id)) continue;
    out.push_back({className, id, path.string()});
  }
  std::sort(out.begin(), out.end(),
            [](const ObjectFile& a, const ObjectFile& b) { return a.id < b.id; });
  return out;
}

ObjectFile DataDir::fileForName(const std::string& className, const std::string& name) const {
  std::string id = dohost::idFromName(className, name);
  return {className, id, (fs::path(classPath(className)) / (id + kExtension)).string()};
}

std::optional<ObjectFile> DataDir::find(const std::string& className,
                                        const std::string& nameOrId) const {
  std::error_code error;
  if (className.empty() || className.find('/') != std::string::npos || className == "." ||
      className == ".." || className == kHostFolder ||
      !fs::is_directory(classPath(className), error)) {
    return std::nullopt;
  }
  if (looksLikeId(nameOrId)) {
    std::string id = lower(nameOrId);
    std::string path = (fs::path(classPath(className)) / (id + kExtension)).string();
    if (fs::exists(path, error)) return ObjectFile{className, id, path};
  }
  ObjectFile byName = fileForName(className, nameOrId);
  if (fs::exists(byName.path, error)) return byName;
  std::vector<ObjectFile> all = objects(className);
  for (const ObjectFile& file : all) {
    if (storedName(file.path) == nameOrId) return file;
  }
  if (nameOrId.size() >= kMinIdPrefix && nameOrId.size() < 64 && isHex(nameOrId)) {
    std::string prefix = lower(nameOrId);
    std::vector<ObjectFile> matches;
    for (const ObjectFile& file : all) {
      if (file.id.starts_with(prefix)) matches.push_back(file);
    }
    if (matches.size() == 1) return matches.front();
    if (matches.size() > 1) {
      throw CliError(kExitFailed, fmt::format("id prefix {} matches {} objects of class {}",
                                              nameOrId, matches.size(), className));
    }
  }
  return std::nullopt;
}

ObjectFile DataDir::resolve(const std::string& className, const std::string& nameOrId) const {
  requireClass(className);
  std::optional<ObjectFile> file = find(className, nameOrId);
  if (!file) {
    throw CliError(kExitFailed, fmt::format("no object {} of class {} in {}", nameOrId,
                                            className, root_));
  }
  return *file;
}

std::unique_ptr<dohost::storage::ObjectDatabase> openReadOnly(const std::string& path) {
  dohost::storage::OpenOptions options;
  options.readOnly = true;
  auto db = dohost::storage::ObjectDatabase::open(path, options);
  if (!db.isOk()) {
    throw CliError(kExitFailed, fmt::format("cannot open {}: {}", path, db.status().message()));
  }
  return std::move(*db);
}

ObjectInfo readObject(const ObjectFile& file, bool detail) {
  ObjectInfo info;
  info.file = file;
  info.fileBytes = fileSize(file.path) + fileSize(file.path + "-wal");
  try {
    auto db = openReadOnly(file.path);
    sqlite3* handle = db->handle();
    // One snapshot for everything below.
    ReadTransaction transaction(handle);
    if (tableExists(handle, "_do_meta")) {
      Query q(handle, "SELECT key, value FROM _do_meta ORDER BY key");
      while (q.step()) info.meta.emplace_back(q.bytes(0), q.value(1));
      for (const auto& [key, value] : info.meta) {
        if (key == "name" && std::holds_alternative<std::string>(value)) {
          info.name = std::get<std::string>(value);
        } else if (key == "created_ms" && std::holds_alternative<int64_t>(value)) {
          info.createdMs = std::get<int64_t>(value);
        }
      }
      auto alarm = db->alarm();
      if (!alarm.isOk()) throw CliError(kExitFailed, alarm.status().message());
      info.alarmMs = *alarm;
      auto failure = db->alarmFailure();
      if (!failure.isOk()) throw CliError(kExitFailed, failure.status().message());
      info.alarmFailure = *failure;
    }
    if (tableExists(handle, "_do_kv")) {
      Query q(handle, "SELECT count(*) FROM _do_kv");
      if (q.step()) info.keyCount = q.integer(0);
    }
    auto used = db->sizeBytes();
    if (used.isOk()) info.usedBytes = *used;
    if (detail) {
      auto tables = dohost::storage::tableRowCounts(*db);
      if (!tables.isOk()) throw CliError(kExitFailed, tables.status().message());
      for (auto& t : *tables) info.tables.emplace_back(std::move(t.name), t.rows);
      auto schedules = db->schedules();
      if (!schedules.isOk()) throw CliError(kExitFailed, schedules.status().message());
      info.schedules = std::move(*schedules);
    }
  } catch (const CliError& e) {
    info.readable = false;
    info.error = e.what();
  }
  return info;
}

}  // namespace doctl
