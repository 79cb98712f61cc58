// AnalyticsRoom: the live metrics of one context (see guide.h).
#include <algorithm>

#include "objects/guide.h"

namespace dohost::objects::guide {
namespace {

constexpr char kAnalyticsSchema[] = R"(
CREATE TABLE IF NOT EXISTS metric_values (
  metric TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  updated_at INTEGER NOT NULL
))";

std::vector<std::string> metricsOf(const json& state) {
  std::vector<std::string> out;
  auto it = state.find("metrics");
  if (it == state.end() || !it->is_array()) return out;
  for (const json& m : *it) {
    if (m.is_string()) out.push_back(m.get<std::string>());
  }
  return out;
}

}  // namespace

AnalyticsRoom::AnalyticsRoom(ObjectState& state, SharedSettings settings)
    : GuideRoom(state, std::move(settings)) {}

void AnalyticsRoom::ensureSchema() {
  if (schemaReady_) return;
  state_.storage().sql().exec(kAnalyticsSchema);
  schemaReady_ = true;
}

std::vector<std::string> AnalyticsRoom::groupsOf(const Member& member) const {
  return metricsOf(member.state);
}

bool AnalyticsRoom::handle(WebSocket& ws, Member& member, const std::string& type,
                           const json& message) {
  if (type != "subscribe" && type != "unsubscribe") return false;
  static const json kEmpty = json::object();
  auto data = message.find("data");
  if (data != message.end() && !data->is_object() && !data->is_null()) {
    sendError(ws, "Invalid message format: data must be an object", json{{"type", type}});
    return true;
  }
  subscribe(ws, member, data != message.end() && data->is_object() ? *data : kEmpty,
            type == "subscribe");
  return true;
}

void AnalyticsRoom::subscribe(WebSocket& ws, Member& member, const json& data, bool add) {
  const char* type = add ? "subscribe" : "unsubscribe";
  std::vector<std::string> current = metricsOf(member.state);
  std::vector<std::string> named;
  auto list = data.find("metrics");
  if (list == data.end() || list->is_null()) {
    if (add) {
      sendError(ws, "Invalid subscribe: metrics must be an array of metric names",
                json{{"type", type}});
      return;
    }
    named = current;  // unsubscribe without a list: from everything
  } else {
    if (!list->is_array() || list->empty() ||
        static_cast<int64_t>(list->size()) > settings_->maxMetricsPerSocket) {
      sendError(ws,
                std::string("Invalid ") + type + ": metrics must be an array of 1 to " +
                    std::to_string(settings_->maxMetricsPerSocket) + " metric names",
                json{{"type", type}});
      return;
    }
    for (const json& m : *list) {
      if (!m.is_string() || !validMetricName(m.get_ref<const std::string&>())) {
        sendError(ws,
                  std::string("Invalid ") + type +
                      ": a metric name has 1 to 64 characters of A-Z a-z 0-9 . _ : -",
                  json{{"type", type}});
        return;
      }
      if (std::find(named.begin(), named.end(), m.get<std::string>()) == named.end()) {
        named.push_back(m.get<std::string>());
      }
    }
  }
  std::vector<std::string> added;
  std::vector<std::string> next = current;
  for (const std::string& m : named) {
    auto it = std::find(next.begin(), next.end(), m);
    if (add && it == next.end()) {
      next.push_back(m);
      added.push_back(m);
    } else if (!add && it != next.end()) {
      next.erase(it);
    }
  }
  if (static_cast<int64_t>(next.size()) > settings_->maxMetricsPerSocket) {
    sendError(ws,
              "Too many metrics: at most " + std::to_string(settings_->maxMetricsPerSocket) +
                  " per connection",
              json{{"type", type}});
    return;
  }
  SocketGroups& subscribers = groups();
  for (const std::string& m : current) {
    if (std::find(next.begin(), next.end(), m) == next.end()) subscribers.remove(m, ws);
  }
  for (const std::string& m : added) subscribers.add(m, ws);
  member.state["metrics"] = next;
  saveState(ws, member);
  send(ws, add ? "subscribed" : "unsubscribed", json{{"metrics", next}});
  // A new subscriber hears each metric's last value at once.
  for (const std::string& m : named) {
    if (!add) break;
    if (auto last = lastValue(m)) {
      send(ws, "metric_update",
           json{{"metric", m},
                {"value", last->first},
                {"timestamp", isoTime(fromUnixMillis(last->second))}});
    }
  }
}

std::optional<std::pair<json, int64_t>> AnalyticsRoom::lastValue(const std::string& metric) {
  ensureSchema();
  SqlCursor c = state_.storage().sql().exec(
      "SELECT value, updated_at FROM metric_values WHERE metric = ?", metric);
  if (c.size() == 0) return std::nullopt;
  std::optional<json> value = parseJson<json>(c.row(0).text(0));
  if (!value) return std::nullopt;
  return std::make_pair(std::move(*value), c.row(0).integer(1));
}

size_t AnalyticsRoom::publish(const std::string& metric, const json& value) {
  ensureSchema();
  int64_t now = nowMs();
  state_.storage().sql().exec(
      "INSERT INTO metric_values (metric, value, updated_at) VALUES (?, ?, ?) "
      "ON CONFLICT (metric) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
      metric, dump(value), now);
  const std::vector<WebSocket>& to = groups().of(metric);
  if (to.empty()) return 0;
  BroadcastOptions options;
  options.only = &to;
  return state_.broadcast(frame("metric_update", json{{"metric", metric},
                                                      {"value", value},
                                                      {"timestamp", isoTime(fromUnixMillis(now))}}),
                          options);
}

Response AnalyticsRoom::request(Request& request) {
  if (request.method() != "POST") return jsonError(405, "method not allowed");
  std::optional<json> body = parseObject(request.body());
  if (!body) return jsonError(400, "the body must be a JSON object");
  if (request.path() == "/internal/builtin" && request.header(kInternalHeader)) {
    // From the context's ChatRoom: pushed only when a value differs from the stored one.
    for (const char* metric : {"activity", "engagement"}) {
      auto it = body->find(metric);
      if (it == body->end() || !it->is_number_integer()) continue;
      auto last = lastValue(metric);
      if (last && last->first == *it) continue;
      publish(metric, *it);
    }
    return Response::json(200, "{}");
  }
  if (request.path() != "/api/analytics/metrics") return jsonError(404, "not found");
  // The router checked the token and the body's shape.
  std::string metric = stringField(*body, "metric");
  auto value = body->find("value");
  if (!validMetricName(metric) || value == body->end()) return jsonError(400, "bad metric");
  int64_t retryAfterMs = 0;
  if (!admitBroadcast(nullptr, &retryAfterMs)) {
    Response r = Response::json(429, dump(json{{"error", "Rate limit exceeded"},
                                               {"limit", "broadcasts_per_minute"},
                                               {"retryAfterMs", retryAfterMs}}));
    r.setHeader("retry-after", std::to_string((retryAfterMs + 999) / 1000));
    return r;
  }
  size_t delivered = publish(metric, *value);
  return Response::json(
      202, dump(json{{"contextId", contextId()}, {"metric", metric}, {"delivered", delivered}}));
}

}  // namespace dohost::objects::guide
