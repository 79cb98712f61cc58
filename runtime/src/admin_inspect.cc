#include "admin_inspect.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "admin.h"
#include "dohost/jwt.h"
#include "dohost/storage/inspect.h"
#include "utf8.h"

namespace dohost {
namespace {

using nlohmann::json;

constexpr int64_t kDefaultKvPage = 100;
// A value longer than this is cut in the key-value listing (its full size is given beside it).
constexpr int64_t kKvValueBytes = 4096;

storage::InspectLimits limitsOf(const HostOptions& o) {
  storage::InspectLimits l;
  l.maxRows = static_cast<int64_t>(o.adminSqlMaxRows);
  l.maxBytes = static_cast<int64_t>(o.adminSqlMaxBytes);
  l.timeoutMs = static_cast<int64_t>(std::llround(o.adminSqlTimeoutSeconds * 1000));
  return l;
}

// Bytes in JSON: a string when they are UTF-8, else {"base64url": "..."} (RFC 4648 §5, no
// padding).
json bytesJson(const std::string& bytes) {
  if (isValidUtf8(bytes)) return bytes;
  return json{{"base64url", base64UrlEncode(bytes)}};
}

json cellJson(const SqlValue& value) {
  return std::visit(
      [](const auto& v) -> json {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::nullptr_t>) {
          return nullptr;
        } else if constexpr (std::is_same_v<T, Blob>) {
          return json{{"base64url", base64UrlEncode(v.bytes)}};
        } else if constexpr (std::is_same_v<T, std::string>) {
          return bytesJson(v);
        } else if constexpr (std::is_same_v<T, double>) {
          return std::isfinite(v) ? json(v) : json(std::to_string(v));
        } else {
          return v;
        }
      },
      value);
}

json outputJson(const storage::StatementOutput& out) {
  json rows = json::array();
  for (const auto& row : out.rows) {
    json cells = json::array();
    for (const auto& v : row) cells.push_back(cellJson(v));
    rows.push_back(std::move(cells));
  }
  return {{"columns", out.columns}, {"rows", std::move(rows)}, {"truncated", out.truncated}};
}

Response error(int status, const std::string& message) {
  return Response::json(status, jsonError(message));
}

// The smallest key greater than every key that starts with `prefix`, or none.
std::optional<std::string> prefixEnd(std::string prefix) {
  while (!prefix.empty() && static_cast<unsigned char>(prefix.back()) == 0xFF) prefix.pop_back();
  if (prefix.empty()) return std::nullopt;
  prefix.back() = static_cast<char>(static_cast<unsigned char>(prefix.back()) + 1);
  return prefix;
}

Response kv(const HostOptions& options, storage::ObjectDatabase& db, const Request& request) {
  int64_t limit = kDefaultKvPage;
  if (auto text = request.queryParam("limit")) {
    char* end = nullptr;
    long long n = std::strtoll(text->c_str(), &end, 10);
    if (text->empty() || *end != '\0' || n <= 0) return error(400, "limit must be a positive integer");
    limit = n;
  }
  limit = std::min<int64_t>(limit, static_cast<int64_t>(options.adminSqlMaxRows));
  std::string prefix = request.queryParam("prefix").value_or("");
  std::optional<std::string> upper = prefixEnd(prefix);
  std::string after = request.queryParam("after").value_or("");
  bool afterSet = request.queryParam("after").has_value();
  // Values are cut in SQL, so a page never holds more than limit times kKvValueBytes.
  std::string sql =
      "SELECT key, substr(value, 1, ?1), length(value) FROM _do_kv WHERE key >= ?2";
  if (upper) sql += " AND key < ?3";
  if (afterSet) sql += " AND key > ?4";
  sql += " ORDER BY key LIMIT ?5";
  storage::InspectLimits limits = limitsOf(options);
  limits.maxRows = limit;
  json entries = json::array();
  bool truncated = false;
  Status s = storage::runReadOnlySql(
      db, sql, limits,
      [&](storage::StatementOutput& out) {
        truncated = out.truncated;
        for (const auto& row : out.rows) {
          auto bytesOf = [](const SqlValue& v) {
            if (const auto* b = std::get_if<Blob>(&v)) return b->bytes;
            if (const auto* t = std::get_if<std::string>(&v)) return *t;
            return std::string();
          };
          json e{{"key", bytesJson(bytesOf(row[0]))}, {"value", bytesJson(bytesOf(row[1]))}};
          int64_t size = std::holds_alternative<int64_t>(row[2]) ? std::get<int64_t>(row[2]) : 0;
          e["valueBytes"] = size;
          if (size > kKvValueBytes) e["valueTruncated"] = true;
          entries.push_back(std::move(e));
        }
      },
      {SqlValue(kKvValueBytes), SqlValue(Blob{prefix}),
       upper ? SqlValue(Blob{*upper}) : SqlValue(nullptr), SqlValue(Blob{after}),
       SqlValue(limit + 1)});
  if (!s.isOk()) return error(500, "cannot read the key-value storage: " + s.message());
  return Response::json(200, json{{"entries", std::move(entries)}, {"truncated", truncated}}.dump(
                                 -1, ' ', false, json::error_handler_t::replace));
}

Response tables(storage::ObjectDatabase& db) {
  auto result = storage::tableRowCounts(db);
  if (!result.isOk()) return error(500, "cannot list the tables: " + result.status().message());
  json list = json::array();
  for (const auto& t : *result) {
    list.push_back({{"name", bytesJson(t.name)}, {"rows", t.rows ? json(*t.rows) : json(nullptr)}});
  }
  return Response::json(200, list.dump(-1, ' ', false, json::error_handler_t::replace));
}

Response sql(const HostOptions& options, storage::ObjectDatabase& db, const Request& request) {
  const std::string& text = request.body();
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    return error(400, "send the SQL as the request body");
  }
  json results = json::array();
  Status s = storage::runReadOnlySql(db, text, limitsOf(options), [&](storage::StatementOutput& out) {
    results.push_back(outputJson(out));
  });
  if (!s.isOk()) {
    json body{{"error", s.message()}, {"results", std::move(results)}};
    int status = 400;
    if (s.code() == Status::Code::kNotAllowed) {
      body["error"] = s.message() + " (the admin API opens object databases read-only; nothing was changed)";
      body["readOnly"] = true;
      status = 403;
    } else if (s.message().find("too many attached databases") != std::string::npos) {
      body["error"] = s.message() + " (only the object's own database can be read: ATTACH is off)";
      status = 403;
    }
    return Response::json(status, body.dump(-1, ' ', false, json::error_handler_t::replace));
  }
  return Response::json(200, json{{"results", std::move(results)}}.dump(
                                 -1, ' ', false, json::error_handler_t::replace));
}

}  // namespace

bool isInspectAction(const std::string& action) {
  return action == "kv" || action == "tables" || action == "sql";
}

Response handleInspect(const HostOptions& options, const std::string& path,
                       const std::string& action, const Request& request) {
  const std::string& method = request.method();
  if (action == "sql" ? method != "POST" : method != "GET") {
    return error(405, action == "sql" ? "use POST with the SQL as the body" : "use GET");
  }
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {  // an object gets its file on its first write
    if (action == "kv") return Response::json(200, R"({"entries":[],"truncated":false})");
    if (action == "tables") return Response::json(200, "[]");
    return error(404, "the object has stored nothing yet");
  }
  storage::OpenOptions open;
  open.readOnly = true;
  auto db = storage::ObjectDatabase::open(path, open);
  if (!db.isOk()) {
    return error(db.status().code() == Status::Code::kNotFound ? 404 : 500,
                 "cannot open the object's database: " + db.status().message());
  }
  if (action == "kv") return kv(options, **db, request);
  if (action == "tables") return tables(**db);
  return sql(options, **db, request);
}

}  // namespace dohost
