// The cluster scenario (dohost-bench --scenario cluster --hosts N): a local etcd, N dohost
// hosts sharing one data folder, each with its own Broadcaster port, and the same figures from
// one dohost alone for comparison. See ws_scenarios.h and docs/performance.md, "Cluster".
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "ws_common.h"

namespace dohost::bench {
namespace {

constexpr const char* kEtcd = "/usr/bin/etcd";

double cpuOf(pid_t pid) { return readCpu(pid).schedSeconds; }

// One etcd member on free loopback ports, in a temporary folder.
struct Etcd {
  std::unique_ptr<TempFolder> dir;
  std::unique_ptr<ChildProcess> child;
  int port = 0;

  bool start(const std::string& tempParent, std::string* error) {
    if (access(kEtcd, X_OK) != 0) {
      *error = std::string(kEtcd) + " is missing (Debian etcd-server)";
      return false;
    }
    dir = std::make_unique<TempFolder>(tempParent);
    port = freeLoopbackPort();
    int peerPort = 0;
    do {
      peerPort = freeLoopbackPort();
    } while (peerPort == port);
    std::string url = "http://127.0.0.1:" + std::to_string(port);
    std::string peer = "http://127.0.0.1:" + std::to_string(peerPort);
    child = std::make_unique<ChildProcess>();
    if (!child->start({kEtcd, "--name", "m0", "--data-dir", dir->path() + "/m0",
                       "--listen-client-urls", url, "--advertise-client-urls", url,
                       "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                       "--initial-cluster", "m0=" + peer, "--initial-cluster-state", "new",
                       "--logger", "zap", "--log-level", "error"},
                      dir->path() + "/etcd.log", error)) {
      return false;
    }
    for (int i = 0; i < 400; ++i) {
      if (!child->running()) {
        *error = "etcd exited: " + child->logTail(400);
        return false;
      }
      if (httpRequest(port, "GET", "/health", {}, 1000).body.find("true") != std::string::npos) {
        return true;
      }
      sleepMillis(50);
    }
    *error = "etcd did not become healthy";
    return false;
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }
  ~Etcd() {
    if (child) child->kill();
  }
};

// N hosts of one cluster. Host 0 is the one the bench makes the owner of every project.
struct Cluster {
  Etcd etcd;
  std::unique_ptr<TempFolder> data;
  std::vector<std::unique_ptr<Server>> hosts;

  bool start(const WsBenchOptions& o, int n, std::string* error) {
    if (!etcd.start(o.tempParent, error)) return false;
    data = std::make_unique<TempFolder>(o.tempParent);
    std::string tag = uniqueSuffix();
    for (int i = 0; i < n; ++i) {
      DohostLaunch launch;
      launch.dataDir = data->path();
      launch.extraArgs = {"--cluster", etcd.url(), "--host-id", "bench-" + tag + "-" + std::to_string(i),
                          "--peer", "127.0.0.1:" + std::to_string(freeLoopbackPort())};
      std::unique_ptr<Server> s = startDohost(o, true, error, launch);
      if (!s) {
        *error = "host " + std::to_string(i) + ": " + *error;
        return false;
      }
      hosts.push_back(std::move(s));
    }
    // Every host sees every other and serves.
    for (int tries = 0; tries < 200; ++tries) {
      bool all = true;
      for (const auto& h : hosts) {
        all = all && metricTotal(h->adminPort, "dohost_cluster_hosts") == n &&
              metricTotal(h->adminPort, "dohost_cluster_serving") == 1;
      }
      if (all) return true;
      sleepMillis(50);
    }
    *error = "the hosts did not all see each other within 10 s (host 0: dohost_cluster_hosts " +
             std::to_string(metricTotal(hosts[0]->adminPort, "dohost_cluster_hosts")) +
             ", dohost_cluster_serving " +
             std::to_string(metricTotal(hosts[0]->adminPort, "dohost_cluster_serving")) + "; log: " +
             hosts[0]->child->logTail(400) + ")";
    return false;
  }
  // The hosts before etcd (declaration order would stop etcd last anyway).
  ~Cluster() { hosts.clear(); }
};

double sum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

// One broadcast at a time to `receivers` receivers, the sender on host 0 (the owner); the
// receivers spread evenly over `servers`. CPU of each server over the rounds; then, with
// `pacedSeconds`, broadcasts at the rate that should keep the servers `pacedCores` busy.
Json fanout(const std::vector<Server*>& servers, size_t receivers, int rounds, size_t messageBytes,
            double pacedCores, double pacedSeconds, std::string* error) {
  ClientFleet fleet;
  if (!fleet.open(error)) return nullptr;
  std::string project = "bench-cluster-fanout-" + uniqueSuffix();
  std::string path = servers[0]->path(project);
  // The sender first: the host it reaches claims the project.
  if (!fleet.connect(servers[0]->port, path, 1, true, 30, error)) return nullptr;
  size_t n = servers.size();
  std::vector<size_t> per(n, receivers / n);
  for (size_t i = 0; i < receivers % n; ++i) ++per[i];
  auto t0 = SteadyClock::now();
  for (size_t i = 0; i < n; ++i) {
    if (!fleet.connect(servers[i]->port, path, per[i], true, 30 + static_cast<double>(per[i]) / 100,
                       error)) {
      return nullptr;
    }
  }
  double connectSeconds = microsBetween(t0, SteadyClock::now()) / 1e6;
  FanoutDriver driver(fleet, receivers, messageBytes);
  double timeout = 10 + static_cast<double>(receivers) / 500;
  for (int i = 0; i < 5; ++i) {
    if (!driver.runRound(timeout)) {
      *error = "a warm-up round did not reach every receiver";
      return nullptr;
    }
  }
  driver.clearSamples();
  // The bench's clients yield to the servers while they are measured: on a machine with fewer
  // cores than hosts + 1, a client that competes with the hosts for a core adds the cost of
  // its preemptions and of the caches it evicts to the hosts' CPU time, which is not what the
  // relay costs. The servers' work does not wait for the clients (the kernel buffers frames).
  // Back to the old priority afterwards where the system allows it.
  int niceBefore = getpriority(PRIO_PROCESS, 0);
  (void)setpriority(PRIO_PROCESS, 0, 19);
  std::vector<double> cpu0, cpu1;
  for (Server* s : servers) cpu0.push_back(cpuOf(s->pid));
  double self0 = cpuOf(getpid());
  auto w0 = SteadyClock::now();
  for (int i = 0; i < rounds; ++i) {
    if (!driver.runRound(timeout)) {
      *error = "a round did not reach every receiver in time";
      return nullptr;
    }
  }
  double wall = microsBetween(w0, SteadyClock::now()) / 1e6;
  for (Server* s : servers) cpu1.push_back(cpuOf(s->pid));
  double self1 = cpuOf(getpid());
  (void)setpriority(PRIO_PROCESS, 0, niceBefore);
  std::vector<double> used;
  for (size_t i = 0; i < n; ++i) used.push_back(cpu1[i] - cpu0[i]);
  double frames = static_cast<double>(rounds) * static_cast<double>(receivers);
  // The check of the projection: broadcasts paced so that the hosts together should be busy
  // `pacedCores` of a core, for `pacedSeconds`; what they were busy in fact.
  Json paced;
  if (pacedSeconds > 0 && sum(used) > 0) {
    double perBroadcast = sum(used) / rounds;
    double rate = pacedCores / perBroadcast;  // broadcasts per second
    std::vector<double> p0;
    for (Server* s : servers) p0.push_back(cpuOf(s->pid));
    auto start = SteadyClock::now();
    auto end = start + std::chrono::duration<double>(pacedSeconds);
    int sent = 0;
    fleet.serveUntil(
        [&] {
          auto now = SteadyClock::now();
          if (now >= end) return true;
          double due = std::chrono::duration<double>(now - start).count() * rate;
          while (sent < static_cast<int>(due) + 1) {
            driver.sendOne();
            ++sent;
          }
          return false;
        },
        pacedSeconds + 5);
    if (!driver.drain(timeout)) {
      *error = "a paced broadcast did not reach every receiver";
      return nullptr;
    }
    double pacedWall = microsBetween(start, SteadyClock::now()) / 1e6;
    double busy = 0;
    for (size_t i = 0; i < n; ++i) busy += cpuOf(servers[i]->pid) - p0[i];
    double predicted = sent * perBroadcast / pacedWall;
    paced = Json{{"broadcastsPerSecond", sent / pacedWall},
                 {"framesPerSecond", sent * static_cast<double>(receivers) / pacedWall},
                 {"predictedCores", predicted},
                 {"measuredCores", busy / pacedWall},
                 {"measuredOverPredicted", predicted > 0 ? busy / pacedWall / predicted : 0.0}};
  }
  Json perHost = Json::array();
  for (size_t i = 0; i < n; ++i) {
    perHost.push_back(Json{{"receivers", per[i]},
                           {"cpuPerBroadcastUs", used[i] * 1e6 / rounds},
                           {"cpuUtil", used[i] / wall}});
  }
  return Json{{"receivers", receivers},
              {"rounds", rounds},
              {"connectSeconds", connectSeconds},
              {"latencyLastUs", toJson(summarize(driver.lastUs()))},
              {"ownerCpuPerBroadcastUs", used[0] * 1e6 / rounds},
              {"allCpuPerBroadcastUs", sum(used) * 1e6 / rounds},
              {"allCpuPerFrameUs", sum(used) * 1e6 / frames},
              {"clientCpuUtil", (self1 - self0) / wall},
              {"hosts", perHost},
              {"paced", paced}};
}

// Two clients of one project: the receiver on `owner` (connected first, so that host owns
// the project) and the sender on `sender`. The time from the send to the arrival.
class Pair {
 public:
  bool open(Server& owner, Server& sender, std::string* error) {
    std::string project = "bench-cluster-pair-" + uniqueSuffix();
    if (!fleet_.open(error) || !fleet_.connect(owner.port, owner.path(project), 1, true, 30, error) ||
        !fleet_.connect(sender.port, sender.path(project), 1, true, 30, error)) {
      return false;
    }
    driver_ = std::make_unique<FanoutDriver>(fleet_, 1, 128, 1);
    for (int i = 0; i < 20; ++i) {
      if (!driver_->runRound(10)) {
        *error = "a warm-up message did not arrive";
        return false;
      }
    }
    driver_->clearSamples();
    return true;
  }
  bool block(int samples, std::string* error) {
    for (int i = 0; i < samples; ++i) {
      if (!driver_->runRound(10)) {
        *error = "a message did not arrive in time";
        return false;
      }
    }
    return true;
  }
  Summary summary() const { return summarize(driver_->lastUs()); }
  ~Pair() { driver_.reset(); }

 private:
  ClientFleet fleet_;
  std::unique_ptr<FanoutDriver> driver_;
};

// `n` idle sockets of one project through `edge` to an object owned by `owner` (the same
// server for local sockets), the object evicted: the growth of VmRSS of both, per socket.
Json memory(Server& owner, Server& edge, size_t n, std::string* error) {
  std::string project = "bench-cluster-memory-" + uniqueSuffix();
  ClientFleet fleet;
  if (!fleet.open(error)) return nullptr;
  // One socket on the owner first, so that the owner claims the project; the n go through the
  // edge. It stays, in both cases, so the difference is the n sockets alone.
  if (!fleet.connect(owner.port, owner.path(project), 1, true, 30, error)) return nullptr;
  sleepMillis(300);
  int64_t owner0 = readRssKib(owner.pid), edge0 = readRssKib(edge.pid);
  if (!fleet.connect(edge.port, edge.path(project), n, true, 30 + static_cast<double>(n) / 100, error)) {
    return nullptr;
  }
  if (!evict(owner, project, error)) return nullptr;
  sleepMillis(500);
  int64_t owner1 = readRssKib(owner.pid), edge1 = readRssKib(edge.pid);
  auto per = [&](int64_t a, int64_t b) { return static_cast<double>(b - a) * 1024.0 / static_cast<double>(n); };
  Json out{{"sockets", n}};
  if (&owner == &edge) {
    out["bytesPerSocket"] = per(owner0, owner1);
  } else {
    out["edgeBytesPerSocket"] = per(edge0, edge1);
    out["ownerBytesPerSocket"] = per(owner0, owner1);
    out["bytesPerSocket"] = per(edge0 + owner0, edge1 + owner1);
  }
  return out;
}

double figure(const Json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0;
}

Json ratioOf(double a, double b) { return a > 0 && b > 0 ? Json(a / b) : Json(nullptr); }

}  // namespace

Json runClusterBench(const WsBenchOptions& o, int hostCount) {
  Json out{{"hosts", hostCount}};
  size_t receivers = o.clusterReceivers;
  size_t memorySockets = o.memorySockets ? o.memorySockets : 5000;
  int rounds = o.rounds > 0 ? o.rounds : std::clamp(static_cast<int>(200000 / receivers), 20, 2000);
  size_t bytes = static_cast<size_t>(o.messageBytes);
  std::string error;
  auto fail = [&](const std::string& where) {
    out["error"] = where + ": " + error;
    std::fprintf(stderr, "  cluster: %s failed: %s\n", where.c_str(), error.c_str());
    return out;
  };

  std::fprintf(stderr, "  cluster: one host alone ...\n");
  std::unique_ptr<Server> alone = startDohost(o, true, &error);
  if (!alone) return fail("one host");
  // Memory first, on fresh processes: sockets of an earlier step leave freed memory behind,
  // which new sockets would reuse unseen.
  Json singleMemory = memory(*alone, *alone, memorySockets, &error);
  if (singleMemory.is_null()) return fail("one host, memory");
  Json single = fanout({alone.get()}, receivers, rounds, bytes, 0, 0, &error);
  if (single.is_null()) return fail("one host, fan-out");

  std::fprintf(stderr, "  cluster: etcd and %d hosts ...\n", hostCount);
  Cluster cluster;
  if (!cluster.start(o, hostCount, &error)) return fail("cluster");
  std::vector<Server*> hosts;
  for (auto& h : cluster.hosts) hosts.push_back(h.get());
  Json relayedMemory = hostCount > 1 ? memory(*hosts[0], *hosts[1], memorySockets, &error) : Json();
  if (hostCount > 1 && relayedMemory.is_null()) return fail("cluster, memory");
  Json spread = fanout(hosts, receivers, rounds, bytes, 0.5 * hostCount / 2, 4, &error);
  if (spread.is_null()) return fail("cluster, fan-out");

  // Latency: one host alone, and two clients on different hosts, in alternating blocks.
  Pair local, relayed;
  if (!local.open(*alone, *alone, &error)) return fail("one host, latency");
  if (hostCount > 1 && !relayed.open(*hosts[0], *hosts[1], &error)) return fail("cluster, latency");
  int samples = std::max(100, o.wakeSamples * 10) / 4;
  for (int b = 0; b < 4; ++b) {
    if (!local.block(samples, &error)) return fail("one host, latency");
    if (hostCount > 1 && !relayed.block(samples, &error)) return fail("cluster, latency");
  }

  out["single"] = Json{{"fanout", single}, {"memory", singleMemory},
                       {"latencyUs", toJson(local.summary())}};
  out["cluster"] = Json{{"fanout", spread}};
  if (hostCount > 1) {
    out["cluster"]["memory"] = relayedMemory;
    out["cluster"]["latencyUs"] = toJson(relayed.summary());
  }
  double ownerRatio = 0, allRatio = 0;
  {
    double a = figure(spread, "ownerCpuPerBroadcastUs"), b = figure(single, "allCpuPerBroadcastUs");
    out["ownerCpuRatio"] = ratioOf(a, b);
    ownerRatio = a > 0 && b > 0 ? a / b : 0;
    double c = figure(spread, "allCpuPerFrameUs"), d = figure(single, "allCpuPerFrameUs");
    out["allCpuPerFrameRatio"] = ratioOf(c, d);
    allRatio = c > 0 && d > 0 ? c / d : 0;
  }
  if (hostCount > 1) {
    out["relayAddedMedianUs"] = relayed.summary().median - local.summary().median;
    out["memoryRatio"] = ratioOf(figure(relayedMemory, "bytesPerSocket"), figure(singleMemory, "bytesPerSocket"));
  }
  // What N hosts on N cores would deliver: each core spends the cluster's CPU per frame on
  // each frame, as long as the owner (which also fans out to its own share) is not the
  // busiest host; the owner's share of a broadcast is `ownerRatio` of one host's.
  double perFrameUs = figure(spread, "allCpuPerFrameUs");
  if (perFrameUs > 0) {
    double perCore = 1e6 / perFrameUs;
    out["projection"] = Json{{"framesPerSecondPerCore", perCore},
                             {"framesPerSecondOneHost", 1e6 / figure(single, "allCpuPerFrameUs")},
                             {"framesPerSecondNHosts", perCore * hostCount}};
  }
  std::fprintf(stderr,
               "  cluster: owner CPU/broadcast %.2fx one host, all CPU/frame %.2fx, relay adds %.0f us "
               "(median), memory/socket %.2fx\n",
               ownerRatio, allRatio, figure(out, "relayAddedMedianUs"), figure(out, "memoryRatio"));
  return out;
}

}  // namespace dohost::bench
