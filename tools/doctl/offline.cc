// The offline commands: ls, show, kv and sql, on the data folder, read-only.
#include <sqlite3.h>

#include <cstdio>

#include <fmt/format.h>

#include "commands.h"
#include "data_dir.h"
#include "query.h"

namespace doctl {
namespace {

// Names can be long (up to 1 KiB); tables show the start of them.
constexpr size_t kNameColumnWidth = 40;

void printJson(const json& value) {
  std::string text = value.dump(2, ' ', false, json::error_handler_t::replace);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
}

std::string cutName(const std::string& name) {
  std::string shown = displayBytes(name);
  if (displayWidth(shown) <= kNameColumnWidth) return shown;
  size_t i = 0;
  for (size_t points = 0; i < shown.size(); ++i) {
    if ((static_cast<unsigned char>(shown[i]) & 0xC0) != 0x80 &&
        points++ == kNameColumnWidth - 1) {
      break;
    }
  }
  return shown.substr(0, i) + "…";
}

json failureJson(const dohost::storage::AlarmFailure& f) {
  return {{"scheduledTime", f.scheduledMs},
          {"retries", f.retries},
          {"lastError", f.lastError},
          {"failedAt", f.failedAtMs}};
}

json valueJson(const dohost::SqlValue& value) {
  return std::visit(
      [](const auto& v) -> json {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::nullptr_t>) {
          return nullptr;
        } else if constexpr (std::is_same_v<T, dohost::Blob>) {
          return json{{"base64", base64(v.bytes)}};
        } else {
          return v;
        }
      },
      value);
}

std::string valueText(const dohost::SqlValue& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::nullptr_t>) {
          return "NULL";
        } else if constexpr (std::is_same_v<T, dohost::Blob>) {
          return "0x" + hexBytes(v.bytes);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return displayBytes(v);
        } else {
          return fmt::format("{}", v);
        }
      },
      value);
}

json objectJson(const ObjectInfo& info) {
  json j{{"class", info.file.className},
         {"id", info.file.id},
         {"name", info.name ? json(*info.name) : json(nullptr)},
         {"storageBytes", info.fileBytes},
         {"usedBytes", info.usedBytes},
         {"createdAt", info.createdMs ? json(*info.createdMs) : json(nullptr)},
         {"alarm", info.alarmMs ? json(*info.alarmMs) : json(nullptr)},
         {"alarmFailed", info.alarmFailure ? failureJson(*info.alarmFailure) : json(nullptr)},
         {"keys", info.keyCount}};
  if (!info.readable) j["error"] = info.error;
  return j;
}

std::string alarmCell(const ObjectInfo& info) {
  std::string cell = "-";
  if (info.alarmMs) cell = formatTimeShort(*info.alarmMs);
  if (info.alarmFailure) {
    std::string failed = fmt::format("FAILED after {} retries", info.alarmFailure->retries);
    cell = info.alarmMs ? cell + ", " + failed : failed;
  }
  return cell;
}

// SQLite's message, with why doctl set things up so when a statement ran into it.
std::string explain(std::string message, int code) {
  if ((code & 0xFF) == SQLITE_READONLY) {
    message += " (doctl opens object databases read-only; nothing was changed)";
  } else if (message.find("too many attached databases") != std::string::npos) {
    message += " (doctl reads only the object's own database: ATTACH and VACUUM INTO are off)";
  }
  return message;
}

}  // namespace

int runLs(const GlobalOptions& options, const std::optional<std::string>& className) {
  DataDir data(options.dataDir);
  std::vector<ObjectFile> files;
  if (className) {
    files = data.objects(*className);
  } else {
    for (const std::string& c : data.classes()) {
      std::vector<ObjectFile> more = data.objects(c);
      files.insert(files.end(), more.begin(), more.end());
    }
  }
  std::vector<ObjectInfo> infos;
  for (const ObjectFile& file : files) infos.push_back(readObject(file, false));
  if (options.json) {
    json list = json::array();
    for (const ObjectInfo& info : infos) list.push_back(objectJson(info));
    printJson(list);
    return 0;
  }
  Table table({"CLASS", "NAME", "ID", "SIZE", "ALARM"});
  for (const ObjectInfo& info : infos) {
    std::string name = info.name ? cutName(*info.name) : "-";
    if (!info.readable) name = "(unreadable: " + info.error + ")";
    table.add({info.file.className, name, shortId(info.file.id, options.wide),
               formatSize(info.fileBytes), alarmCell(info)});
  }
  table.print();
  return 0;
}

int runShow(const GlobalOptions& options, const std::string& className,
            const std::string& object) {
  DataDir data(options.dataDir);
  ObjectFile file = data.resolve(className, object);
  ObjectInfo info = readObject(file, true);
  if (!info.readable) throw CliError(kExitFailed, info.error);
  static const std::vector<std::string> kShownKeys = {
      "class", "id", "name", "created_ms", "alarm", "alarm_failed_scheduled",
      "alarm_failed_retries", "alarm_failed_error", "alarm_failed_at"};
  auto shown = [&](const std::string& key) {
    return std::find(kShownKeys.begin(), kShownKeys.end(), key) != kShownKeys.end();
  };
  if (options.json) {
    json j = objectJson(info);
    j["path"] = file.path;
    json meta = json::object();
    for (const auto& [key, value] : info.meta) meta[key] = valueJson(value);
    j["meta"] = meta;
    json tables = json::array();
    for (const auto& [name, rows] : info.tables) {
      tables.push_back({{"name", name}, {"rows", rows ? json(*rows) : json(nullptr)}});
    }
    j["tables"] = tables;
    printJson(j);
    return 0;
  }
  int64_t now = nowMs();
  Fields fields;
  fields.add("class", className);
  fields.add("id", file.id);
  fields.add("name", info.name ? displayBytes(*info.name) : "- (created by id)");
  fields.add("file", file.path);
  fields.add("size", fmt::format("{} on disk (database and WAL), {} in use",
                                 formatSize(info.fileBytes), formatSize(info.usedBytes)));
  if (info.createdMs) {
    fields.add("created", formatTime(*info.createdMs) + " (" +
                              formatRelative(*info.createdMs, now) + ")");
  }
  fields.add("alarm", info.alarmMs ? formatTime(*info.alarmMs) + " (" +
                                         formatRelative(*info.alarmMs, now) + ")"
                                   : "none");
  if (info.alarmFailure) {
    const auto& f = *info.alarmFailure;
    fields.add("alarm failed", fmt::format("the alarm of {} gave up after {} retries at {}",
                                           formatTime(f.scheduledMs), f.retries,
                                           formatTime(f.failedAtMs)));
    fields.add("last error", displayBytes(f.lastError));
  }
  fields.add("keys", std::to_string(info.keyCount));
  for (const auto& [key, value] : info.meta) {
    if (!shown(key)) fields.add("meta " + displayBytes(key), valueText(value));
  }
  fields.print();
  std::fputc('\n', stdout);
  Table tables({"TABLE", "ROWS"});
  for (const auto& [name, rows] : info.tables) {
    tables.add({displayBytes(name), rows ? std::to_string(*rows) : "?"});
  }
  tables.print();
  return 0;
}

int runKv(const GlobalOptions& options, const std::string& className, const std::string& object,
          const std::optional<std::string>& prefix) {
  DataDir data(options.dataDir);
  ObjectFile file = data.resolve(className, object);
  auto db = openReadOnly(file.path);
  std::vector<dohost::storage::KvEntry> entries;
  {
    Query exists(db->handle(),
                 "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_do_kv'");
    if (exists.step()) {
      dohost::storage::ListOptions list;
      if (prefix && !prefix->empty()) list.prefix = *prefix;
      auto result = db->list(list);
      if (!result.isOk()) throw CliError(kExitFailed, result.status().message());
      entries = std::move(*result);
    }
  }
  if (options.json) {
    json list = json::array();
    for (const auto& [key, value] : entries) {
      json entry = json::object();
      putBytes(entry, "key", key);
      putBytes(entry, "value", value);
      list.push_back(std::move(entry));
    }
    printJson(list);
    return 0;
  }
  Table table({"KEY", "VALUE"});
  for (const auto& [key, value] : entries) table.add({displayBytes(key), displayBytes(value)});
  table.print();
  return 0;
}

int runSql(const GlobalOptions& options, const std::string& className, const std::string& object,
           const std::string& sql) {
  DataDir data(options.dataDir);
  ObjectFile file = data.resolve(className, object);
  auto database = openReadOnly(file.path);
  sqlite3* db = database->handle();
  // No ATTACH (and so no VACUUM INTO, which attaches its target): doctl reads this one file
  // and writes no other. Writes to the database itself are refused by SQLite, since the
  // file is open read-only.
  sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
  // The storage layer holds object code to Cloudflare's SQL limits; an inspector gets
  // SQLite's defaults back.
  sqlite3_limit(db, SQLITE_LIMIT_COLUMN, 2000);
  sqlite3_limit(db, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 50000);
  sqlite3_limit(db, SQLITE_LIMIT_VARIABLE_NUMBER, 32766);
  const char* next = sql.c_str();
  bool first = true;
  while (*next != '\0') {
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    if (sqlite3_prepare_v2(db, next, -1, &raw, &tail) != SQLITE_OK) {
      std::string message = sqlite3_errmsg(db);
      sqlite3_finalize(raw);
      throw CliError(kExitFailed, "sql: " + explain(message, sqlite3_extended_errcode(db)));
    }
    std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> stmt(raw, &sqlite3_finalize);
    next = tail;
    if (raw == nullptr) continue;  // whitespace or a comment
    int columns = sqlite3_column_count(raw);
    std::vector<std::string> names;
    for (int i = 0; i < columns; ++i) {
      const char* name = sqlite3_column_name(raw, i);
      names.emplace_back(name == nullptr ? "" : name);
    }
    std::vector<std::vector<dohost::SqlValue>> rows;
    int rc;
    while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
      std::vector<dohost::SqlValue>& row = rows.emplace_back();
      for (int i = 0; i < columns; ++i) {
        switch (sqlite3_column_type(raw, i)) {
          case SQLITE_INTEGER:
            row.emplace_back(static_cast<int64_t>(sqlite3_column_int64(raw, i)));
            break;
          case SQLITE_FLOAT:
            row.emplace_back(sqlite3_column_double(raw, i));
            break;
          case SQLITE_NULL:
            row.emplace_back(nullptr);
            break;
          default: {
            const void* data = sqlite3_column_blob(raw, i);
            std::string bytes = data == nullptr ? std::string()
                                                : std::string(static_cast<const char*>(data),
                                                              sqlite3_column_bytes(raw, i));
            if (sqlite3_column_type(raw, i) == SQLITE_BLOB) {
              row.emplace_back(dohost::Blob{std::move(bytes)});
            } else {
              row.emplace_back(std::move(bytes));
            }
          }
        }
      }
    }
    if (rc != SQLITE_DONE) {
      throw CliError(kExitFailed,
                     "sql: " + explain(sqlite3_errmsg(db), sqlite3_extended_errcode(db)));
    }
    if (columns == 0) continue;
    if (options.json) {
      json result{{"columns", names}, {"rows", json::array()}};
      for (const auto& row : rows) {
        json cells = json::array();
        for (const auto& value : row) cells.push_back(valueJson(value));
        result["rows"].push_back(std::move(cells));
      }
      std::string text = result.dump(-1, ' ', false, json::error_handler_t::replace);
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fputc('\n', stdout);
    } else {
      if (!first) std::fputc('\n', stdout);
      Table table(names);
      for (const auto& row : rows) {
        std::vector<std::string> cells;
        for (const auto& value : row) cells.push_back(valueText(value));
        table.add(std::move(cells));
      }
      table.print();
    }
    first = false;
  }
  return 0;
}

}  // namespace doctl
