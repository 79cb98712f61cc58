#include "admin.h"

#include <openssl/crypto.h>

#include <filesystem>
#include <map>

#include "admin_inspect.h"
#include "cluster/cluster_node.h"
#include "cluster/relay.h"
#include "dashboard.h"
#include "dohost/json.h"
#include "dohost/object_id.h"
#include "object_slot.h"

namespace dohost {
namespace {

using nlohmann::json;

int64_t fileBytes(const std::string& path) {
  std::error_code ec;
  int64_t total = 0;
  for (const char* suffix : {"", "-wal"}) {
    auto n = std::filesystem::file_size(path + suffix, ec);
    if (!ec) total += static_cast<int64_t>(n);
  }
  return total;
}

json socketJson(const detail::SocketRecord& s) {
  json j{{"id", s.id}, {"tags", s.tags}};
  if (s.hasAttachment) {
    // JSON (within the depth limit) as JSON; any other bytes as a string.
    std::optional<json> parsed = parseJson(s.attachment);
    j["attachment"] = parsed ? std::move(*parsed) : json(s.attachment);
  } else {
    j["attachment"] = nullptr;
  }
  j["state"] = s.state == detail::SocketState::kOpen ? "open" : "closing";
  if (s.autoResponseAt) j["autoResponseAt"] = toUnixMillis(*s.autoResponseAt);
  return j;
}

// A named schedule as the object detail shows it (times in ms since the epoch).
json scheduleJson(const storage::ScheduleRecord& r) {
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

json slotJson(Runtime& rt, ObjectSlot& slot, bool detail) {
  std::string path = rt.options().dataDir + "/" + slot.className() + "/" + slot.id() + ".sqlite";
  json j{{"class", slot.className()},
         {"id", slot.id()},
         {"name", slot.name() ? json(*slot.name()) : json(nullptr)},
         {"state", slot.failedUntil() ? "failed" : slot.isLive() ? "live" : "evicted"},
         {"sockets", slot.sockets().size()},
         {"storageBytes", fileBytes(path)}};
  if (const auto& f = slot.failure()) {  // recent failures of its constructor, fetch or alarm
    j["failure"] = {{"count", f->count},
                    {"lastError", f->lastError},
                    {"lastFailureAt", toUnixMillis(f->lastAt)},
                    {"retryAt", f->retryAt ? json(toUnixMillis(*f->retryAt)) : json(nullptr)}};
  }
  auto blocker = slot.evictionBlocker();
  j["evictable"] = slot.isLive() && !blocker;
  if (slot.isLive() && blocker) j["notEvictableBecause"] = *blocker;
  auto scheduled = rt.scheduledAlarm(slot.className(), slot.id());
  j["alarm"] = scheduled ? json(toUnixMillis(*scheduled)) : json(nullptr);
  auto nextSchedule = rt.scheduler().nextScheduleRun(slot.className(), slot.id());
  j["nextSchedule"] = nextSchedule ? json(toUnixMillis(*nextSchedule)) : json(nullptr);
  if (Ownership* own = rt.ownership()) {  // cluster: the owner, as far as this host knows
    auto owner = own->knownOwner(slot.className(), slot.id());
    j["host"] = owner ? json(*owner) : json(nullptr);
  }
  if (detail) {
    try {
      if (auto a = slot.storedAlarm()) j["alarm"] = toUnixMillis(*a);
      if (auto f = slot.alarmFailure()) {
        j["alarmFailed"] = {{"scheduledTime", f->scheduledMs}, {"retries", f->retries},
                            {"lastError", f->lastError}, {"failedAt", f->failedAtMs}};
      }
      json schedules = json::array();
      for (const storage::ScheduleRecord& r : slot.storedSchedules()) {
        schedules.push_back(scheduleJson(r));
      }
      j["schedules"] = std::move(schedules);
    } catch (const std::exception&) {
    }
    if (!slot.isLive()) rt.parkDatabase(slot);  // opened to read it: keep it bounded
    json sockets = json::array();
    for (const auto& [id, s] : slot.sockets()) sockets.push_back(socketJson(*s));
    j["socketList"] = std::move(sockets);
  }
  return j;
}

bool authorized(const HostOptions& options, const Request& request) {
  if (options.adminToken.empty()) return true;
  std::string expected = "Bearer " + options.adminToken;
  std::string got = request.header("authorization").value_or("");
  return got.size() == expected.size() &&
         CRYPTO_memcmp(got.data(), expected.data(), got.size()) == 0;
}

std::vector<std::string> split(std::string_view path) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) parts.push_back(percentDecode(path.substr(i, j - i), false));
    i = j + 1;
  }
  return parts;
}

// Names, tags, attachments and paths come from clients: bytes that are not UTF-8 are replaced
// (U+FFFD), never thrown on.
std::string dumpJson(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Response okJson(const json& j) { return Response::json(200, dumpJson(j)); }

}  // namespace

std::string jsonError(std::string_view message) {
  return dumpJson(json{{"error", std::string(message)}});
}

std::string prometheusMetrics(Runtime& rt) {
  struct Gauges {
    int64_t live = 0, known = 0, sockets = 0, failed = 0;
  };
  std::map<std::string, Gauges> gauges;
  for (const auto& [name, factory] : rt.registry().classes()) gauges[name];
  for (ObjectSlot* s : rt.slots()) {
    Gauges& g = gauges[s->className()];
    g.live += s->isLive();
    g.known += 1;
    g.sockets += static_cast<int64_t>(s->sockets().size());
    g.failed += s->failedUntil().has_value();
  }
  for (const auto& a : rt.waitingWithoutSlot()) gauges[a.className].known += 1;
  std::string out;
  auto family = [&](const char* name, const char* type, const char* help, auto value) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    for (const auto& [cls, g] : gauges) {
      const ClassMetrics* m = nullptr;
      auto it = rt.allMetrics().find(cls);
      static const ClassMetrics kZero;
      m = it == rt.allMetrics().end() ? &kZero : &it->second;
      out += std::string(name) + "{class=\"" + cls + "\"} " + std::to_string(value(g, *m)) + "\n";
    }
  };
  family("dohost_objects_live", "gauge", "Objects whose instance is in memory.",
         [](const Gauges& g, const ClassMetrics&) { return g.live; });
  family("dohost_objects_known", "gauge",
         "Objects the host tracks (live, or evicted with open sockets, a pending alarm or a "
         "schedule).",
         [](const Gauges& g, const ClassMetrics&) { return g.known; });
  family("dohost_object_evictions_total", "counter", "Instances dropped from memory.",
         [](const Gauges&, const ClassMetrics& m) { return m.evictions; });
  family("dohost_object_rehydrations_total", "counter",
         "Instances constructed again after an eviction.",
         [](const Gauges&, const ClassMetrics& m) { return m.rehydrations; });
  family("dohost_websockets_open", "gauge", "Accepted WebSockets currently open.",
         [](const Gauges& g, const ClassMetrics&) { return g.sockets; });
  family("dohost_websocket_messages_in_total", "counter", "Frames received.",
         [](const Gauges&, const ClassMetrics& m) { return m.messagesIn; });
  family("dohost_websocket_messages_out_total", "counter", "Frames sent.",
         [](const Gauges&, const ClassMetrics& m) { return m.messagesOut; });
  family("dohost_websocket_auto_responses_total", "counter",
         "Messages answered by an auto-response pair without waking the object.",
         [](const Gauges&, const ClassMetrics& m) { return m.autoResponses; });
  family("dohost_alarms_fired_total", "counter", "Alarm runs.",
         [](const Gauges&, const ClassMetrics& m) { return m.alarmsFired; });
  family("dohost_alarm_retries_total", "counter", "Alarm retries after a failure.",
         [](const Gauges&, const ClassMetrics& m) { return m.alarmRetries; });
  family("dohost_schedules_fired_total", "counter", "Runs of named schedules.",
         [](const Gauges&, const ClassMetrics& m) { return m.schedulesFired; });
  family("dohost_schedule_retries_total", "counter", "Schedule retries after a failure.",
         [](const Gauges&, const ClassMetrics& m) { return m.scheduleRetries; });
  family("dohost_storage_commits_total", "counter", "Storage transactions committed.",
         [](const Gauges&, const ClassMetrics& m) { return m.commits; });
  family("dohost_object_failures_total", "counter",
         "Failures of an object's constructor, fetch or alarm (they lead to the failed state).",
         [](const Gauges&, const ClassMetrics& m) { return m.objectFailures; });
  family("dohost_objects_failed", "gauge",
         "Objects in the failed state (not run until their retry time).",
         [](const Gauges& g, const ClassMetrics&) { return g.failed; });
  if (auto* node = dynamic_cast<cluster::ClusterNode*>(rt.ownership())) {
    auto single = [&](const char* name, const char* type, const char* help, int64_t value) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
             name + " " + std::to_string(value) + "\n";
    };
    single("dohost_cluster_hosts", "gauge", "Hosts registered in the cluster, as last read.",
           static_cast<int64_t>(node->hostCount()));
    single("dohost_cluster_serving", "gauge",
           "1 while this host serves objects; 0 while it is fenced or registering again.",
           node->serving() ? 1 : 0);
    single("dohost_placement_claims_total", "counter", "Objects this host claimed.",
           node->claimsTotal());
    single("dohost_placement_releases_total", "counter",
           "Ownership keys this host released (idle objects).", node->releasesTotal());
    single("dohost_placement_owned", "gauge", "Objects this host holds a claim on.",
           static_cast<int64_t>(node->claims()));
    single("dohost_fencing_refusals_total", "counter",
           "Commits refused because the object's file carried a newer owner's token.",
           rt.fencingRefusals());
    single("dohost_cluster_self_fences_total", "counter",
           "Times this host stopped serving because its lease could not be renewed.",
           node->selfFences());
  }
  if (const cluster::Relay* relay = rt.relay()) {
    out += "# HELP dohost_relay_frames_total Frames on the inter-host links, by direction and kind.\n"
           "# TYPE dohost_relay_frames_total counter\n";
    const auto& counts = relay->frameCounts();
    for (int dir = 0; dir < 2; ++dir) {
      for (uint8_t k = 1; k <= cluster::kLinkKindCount; ++k) {
        if (counts[dir][k] == 0) continue;
        out += std::string("dohost_relay_frames_total{direction=\"") + (dir == 0 ? "out" : "in") +
               "\",kind=\"" + cluster::kindName(static_cast<cluster::LinkKind>(k)) + "\"} " +
               std::to_string(counts[dir][k]) + "\n";
      }
    }
    out += "# HELP dohost_relay_links_up Inter-host links up.\n# TYPE dohost_relay_links_up gauge\n"
           "dohost_relay_links_up " + std::to_string(relay->linksUp()) + "\n";
    size_t edge = 0, owned = 0;
    for (const auto& [h, n] : relay->edgeSocketsByOwner()) edge += n;
    for (const auto& [h, n] : relay->ownedSocketsByEdge()) owned += n;
    out += "# HELP dohost_relay_sockets Relayed WebSockets: held here for objects of other hosts "
           "(edge), or held by other hosts for objects here (owner).\n"
           "# TYPE dohost_relay_sockets gauge\n"
           "dohost_relay_sockets{role=\"edge\"} " + std::to_string(edge) + "\n"
           "dohost_relay_sockets{role=\"owner\"} " + std::to_string(owned) + "\n";
  }
  return out;
}

namespace {

// GET /cluster: this host's membership and the hosts it knows (docs/cluster.md).
Response clusterJson(Runtime& rt) {
  auto* node = dynamic_cast<cluster::ClusterNode*>(rt.ownership());
  if (node == nullptr) {
    return Response::json(404, jsonError("this host is not part of a cluster (no --cluster)"));
  }
  cluster::ClusterView v = node->view();
  std::map<std::string, size_t> edgeSockets, ownedSockets;
  if (const cluster::Relay* relay = rt.relay()) {
    edgeSockets = relay->edgeSocketsByOwner();
    ownedSockets = relay->ownedSocketsByEdge();
  }
  auto count = [](const std::map<std::string, size_t>& m, const std::string& host) {
    auto it = m.find(host);
    return it == m.end() ? size_t{0} : it->second;
  };
  json hosts = json::array();
  for (const cluster::ClusterView::Host& h : v.hosts) {
    hosts.push_back({{"id", h.hostId},
                     {"relayedSockets", count(edgeSockets, h.hostId)},
                     {"relayedSocketsIn", count(ownedSockets, h.hostId)},
                     {"addr", h.addr},
                     {"peer", h.peer},
                     {"lease", h.lease},
                     {"incarnation", h.incarnation},
                     {"started", h.startedMs},
                     {"objectsOwned", h.objectsOwned < 0 ? json(nullptr) : json(h.objectsOwned)}});
  }
  return okJson({{"self", v.selfId},
                 {"incarnation", v.incarnation},
                 {"lease", v.lease},
                 {"leaseTtl", v.leaseTtlSeconds},
                 {"phase", v.phase},
                 {"selfFences", v.selfFences},
                 {"lastSelfFence", v.lastFenceMs ? json(*v.lastFenceMs) : json(nullptr)},
                 {"claims", v.claims},
                 {"resolving", v.resolving},
                 {"claimsTotal", v.claimsTotal},
                 {"releasesTotal", v.releasesTotal},
                 {"fencingRefusals", rt.fencingRefusals()},
                 {"hostsAge", v.hostsAgeMs},
                 {"hosts", std::move(hosts)}});
}

}  // namespace

Response handleAdmin(Runtime& rt, const HostOptions& options, Request& request) {
  if (isDashboardPath(request.path())) return handleDashboard(options, request);
  if (!authorized(options, request)) {
    return Response::json(401, jsonError("admin API: missing or wrong bearer token"))
        .setHeader("www-authenticate", "Bearer");
  }
  std::vector<std::string> parts = split(request.path());
  const std::string& method = request.method();
  if (parts.size() == 1 && parts[0] == "metrics" && method == "GET") {
    return Response(200, prometheusMetrics(rt), "text/plain; version=0.0.4");
  }
  if (parts.size() == 1 && parts[0] == "faults") return handleFaults(request);
  if (parts.size() == 1 && parts[0] == "cluster") {
    if (method != "GET") return Response::json(405, jsonError("use GET"));
    return clusterJson(rt);
  }
  if (parts.empty() || parts[0] != "objects") return Response::json(404, jsonError("not found"));
  if (parts.size() == 1) {
    if (method != "GET") return Response::json(405, jsonError("use GET"));
    auto cls = request.queryParam("class");
    json list = json::array();
    for (ObjectSlot* s : rt.slots()) {
      if (cls && s->className() != *cls) continue;
      list.push_back(slotJson(rt, *s, false));
    }
    for (const auto& a : rt.waitingWithoutSlot()) {
      if (cls && a.className != *cls) continue;
      std::string path = rt.options().dataDir + "/" + a.className + "/" + a.id + ".sqlite";
      json entry{{"class", a.className}, {"id", a.id},
                 {"name", a.name ? json(*a.name) : json(nullptr)}, {"state", "evicted"},
                 {"sockets", 0}, {"storageBytes", fileBytes(path)}, {"evictable", false},
                 {"alarm", a.alarm ? json(toUnixMillis(*a.alarm)) : json(nullptr)},
                 {"nextSchedule",
                  a.nextSchedule ? json(toUnixMillis(*a.nextSchedule)) : json(nullptr)}};
      if (Ownership* own = rt.ownership()) {
        auto owner = own->knownOwner(a.className, a.id);
        entry["host"] = owner ? json(*owner) : json(nullptr);
      }
      list.push_back(std::move(entry));
    }
    return okJson(list);
  }
  if (parts.size() < 3 || parts.size() > 4) return Response::json(404, jsonError("not found"));
  const std::string& cls = parts[1];
  if (rt.registry().findClass(cls) == nullptr) {
    return Response::json(404, jsonError("no object class named " + cls));
  }
  std::string id = idFromString(cls, parts[2]).value_or(idFromName(cls, parts[2]));
  std::optional<std::string> name;
  if (id != parts[2]) name = parts[2];
  ObjectSlot* slot = rt.findSlot(cls, id);
  std::string path = rt.options().dataDir + "/" + cls + "/" + id + ".sqlite";
  if (slot == nullptr && !std::filesystem::exists(path)) {
    return Response::json(404, jsonError("no object " + parts[2] + " of class " + cls));
  }
  // Read-only looks into the file need no slot (and make none).
  if (parts.size() == 4 && isInspectAction(parts[3])) return handleInspect(options, path, parts[3], request);
  if (slot == nullptr) slot = &rt.slot(cls, id, name);
  if (parts.size() == 3) {
    if (method != "GET") return Response::json(405, jsonError("use GET"));
    json j = slotJson(rt, *slot, true);
    rt.touch(*slot);
    return okJson(j);
  }
  if (method != "POST") return Response::json(405, jsonError("use POST"));
  if (parts[3] == "evict") {
    if (!slot->isLive()) {
      rt.touch(*slot);
      return okJson({{"evicted", false}, {"state", "evicted"}});
    }
    if (!rt.evictNow(*slot)) return Response::json(409, jsonError("an event is in flight"));
    return okJson({{"evicted", true}, {"state", "evicted"}});
  }
  if (parts[3] == "alarm") {
    if (Ownership* own = rt.ownership(); own && !rt.mayRun(cls, id)) {
      auto owner = own->knownOwner(cls, id);
      return Response::json(409, dumpJson({{"error", "this host does not hold the object's claim; "
                                                     "run its alarm on its owner"},
                                           {"owner", owner ? json(*owner) : json(nullptr)}}));
    }
    if (slot->failedUntil()) {
      return Response::json(409, jsonError("the object is failed; its alarm waits for the retry time"));
    }
    if (!rt.runAlarmNow(*slot)) {
      rt.touch(*slot);
      return Response::json(404, jsonError("the object has no alarm"));
    }
    return okJson({{"ran", true}});
  }
  return Response::json(404, jsonError("not found"));
}

}  // namespace dohost
