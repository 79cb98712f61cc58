// dohost-bench: storage micro-benchmarks (in process) and WebSocket scenarios against a real
// dohost on loopback, each WebSocket figure next to a minimal lws server (the floor) measured
// in the same run. A readable table on stdout, or JSON with --json. See docs/performance.md.
#include <sys/utsname.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "bench_util.h"
#include "floor_server.h"
#include "storage_bench.h"
#include "ws_fleet.h"
#include "app_scenarios.h"
#include "ws_scenarios.h"

namespace dohost::bench {
namespace {

// The targets of issue 3, checked against the figures of this run.
constexpr double kCpuRatioTarget = 1.25;
constexpr double kLatencyRatioTarget = 1.25;
constexpr double kBytesPerSocketTarget = 8 * 1024;
constexpr double kWakeTargetUs = 1000;
constexpr size_t kTargetReceivers = 1000;
// The targets of the cluster (issue 13), for 10,000 receivers over 2 hosts.
constexpr double kOwnerCpuTarget = 0.6;
constexpr double kAllCpuTarget = 1.15;
constexpr double kRelayAddedTargetUs = 150;
constexpr double kRelayedMemoryTarget = 2.0;

std::string selfPath() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.string();
}

std::string nowIso() {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S%z", std::localtime(&t));
  return buf;
}

bool parseSockets(const std::string& text, std::vector<size_t>* out) {
  out->clear();
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t pos = 0;
      long long v = std::stoll(item, &pos);
      if (pos != item.size() || v < 1 || v > 10000) return false;
      out->push_back(static_cast<size_t>(v));
    } catch (const std::exception&) {
      return false;
    }
  }
  return !out->empty();
}

int parseLoopbackPort(const std::string& text) {
  size_t colon = text.rfind(':');
  std::string host = colon == std::string::npos ? "127.0.0.1" : text.substr(0, colon);
  if (host != "127.0.0.1" && host != "localhost") return -1;  // loopback only
  try {
    int p = std::stoi(colon == std::string::npos ? text : text.substr(colon + 1));
    return p > 0 && p < 65536 ? p : -1;
  } catch (const std::exception&) {
    return -1;
  }
}

// --- the table --------------------------------------------------------------------------

std::string fmtNum(double v, const char* unit = "") {
  if (v < 0) return "-";
  char buf[32];
  if (v >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.2fM%s", v / 1e6, unit);
  } else if (v >= 1e4) {
    std::snprintf(buf, sizeof buf, "%.0fk%s", v / 1e3, unit);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f%s", v, unit);
  }
  return buf;
}

std::string fmtPct(double v) {
  if (v < 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f%%", v * 100);
  return buf;
}

std::string fmtRatio(double a, double b) {
  if (a <= 0 || b <= 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2fx", a / b);
  return buf;
}

void row(const std::string& label, const std::string& a, const std::string& b = "",
         const std::string& c = "", const std::string& d = "") {
  std::printf("  %-44s %12s %12s %10s %10s\n", label.c_str(), a.c_str(), b.c_str(), c.c_str(),
              d.c_str());
}

void printClusterTable(const Json& c) {
  std::printf("\nCluster: %d hosts and a local etcd on this machine, next to one dohost alone\n",
              c["hosts"].get<int>());
  if (c.contains("error")) {
    std::printf("    failed: %s\n", c["error"].get<std::string>().c_str());
    return;
  }
  const Json& one = c["single"];
  const Json& all = c["cluster"];
  row("", "one host", "cluster", "ratio");
  size_t receivers = one["fanout"]["receivers"].get<size_t>();
  auto pair = [&](const std::string& label, double a, double b, std::string (*fmt)(double)) {
    row(label, fmt(a), fmt(b), fmtRatio(b, a));
  };
  std::printf("  One broadcast to %zu receivers (spread evenly over the hosts), sender on the owner\n", receivers);
  pair("owner CPU per broadcast", num(one, {"fanout", "allCpuPerBroadcastUs"}),
       num(all, {"fanout", "ownerCpuPerBroadcastUs"}), fmtUs);
  pair("all hosts' CPU per broadcast", num(one, {"fanout", "allCpuPerBroadcastUs"}),
       num(all, {"fanout", "allCpuPerBroadcastUs"}), fmtUs);
  pair("all hosts' CPU per delivered frame", num(one, {"fanout", "allCpuPerFrameUs"}),
       num(all, {"fanout", "allCpuPerFrameUs"}), fmtUs);
  pair("latency to the last receiver, median", num(one, {"fanout", "latencyLastUs", "median"}),
       num(all, {"fanout", "latencyLastUs", "median"}), fmtUs);
  if (all.contains("fanout") && all["fanout"].contains("hosts")) {
    int i = 0;
    for (const Json& h : all["fanout"]["hosts"]) {
      row("  host " + std::to_string(i) + (i == 0 ? " (owner)" : " (edge)") + ", CPU per broadcast", "",
          fmtUs(num(h, {"cpuPerBroadcastUs"})));
      ++i;
    }
  }
  if (all.contains("latencyUs")) {
    std::printf("  A message between two clients (cluster: on different hosts, the receiver's owns it)\n");
    pair("median", num(one, {"latencyUs", "median"}), num(all, {"latencyUs", "median"}), fmtUs);
    pair("p99", num(one, {"latencyUs", "p99"}), num(all, {"latencyUs", "p99"}), fmtUs);
  }
  if (all.contains("memory")) {
    auto bytes = [](double v) { return v < 0 ? std::string("-") : fmtNum(v, " B"); };
    std::printf("  %zu hibernated sockets, object evicted (cluster: through another host than the owner)\n",
                all["memory"]["sockets"].get<size_t>());
    pair("memory per socket (edge + owner)", num(one, {"memory", "bytesPerSocket"}),
         num(all, {"memory", "bytesPerSocket"}), bytes);
    row("  of which the edge / the owner", "", bytes(num(all, {"memory", "edgeBytesPerSocket"})) + " / " +
                                                 bytes(num(all, {"memory", "ownerBytesPerSocket"})));
  }
  if (c.contains("projection")) {
    const Json& p = c["projection"];
    std::printf("  Projection: %s frames/s per core at the cluster's CPU per frame (one host alone: %s);\n"
                "  %d hosts on %d cores: %s frames/s, while the owner is not the busiest host\n",
                fmtNum(num(p, {"framesPerSecondPerCore"})).c_str(),
                fmtNum(num(p, {"framesPerSecondOneHost"})).c_str(), c["hosts"].get<int>(),
                c["hosts"].get<int>(), fmtNum(num(p, {"framesPerSecondNHosts"})).c_str());
  }
  if (all.contains("fanout") && all["fanout"].contains("paced") && !all["fanout"]["paced"].is_null()) {
    const Json& p = all["fanout"]["paced"];
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "  Check, paced at %.1f broadcasts/s (%s frames/s): the hosts were busy %.2f cores, "
                  "%.2f predicted (%.2fx)\n",
                  num(p, {"broadcastsPerSecond"}), fmtNum(num(p, {"framesPerSecond"})).c_str(),
                  num(p, {"measuredCores"}), num(p, {"predictedCores"}), num(p, {"measuredOverPredicted"}));
    std::printf("%s", buf);
  }
}

void printTable(const Json& r) {
  std::printf("dohost-bench  %s  (%s; floor on %s)\n", r["date"].get<std::string>().c_str(),
              r["machine"]["summary"].get<std::string>().c_str(),
              r["floorLoop"].get<std::string>().c_str());
  if (r.contains("storage")) {
    std::printf("\nStorage: the runtime in process, one object, one event per operation\n");
    row("", "median", "p99", "ops/s");
    for (const Json& f : r["storage"]["figures"]) {
      row(f["name"].get<std::string>(), fmtUs(f["median"].get<double>()),
          fmtUs(f["p99"].get<double>()), fmtNum(f["opsPerSecond"].get<double>()));
    }
  }
  if (r.contains("fanout")) {
    std::printf("\nFan-out: Broadcaster, one sender, N receivers in one project (floor: minimal lws server)\n");
    for (const Json& e : r["fanout"]) {
      const Json& d = e["dohost"];
      const Json empty = Json::object();
      const Json& f = e.contains("floor") ? e["floor"] : empty;
      std::printf("  N = %zu receivers%s\n", e["sockets"].get<size_t>(),
                  e.value("interleaved", false) ? " (dohost and floor measured in alternating blocks)"
                                                : " (dohost, then the floor)");
      if (d.contains("error")) std::printf("    dohost failed: %s\n", d["error"].get<std::string>().c_str());
      if (f.contains("error")) std::printf("    floor failed: %s\n", f["error"].get<std::string>().c_str());
      row("", "dohost", "floor", "ratio");
      auto three = [&](const std::string& label, std::initializer_list<const char*> path,
                       std::string (*fmt)(double)) {
        double a = num(d, path), b = num(f, path);
        row(label, fmt(a), fmt(b), fmtRatio(a, b));
      };
      three("latency to last receiver, median", {"latencyLastUs", "median"}, fmtUs);
      three("latency to last receiver, p99", {"latencyLastUs", "p99"}, fmtUs);
      three("latency to first receiver, median", {"latencyFirstUs", "median"}, fmtUs);
      three("server CPU per delivered frame", {"cpuPerFrameUs"}, fmtUs);
      three("frames/s at saturation", {"saturation", "framesPerSecond"},
            [](double v) { return fmtNum(v); });
      three("server CPU per frame at saturation", {"saturation", "cpuPerFrameUs"}, fmtUs);
      three("server CPU busy at saturation", {"saturation", "serverCpuUtil"}, fmtPct);
      three("bench client CPU busy at saturation", {"saturation", "clientCpuUtil"}, fmtPct);
      three("other processes' CPU, latency rounds", {"otherCpu"}, fmtPct);
      three("other processes' CPU, saturation", {"saturation", "otherCpu"}, fmtPct);
      three("time to open the N+1 sockets", {"connectSeconds"}, [](double v) {
        if (v < 0) return std::string("-");
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.1f s", v);
        return std::string(buf);
      });
      row("rounds / frame bytes", std::to_string(static_cast<int>(num(d, {"rounds"}))) + " / " +
                                      std::to_string(static_cast<int>(num(d, {"frameBytes"}))),
          std::to_string(static_cast<int>(num(f, {"rounds"}))) + " / " +
              std::to_string(static_cast<int>(num(f, {"frameBytes"}))));
    }
  }
  if (r.contains("memory")) {
    const Json& m = r["memory"];
    std::printf("\nMemory: %zu idle sockets on one object, object evicted (VmRSS delta / N)\n",
                m["sockets"].get<size_t>());
    const Json empty = Json::object();
    const Json& d = m["dohost"];
    const Json& f = m.contains("floor") ? m["floor"] : empty;
    if (d.contains("error")) std::printf("    dohost failed: %s\n", d["error"].get<std::string>().c_str());
    row("", "dohost", "floor", "ratio");
    auto bytes = [](double v) { return v < 0 ? std::string("-") : fmtNum(v, " B"); };
    row("per hibernated socket", bytes(num(d, {"bytesPerSocket"})), bytes(num(f, {"bytesPerSocket"})),
        fmtRatio(num(d, {"bytesPerSocket"}), num(f, {"bytesPerSocket"})));
    row("per socket after one message to all", bytes(num(d, {"bytesPerSocketAfterTraffic"})),
        bytes(num(f, {"bytesPerSocketAfterTraffic"})),
        fmtRatio(num(d, {"bytesPerSocketAfterTraffic"}), num(f, {"bytesPerSocketAfterTraffic"})));
    row("VmRSS with no socket", fmtNum(num(d, {"rssBaseKiB"}), " KiB"), fmtNum(num(f, {"rssBaseKiB"}), " KiB"));
    if (d.contains("probeNoIdleUs")) {
      std::printf("  A message between two sockets of another, live object (dohost), median / p99:\n");
      row("with no idle socket open", fmtUs(num(d, {"probeNoIdleUs", "median"})), fmtUs(num(d, {"probeNoIdleUs", "p99"})));
      row("with the " + std::to_string(m["sockets"].get<size_t>()) + " idle sockets open",
          fmtUs(num(d, {"probeWithIdleUs", "median"})), fmtUs(num(d, {"probeWithIdleUs", "p99"})));
    }
  }
  if (r.contains("wake")) {
    std::printf("\nWake: one message, sender to one receiver, live object vs just evicted (admin API)\n");
    row("", "median", "p99");
    for (const Json& w : r["wake"]) {
      std::string dur = w["durability"].get<std::string>();
      if (w.contains("error")) {
        std::printf("    durability %s failed: %s\n", dur.c_str(), w["error"].get<std::string>().c_str());
        continue;
      }
      row("live object (durability " + dur + ")", fmtUs(num(w, {"liveUs", "median"})), fmtUs(num(w, {"liveUs", "p99"})));
      row("evicted object (durability " + dur + ")", fmtUs(num(w, {"wokenUs", "median"})), fmtUs(num(w, {"wokenUs", "p99"})));
      row("added by waking (durability " + dur + ")", fmtUs(num(w, {"addedMedianUs"})), fmtUs(num(w, {"addedP99Us"})));
    }
  }
  if (r.contains("cluster")) printClusterTable(r["cluster"]);
  if (r.contains("targets") && !r["targets"].empty()) {
    std::printf("\nTargets\n");
    for (const Json& t : r["targets"]) {
      std::printf("  %-58s %-14s %s\n", t["target"].get<std::string>().c_str(),
                  t["value"].get<std::string>().c_str(), t["met"].get<bool>() ? "met" : "MISSED");
    }
  }
  std::printf("\nFor scale (issue 3): Cloudflare's runtime locally 24-34 us CPU/frame, ~100 KiB/socket; "
              "Node ws 8-13 us, 12-17 KiB.\n");
}

Json checkTargets(const Json& r) {
  Json targets = Json::array();
  auto add = [&](const std::string& what, const std::string& value, bool met) {
    targets.push_back(Json{{"target", what}, {"value", value}, {"met", met}});
  };
  if (r.contains("fanout")) {
    for (const Json& e : r["fanout"]) {
      if (e["sockets"].get<size_t>() != kTargetReceivers || !e.contains("ratio")) continue;
      double cpu = num(e, {"ratio", "cpuPerFrame"});
      double lat = num(e, {"ratio", "latencyLastP99"});
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.2fx", cpu);
      add("server CPU per delivered frame <= 1.25x floor (N=1000)", buf, cpu > 0 && cpu <= kCpuRatioTarget);
      std::snprintf(buf, sizeof buf, "%.2fx", lat);
      add("p99 to the last of 1000 receivers <= 1.25x floor", buf, lat > 0 && lat <= kLatencyRatioTarget);
    }
  }
  if (r.contains("memory")) {
    double b = num(r["memory"], {"dohost", "bytesPerSocket"});
    if (b >= 0) add("host memory per hibernated socket <= 8 KiB", fmtNum(b, " B"), b <= kBytesPerSocketTarget);
  }
  if (r.contains("cluster") && !r["cluster"].contains("error")) {
    const Json& c = r["cluster"];
    char buf[64];
    double owner = num(c, {"ownerCpuRatio"}), all = num(c, {"allCpuPerFrameRatio"});
    std::snprintf(buf, sizeof buf, "%.2fx", owner);
    add("cluster: owner CPU per broadcast <= 0.6x one host", buf, owner > 0 && owner <= kOwnerCpuTarget);
    std::snprintf(buf, sizeof buf, "%.2fx", all);
    add("cluster: all hosts' CPU per frame <= 1.15x one host", buf, all > 0 && all <= kAllCpuTarget);
    if (c.contains("relayAddedMedianUs")) {
      double us = num(c, {"relayAddedMedianUs"});
      add("cluster: the relay adds <= 150 us to the median", fmtUs(us), us <= kRelayAddedTargetUs);
      double m = num(c, {"memoryRatio"});
      std::snprintf(buf, sizeof buf, "%.2fx", m);
      add("cluster: memory per relayed hibernated socket <= 2x", buf, m > 0 && m <= kRelayedMemoryTarget);
    }
  }
  if (r.contains("wake")) {
    for (const Json& w : r["wake"]) {
      double us = num(w, {"addedMedianUs"});
      if (us < 0 && !w.contains("addedMedianUs")) continue;
      add("waking an evicted object adds < 1 ms (median, " + w["durability"].get<std::string>() + ")",
          fmtUs(us), us < kWakeTargetUs);
    }
  }
  return targets;
}

int benchMain(int argc, char** argv) {
  CLI::App cli{"dohost-bench: storage micro-benchmarks and WebSocket scenarios for dohost"};
  std::string scenarios = "all", socketsText = "100,1000,10000", dohostPath, connect, admin, tmp;
  int rounds = 0, floorPort = 0, wakeSamples = 100, messageBytes = 128;
  int pid = 0;
  size_t memorySockets = 0;
  double saturationSeconds = 2.0, storageSeconds = 2.0;
  bool json = false, noFloor = false;
  cli.add_option("--scenario", scenarios,
                 "storage, fanout, memory, wake, chat, publish, guide or all (comma-separated); "
                 "cluster (not in all: it starts etcd and --hosts hosts)");
  int hosts = 0;
  size_t clusterReceivers = 10000;
  cli.add_option("--hosts", hosts, "the cluster scenario's hosts (2 to 8; alone, it chooses that scenario)")
      ->check(CLI::Range(2, 8));
  cli.add_option("--cluster-receivers", clusterReceivers, "the cluster scenario's fan-out receivers (default 10000)")
      ->check(CLI::Range(2, 10000));
  cli.add_option("--sockets", socketsText, "receivers per fan-out, comma-separated (default 100,1000,10000)");
  cli.add_option("--rounds", rounds, "latency rounds per fan-out size (default: 200000/N, 30..2000)");
  cli.add_option("--saturation-seconds", saturationSeconds, "measured seconds of each saturation run (default 2)");
  cli.add_option("--message-bytes", messageBytes, "bytes the sender sends (default 128)");
  cli.add_option("--memory-sockets", memorySockets, "sockets in the memory scenario (default: largest --sockets)");
  cli.add_option("--wake-samples", wakeSamples, "live/evicted pairs in the wake scenario (default 100)");
  cli.add_option("--storage-seconds", storageSeconds, "seconds per storage figure (default 2)");
  cli.add_option("--dohost", dohostPath, "dohost binary (default ../dohost/dohost next to this one)");
  cli.add_option("--connect", connect, "use a running dohost: its broadcaster listener 127.0.0.1:PORT");
  cli.add_option("--admin", admin, "with --connect: its admin API 127.0.0.1:PORT");
  cli.add_option("--pid", pid, "with --connect: its process id (for CPU and memory figures)");
  cli.add_flag("--no-floor", noFloor, "do not run the floor server");
  cli.add_option("--tmp", tmp, "folder for temporary data folders (default: system temp)");
  cli.add_flag("--json", json, "print the results as JSON instead of a table");
  std::string jsonOut;
  cli.add_option("--json-out", jsonOut, "also write the results as JSON to this file");
  std::string floorLoop = "epoll", clientLoop = "epoll";
  cli.add_option("--client-loop", clientLoop, "the bench clients' event loop: epoll (default) or poll");
  cli.add_option("--floor-loop", floorLoop, "the floor server's event loop: epoll (default) or poll (as dohost)");
  AppBenchOptions ao;
  cli.add_option("--members", ao.members, "chat, guide: members of the channel or room (default 1000)")->check(CLI::Range(2, 5000));
  cli.add_option("--senders", ao.senders, "chat: members sending at once (default 10)")->check(CLI::Range(1, 1000));
  cli.add_option("--window", ao.window, "chat: messages in flight per sender (default 4)")->check(CLI::Range(1, 1000));
  cli.add_option("--app-seconds", ao.seconds, "chat, publish: measured seconds of each throughput run (default 3)")
      ->check(CLI::Range(0.1, 600.0));
  cli.add_option("--publish-sockets", ao.publishSockets, "publish: sockets of the user (default 10)")->check(CLI::Range(1, 5000));
  cli.add_option("--publishers", ao.publishConnections, "publish: HTTP connections publishing at once (default 4)")
      ->check(CLI::Range(1, 256));
  cli.add_option("--floor-server", floorPort, "(internal) run the floor server on this port")->group("");
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e);
  }
  raiseFileLimit();
  if (floorLoop != "epoll" && floorLoop != "poll") {
    std::fprintf(stderr, "dohost-bench: --floor-loop is epoll or poll\n");
    return 2;
  }
  LoopKind floorLoopKind = floorLoop == "poll" ? LoopKind::kPoll : LoopKind::kEpoll;
  ClientFleet::defaultLoop() = clientLoop == "poll" ? LoopKind::kPoll : LoopKind::kEpoll;
  if (floorPort > 0) return floorServerMain(floorPort, floorLoopKind);

  std::set<std::string> chosen;
  if (hosts > 0 && scenarios == "all") scenarios = "cluster";
  if (hosts == 0) hosts = 2;
  {
    std::stringstream ss(scenarios);
    std::string s;
    while (std::getline(ss, s, ',')) {
      if (s == "all") {
        chosen.insert({"storage", "fanout", "memory", "wake", "chat", "publish", "guide"});
      } else if (s == "storage" || s == "fanout" || s == "memory" || s == "wake" || s == "chat" ||
                 s == "publish" || s == "guide" || s == "cluster") {
        chosen.insert(s);
      } else {
        std::fprintf(stderr, "dohost-bench: unknown scenario \"%s\"\n", s.c_str());
        return 2;
      }
    }
  }
  WsBenchOptions o;
  o.selfPath = selfPath();
  if (!parseSockets(socketsText, &o.sockets)) {
    std::fprintf(stderr, "dohost-bench: --sockets wants numbers from 1 to 10000, comma-separated\n");
    return 2;
  }
  if (rounds < 0 || saturationSeconds <= 0 || storageSeconds <= 0 || wakeSamples < 1 ||
      messageBytes < 64 || messageBytes > 65536 || memorySockets == 1 || memorySockets > 10000) {
    std::fprintf(stderr, "dohost-bench: a size flag is out of range (see --help)\n");
    return 2;
  }
  o.rounds = rounds;
  o.saturationSeconds = saturationSeconds;
  o.messageBytes = messageBytes;
  o.memorySockets = memorySockets;
  o.wakeSamples = wakeSamples;
  o.clusterReceivers = clusterReceivers;
  o.tempParent = tmp;
  o.floor = !noFloor;
  o.floorLoop = floorLoop;
  o.dohostPath = dohostPath.empty()
                     ? (std::filesystem::path(o.selfPath).parent_path() / ".." / "dohost" / "dohost")
                           .lexically_normal()
                           .string()
                     : dohostPath;
  if (!connect.empty()) {
    o.externalPort = parseLoopbackPort(connect);
    o.externalAdminPort = admin.empty() ? 9090 : parseLoopbackPort(admin);
    o.externalPid = pid;
    if (o.externalPort < 0 || o.externalAdminPort < 0) {
      std::fprintf(stderr, "dohost-bench: --connect and --admin take 127.0.0.1:PORT (loopback only)\n");
      return 2;
    }
  } else if (chosen.count("fanout") || chosen.count("memory") || chosen.count("wake") ||
             chosen.count("cluster")) {
    if (access(o.dohostPath.c_str(), X_OK) != 0) {
      std::fprintf(stderr, "dohost-bench: no dohost binary at %s (use --dohost PATH)\n", o.dohostPath.c_str());
      return 2;
    }
  }

  utsname u{};
  uname(&u);
  unsigned cores = std::thread::hardware_concurrency();
  Json r{{"tool", "dohost-bench"},
         {"date", nowIso()},
         {"machine", {{"cores", cores}, {"kernel", std::string(u.release)},
                      {"summary", std::to_string(cores) + " cores, Linux " + u.release}}},
         {"dohost", o.externalPort ? "127.0.0.1:" + std::to_string(o.externalPort) : o.dohostPath},
         {"floorLoop", floorLoop}};
  if (chosen.count("storage")) {
    std::fprintf(stderr, "storage ...\n");
    StorageBenchOptions so;
    so.tempParent = tmp;
    so.secondsPerFigure = storageSeconds;
    try {
      r["storage"] = runStorageBench(so);
    } catch (const std::exception& e) {
      r["storage"] = Json{{"error", e.what()}, {"figures", Json::array()}};
    }
  }
  if (chosen.count("fanout")) {
    std::fprintf(stderr, "fanout ...\n");
    r["fanout"] = runFanoutBench(o);
  }
  if (chosen.count("memory")) {
    std::fprintf(stderr, "memory ...\n");
    r["memory"] = runMemoryBench(o);
  }
  if (chosen.count("wake")) {
    std::fprintf(stderr, "wake ...\n");
    r["wake"] = runWakeBench(o);
  }
  if (chosen.count("cluster")) {
    if (o.externalPort) {
      std::fprintf(stderr, "dohost-bench: the cluster scenario starts its own hosts (no --connect)\n");
      return 2;
    }
    std::fprintf(stderr, "cluster ...\n");
    r["cluster"] = runClusterBench(o, hosts);
  }
  ao.selfPath = o.selfPath;
  ao.dohostPath = o.dohostPath;
  ao.tempParent = tmp;
  ao.rounds = rounds;
  ao.floor = !noFloor;
  ao.floorLoop = floorLoop;
  if (chosen.count("chat")) r["chat"] = runChatBench(ao);
  if (chosen.count("publish")) r["publish"] = runPublishBench(ao);
  if (chosen.count("guide")) r["guide"] = runGuideBench(ao);
  r["targets"] = checkTargets(r);
  if (!jsonOut.empty()) {
    std::ofstream out(jsonOut);
    out << r.dump(2) << "\n";
    if (!out) std::fprintf(stderr, "dohost-bench: cannot write %s\n", jsonOut.c_str());
  }
  if (json) {
    std::cout << r.dump(2) << "\n";
  } else {
    printTable(r);
    if (r.contains("chat")) printChatTable(r["chat"]);
    if (r.contains("publish")) printPublishTable(r["publish"]);
    if (r.contains("guide")) printGuideTable(r["guide"]);
  }
  return 0;
}

}  // namespace
}  // namespace dohost::bench

int main(int argc, char** argv) { return dohost::bench::benchMain(argc, argv); }
