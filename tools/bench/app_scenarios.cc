#include "app_scenarios.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "app_host.h"
#include "dohost/jwt.h"
#include "ws_fleet.h"

namespace dohost::bench {
namespace {

const char* const kApps[] = {"broadcaster", "bridge", "hopeflow", "channels", "guide"};

}  // namespace

std::string randomHex() {
  static std::mt19937_64 rng{std::random_device{}()};
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

// dohost with only `app` listening, durability FULL, pings and eviction pushed past the run.
// `env` is set in the bench's environment before the start (the child inherits it): the
// secret and the app settings go in as an operator would pass them.
std::unique_ptr<AppServer> startAppHost(const AppBenchOptions& o, const std::string& app,
                                        const std::vector<std::pair<std::string, std::string>>& env,
                                        std::string* error) {
  auto s = std::make_unique<AppServer>();
  s->dir = std::make_unique<TempFolder>(o.tempParent);
  s->port = freeLoopbackPort();
  int adminPort = 0;
  do {
    adminPort = freeLoopbackPort();
  } while (adminPort == s->port);
  std::string config = s->dir->path() + "/dohost.toml";
  {
    std::ofstream out(config);
    out << "ping_interval = 3600\ndurability = \"full\"\n";
  }
  for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
  std::vector<std::string> argv = {o.dohostPath, "--config", config,
                                   "--data", s->dir->path() + "/data",
                                   "--admin", "127.0.0.1:" + std::to_string(adminPort),
                                   "--idle-evict", "3600", "--log-level", "warn"};
  for (const char* a : kApps) {
    argv.push_back("--app");
    argv.push_back(std::string(a) + "=" + (a == app ? "127.0.0.1:" + std::to_string(s->port) : "off"));
  }
  s->child = std::make_unique<ChildProcess>();
  bool ok = s->child->start(argv, s->dir->path() + "/dohost.log", error);
  for (const auto& [k, v] : env) unsetenv(k.c_str());
  if (!ok) return nullptr;
  s->pid = s->child->pid();
  if (!waitListening(s->port, s->child.get(), 15, error)) return nullptr;
  s->adminPort = adminPort;
  return s;
}

std::unique_ptr<AppServer> startFloor(const AppBenchOptions& o, std::string* error) {
  auto s = std::make_unique<AppServer>();
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

// The integer after `key` in `m` (-1 when absent).
int64_t intAfter(std::string_view m, std::string_view key, size_t from) {
  size_t at = m.find(key, from);
  if (at == std::string_view::npos) return -1;
  int64_t v = 0;
  bool any = false;
  for (size_t i = at + key.size(); i < m.size() && m[i] >= '0' && m[i] <= '9'; ++i) {
    v = v * 10 + (m[i] - '0');
    any = true;
  }
  return any ? v : -1;
}

// The string value after `key` (which ends with the opening quote); no escapes expected.
std::string_view stringAfter(std::string_view m, std::string_view key) {
  size_t at = m.find(key);
  if (at == std::string_view::npos) return {};
  size_t start = at + key.size();
  size_t end = m.find('"', start);
  return end == std::string_view::npos ? std::string_view{} : m.substr(start, end - start);
}

FloorComparison::FloorComparison(const AppBenchOptions& o, size_t receivers, size_t frameBytes,
                                 double timeout, Json& out)
    : timeout_(timeout), out_(out) {
  if (!o.floor) return;
  std::string error;
  server_ = startFloor(o, &error);
  fleet_ = std::make_unique<ClientFleet>();
  if (!server_ || !fleet_->open(&error) ||
      !fleet_->connect(server_->port, "/", receivers + 1, true,
                       30 + static_cast<double>(receivers) / 100, &error)) {
    out_["floor"] = Json{{"error", error}};
    return;
  }
  rounds_ = std::make_unique<FloorRounds>(*fleet_, receivers, frameBytes);
  if (!rounds_->rounds(5, timeout_)) {
    out_["floor"] = Json{{"error", "a warm-up round did not reach every receiver"}};
    rounds_.reset();
    return;
  }
  rounds_->clearSamples();
}

FloorComparison::~FloorComparison() { close(); }

void FloorComparison::close() {
  rounds_.reset();
  if (fleet_) fleet_->close();
  fleet_.reset();
  server_.reset();
}

bool FloorComparison::run(int rounds, pid_t pid, const std::function<bool(int)>& block,
                          CpuWindow::Result* cpu) {
  int half = rounds / 2;
  auto scenario = [&](int count) {
    CpuWindow w;
    w.start(pid);
    bool ok = block(count);
    CpuWindow::Result r = w.stop();
    cpu->wall += r.wall;
    cpu->server += r.server;
    cpu->bench += r.bench;
    cpu->other += r.other;
    return ok;
  };
  auto floor = [&](int count) {
    if (rounds_ && !rounds_->rounds(count, timeout_)) {
      out_["floor"] = Json{{"error", "a round did not reach every receiver"}};
      rounds_.reset();
    }
  };
  if (!scenario(half)) return false;
  floor(half);
  floor(rounds - half);
  return scenario(rounds - half);
}

void FloorComparison::report(int rounds) {
  if (!rounds_) return;
  Summary fl = summarize(rounds_->lastUs());
  out_["floor"] = Json{{"rounds", rounds},
                       {"latencyLastUs", toJson(fl)},
                       {"latencyFirstUs", toJson(summarize(rounds_->firstUs()))}};
  double p99 = out_["latency"]["latencyLastUs"]["p99"].get<double>();
  out_["latencyLastP99RatioToFloor"] = fl.p99 > 0 ? Json(p99 / fl.p99) : Json(nullptr);
}

namespace {

// --- chat -------------------------------------------------------------------------------

// Drives the members of one channel: sends `message` frames with a tag as content, follows
// every `message` frame the members receive, and records when a message has reached all.
class ChatDriver {
 public:
  ChatDriver(ClientFleet& fleet, size_t members) : fleet_(fleet), members_(members), lastId_(members, 0) {
    fleet_.onSent = [this](ClientConn& c, SteadyClock::time_point t) {
      auto& q = unsent_[c.index];
      if (q.empty()) return;
      sentAt_[q.front()] = t;
      q.pop_front();
    };
    fleet_.onMessage = [this](ClientConn& c, std::string_view m, SteadyClock::time_point t) {
      onMessage(c, m, t);
    };
  }
  ~ChatDriver() {
    fleet_.onSent = nullptr;
    fleet_.onMessage = nullptr;
  }

  // Queues a message from member `sender`; returns its tag.
  std::string send(size_t sender) {
    // Appended piece by piece: `"m" + std::to_string(...)` inserts at the front, which GCC 12
    // at -O3 reports as an overlapping memcpy (-Wrestrict, a false positive: GCC bug 105329).
    std::string tag = "m";
    tag += std::to_string(sender);
    tag += '-';
    tag += std::to_string(nextSeq_++);
    tagSender_[tag] = sender;
    unsent_[sender].push_back(tag);
    ++inFlight_[sender];
    allTags_.push_back(tag);
    fleet_.send(sender, "{\"type\":\"message\",\"content\":\"" + tag + "\"}");
    return tag;
  }

  // Latency rounds: one message at a time, senders taking turns among the first `senders`.
  bool rounds(int count, size_t senders, double timeout) {
    for (int i = 0; i < count; ++i) {
      size_t before = delivered_;
      send(static_cast<size_t>(i) % senders);
      if (!fleet_.serveUntil([&] { return delivered_ > before; }, timeout)) return false;
    }
    return true;
  }

  // Throughput: `senders` members keep `window` messages each in flight for `seconds`
  // (after a short warm-up); counts messages that reached every member in that interval.
  struct Throughput {
    uint64_t messages = 0;
    CpuWindow::Result cpu;
    bool drained = false;
  };
  Throughput throughput(size_t senders, size_t window, double seconds, pid_t pid) {
    clearSamples();
    senders_ = senders;
    window_ = window;
    for (size_t s = 0; s < senders; ++s) topUp(s);
    auto warmEnd = SteadyClock::now() + std::chrono::milliseconds(500);
    fleet_.serveUntil([&] { return SteadyClock::now() >= warmEnd; }, 5);
    Throughput out;
    uint64_t d0 = delivered_;
    CpuWindow w;
    w.start(pid);
    auto end = SteadyClock::now() + std::chrono::duration<double>(seconds);
    fleet_.serveUntil([&] { return SteadyClock::now() >= end; }, seconds + 5);
    out.cpu = w.stop();
    out.messages = delivered_ - d0;
    window_ = 0;
    // Drained when every message sent so far has reached every member.
    out.drained = fleet_.serveUntil([&] { return delivered_ == allTags_.size(); },
                                    30 + static_cast<double>(members_) / 100);
    return out;
  }

  void clearSamples() {
    lastUs_.clear();
    firstUs_.clear();
  }
  const std::vector<double>& lastUs() const { return lastUs_; }
  const std::vector<double>& firstUs() const { return firstUs_; }
  size_t frameBytes() const { return frameBytes_; }
  uint64_t delivered() const { return delivered_; }
  uint64_t orderViolations() const { return orderViolations_; }
  uint64_t idConflicts() const { return idConflicts_; }
  uint64_t strayFrames() const { return strayFrames_; }
  const std::vector<std::string>& allTags() const { return allTags_; }
  // Every member saw exactly the ids of the delivered messages, each once, in increasing order.
  bool sameOrderEverywhere() const {
    if (orderViolations_ != 0 || idConflicts_ != 0 || received_.size() != members_) return false;
    for (const auto& [member, count] : received_) {
      if (count != delivered_) return false;
    }
    return true;
  }

 private:
  struct Open {
    std::string tag;
    size_t got = 0;
    SteadyClock::time_point first;
  };

  void topUp(size_t sender) {
    while (window_ > 0 && sender < senders_ && inFlight_[sender] < window_) send(sender);
  }

  void onMessage(ClientConn& c, std::string_view m, SteadyClock::time_point t) {
    // {"message":{"channelId":..,"content":..,"id":"<uuid>","seq":N,...},"type":"message"}
    // (keys sorted); user_connected and other notices are not counted. The seq is the order.
    if (m.rfind("{\"message\":{", 0) != 0) return;
    int64_t id = intAfter(m, "\"seq\":");
    std::string_view tag = stringAfter(m, "\"content\":\"");
    if (id <= 0 || tag.empty()) {
      ++strayFrames_;
      return;
    }
    frameBytes_ = m.size();
    ++received_[c.index];
    if (id <= lastId_[c.index]) ++orderViolations_;
    lastId_[c.index] = id;
    auto it = open_.find(id);
    if (it == open_.end()) {
      it = open_.emplace(id, Open{std::string(tag), 0, t}).first;
    } else if (it->second.tag != tag) {
      ++idConflicts_;
    }
    Open& o = it->second;
    if (++o.got < members_) return;
    // Every member has it.
    ++delivered_;
    auto sent = sentAt_.find(o.tag);
    if (sent != sentAt_.end()) {
      lastUs_.push_back(microsBetween(sent->second, t));
      firstUs_.push_back(microsBetween(sent->second, o.first));
      sentAt_.erase(sent);
    }
    size_t sender = tagSender_[o.tag];
    tagSender_.erase(o.tag);
    open_.erase(it);
    --inFlight_[sender];
    topUp(sender);
  }

  ClientFleet& fleet_;
  size_t members_;
  std::vector<int64_t> lastId_;
  int64_t nextSeq_ = 1;
  std::unordered_map<size_t, std::deque<std::string>> unsent_;
  std::unordered_map<std::string, SteadyClock::time_point> sentAt_;
  std::unordered_map<std::string, size_t> tagSender_;
  std::unordered_map<size_t, size_t> inFlight_;
  std::unordered_map<int64_t, Open> open_;
  std::unordered_map<size_t, uint64_t> received_;
  std::vector<std::string> allTags_;
  std::vector<double> lastUs_, firstUs_;
  size_t senders_ = 0, window_ = 0;
  uint64_t delivered_ = 0, orderViolations_ = 0, idConflicts_ = 0, strayFrames_ = 0;
  size_t frameBytes_ = 0;
};


// Reads the whole history over HTTP and checks it against the tags sent: every one stored
// exactly once, nothing else, seqs increasing.
Json checkHistory(int port, const std::string& channel, const std::string& token,
                  const std::vector<std::string>& sent) {
  std::unordered_map<std::string, int> seen;
  int64_t after = 0, lastId = 0;
  size_t stored = 0, pages = 0;
  bool idsIncrease = true;
  while (true) {
    HttpResult r = httpRequest(port, "GET",
                               "/channel/" + channel + "/messages?after=" + std::to_string(after) +
                                   "&limit=1000&token=" + token,
                               {}, 30000);
    if (r.status != 200) {
      return Json{{"error", "GET /messages answered " + std::to_string(r.status) + ": " + r.body.substr(0, 200)}};
    }
    Json page = Json::parse(r.body, nullptr, false);
    if (!page.is_object() || !page.contains("messages")) return Json{{"error", "GET /messages: not JSON"}};
    ++pages;
    for (const Json& m : page["messages"]) {
      int64_t id = m.value("seq", int64_t{0});
      if (id <= lastId) idsIncrease = false;
      lastId = id;
      ++seen[m.value("content", std::string())];
      ++stored;
    }
    if (!page.value("hasMore", false)) break;
    after = page.value("lastSeq", after);
  }
  size_t missing = 0, duplicated = 0;
  for (const std::string& t : sent) {
    auto it = seen.find(t);
    if (it == seen.end()) {
      ++missing;
    } else if (it->second > 1) {
      ++duplicated;
    }
  }
  size_t extra = stored > sent.size() - missing ? stored - (sent.size() - missing) : 0;
  return Json{{"sent", sent.size()}, {"stored", stored}, {"pages", pages}, {"missing", missing},
              {"duplicated", duplicated}, {"extra", extra}, {"idsIncrease", idsIncrease},
              {"exactlyOnce", missing == 0 && duplicated == 0 && extra == 0 && idsIncrease}};
}

int chatRounds(const AppBenchOptions& o) {
  if (o.rounds > 0) return o.rounds;
  return static_cast<int>(std::clamp<size_t>(200000 / std::max<size_t>(o.members, 1), 30, 2000));
}

}  // namespace

Json runChatBench(const AppBenchOptions& o) {
  size_t n = o.members;
  size_t senders = std::min(o.senders, n);
  Json out{{"members", n}, {"senders", senders}, {"window", o.window}, {"durability", "FULL"}};
  std::string error;
  std::string secret = "bench-" + randomHex();
  std::fprintf(stderr, "  chat: %zu members ...\n", n);
  auto host = startAppHost(o, "channels",
                           {{"JWT_SECRET", secret},
                            {"DOHOST_CHANNELS_MAX_CONNECTIONS", std::to_string(n + 10)}},
                           &error);
  if (!host) return Json{{"error", error}};
  std::string channel = "bench-" + randomHex().substr(0, 8);
  std::vector<std::string> tokens(n);
  for (size_t i = 0; i < n; ++i) {
    std::string u = "u" + std::to_string(i);
    tokens[i] = signJwtHs256(
        Json{{"userId", u}, {"username", u}, {"permissions", {"read", "write"}}}.dump(), secret);
  }
  ClientFleet fleet;
  if (!fleet.open(&error)) return Json{{"error", error}};
  // One connect per member (each has its own token); each is ready when its initial_state
  // arrived. Every join also sends user_connected to the members already in.
  auto c0 = SteadyClock::now();
  for (size_t i = 0; i < n; ++i) {
    if (!fleet.connect(host->port, "/channel/" + channel + "/websocket?token=" + tokens[i], 1, true, 30, &error)) {
      return Json{{"error", "member " + std::to_string(i) + ": " + error}, {"log", host->child->logTail(600)}};
    }
  }
  out["connectSeconds"] = microsBetween(c0, SteadyClock::now()) / 1e6;
  // Let the user_connected notices settle.
  auto settle = SteadyClock::now() + std::chrono::milliseconds(500);
  fleet.serveUntil([&] { return SteadyClock::now() >= settle; }, 5);

  ChatDriver driver(fleet, n);
  double timeout = 10 + static_cast<double>(n) / 200;
  if (!driver.rounds(5, senders, timeout)) return Json{{"error", "a warm-up message did not reach every member"}};
  driver.clearSamples();
  int rounds = chatRounds(o);

  // The floor beside it, measured in alternating blocks (dohost, floor, floor, dohost).
  FloorComparison floor(o, n, driver.frameBytes(), timeout, out);
  std::fprintf(stderr, "  chat: %d latency rounds%s ...\n", rounds, floor.running() ? " (and the floor)" : "");
  CpuWindow::Result latCpu;
  if (!floor.run(rounds, host->pid, [&](int count) { return driver.rounds(count, senders, timeout); }, &latCpu)) {
    return Json{{"error", "a message did not reach every member in time"}};
  }
  double frames = static_cast<double>(rounds) * static_cast<double>(n);
  Json lat{{"rounds", rounds},
           {"frameBytes", driver.frameBytes()},
           {"latencyLastUs", toJson(summarize(driver.lastUs()))},
           {"latencyFirstUs", toJson(summarize(driver.firstUs()))},
           {"cpuPerFrameUs", latCpu.server * 1e6 / frames},
           {"serverCpuUtil", latCpu.server / latCpu.wall},
           {"otherCpu", latCpu.other / latCpu.wall}};
  out["latency"] = lat;
  floor.report(rounds);
  floor.close();

  std::fprintf(stderr, "  chat: %zu senders, window %zu, %.1f s ...\n", senders, o.window, o.seconds);
  double commitsBefore = metricTotal(host->adminPort, "dohost_storage_commits_total");
  ChatDriver::Throughput t = driver.throughput(senders, o.window, o.seconds, host->pid);
  double commitsAfter = metricTotal(host->adminPort, "dohost_storage_commits_total");
  double tframes = static_cast<double>(t.messages) * static_cast<double>(n);
  Json thr{{"seconds", t.cpu.wall},
           {"messages", t.messages},
           {"messagesPerSecond", static_cast<double>(t.messages) / t.cpu.wall},
           {"framesPerSecond", tframes / t.cpu.wall},
           {"serverCpuUtil", t.cpu.server / t.cpu.wall},
           {"benchCpuUtil", t.cpu.bench / t.cpu.wall},
           {"otherCpu", t.cpu.other / t.cpu.wall},
           {"drained", t.drained}};
  if (tframes > 0) thr["cpuPerFrameUs"] = t.cpu.server * 1e6 / tframes;
  if (t.messages > 0) thr["cpuPerMessageUs"] = t.cpu.server * 1e6 / static_cast<double>(t.messages);
  thr["latencyLastUs"] = toJson(summarize(driver.lastUs()));  // of the throughput run
  if (commitsBefore >= 0 && commitsAfter > commitsBefore) {
    // Grouped commits: messages that arrive in one loop turn share one transaction.
    thr["commits"] = commitsAfter - commitsBefore;
    thr["messagesPerCommit"] = static_cast<double>(t.messages) / (commitsAfter - commitsBefore);
  }
  out["throughput"] = thr;

  Json check = checkHistory(host->port, channel, tokens[0], driver.allTags());
  check["delivered"] = driver.delivered();
  check["sameOrderEverywhere"] = driver.sameOrderEverywhere();
  check["orderViolations"] = driver.orderViolations();
  check["idConflicts"] = driver.idConflicts();
  check["strayFrames"] = driver.strayFrames();
  out["check"] = check;
  std::fprintf(stderr, "  chat: last member p50 %.0f / p99 %.0f us; %.0f messages/s (%.0f frames/s); "
               "stored exactly once: %s; same order: %s\n",
               lat["latencyLastUs"]["median"].get<double>(), lat["latencyLastUs"]["p99"].get<double>(),
               thr["messagesPerSecond"].get<double>(), thr["framesPerSecond"].get<double>(),
               check.value("exactlyOnce", false) ? "yes" : "NO",
               driver.sameOrderEverywhere() ? "yes" : "NO");
  host.reset();  // SIGKILL first, then the clients go
  fleet.close();
  return out;
}

// --- publish ----------------------------------------------------------------------------

namespace {

struct PublishSample {
  SteadyClock::time_point done;
  double us = 0;
};

// One run of the publish scenario: `connections` publisher threads, each with its own
// keep-alive connection and one publish in flight, while this thread serves the sockets
// (which ack every envelope). The figures cover the publishes that completed within the
// measured interval.
Json publishRun(AppServer& host, ClientFleet& fleet, const std::string& token, const std::string& user,
                size_t sockets, size_t connections, double seconds) {
  std::atomic<bool> stop{false};
  std::atomic<size_t> running{connections};
  std::atomic<uint64_t> failures{0}, incomplete{0};
  std::mutex mu;
  std::string firstFailure;
  std::vector<std::vector<PublishSample>> samples(connections);
  std::vector<uint64_t> conns(connections), reconnects(connections);
  std::string body = Json{{"userId", user}, {"type", "bench"}, {"payload", {{"n", 1}}}}.dump();
  std::string request = "POST /publish HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(host.port) +
                        "\r\nAuthorization: Bearer " + token +
                        "\r\nContent-Type: application/json\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n\r\n" + body;
  std::vector<std::thread> threads;
  for (size_t k = 0; k < connections; ++k) {
    threads.emplace_back([&, k] {
      KeepAliveHttp http(host.port);
      std::string answer;
      while (!stop.load(std::memory_order_relaxed)) {
        auto t0 = SteadyClock::now();
        int status = http.roundTrip(request, &answer);
        auto t1 = SteadyClock::now();
        Json a = status == 200 ? Json::parse(answer, nullptr, false) : Json();
        if (status != 200 || !a.is_object()) {
          ++failures;
          std::lock_guard<std::mutex> lock(mu);
          if (firstFailure.empty()) firstFailure = "status " + std::to_string(status) + ": " + answer.substr(0, 200);
          if (status == 0) break;
          continue;
        }
        if (a.value("clientCount", 0) != static_cast<int>(sockets) || !a.contains("results") ||
            a["results"].size() != sockets) {
          ++incomplete;
        }
        samples[k].push_back({t1, microsBetween(t0, t1)});
      }
      conns[k] = http.connections();
      reconnects[k] = http.reconnects();
      --running;
    });
  }
  auto warmEnd = SteadyClock::now() + std::chrono::milliseconds(500);
  fleet.serveUntil([&] { return SteadyClock::now() >= warmEnd; }, 5);
  CpuWindow w;
  w.start(host.pid);
  auto t0 = SteadyClock::now();
  auto end = t0 + std::chrono::duration<double>(seconds);
  fleet.serveUntil([&] { return SteadyClock::now() >= end; }, seconds + 5);
  CpuWindow::Result cpu = w.stop();
  auto t1 = SteadyClock::now();
  stop = true;
  fleet.serveUntil([&] { return running.load() == 0; }, 30);
  for (auto& t : threads) t.join();
  std::vector<double> lat;
  uint64_t total = 0;
  for (const auto& v : samples) {
    total += v.size();
    for (const PublishSample& s : v) {
      if (s.done >= t0 && s.done <= t1) lat.push_back(s.us);
    }
  }
  uint64_t connTotal = 0, reconnTotal = 0;
  for (size_t k = 0; k < connections; ++k) {
    connTotal += conns[k];
    reconnTotal += reconnects[k];
  }
  double wall = microsBetween(t0, t1) / 1e6;
  Json out{{"connections", connections},
           {"seconds", wall},
           {"publishes", lat.size()},
           {"publishesPerSecond", static_cast<double>(lat.size()) / wall},
           {"latencyUs", toJson(summarize(lat))},
           {"serverCpuUtil", cpu.server / cpu.wall},
           {"benchCpuUtil", cpu.bench / cpu.wall},
           {"otherCpu", cpu.other / cpu.wall},
           {"publishesInAll", total},
           {"withoutEveryAck", incomplete.load()},
           {"failures", failures.load()},
           {"tcpConnectionsOpened", connTotal},
           {"reconnects", reconnTotal}};
  if (!lat.empty()) out["serverCpuPerPublishUs"] = cpu.server * 1e6 / static_cast<double>(lat.size());
  if (!firstFailure.empty()) out["firstFailure"] = firstFailure;
  return out;
}

}  // namespace

Json runPublishBench(const AppBenchOptions& o) {
  size_t s = o.publishSockets;
  Json out{{"sockets", s}, {"durability", "FULL"}};
  std::string error;
  std::string secret = "bench-" + randomHex();
  std::fprintf(stderr, "  publish: %zu sockets of one user ...\n", s);
  auto host = startAppHost(o, "hopeflow", {{"JWT_SECRET", secret}}, &error);
  if (!host) return Json{{"error", error}};
  std::string user = "bench-" + randomHex().substr(0, 8);
  std::string token = signJwtHs256(Json{{"userId", user}}.dump(), secret);
  ClientFleet fleet;
  if (!fleet.open(&error) || !fleet.connect(host->port, "/?token=" + token, s, false, 30, &error)) {
    return Json{{"error", error}};
  }
  size_t subscribed = 0;
  uint64_t acks = 0;
  fleet.onMessage = [&](ClientConn& c, std::string_view m, SteadyClock::time_point) {
    std::string_view id = stringAfter(m, "\"envelopeId\":\"");
    if (!id.empty()) {
      ++acks;
      fleet.send(c.index, "{\"type\":\"ack\",\"envelopeId\":\"" + std::string(id) +
                              "\",\"result\":{\"socket\":" + std::to_string(c.index) + "}}");
    } else if (m.find("\"subscribed\"") != std::string_view::npos) {
      ++subscribed;
    }
  };
  for (size_t i = 0; i < s; ++i) fleet.send(i, R"({"type":"subscribe","filters":[{"type":"bench"}]})");
  if (!fleet.serveUntil([&] { return subscribed == s; }, 10)) {
    fleet.onMessage = nullptr;
    return Json{{"error", "not every socket got `subscribed`"}, {"log", host->child->logTail(600)}};
  }
  std::fprintf(stderr, "  publish: one connection, %.1f s ...\n", o.seconds);
  out["sequential"] = publishRun(*host, fleet, token, user, s, 1, o.seconds);
  std::fprintf(stderr, "  publish: %zu connections, %.1f s ...\n", o.publishConnections, o.seconds);
  out["concurrent"] = publishRun(*host, fleet, token, user, s, o.publishConnections, o.seconds);
  out["acksSent"] = acks;
  for (const char* k : {"sequential", "concurrent"}) {
    const Json& r = out[k];
    std::fprintf(stderr, "  publish (%s): %.0f publishes/s, p50 %.0f / p99 %.0f us, %llu without every ack, %llu failed\n",
                 k, r["publishesPerSecond"].get<double>(), r["latencyUs"]["median"].get<double>(),
                 r["latencyUs"]["p99"].get<double>(),
                 static_cast<unsigned long long>(r["withoutEveryAck"].get<uint64_t>()),
                 static_cast<unsigned long long>(r["failures"].get<uint64_t>()));
  }
  host.reset();
  fleet.onMessage = nullptr;
  fleet.close();
  return out;
}

// --- tables -----------------------------------------------------------------------------

namespace {

std::string fixed(double v, const char* fmt = "%.0f") {
  if (v < 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

void line(const std::string& label, const std::string& a, const std::string& b = "", const std::string& c = "") {
  std::printf("  %-52s %14s %14s %10s\n", label.c_str(), a.c_str(), b.c_str(), c.c_str());
}

}  // namespace

void printChatTable(const Json& c) {
  std::printf("\nChat: channels app, %s members in one channel, durability FULL\n",
              c.contains("members") ? std::to_string(c["members"].get<size_t>()).c_str() : "?");
  if (c.contains("error")) {
    std::printf("    failed: %s\n", c["error"].get<std::string>().c_str());
    return;
  }
  const Json& l = c["latency"];
  const Json empty = Json::object();
  const Json& f = c.contains("floor") ? c["floor"] : empty;
  if (f.contains("error")) std::printf("    floor failed: %s\n", f["error"].get<std::string>().c_str());
  line("", "dohost", "floor", "ratio");
  auto ratio = [](double a, double b) { return a > 0 && b > 0 ? fixed(a / b, "%.2fx") : std::string("-"); };
  double dm = num(l, {"latencyLastUs", "median"}), fm = num(f, {"latencyLastUs", "median"});
  double dp = num(l, {"latencyLastUs", "p99"}), fp = num(f, {"latencyLastUs", "p99"});
  line("one message at a time: to the last member, median", fmtUs(dm), fmtUs(fm), ratio(dm, fm));
  line("one message at a time: to the last member, p99", fmtUs(dp), fmtUs(fp), ratio(dp, fp));
  line("one message at a time: to the first member, median", fmtUs(num(l, {"latencyFirstUs", "median"})),
       fmtUs(num(f, {"latencyFirstUs", "median"})));
  line("server CPU per delivered frame (one at a time)", fmtUs(num(l, {"cpuPerFrameUs"})));
  line("other processes' CPU, latency rounds", fixed(num(l, {"otherCpu"}) * 100, "%.0f%%"));
  const Json& t = c["throughput"];
  std::printf("  %zu senders, %zu messages in flight each:\n", c["senders"].get<size_t>(), c["window"].get<size_t>());
  line("messages delivered to every member per second", fixed(num(t, {"messagesPerSecond"})));
  line("frames delivered per second", fixed(num(t, {"framesPerSecond"})));
  line("server CPU per delivered frame", fmtUs(num(t, {"cpuPerFrameUs"})));
  line("server CPU per message (store + fan-out)", fmtUs(num(t, {"cpuPerMessageUs"})));
  line("storage commits / messages per commit",
       fixed(num(t, {"commits"})) + " / " + fixed(num(t, {"messagesPerCommit"}), "%.1f"));
  line("to the last member, median / p99",
       fmtUs(num(t, {"latencyLastUs", "median"})) + " / " + fmtUs(num(t, {"latencyLastUs", "p99"})));
  line("server / bench / other CPU busy",
       fixed(num(t, {"serverCpuUtil"}) * 100, "%.0f%%") + " / " + fixed(num(t, {"benchCpuUtil"}) * 100, "%.0f%%") +
           " / " + fixed(num(t, {"otherCpu"}) * 100, "%.0f%%"));
  const Json& k = c["check"];
  if (k.contains("error")) {
    std::printf("    history check failed: %s\n", k["error"].get<std::string>().c_str());
  } else {
    line("messages sent / stored (exactly once)",
         fixed(num(k, {"sent"})) + " / " + fixed(num(k, {"stored"})),
         k.value("exactlyOnce", false) ? "yes" : "NO");
  }
  line("every member saw every message, same order", k.value("sameOrderEverywhere", false) ? "yes" : "NO");
  line("time to connect the members (one at a time)", fixed(num(c, {"connectSeconds"}), "%.1f s"));
}

void printPublishTable(const Json& p) {
  std::printf("\nPublish: hopeflow app, %s sockets of one user ack every envelope, durability FULL\n",
              p.contains("sockets") ? std::to_string(p["sockets"].get<size_t>()).c_str() : "?");
  if (p.contains("error")) {
    std::printf("    failed: %s\n", p["error"].get<std::string>().c_str());
    return;
  }
  line("", "1 connection", std::to_string(p["concurrent"]["connections"].get<size_t>()) + " connections");
  const Json& a = p["sequential"];
  const Json& b = p["concurrent"];
  line("publishes/s with every ack in", fixed(num(a, {"publishesPerSecond"})), fixed(num(b, {"publishesPerSecond"})));
  line("latency per publish, median", fmtUs(num(a, {"latencyUs", "median"})), fmtUs(num(b, {"latencyUs", "median"})));
  line("latency per publish, p99", fmtUs(num(a, {"latencyUs", "p99"})), fmtUs(num(b, {"latencyUs", "p99"})));
  line("server CPU per publish", fmtUs(num(a, {"serverCpuPerPublishUs"})), fmtUs(num(b, {"serverCpuPerPublishUs"})));
  line("server CPU busy", fixed(num(a, {"serverCpuUtil"}) * 100, "%.0f%%"), fixed(num(b, {"serverCpuUtil"}) * 100, "%.0f%%"));
  line("other processes' CPU", fixed(num(a, {"otherCpu"}) * 100, "%.0f%%"), fixed(num(b, {"otherCpu"}) * 100, "%.0f%%"));
  line("answers without every ack / failed requests",
       fixed(num(a, {"withoutEveryAck"})) + " / " + fixed(num(a, {"failures"})),
       fixed(num(b, {"withoutEveryAck"})) + " / " + fixed(num(b, {"failures"})));
  line("TCP connections opened", fixed(num(a, {"tcpConnectionsOpened"})), fixed(num(b, {"tcpConnectionsOpened"})));
}

}  // namespace dohost::bench
