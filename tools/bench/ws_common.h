// What the WebSocket scenarios share: the servers under test (a dohost or the floor server,
// started by the bench), the bench's message format, and the driver of fan-out rounds.
#pragma once

#include <sys/types.h>

#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bench_util.h"
#include "ws_fleet.h"
#include "ws_scenarios.h"

namespace dohost::bench {

inline constexpr const char* kBroadcasterClass = "Broadcaster";

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

// How a dohost is started beyond what every scenario gives it.
struct DohostLaunch {
  std::vector<std::string> extraArgs;  // appended to the command line
  std::string dataDir;                 // shared by the hosts of a cluster; empty: its own
  std::string configHead;              // top-level lines of dohost.toml before the bench's
};

// A dohost serving only the Broadcaster on a free loopback port (or the external one of
// --connect), with its admin API; null with `error` when it does not come up.
std::unique_ptr<Server> startDohost(const WsBenchOptions& o, bool durabilityFull, std::string* error,
                                    const DohostLaunch& launch = {});
std::unique_ptr<Server> startFloor(const WsBenchOptions& o, std::string* error);

// Eight hex digits, for project names no earlier run used.
std::string uniqueSuffix();
// A message of about `bytes` bytes that carries `seq`. The Broadcaster forwards it with a
// `from` added; the floor forwards it as it is.
std::string makeMessage(int64_t seq, size_t bytes);
int64_t parseSeq(std::string_view m);

// POST .../evict on the admin API; true when the object is evicted afterwards.
bool evict(const Server& s, const std::string& projectId, std::string* error);

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

}  // namespace dohost::bench
