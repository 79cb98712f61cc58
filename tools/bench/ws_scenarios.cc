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

#include "ws_common.h"
#include "ws_fleet.h"

namespace dohost::bench {
namespace {

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

double numAt(const Json& j, const char* a, const char* b = nullptr) {
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
          {"latencyLastMedian", ratio(numAt(dj, "latencyLastUs", "median"), numAt(fj, "latencyLastUs", "median"))},
          {"latencyLastP99", ratio(numAt(dj, "latencyLastUs", "p99"), numAt(fj, "latencyLastUs", "p99"))},
          {"cpuPerFrame", ratio(numAt(dj, "cpuPerFrameUs"), numAt(fj, "cpuPerFrameUs"))},
          {"saturationCpuPerFrame",
           ratio(numAt(dj, "saturation", "cpuPerFrameUs"), numAt(fj, "saturation", "cpuPerFrameUs"))},
          {"saturationFramesPerSecond",
           ratio(numAt(dj, "saturation", "framesPerSecond"), numAt(fj, "saturation", "framesPerSecond"))}};
    }
    std::fprintf(stderr, "  fanout %zu: last receiver p50 %.0f / p99 %.0f us (floor %.0f / %.0f), "
                 "cpu/frame %.2f us (floor %.2f)\n",
                 n, numAt(entry["dohost"], "latencyLastUs", "median"), numAt(entry["dohost"], "latencyLastUs", "p99"),
                 entry.contains("floor") ? numAt(entry["floor"], "latencyLastUs", "median") : 0.0,
                 entry.contains("floor") ? numAt(entry["floor"], "latencyLastUs", "p99") : 0.0,
                 numAt(entry["dohost"], "cpuPerFrameUs"),
                 entry.contains("floor") ? numAt(entry["floor"], "cpuPerFrameUs") : 0.0);
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
               numAt(out["dohost"], "bytesPerSocket"),
               out.contains("floor") ? numAt(out["floor"], "bytesPerSocket") : 0.0,
               numAt(out["dohost"], "probeNoIdleUs", "median"), numAt(out["dohost"], "probeWithIdleUs", "median"));
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
