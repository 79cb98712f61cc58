// The offline commands: ls, show, kv and sql, on the data folder, read-only.
#include <sqlite3.h>

#include <cstdio>

#include <fmt/format.h>

#include "commands.h"
#include "data_dir.h"
#include "dohost/storage/inspect.h"
#include "query.h"

namespace doctl {
namespace {

using dohost::Status;

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

json scheduleJson(const dohost::storage::ScheduleRecord& r) {
  json j{{"name", r.name}, {"kind", r.kind}};
  if (r.kind == "every") j["intervalMs"] = std::stoll(r.spec);
  if (r.kind == "cron") j["cron"] = r.spec;
  j["nextRun"] = r.nextMs ? json(*r.nextMs) : json(nullptr);
  j["scheduledTime"] = r.plannedMs;
  j["retryCount"] = r.retryCount;
  j["lastError"] = r.lastError ? json(*r.lastError) : json(nullptr);
  j["lastErrorAt"] = r.lastErrorMs ? json(*r.lastErrorMs) : json(nullptr);
  j["payloadBytes"] = r.payload.size();
  return j;
}

// "every 30s", "cron */5 * * * *", "once".
std::string scheduleKindText(const dohost::storage::ScheduleRecord& r) {
  if (r.kind == "every") {
    int64_t ms = std::stoll(r.spec);
    return ms % 1000 == 0 ? fmt::format("every {}s", ms / 1000) : fmt::format("every {}ms", ms);
  }
  if (r.kind == "cron") return "cron " + displayBytes(r.spec);
  return r.kind;
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
std::string explain(const Status& status) {
  std::string message = status.message();
  if (status.code() == Status::Code::kNotAllowed) {
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
  std::optional<json> host;
  if (options.adminGiven) host = hostView(options, className, file.id);
  if (options.json) {
    json j = objectJson(info);
    j["path"] = file.path;
    if (host) j["host"] = *host;
    json meta = json::object();
    for (const auto& [key, value] : info.meta) meta[key] = valueJson(value);
    j["meta"] = meta;
    json tables = json::array();
    for (const auto& [name, rows] : info.tables) {
      tables.push_back({{"name", name}, {"rows", rows ? json(*rows) : json(nullptr)}});
    }
    j["tables"] = tables;
    json schedules = json::array();
    for (const auto& r : info.schedules) schedules.push_back(scheduleJson(r));
    j["schedules"] = schedules;
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
  fields.add("schedules", std::to_string(info.schedules.size()));
  for (const auto& [key, value] : info.meta) {
    if (!shown(key)) fields.add("meta " + displayBytes(key), valueText(value));
  }
  if (host) {
    fields.add("host state", host->value("state", "-"));
    addFailureFields(fields, *host, now);
  }
  fields.print();
  std::fputc('\n', stdout);
  Table tables({"TABLE", "ROWS"});
  for (const auto& [name, rows] : info.tables) {
    tables.add({displayBytes(name), rows ? std::to_string(*rows) : "?"});
  }
  tables.print();
  if (!info.schedules.empty()) {
    std::fputc('\n', stdout);
    Table schedules({"SCHEDULE", "KIND", "NEXT RUN", "RETRIES", "LAST ERROR"});
    for (const auto& r : info.schedules) {
      std::string next = r.nextMs ? formatTime(*r.nextMs) + " (" + formatRelative(*r.nextMs, now) + ")"
                                  : "- (given up)";
      schedules.add({displayBytes(r.name), scheduleKindText(r), next, std::to_string(r.retryCount),
                     r.lastError ? displayBytes(*r.lastError) : "-"});
    }
    schedules.print();
  }
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
  bool first = true;
  Status status = dohost::storage::runReadOnlySql(
      *database, sql, {}, [&](dohost::storage::StatementOutput& out) {
        if (options.json) {
          json result{{"columns", out.columns}, {"rows", json::array()}};
          for (const auto& row : out.rows) {
            json cells = json::array();
            for (const auto& value : row) cells.push_back(valueJson(value));
            result["rows"].push_back(std::move(cells));
          }
          std::string text = result.dump(-1, ' ', false, json::error_handler_t::replace);
          std::fwrite(text.data(), 1, text.size(), stdout);
          std::fputc('\n', stdout);
        } else {
          if (!first) std::fputc('\n', stdout);
          Table table(out.columns);
          for (const auto& row : out.rows) {
            std::vector<std::string> cells;
            for (const auto& value : row) cells.push_back(valueText(value));
            table.add(std::move(cells));
          }
          table.print();
        }
        first = false;
      });
  if (!status.isOk()) throw CliError(kExitFailed, "sql: " + explain(status));
  return 0;
}

}  // namespace doctl
