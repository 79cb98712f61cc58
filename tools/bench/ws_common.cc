#include "ws_common.h"

#include <cstdio>
#include <fstream>
#include <random>

namespace dohost::bench {

std::unique_ptr<Server> startDohost(const WsBenchOptions& o, bool durabilityFull, std::string* error,
                                    const DohostLaunch& launch) {
  auto s = std::make_unique<Server>();
  s->kind = "dohost";
  if (o.externalPort != 0) {
    s->external = true;
    s->port = o.externalPort;
    s->adminPort = o.externalAdminPort;
    s->pid = o.externalPid;
    return s;
  }
  s->dir = std::make_unique<TempFolder>(o.tempParent);
  s->port = freeLoopbackPort();
  do {
    s->adminPort = freeLoopbackPort();
  } while (s->adminPort == s->port);
  // Only the Broadcaster listens. Pings are pushed past the run so that a ping burst to
  // thousands of idle receivers does not land in the middle of a measured round.
  std::string config = s->dir->path() + "/dohost.toml";
  {
    std::ofstream out(config);
    out << launch.configHead << "ping_interval = 3600\n"
        << "durability = \"" << (durabilityFull ? "full" : "normal") << "\"\n";
    for (const char* app : {"bridge", "hopeflow", "channels", "guide"}) {
      out << "[apps." << app << "]\nlisten = \"off\"\n";
    }
  }
  std::vector<std::string> argv = {o.dohostPath,
                                   "--config", config,
                                   "--data", launch.dataDir.empty() ? s->dir->path() + "/data" : launch.dataDir,
                                   "--admin", "127.0.0.1:" + std::to_string(s->adminPort),
                                   "--app", "broadcaster=127.0.0.1:" + std::to_string(s->port),
                                   "--idle-evict", "3600",
                                   "--log-level", "warn"};
  argv.insert(argv.end(), launch.extraArgs.begin(), launch.extraArgs.end());
  s->child = std::make_unique<ChildProcess>();
  if (!s->child->start(argv, s->dir->path() + "/dohost.log", error)) return nullptr;
  s->pid = s->child->pid();
  if (!waitListening(s->port, s->child.get(), 15, error)) return nullptr;
  if (!waitListening(s->adminPort, s->child.get(), 15, error)) return nullptr;
  return s;
}

std::unique_ptr<Server> startFloor(const WsBenchOptions& o, std::string* error) {
  auto s = std::make_unique<Server>();
  s->kind = "floor";
  s->dir = std::make_unique<TempFolder>(o.tempParent);
  s->port = freeLoopbackPort();
  s->child = std::make_unique<ChildProcess>();
  if (!s->child->start({o.selfPath, "--floor-server", std::to_string(s->port), "--floor-loop", o.floorLoop},
                       s->dir->path() + "/floor.log", error)) {
    return nullptr;
  }
  s->pid = s->child->pid();
  if (!waitListening(s->port, s->child.get(), 15, error)) return nullptr;
  return s;
}

std::string uniqueSuffix() {
  static std::mt19937_64 rng{std::random_device{}()};
  char buf[17];
  std::snprintf(buf, sizeof buf, "%08llx", static_cast<unsigned long long>(rng() & 0xffffffffULL));
  return buf;
}

// A message of about `bytes` bytes that carries `seq`. The Broadcaster forwards it with a
// `from` added; the floor forwards it as it is.
std::string makeMessage(int64_t seq, size_t bytes) {
  std::string s = std::to_string(seq);
  std::string head = "{\"id\":\"b" + s + "\",\"type\":\"bench\",\"payload\":{\"seq\":" + s + ",\"pad\":\"";
  std::string tail = "\"}}";
  size_t fixed = head.size() + tail.size();
  return head + std::string(bytes > fixed ? bytes - fixed : 0, 'x') + tail;
}

int64_t parseSeq(std::string_view m) {
  size_t at = m.find("\"seq\":");
  if (at == std::string_view::npos) return -1;
  int64_t v = 0;
  bool any = false;
  for (size_t i = at + 6; i < m.size() && m[i] >= '0' && m[i] <= '9'; ++i) {
    v = v * 10 + (m[i] - '0');
    any = true;
  }
  return any ? v : -1;
}


bool evict(const Server& s, const std::string& projectId, std::string* error) {
  HttpResult r = httpRequest(s.adminPort, "POST",
                             "/objects/" + std::string(kBroadcasterClass) + "/" + projectId + "/evict");
  if (r.status != 200) {
    *error = "admin evict answered " + std::to_string(r.status) + ": " + r.body;
    return false;
  }
  return true;
}

}  // namespace dohost::bench
