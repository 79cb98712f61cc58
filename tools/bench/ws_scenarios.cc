#include "ws_scenarios.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <unordered_map>

#include "ws_fleet.h"

namespace dohost::bench {
namespace {

constexpr const char* kBroadcasterClass = "Broadcaster";

// A server under test: a dohost or a floor server this bench started, or a dohost that was
// already running (external: never stopped by the bench).
struct Server {
  std::string kind;  // "dohost" or "floor"
  std::unique_ptr<TempFolder> dir;
  std::unique_ptr<ChildProcess> child;  // declared after dir: stopped before the folder goes
  pid_t pid = 0;                        // 0: unknown (external without --pid)
  int port = 0;
  int adminPort = 0;
  bool external = false;

  ~Server() {
    if (child) child->kill();
  }
  std::string path(const std::string& projectId, const std::string& type = "runtime") const {
    if (kind == "floor") return "/";
    return "/websocket?type=" + type + "&projectId=" + projectId;
  }
};

std::unique_ptr<Server> startDohost(const WsBenchOptions& o, bool durabilityFull, std::string* error) {
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
    out << "ping_interval = 3600\n"
        << "durability = \"" << (durabilityFull ? "full" : "normal") << "\"\n";
    for (const char* app : {"bridge", "hopeflow", "channels", "guide"}) {
      out << "[apps." << app << "]\nlisten = \"off\"\n";
    }
  }
  std::vector<std::string> argv = {o.dohostPath,
                                   "--config", config,
                                   "--data", s->dir->path() + "/data",
                                   "--admin", "127.0.0.1:" + std::to_string(s->adminPort),
                                   "--app", "broadcaster=127.0.0.1:" + std::to_string(s->port),
                                   "--idle-evict", "3600",
                                   "--log-level", "warn"};
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

// Rounds of one message from connection `sender` to `receivers` connections of the fleet
// (a round is complete when that many copies arrived).
class FanoutDriver {
 public:
  FanoutDriver(ClientFleet& fleet, size_t receivers, size_t messageBytes, size_t sender = 0)
      : fleet_(fleet), receivers_(receivers), messageBytes_(messageBytes), sender_(sender) {
    fleet_.onSent = [this](ClientConn& c, SteadyClock::time_point t) {
      if (c.index != sender_ || unsent_.empty()) return;
      auto it = open_.find(unsent_.front());
      unsent_.pop_front();
      if (it != open_.end()) it->second.sent = t;
    };
    fleet_.onMessage = [this](ClientConn& c, std::string_view m, SteadyClock::time_point t) {
      onMessage(c, m, t);
    };
  }
  ~FanoutDriver() {
    fleet_.onSent = nullptr;
    fleet_.onMessage = nullptr;
  }

  void sendOne() {
    int64_t seq = nextSeq_++;
    open_[seq] = Round{};
    unsent_.push_back(seq);
    fleet_.send(sender_, makeMessage(seq, messageBytes_));
  }
  void topUp() {
    while (window_ > 0 && open_.size() < window_) sendOne();
  }
  bool runRound(double timeoutSeconds) {
    sendOne();
    return fleet_.serveUntil([this] { return open_.empty(); }, timeoutSeconds);
  }
  bool drain(double timeoutSeconds) {
    window_ = 0;
    return fleet_.serveUntil([this] { return open_.empty(); }, timeoutSeconds);
  }

  void setWindow(size_t w) { window_ = w; }
  void setCounting(bool on) {
    counting_ = on;
    if (on) countedFrames_ = 0;
  }
  void clearSamples() {
    lastUs_.clear();
    firstUs_.clear();
  }
  const std::vector<double>& lastUs() const { return lastUs_; }
  const std::vector<double>& firstUs() const { return firstUs_; }
  uint64_t countedFrames() const { return countedFrames_; }
  size_t frameBytes() const { return frameBytes_; }
  size_t openRounds() const { return open_.size(); }

 private:
  struct Round {
    SteadyClock::time_point sent, first, last;
    size_t got = 0;
  };

  void onMessage(ClientConn& c, std::string_view m, SteadyClock::time_point t) {
    if (c.index == sender_) return;  // the sender gets nothing of its own; anything else is noise
    int64_t seq = parseSeq(m);
    auto it = open_.find(seq);
    if (it == open_.end()) return;
    Round& r = it->second;
    if (r.got++ == 0) r.first = t;
    r.last = t;
    frameBytes_ = m.size();
    if (counting_) ++countedFrames_;
    if (r.got < receivers_) return;
    lastUs_.push_back(microsBetween(r.sent, r.last));
    firstUs_.push_back(microsBetween(r.sent, r.first));
    open_.erase(it);
    topUp();
  }

  ClientFleet& fleet_;
  size_t receivers_;
  size_t messageBytes_;
  size_t sender_;
  int64_t nextSeq_ = 1;
  std::deque<int64_t> unsent_;
  std::unordered_map<int64_t, Round> open_;
  std::vector<double> lastUs_, firstUs_;
  size_t window_ = 0;
  bool counting_ = false;
  uint64_t countedFrames_ = 0;
  size_t frameBytes_ = 0;
};

int autoRounds(size_t receivers) {
  return static_cast<int>(std::clamp<size_t>(200000 / std::max<size_t>(receivers, 1), 30, 2000));
}

double cpuSeconds(const ProcCpu& a, const ProcCpu& b) { return b.schedSeconds - a.schedSeconds; }


// One server's side of a fan-out measurement: its clients, and what the blocks measured so
// far add up to. Blocks of dohost and of the floor alternate when both fit in this process,
// so that what other processes do on the machine falls on both alike.
struct FanoutSide {
  Server* server = nullptr;
  size_t receivers = 0;
  std::unique_ptr<ClientFleet> fleet;
  std::unique_ptr<FanoutDriver> driver;
  double connectSeconds = 0;
  int64_t rssKiB = 0;
  int rounds = 0;
  double latCpu = 0, latTicks = 0, latWall = 0, latOther = 0;
  uint64_t satFrames = 0;
  double satCpu = 0, satWall = 0, satClient = 0, satOther = 0;
  size_t window = 0;
  bool satDrained = true;
  std::vector<double> lastUs, firstUs;  // of the latency rounds (saturation rounds queue)

  // Closes the clients (the driver first: it refers to the fleet).
  void close() {
    driver.reset();
    fleet.reset();
  }
  ~FanoutSide() { close(); }
};

double roundTimeout(size_t receivers) { return 10 + static_cast<double>(receivers) / 500; }

// Connects N+1 clients and runs 5 warm-up rounds.
bool setUpSide(FanoutSide& side, Server& server, size_t receivers, size_t messageBytes,
               std::string* error) {
  side.server = &server;
  side.receivers = receivers;
  side.fleet = std::make_unique<ClientFleet>();
  if (!side.fleet->open(error)) return false;
  std::string project = "bench-fanout-" + std::to_string(receivers) + "-" + uniqueSuffix();
  auto connectStart = SteadyClock::now();
  if (!side.fleet->connect(server.port, server.path(project), receivers + 1, true,
                           30 + static_cast<double>(receivers) / 100, error)) {
    return false;
  }
  side.connectSeconds = microsBetween(connectStart, SteadyClock::now()) / 1e6;
  if (server.pid) side.rssKiB = readRssKib(server.pid);
  side.driver = std::make_unique<FanoutDriver>(*side.fleet, receivers, messageBytes);
  for (int i = 0; i < 5; ++i) {
    if (!side.driver->runRound(roundTimeout(receivers))) {
      *error = "a warm-up round did not reach every receiver";
      return false;
    }
  }
  side.driver->clearSamples();
  return true;
}

// `rounds` latency rounds, one after the other.
bool latencyBlock(FanoutSide& side, int rounds, std::string* error) {
  pid_t pid = side.server->pid;
  ProcCpu cpu0 = pid ? readCpu(pid) : ProcCpu{};
  ProcCpu self0 = readCpu(getpid());
  double machine0 = machineBusySeconds();
  auto t0 = SteadyClock::now();
  for (int i = 0; i < rounds; ++i) {
    if (!side.driver->runRound(roundTimeout(side.receivers))) {
      *error = "a round did not reach every receiver in time";
      return false;
    }
  }
  auto t1 = SteadyClock::now();
  ProcCpu cpu1 = pid ? readCpu(pid) : ProcCpu{};
  ProcCpu self1 = readCpu(getpid());
  double machine1 = machineBusySeconds();
  double wall = microsBetween(t0, t1) / 1e6;
  side.rounds += rounds;
  side.latCpu += cpuSeconds(cpu0, cpu1);
  side.latTicks += cpu1.tickSeconds - cpu0.tickSeconds;
  side.latWall += wall;
  side.latOther += std::max(0.0, (machine1 - machine0) - cpuSeconds(cpu0, cpu1) - cpuSeconds(self0, self1));
  return true;
}

// Saturation for `seconds`: a window of messages in flight; frames that arrive in the measured
// interval, and the server's CPU time over the same interval.
void saturationBlock(FanoutSide& side, double seconds) {
  FanoutDriver& driver = *side.driver;
  ClientFleet& fleet = *side.fleet;
  pid_t pid = side.server->pid;
  side.window = std::clamp<size_t>(
      static_cast<size_t>(std::ceil(4000.0 / static_cast<double>(side.receivers))), 2, 32);
  driver.setWindow(side.window);
  driver.topUp();
  auto warmEnd = SteadyClock::now() + std::chrono::milliseconds(300);
  fleet.serveUntil([&] { return SteadyClock::now() >= warmEnd; }, 5);
  driver.setCounting(true);
  ProcCpu s0 = pid ? readCpu(pid) : ProcCpu{};
  ProcCpu c0 = readCpu(getpid());
  double m0 = machineBusySeconds();
  auto st0 = SteadyClock::now();
  auto end = st0 + std::chrono::duration<double>(seconds);
  fleet.serveUntil([&] { return SteadyClock::now() >= end; }, seconds + 5);
  auto st1 = SteadyClock::now();
  ProcCpu s1 = pid ? readCpu(pid) : ProcCpu{};
  ProcCpu c1 = readCpu(getpid());
  double m1 = machineBusySeconds();
  side.satFrames += driver.countedFrames();
  driver.setCounting(false);
  side.satDrained = driver.drain(30 + static_cast<double>(side.receivers) / 200) && side.satDrained;
  side.satWall += microsBetween(st0, st1) / 1e6;
  side.satCpu += cpuSeconds(s0, s1);
  side.satClient += cpuSeconds(c0, c1);
  side.satOther += std::max(0.0, (m1 - m0) - cpuSeconds(s0, s1) - cpuSeconds(c0, c1));
}

Json sideJson(const FanoutSide& side) {
  const FanoutDriver& d = *side.driver;
  double frames = static_cast<double>(side.rounds) * static_cast<double>(side.receivers);
  Json out{{"server", side.server->kind},
           {"receivers", side.receivers},
           {"connectSeconds", side.connectSeconds},
           {"rounds", side.rounds},
           {"frameBytes", d.frameBytes()},
           {"latencyLastUs", toJson(summarize(side.lastUs))},
           {"latencyFirstUs", toJson(summarize(side.firstUs))},
           {"otherCpu", side.latOther / side.latWall}};
  if (side.server->pid) {
    out["rssKiB"] = side.rssKiB;
    out["cpuPerFrameUs"] = side.latCpu * 1e6 / frames;
    out["cpuPerFrameTicksUs"] = side.latTicks * 1e6 / frames;
    out["serverCpuUtil"] = side.latCpu / side.latWall;
  }
  Json sat{{"window", side.window},
           {"seconds", side.satWall},
           {"frames", side.satFrames},
           {"framesPerSecond", static_cast<double>(side.satFrames) / side.satWall},
           {"clientCpuUtil", side.satClient / side.satWall},
           {"otherCpu", side.satOther / side.satWall}};
  if (side.server->pid && side.satFrames > 0) {
    sat["cpuPerFrameUs"] = side.satCpu * 1e6 / static_cast<double>(side.satFrames);
    sat["serverCpuUtil"] = side.satCpu / side.satWall;
  }
  if (!side.satDrained) sat["warning"] = "not every saturation round completed afterwards";
  out["saturation"] = sat;
  return out;
}

// The measurement blocks of one or two sides: latency rounds in `kBlocks` blocks and the
// saturation time in two halves, alternating between the sides (ABBA order).
constexpr int kBlocks = 4;

bool measureSides(std::vector<FanoutSide*> sides, int rounds, double saturationSeconds,
                  std::string* error) {
  int perBlock = std::max(1, rounds / kBlocks);
  for (int b = 0; b < kBlocks; ++b) {
    for (size_t k = 0; k < sides.size(); ++k) {
      FanoutSide* side = sides[b % 2 == 0 ? k : sides.size() - 1 - k];
      int n = b == kBlocks - 1 ? rounds - perBlock * (kBlocks - 1) : perBlock;
      if (!latencyBlock(*side, n, error)) {
        *error = side->server->kind + ": " + *error;
        return false;
      }
    }
  }
  for (FanoutSide* side : sides) {
    side->lastUs = side->driver->lastUs();
    side->firstUs = side->driver->firstUs();
  }
  for (int b = 0; b < 2; ++b) {
    for (size_t k = 0; k < sides.size(); ++k) {
      saturationBlock(*sides[b % 2 == 0 ? k : sides.size() - 1 - k], saturationSeconds / 2);
    }
  }
  return true;
}

double num(const Json& j, const char* a, const char* b = nullptr) {
  const Json* p = &j;
  if (!p->contains(a)) return 0;
  p = &(*p)[a];
  if (b) {
    if (!p->contains(b)) return 0;
    p = &(*p)[b];
  }
  return p->is_number() ? p->get<double>() : 0;
}

Json ratio(double a, double b) { return b > 0 && a > 0 ? Json(a / b) : Json(nullptr); }

// POST .../evict on the admin API; true when the object is evicted afterwards.
bool evict(const Server& s, const std::string& projectId, std::string* error) {
  HttpResult r = httpRequest(s.adminPort, "POST",
                             "/objects/" + std::string(kBroadcasterClass) + "/" + projectId + "/evict");
  if (r.status != 200) {
    *error = "admin evict answered " + std::to_string(r.status) + ": " + r.body;
    return false;
  }
  return true;
}

}  // namespace

Json runFanoutBench(const WsBenchOptions& o) {
  Json results = Json::array();
  for (size_t n : o.sockets) {
    int rounds = o.rounds > 0 ? o.rounds : autoRounds(n);
    Json entry{{"sockets", n}};
    // Both sides' clients in this process at once only while that stays within 10,000
    // sockets; above, dohost is measured first, then the floor.
    bool together = o.floor && 2 * (n + 1) <= 10000;
    entry["interleaved"] = together;
    std::string error;
    FanoutSide d, f;
    std::unique_ptr<Server> dohost, floor;
    bool dOk = false, fOk = false;

    std::fprintf(stderr, "  fanout %zu: dohost%s ...\n", n, together ? " and floor, interleaved" : "");
    dohost = startDohost(o, true, &error);
    dOk = dohost && setUpSide(d, *dohost, n, static_cast<size_t>(o.messageBytes), &error);
    if (!dOk) {
      entry["dohost"] = Json{{"error", error}};
      if (dohost && dohost->child) entry["dohost"]["log"] = dohost->child->logTail(600);
    }
    // The same bytes on the wire as dohost delivered.
    size_t floorBytes = dOk ? d.driver->frameBytes() : static_cast<size_t>(o.messageBytes) + 70;
    auto setUpFloor = [&] {
      error.clear();
      floor = startFloor(o, &error);
      fOk = floor && setUpSide(f, *floor, n, floorBytes, &error);
      if (!fOk) entry["floor"] = Json{{"error", error}};
    };
    if (together) {
      setUpFloor();
      std::vector<FanoutSide*> sides;
      if (dOk) sides.push_back(&d);
      if (fOk) sides.push_back(&f);
      if (!sides.empty() && !measureSides(sides, rounds, o.saturationSeconds, &error)) {
        Json failed{{"error", error}};
        if (dOk) entry["dohost"] = failed;
        if (fOk) entry["floor"] = failed;
        dOk = fOk = false;
      }
    } else {
      if (dOk && !measureSides({&d}, rounds, o.saturationSeconds, &error)) {
        entry["dohost"] = Json{{"error", error}};
        dOk = false;
      }
      if (dOk) entry["dohost"] = sideJson(d);
      dohost.reset();
      d.close();
      if (o.floor) {
        std::fprintf(stderr, "  fanout %zu: floor ...\n", n);
        setUpFloor();
        if (fOk && !measureSides({&f}, rounds, o.saturationSeconds, &error)) {
          entry["floor"] = Json{{"error", error}};
          fOk = false;
        }
      }
    }
    if (dOk && together) entry["dohost"] = sideJson(d);
    if (fOk) entry["floor"] = sideJson(f);
    if (entry.contains("floor") && !entry["dohost"].contains("error") && !entry["floor"].contains("error")) {
      const Json& dj = entry["dohost"];
      const Json& fj = entry["floor"];
      entry["ratio"] = Json{
          {"latencyLastMedian", ratio(num(dj, "latencyLastUs", "median"), num(fj, "latencyLastUs", "median"))},
          {"latencyLastP99", ratio(num(dj, "latencyLastUs", "p99"), num(fj, "latencyLastUs", "p99"))},
          {"cpuPerFrame", ratio(num(dj, "cpuPerFrameUs"), num(fj, "cpuPerFrameUs"))},
          {"saturationCpuPerFrame",
           ratio(num(dj, "saturation", "cpuPerFrameUs"), num(fj, "saturation", "cpuPerFrameUs"))},
          {"saturationFramesPerSecond",
           ratio(num(dj, "saturation", "framesPerSecond"), num(fj, "saturation", "framesPerSecond"))}};
    }
    std::fprintf(stderr, "  fanout %zu: last receiver p50 %.0f / p99 %.0f us (floor %.0f / %.0f), "
                 "cpu/frame %.2f us (floor %.2f)\n",
                 n, num(entry["dohost"], "latencyLastUs", "median"), num(entry["dohost"], "latencyLastUs", "p99"),
                 entry.contains("floor") ? num(entry["floor"], "latencyLastUs", "median") : 0.0,
                 entry.contains("floor") ? num(entry["floor"], "latencyLastUs", "p99") : 0.0,
                 num(entry["dohost"], "cpuPerFrameUs"),
                 entry.contains("floor") ? num(entry["floor"], "cpuPerFrameUs") : 0.0);
    // The servers first (SIGKILL, see docs/performance.md), then the clients.
    dohost.reset();
    floor.reset();
    d.close();
    f.close();
    results.push_back(entry);
  }
  return results;
}

namespace {

// A live object with two sockets, measured from its own client context (so the bench's
// loop turns cost nothing for the other sockets): the time a message takes from one to the
// other. Run with and without many idle sockets open on the server, it shows what every
// idle socket adds to each turn of the server's loop.
class Probe {
 public:
  bool open(Server& s, std::string* error) {
    project_ = "bench-probe-" + uniqueSuffix();
    return fleet_.open(error) && fleet_.connect(s.port, s.path(project_), 2, true, 30, error);
  }
  Json measure(int samples, size_t messageBytes, std::string* error) {
    FanoutDriver driver(fleet_, 1, messageBytes);
    for (int i = 0; i < samples + 10; ++i) {
      if (i == 10) driver.clearSamples();
      if (!driver.runRound(10)) {
        *error = "a probe message did not arrive";
        return nullptr;
      }
    }
    return toJson(summarize(driver.lastUs()));
  }

 private:
  ClientFleet fleet_;
  std::string project_;
};

// N idle sockets on one object: VmRSS before and after, per socket; then once more after one
// message went to all of them (per-socket buffers that traffic allocates).
Json measureMemory(Server& s, size_t n, size_t messageBytes, std::string* error) {
  if (!s.pid) {
    *error = "the server's pid is unknown (pass --pid with --connect)";
    return nullptr;
  }
  Json out{{"server", s.kind}, {"sockets", n}};
  // The floor sends every message to every socket: no probe there.
  std::unique_ptr<Probe> probe;
  if (s.kind == "dohost") {
    probe = std::make_unique<Probe>();
    if (!probe->open(s, error)) return nullptr;
    Json p = probe->measure(200, messageBytes, error);
    if (p.is_null()) return nullptr;
    out["probeNoIdleUs"] = p;
  }
  sleepMillis(300);
  int64_t rss0 = readRssKib(s.pid);
  ClientFleet fleet;
  if (!fleet.open(error)) return nullptr;
  std::string project = "bench-memory-" + uniqueSuffix();
  if (!fleet.connect(s.port, s.path(project), n, true, 30 + static_cast<double>(n) / 100, error)) {
    return nullptr;
  }
  auto settle = [&]() -> int64_t {
    if (s.kind == "dohost" && !evict(s, project, error)) return -1;
    sleepMillis(500);
    return readRssKib(s.pid);
  };
  int64_t rss1 = settle();
  if (rss1 < 0) return nullptr;
  if (probe) {
    Json p = probe->measure(200, messageBytes, error);
    if (p.is_null()) return nullptr;
    out["probeWithIdleUs"] = p;
  }
  {
    FanoutDriver driver(fleet, n - 1, messageBytes);
    if (!driver.runRound(30)) {
      *error = "the message did not reach every socket";
      return nullptr;
    }
  }
  int64_t rss2 = settle();
  if (rss2 < 0) return nullptr;
  auto perSocket = [&](int64_t rss) { return static_cast<double>(rss - rss0) * 1024.0 / static_cast<double>(n); };
  out["rssBaseKiB"] = rss0;
  out["rssIdleKiB"] = rss1;
  out["bytesPerSocket"] = perSocket(rss1);
  out["rssAfterTrafficKiB"] = rss2;
  out["bytesPerSocketAfterTraffic"] = perSocket(rss2);
  return out;
}

}  // namespace

Json runMemoryBench(const WsBenchOptions& o) {
  size_t n = o.memorySockets ? o.memorySockets
                             : *std::max_element(o.sockets.begin(), o.sockets.end());
  Json out{{"sockets", n}};
  std::string error;
  std::fprintf(stderr, "  memory %zu sockets: dohost ...\n", n);
  if (auto s = startDohost(o, true, &error)) {
    Json d = measureMemory(*s, n, static_cast<size_t>(o.messageBytes), &error);
    out["dohost"] = d.is_null() ? Json{{"error", error}} : d;
  } else {
    out["dohost"] = Json{{"error", error}};
  }
  if (o.floor) {
    std::fprintf(stderr, "  memory %zu sockets: floor ...\n", n);
    error.clear();
    if (auto s = startFloor(o, &error)) {
      Json f = measureMemory(*s, n, static_cast<size_t>(o.messageBytes), &error);
      out["floor"] = f.is_null() ? Json{{"error", error}} : f;
    } else {
      out["floor"] = Json{{"error", error}};
    }
  }
  std::fprintf(stderr, "  memory: dohost %.0f bytes/socket hibernated (floor %.0f); probe %.0f us -> %.0f us\n",
               num(out["dohost"], "bytesPerSocket"),
               out.contains("floor") ? num(out["floor"], "bytesPerSocket") : 0.0,
               num(out["dohost"], "probeNoIdleUs", "median"), num(out["dohost"], "probeWithIdleUs", "median"));
  return out;
}

Json runWakeBench(const WsBenchOptions& o) {
  Json results = Json::array();
  std::vector<bool> durabilities = o.externalPort ? std::vector<bool>{true} : std::vector<bool>{true, false};
  for (bool full : durabilities) {
    std::string label = o.externalPort ? "as configured" : (full ? "FULL" : "NORMAL");
    Json entry{{"durability", label}};
    std::string error;
    std::fprintf(stderr, "  wake (durability %s) ...\n", label.c_str());
    auto s = startDohost(o, full, &error);
    ClientFleet fleet;
    std::string project = "bench-wake-" + uniqueSuffix();
    bool ok = s && fleet.open(&error) && fleet.connect(s->port, s->path(project), 2, true, 30, &error);
    if (ok) {
      FanoutDriver driver(fleet, 1, static_cast<size_t>(o.messageBytes));
      for (int i = 0; i < 20 && ok; ++i) ok = driver.runRound(10);
      driver.clearSamples();
      std::vector<double> live, woken;
      for (int i = 0; i < o.wakeSamples && ok; ++i) {
        // Alternating, so both sets see the same conditions.
        ok = driver.runRound(10);
        if (!ok) break;
        live.push_back(driver.lastUs().back());
        ok = evict(*s, project, &error) && driver.runRound(10);
        if (!ok) break;
        woken.push_back(driver.lastUs().back());
      }
      if (ok) {
        Summary l = summarize(live), w = summarize(woken);
        entry["liveUs"] = toJson(l);
        entry["wokenUs"] = toJson(w);
        entry["addedMedianUs"] = w.median - l.median;
        entry["addedP99Us"] = w.p99 - l.p99;
        std::fprintf(stderr, "  wake (durability %s): live p50 %.0f us, woken p50 %.0f us, added %.0f us\n",
                     label.c_str(), l.median, w.median, w.median - l.median);
      } else if (error.empty()) {
        error = "a message did not arrive in time";
      }
    }
    if (!ok) entry["error"] = error;
    results.push_back(entry);
  }
  return results;
}

}  // namespace dohost::bench
