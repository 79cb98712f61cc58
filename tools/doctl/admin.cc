// The online commands: objects, sockets, evict, alarm and cluster, through the host's admin API
// (runtime/src/admin.cc; the contract is in docs/interfaces.md).
#include <cstdio>

#include <fmt/format.h>

#include "commands.h"
#include "dohost/json.h"
#include "http_client.h"

namespace doctl {
namespace {

void printJson(const json& value) {
  std::string text = value.dump(2, ' ', false, json::error_handler_t::replace);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
}

// Sends the request and returns the JSON answer. An HTTP error becomes a CliError (exit 1)
// carrying the admin API's own message.
json call(const GlobalOptions& options, const std::string& method, const std::string& path) {
  HttpTarget target = parseHttpUrl(options.adminUrl);
  HttpResponse response = httpRequest(target, method, path, options.token);
  // The host parsed what it shows with at most kMaxJsonDepthSetting levels, and wraps it in a
  // few of its own; anything deeper is not the host's answer.
  json body = dohost::parseJson<json>(response.body,
                                      dohost::JsonLimits{dohost::kMaxJsonDepthSetting + 16})
                  .value_or(json(json::value_t::discarded));
  if (response.status >= 400) {
    std::string why = response.body;
    if (body.is_object() && body.contains("error") && body["error"].is_string()) {
      why = body["error"].get<std::string>();
    }
    while (!why.empty() && (why.back() == '\n' || why.back() == '\r')) why.pop_back();
    throw CliError(kExitFailed,
                   fmt::format("{} {} answered {}: {}", method, path, response.status, why));
  }
  if (body.is_discarded()) {
    throw CliError(kExitFailed, fmt::format("{} {}: the answer is not JSON", method, path));
  }
  return body;
}

std::string objectPath(const std::string& className, const std::string& object) {
  return "/objects/" + encodePathSegment(className) + "/" + encodePathSegment(object);
}

std::string text(const json& j, const char* key, const std::string& missing = "-") {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return missing;
  if (it->is_string()) return displayBytes(it->get<std::string>());
  return it->dump();
}

// The alarm as a table shows it (to the second) or, with `now`, as `show` does.
std::string alarmText(const json& j, std::optional<int64_t> now) {
  auto it = j.find("alarm");
  std::string out = "-";
  if (it != j.end() && it->is_number_integer()) {
    int64_t ms = it->get<int64_t>();
    out = now ? formatTime(ms) + " (" + formatRelative(ms, *now) + ")" : formatTimeShort(ms);
  }
  if (auto f = j.find("alarmFailed"); f != j.end() && f->is_object()) {
    std::string failed = fmt::format("FAILED after {} retries", f->value("retries", 0));
    out = out == "-" ? failed : out + ", " + failed;
  }
  return out;
}

std::string sizeText(const json& j) {
  auto it = j.find("storageBytes");
  return it != j.end() && it->is_number_integer() ? formatSize(it->get<int64_t>()) : "-";
}

}  // namespace

json hostView(const GlobalOptions& options, const std::string& className, const std::string& id) {
  return call(options, "GET", objectPath(className, id));
}

void addFailureFields(Fields& fields, const json& detail, int64_t now) {
  auto f = detail.find("failure");
  if (f == detail.end() || !f->is_object()) return;
  std::string failures = fmt::format("{} since the last success", f->value("count", 0));
  if (auto at = f->find("lastFailureAt"); at != f->end() && at->is_number_integer()) {
    failures += ", the last " + formatRelative(at->get<int64_t>(), now);
  }
  fields.add("failures", failures);
  fields.add("failure", text(*f, "lastError"));
  if (auto retry = f->find("retryAt"); retry != f->end() && retry->is_number_integer()) {
    int64_t ms = retry->get<int64_t>();
    fields.add("failed until", formatTime(ms) + " (" + formatRelative(ms, now) + ")");
  }
}

int runObjects(const GlobalOptions& options, const std::optional<std::string>& className) {
  std::string path = "/objects";
  if (className) path += "?class=" + encodePathSegment(*className);
  json list = call(options, "GET", path);
  if (options.json) {
    printJson(list);
    return 0;
  }
  if (!list.is_array()) throw CliError(kExitFailed, "GET /objects: expected a JSON list");
  Table table({"CLASS", "NAME", "ID", "STATE", "SOCKETS", "SIZE", "ALARM"});
  for (const json& o : list) {
    table.add({text(o, "class"), text(o, "name"), shortId(text(o, "id"), options.wide),
               text(o, "state"), text(o, "sockets", "0"), sizeText(o), alarmText(o, std::nullopt)});
  }
  table.print();
  return 0;
}

int runCluster(const GlobalOptions& options) {
  json view = call(options, "GET", "/cluster");
  if (options.json) {
    printJson(view);
    return 0;
  }
  Fields fields;
  fields.add("host", text(view, "self"));
  fields.add("phase", text(view, "phase"));
  fields.add("incarnation", text(view, "incarnation"));
  fields.add("lease", text(view, "lease") + " (TTL " + text(view, "leaseTtl") + " s)");
  fields.add("claims", text(view, "claims"));
  fields.add("self-fences", text(view, "selfFences", "0"));
  fields.add("fencing refusals", text(view, "fencingRefusals", "0"));
  fields.print();
  std::fputc('\n', stdout);
  Table table({"HOST", "ADMIN", "PEER", "LEASE", "OBJECTS"});
  for (const json& h : view.value("hosts", json::array())) {
    table.add({text(h, "id"), text(h, "addr"), text(h, "peer"), text(h, "lease"),
               text(h, "objectsOwned", "?")});
  }
  table.print();
  return 0;
}

int runSockets(const GlobalOptions& options, const std::string& className,
               const std::string& object) {
  json detail = call(options, "GET", objectPath(className, object));
  if (options.json) {
    printJson(detail);
    return 0;
  }
  int64_t now = nowMs();
  Fields fields;
  fields.add("class", text(detail, "class"));
  fields.add("id", text(detail, "id"));
  fields.add("name", text(detail, "name"));
  fields.add("state", text(detail, "state"));
  fields.add("sockets", text(detail, "sockets", "0"));
  fields.add("alarm", alarmText(detail, now));
  if (auto f = detail.find("alarmFailed"); f != detail.end() && f->is_object()) {
    fields.add("last error", text(*f, "lastError"));
  }
  fields.add("size", sizeText(detail));
  addFailureFields(fields, detail, now);
  fields.print();
  std::fputc('\n', stdout);
  Table table({"SOCKET", "STATE", "TAGS", "ATTACHMENT"});
  for (const json& s : detail.value("socketList", json::array())) {
    std::string tags;
    for (const json& tag : s.value("tags", json::array())) {
      if (!tags.empty()) tags += ",";
      tags += tag.is_string() ? displayBytes(tag.get<std::string>()) : tag.dump();
    }
    std::string attachment = "-";
    if (auto a = s.find("attachment"); a != s.end() && !a->is_null()) {
      attachment = a->is_string() ? displayBytes(a->get<std::string>())
                                  : a->dump(-1, ' ', false, json::error_handler_t::replace);
    }
    table.add({text(s, "id"), text(s, "state"), tags.empty() ? "-" : tags, attachment});
  }
  table.print();
  return 0;
}

int runEvict(const GlobalOptions& options, const std::string& className,
             const std::string& object) {
  json answer = call(options, "POST", objectPath(className, object) + "/evict");
  if (options.json) {
    printJson(answer);
    return 0;
  }
  bool evicted = answer.value("evicted", false);
  std::fputs(fmt::format("{} {}: {}\n", className, object,
                         evicted ? "evicted (its sockets stay open)"
                                 : "not in memory, nothing to evict")
                 .c_str(),
             stdout);
  return 0;
}

int runAlarm(const GlobalOptions& options, const std::string& className,
             const std::string& object) {
  json answer = call(options, "POST", objectPath(className, object) + "/alarm");
  if (options.json) {
    printJson(answer);
    return 0;
  }
  std::fputs(fmt::format("{} {}: alarm ran\n", className, object).c_str(), stdout);
  return 0;
}

}  // namespace doctl
