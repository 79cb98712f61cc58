// What the app scenarios (app_scenarios.cc, guide_scenario.cc) share: a dohost started with
// one app, the floor server beside it, CPU accounting over a window, latency rounds on the
// floor, and small readers of the hosts' JSON frames and metrics.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "app_scenarios.h"
#include "bench_util.h"
#include "ws_fleet.h"

namespace dohost::bench {

std::string randomHex();

// A dohost (or floor server) started for one scenario, killed with SIGKILL at the end (the
// data folder is thrown away; closing every client one by one is not what is measured).
struct AppServer {
  std::unique_ptr<TempFolder> dir;
  std::unique_ptr<ChildProcess> child;  // after dir: stopped before the folder goes
  int port = 0;
  int adminPort = 0;
  pid_t pid = 0;
  ~AppServer() {
    if (child) child->kill();
  }
};

// dohost with only `app` listening, durability FULL, pings and eviction pushed past the run.
// `env` is set in the bench's environment before the start (the child inherits it): the
// secret and the app settings go in as an operator would pass them.
std::unique_ptr<AppServer> startAppHost(const AppBenchOptions& o, const std::string& app,
                                        const std::vector<std::pair<std::string, std::string>>& env,
                                        std::string* error);
// The minimal lws server (`self --floor-server`) on a free port.
std::unique_ptr<AppServer> startFloor(const AppBenchOptions& o, std::string* error);
// The sum of a counter over its series in the host's /metrics (admin API); -1 if unreadable.
double metricTotal(int adminPort, const std::string& name);
// The integer after `key` in `m` (-1 when absent).
int64_t intAfter(std::string_view m, std::string_view key, size_t from = 0);
// The string value after `key` (which ends with the opening quote); no escapes expected.
std::string_view stringAfter(std::string_view m, std::string_view key);

struct CpuWindow {
  pid_t pid = 0;
  ProcCpu server0, self0;
  double machine0 = 0;
  SteadyClock::time_point t0;
  void start(pid_t p) {
    pid = p;
    server0 = readCpu(pid);
    self0 = readCpu(getpid());
    machine0 = machineBusySeconds();
    t0 = SteadyClock::now();
  }
  // wall seconds, server CPU seconds, bench CPU seconds, other processes' CPU seconds
  struct Result {
    double wall = 0, server = 0, bench = 0, other = 0;
  };
  Result stop() const {
    Result r;
    r.wall = microsBetween(t0, SteadyClock::now()) / 1e6;
    r.server = readCpu(pid).schedSeconds - server0.schedSeconds;
    r.bench = readCpu(getpid()).schedSeconds - self0.schedSeconds;
    r.other = std::max(0.0, machineBusySeconds() - machine0 - r.server - r.bench);
    return r;
  }
};

// The floor at the same size: N+1 connections, one sends a frame of the chat frame's size,
// the N others receive it; latency to the last of them.
class FloorRounds {
 public:
  FloorRounds(ClientFleet& fleet, size_t receivers, size_t frameBytes)
      : fleet_(fleet), receivers_(receivers), frameBytes_(frameBytes) {
    fleet_.onSent = [this](ClientConn& c, SteadyClock::time_point t) {
      if (c.index == 0) sent_ = t;
    };
    fleet_.onMessage = [this](ClientConn& c, std::string_view, SteadyClock::time_point t) {
      if (c.index == 0) return;
      if (got_++ == 0) first_ = t;
      if (got_ == receivers_) {
        lastUs_.push_back(microsBetween(sent_, t));
        firstUs_.push_back(microsBetween(sent_, first_));
      }
    };
  }
  ~FloorRounds() {
    fleet_.onSent = nullptr;
    fleet_.onMessage = nullptr;
  }
  bool rounds(int count, double timeout) {
    for (int i = 0; i < count; ++i) {
      got_ = 0;
      std::string head = "{\"message\":{\"seq\":" + std::to_string(i) + ",\"pad\":\"";
      std::string tail = "\"},\"type\":\"message\"}";
      size_t fixed = head.size() + tail.size();
      fleet_.send(0, head + std::string(frameBytes_ > fixed ? frameBytes_ - fixed : 0, 'x') + tail);
      if (!fleet_.serveUntil([&] { return got_ >= receivers_; }, timeout)) return false;
    }
    return true;
  }
  void clearSamples() {
    lastUs_.clear();
    firstUs_.clear();
  }
  const std::vector<double>& lastUs() const { return lastUs_; }
  const std::vector<double>& firstUs() const { return firstUs_; }

 private:
  ClientFleet& fleet_;
  size_t receivers_, frameBytes_;
  size_t got_ = 0;
  SteadyClock::time_point sent_, first_;
  std::vector<double> lastUs_, firstUs_;
};

// A scenario's latency rounds next to the floor at the same size: the floor server with
// `receivers` + 1 sockets and frames of the scenario's size, measured in alternating blocks
// (scenario, floor, floor, scenario) so that both see the same machine. Failures of the floor
// go to out["floor"]; the scenario goes on without it.
class FloorComparison {
 public:
  FloorComparison(const AppBenchOptions& o, size_t receivers, size_t frameBytes, double timeout,
                  Json& out);
  ~FloorComparison();
  bool running() const { return rounds_ != nullptr; }
  // `rounds` rounds of the scenario (`block(count)` runs `count` of them; false: one failed),
  // in two halves around the floor's; the CPU of process `pid` in the scenario's blocks is
  // added to `cpu`. False when a block of the scenario failed.
  bool run(int rounds, pid_t pid, const std::function<bool(int)>& block, CpuWindow::Result* cpu);
  // out["floor"], and out["latencyLastP99RatioToFloor"] against out["latency"].
  void report(int rounds);
  // Stops the floor and closes its sockets (before a scenario's next part).
  void close();

 private:
  double timeout_;
  Json& out_;
  std::unique_ptr<AppServer> server_;
  std::unique_ptr<ClientFleet> fleet_;  // after server_: closed before the floor goes
  std::unique_ptr<FloorRounds> rounds_;
};

}  // namespace dohost::bench
