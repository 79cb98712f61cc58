#include "soak.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "bench_util.h"
#include "dohost/jwt.h"
#include "soak_host.h"
#include "ws_fleet.h"

namespace dohost::bench {
namespace {

using TimePoint = SteadyClock::time_point;
using Clock = SteadyClock;

// What the soak asks of the host's settings: acks may take long on a loaded machine, and
// channels hold all of their members.
constexpr int kAckTimeoutMs = 20000;
// An outcome (delivery, answer, echo) that has not come this long after the send, while both
// ends stayed connected, is a loss.
// Generous: a starved or sanitized host can be tens of seconds behind, and the clients'
// windows (kWindow) keep that delay bounded rather than growing.
constexpr double kOutcomeTimeoutSeconds = 120;
// Writes a client keeps without an outcome before it waits: the load follows the host's pace
// instead of piling up in front of a slow one.
constexpr size_t kWindow = 3;
// The final drain waits at most this long for the outcomes of what is in flight.
constexpr double kDrainSeconds = 90;
// Handshakes in flight at once.
constexpr size_t kMaxConnecting = 100;
// Losses described one by one on stderr; the rest are counted.
constexpr int kLossesDescribed = 20;
// guide: the shared text every editor of a context works on; editors stop inserting when it is
// this long (the app's max_document_length is 100,000), so that any run length stays valid.
constexpr char kGuideSession[] = "s0";
constexpr size_t kMaxEditText = 50000;
// guide: messages per `history` page of the checks (the app's largest).
constexpr int kGuideHistoryPage = 200;

int64_t wallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double secondsBetween(TimePoint a, TimePoint b) { return microsBetween(a, b) / 1e6; }

TimePoint after(TimePoint t, double seconds) {
  return t + std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(seconds));
}

std::string mib(int64_t kib) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(kib) / 1024);
  return buf;
}

// The text of a JSON value as a URL parameter or a key: strings as they are, the rest dumped.
std::string plain(const Json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// --- the clients ----------------------------------------------------------------------------

enum class Role { kMember, kRuntime, kDataAgent, kAgent, kAdmin, kChat, kAnalytics, kEditor };

const char* roleName(Role r) {
  switch (r) {
    case Role::kMember: return "member";
    case Role::kRuntime: return "runtime";
    case Role::kDataAgent: return "data-agent";
    case Role::kAgent: return "agent";
    case Role::kAdmin: return "admin";
    case Role::kChat: return "chat";
    case Role::kAnalytics: return "analytics";
    case Role::kEditor: return "editor";
  }
  return "?";
}

// An answer an agent owes a runtime (bridge).
struct OwedAnswer {
  std::string requestId;
  std::string kind;  // query_response or docs
  TimePoint due;
};

// One client socket of the soak: it connects, talks while its object is active, leaves now and
// then and comes back. `gen` names its current connection (the fleet slot's generation), so a
// record made for one connection never counts for the next.
struct Member {
  size_t index = 0;
  size_t group = 0;
  Role role = Role::kMember;
  std::string user;   // channels, hopeflow and guide
  std::string token;  // channels, hopeflow and guide
  std::string path;   // the upgrade path
  bool viaLobby = false;  // guide: authenticates with a first `auth` message
  enum class State { kDown, kConnecting, kOpen } state = State::kDown;
  bool hasSlot = false;
  size_t slot = 0;
  uint64_t gen = 0;
  bool ready = false;    // the app's greeting arrived (connected / initial_state / subscribed)
  bool leaving = false;  // a close was asked for
  TimePoint nextAt;      // the next message, or the next connect when down
  int64_t connectWallMs = 0;
  std::string clientId;                    // broadcaster, bridge: from `connected`
  std::unordered_set<std::string> unechoed;  // channels, guide chat and editors: sent by this
                                             // connection, not echoed yet
  int64_t lastSeq = -1;                    // channels: the last live message's place in the order
  std::string lastStamp;                   // guide chat: the last live message's timestamp
  std::string text;                        // guide editors: the session's text, as applied here
  int64_t version = -1;                    // ... and its version
  Json lastSeenId;                         // channels: the newest message id seen, for `sync`
  std::deque<OwedAnswer> owed;             // bridge agents
  size_t outstanding = 0;                  // routed messages and queries of this connection
                                           // without an outcome yet

  bool stable(uint64_t g) const { return state == State::kOpen && !leaving && gen == g; }
};

// The clients of one object: a channel, a project (broadcaster, bridge) or a user (hopeflow).
struct Group {
  SoakApp app = SoakApp::kChannels;
  std::string name;
  std::vector<size_t> members;
  bool quiet = false;
  TimePoint phaseEnd;
  double publishRate = 0;  // hopeflow: publishes per second while active
  TimePoint nextPublish;
  // channels: acknowledged messages not yet found in the history; what the history holds
  // (content -> times seen); where the next read of the history starts.
  std::unordered_set<std::string> unverified;
  std::unordered_set<std::string> ackedAll;
  std::unordered_map<std::string, int> stored;
  std::string cursor = "0";
  // broadcaster, bridge: a committed event of this object happened at or after this wall time
  // (a delivered message was sent then, an accepted client started connecting then).
  int64_t activityEvidenceMs = 0;
  // guide: acknowledged chat messages (the stored message's id -> its tag) and acknowledged
  // inserts into the shared text (their tags); what was already counted as stored twice.
  std::unordered_map<std::string, std::string> chatAcked;
  std::unordered_set<std::string> editsAcked;
  std::unordered_set<std::string> reportedTwice;
};

// A broadcaster message sent to one client by id.
struct Routed {
  size_t sender, target;
  uint64_t senderGen, targetGen;
  TimePoint sentAt;
};

// A bridge query from a runtime.
struct Query {
  size_t runtime;
  uint64_t runtimeGen;
  size_t group;
  int64_t sentWallMs;
  TimePoint sentAt;
  // What became of it, for the description of a loss: the agent it reached, when it answered.
  std::string trail;
};

// A hopeflow publish: the sockets subscribed when it was posted, who received it, the answer.
struct Publish {
  size_t group;
  int lifetime;
  std::vector<std::pair<size_t, uint64_t>> subscribed;
  std::set<std::pair<size_t, uint64_t>> received;
  std::set<std::pair<size_t, uint64_t>> inAnswer;
  bool answered = false;
  double answerSeconds = 0;
  TimePoint checkAt;
};

// --- hopeflow publishers ----------------------------------------------------------------------

// Threads that POST /publish on keep-alive connections, one request at a time each (a publish
// waits for its acks, which the main thread's sockets send).
class Publishers {
 public:
  struct Job {
    uint64_t seq;
    std::string request;
  };
  struct Result {
    uint64_t seq;
    int status;
    std::string body;
    double seconds;
  };

  Publishers(int port, size_t threads) {
    for (size_t i = 0; i < threads; ++i) {
      threads_.emplace_back([this, port] { work(port); });
    }
  }
  ~Publishers() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void post(Job job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(job));
      ++busy_;
    }
    cv_.notify_one();
  }
  std::vector<Result> take() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Result> out(std::make_move_iterator(done_.begin()), std::make_move_iterator(done_.end()));
    done_.clear();
    return out;
  }
  // Jobs posted and not yet taken back as results.
  size_t busy() {
    std::lock_guard<std::mutex> lock(mu_);
    return busy_;
  }

 private:
  void work(int port) {
    KeepAliveHttp http(port);
    while (true) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
        if (stop_) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      auto t0 = Clock::now();
      std::string body;
      int status = http.roundTrip(job.request, &body);
      double seconds = secondsBetween(t0, Clock::now());
      std::lock_guard<std::mutex> lock(mu_);
      done_.push_back({job.seq, status, std::move(body), seconds});
      --busy_;
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  std::vector<Result> done_;
  size_t busy_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// --- counts -------------------------------------------------------------------------------------

struct Counts {
  uint64_t sent = 0;   // writes that expect an acknowledgement: chat messages, publishes,
                       // routed messages, bridge queries
  uint64_t acked = 0;  // ... and were acknowledged: echo, 200, delivery, answer
  uint64_t lostChannel = 0, lostPublish = 0, lostActivity = 0, lostRouted = 0, lostBridge = 0;
  uint64_t lostGuideChat = 0, lostEdit = 0;
  // Writes of a client that stayed connected with no outcome at all (no echo, no delivery and
  // no error, no answer): dropped silently.
  uint64_t unanswered = 0;
  uint64_t duplicated = 0, outOfOrder = 0, unexpected = 0;
  uint64_t connects = 0, connectFailures = 0, leaves = 0, hostCloses = 0, syncs = 0;
  uint64_t metricUpdates = 0;  // guide: built-in metric values the analytics subscribers got
  uint64_t lost() const {
    return lostChannel + lostPublish + lostActivity + lostRouted + lostBridge + lostGuideChat + lostEdit;
  }
};

// --- the run ----------------------------------------------------------------------------------

class Soak {
 public:
  explicit Soak(const SoakOptions& o) : o_(o), rng_(o.seed) {}
  int run();

 private:
  // set-up
  void buildGroups();
  void addGroup(SoakApp app, size_t size, size_t k);
  void addMember(size_t gi);
  std::string tokenFor(const std::string& user, bool write);
  std::string guideToken(const std::string& user);
  // the loop
  void serveOnce();
  void tick();
  void updatePhases(TimePoint now);
  void driveMembers(TimePoint now);
  void connect(Member& m);
  void leave(Member& m);
  void act(Member& m, TimePoint now);
  void actChannels(Member& m);
  void actBroadcaster(Member& m);
  void actBridge(Member& m);
  void actHopeflow(Member& m);
  void actGuide(Member& m);
  void publishDue(TimePoint now);
  void collectPublishes(TimePoint now);
  void checkOutcomes(TimePoint now, bool final);
  // client events
  void onOpen(ClientConn& c);
  void onEnd(ClientConn& c);
  void onMessage(ClientConn& c, std::string_view text);
  void onChannels(Member& m, const Json& j);
  void onBroadcaster(Member& m, const Json& j);
  void onBridge(Member& m, const Json& j);
  void onHopeflow(Member& m, std::string_view text, const Json& j);
  void onGuide(Member& m, const Json& j);
  // restarts and checks
  void restartHost();
  void verifyChannelsHttp(Group& g);
  void verifyActivity(Group& g, int64_t lastActivity, const char* where);
  void verifyGuideOnline();
  void judgeGuideChat(Group& g, const std::unordered_map<std::string, int>& ids,
                      const std::unordered_map<std::string, int>& tags, const std::string& where);
  void judgeEdits(Group& g, const std::string& text, const std::string& where);
  void storedTwice(Group& g, const std::string& tag, const std::string& where);
  void verifyAllOnline();
  void finalOfflineChecks();
  bool runDoctl(const std::vector<std::string>& args, std::string* out);
  void lose(uint64_t& counter, const std::string& what);
  std::unordered_map<std::string, Routed>::iterator eraseRouted(std::unordered_map<std::string, Routed>::iterator it);
  std::unordered_map<std::string, Query>::iterator eraseQuery(std::unordered_map<std::string, Query>::iterator it);
  // figures
  void sampleAndReport(bool warm);
  void checkGrowth(const HostSample& s);
  Json sampleJson(const HostSample& s) const;
  void printSummary(bool ok, const std::vector<std::string>& failures);

  double rand01() { return std::uniform_real_distribution<double>(0, 1)(rng_); }
  double uniform(double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng_); }
  double expo(double mean) { return std::exponential_distribution<double>(1.0 / mean)(rng_); }
  size_t pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  Member& memberOf(ClientConn& c) { return members_[slotMember_[c.index]]; }

  const SoakOptions& o_;
  std::mt19937_64 rng_;
  std::string secret_;
  std::string dir_;
  std::unique_ptr<SoakHost> host_;
  std::unique_ptr<ClientFleet> fleet_;
  std::unique_ptr<Publishers> publishers_;
  std::vector<Group> groups_;
  std::vector<Member> members_;
  std::vector<size_t> slotMember_;
  size_t connecting_ = 0;
  bool restarting_ = false;
  bool draining_ = false;
  bool crashed_ = false;
  std::string crash_;
  uint64_t seq_ = 0;
  std::unordered_map<std::string, Routed> routed_;
  std::unordered_map<std::string, Query> queries_;
  std::unordered_map<uint64_t, Publish> publishes_;
  Counts n_;
  int lossesDescribed_ = 0;
  // time
  TimePoint t0_;
  TimePoint lastTick_;
  TimePoint lastDrive_;
  TimePoint nextKill_;
  TimePoint nextReport_;
  TimePoint lifetimeStart_;
  bool reconnected_ = false;
  TimePoint warmAt_;
  bool warmTaken_ = false;
  // figures
  std::vector<HostSample> samples_;
  std::map<int, HostSample> warm_;  // lifetime -> its warm-up sample
  std::vector<std::string> growth_;
  size_t incomparable_ = 0;  // samples not judged: too different a number of sockets
  std::vector<double> restartSeconds_;
};

std::string Soak::tokenFor(const std::string& user, bool write) {
  Json claims{{"userId", user}, {"username", user}};
  claims["permissions"] = write ? Json::array({"read", "write"}) : Json::array({"read"});
  return signJwtHs256(claims.dump(), secret_);
}

// guide: the user is `sub`, its display name `name` (docs/apps/guide.md, "Authentication").
std::string Soak::guideToken(const std::string& user) {
  return signJwtHs256(Json{{"sub", user}, {"name", user}}.dump(), secret_);
}

// Shares of the sockets and the size of each object's group of clients.
void Soak::buildGroups() {
  struct Share {
    SoakApp app;
    double share;
    size_t size;
  };
  const Share shares[] = {{SoakApp::kChannels, 0.34, 20},
                          {SoakApp::kBroadcaster, 0.21, 8},
                          {SoakApp::kBridge, 0.13, 5},
                          {SoakApp::kHopeflow, 0.17, 4},
                          {SoakApp::kGuide, 0.15, 7}};
  size_t used = 0;
  for (const Share& s : shares) {
    size_t count = std::max<size_t>(1, static_cast<size_t>(static_cast<double>(o_.sockets) * s.share) / s.size);
    for (size_t k = 0; k < count; ++k) addGroup(s.app, s.size, k);
    used += count * s.size;
  }
  // What the rounding left goes to the channels, one more member each in turn.
  std::vector<size_t> channels;
  for (size_t i = 0; i < groups_.size(); ++i) {
    if (groups_[i].app == SoakApp::kChannels) channels.push_back(i);
  }
  for (size_t k = 0; used < o_.sockets; ++k, ++used) addMember(channels[k % channels.size()]);
}

void Soak::addGroup(SoakApp app, size_t size, size_t k) {
  Group g;
  g.app = app;
  const char* prefix = app == SoakApp::kChannels ? "soak-c" : app == SoakApp::kBroadcaster ? "soak-b"
                       : app == SoakApp::kBridge ? "soak-g" : app == SoakApp::kHopeflow ? "soak-h" : "soak-ag";
  g.name = prefix + std::to_string(k);
  if (app == SoakApp::kHopeflow) g.publishRate = o_.rate * static_cast<double>(size) / 2;
  groups_.push_back(std::move(g));
  for (size_t j = 0; j < size; ++j) addMember(groups_.size() - 1);
}

// The next member of group `gi`. Channels: a user each. Broadcaster: an admin, then runtimes
// and data agents in turn. Bridge: an agent, an admin, then runtimes. Hopeflow: sockets of the
// group's one user. Guide (a context): four chat sockets of three users (the second one
// authenticates by first message, through the lobby; the third user has two sockets), an
// analytics subscriber of the built-in metrics, then editors of the shared text.
void Soak::addMember(size_t gi) {
  Group& g = groups_[gi];
  size_t j = g.members.size();
  Member m;
  m.index = members_.size();
  m.group = gi;
  switch (g.app) {
    case SoakApp::kChannels:
      m.user = g.name + "-u" + std::to_string(j);
      m.token = tokenFor(m.user, true);
      m.path = "/channel/" + g.name + "/websocket?token=" + m.token;
      break;
    case SoakApp::kBroadcaster:
      m.role = j == 0 ? Role::kAdmin : (j % 2 == 1 ? Role::kRuntime : Role::kDataAgent);
      m.path = std::string("/websocket?type=") + roleName(m.role) + "&projectId=" + g.name;
      break;
    case SoakApp::kBridge:
      m.role = j == 0 ? Role::kAgent : j == 1 ? Role::kAdmin : Role::kRuntime;
      m.path = std::string("/websocket?type=") + roleName(m.role) + "&projectId=" + g.name;
      break;
    case SoakApp::kHopeflow:
      m.user = g.name;
      m.token = j == 0 ? tokenFor(g.name, false) : members_[g.members[0]].token;
      m.path = "/?token=" + m.token;
      break;
    case SoakApp::kGuide:
      if (j < 4) {
        m.role = Role::kChat;
        m.user = g.name + "-u" + std::to_string(std::min<size_t>(j, 2));
        m.viaLobby = j == 1;
        m.token = guideToken(m.user);
        m.path = m.viaLobby ? "/api/chat/ws?contextId=" + g.name
                            : "/api/chat/ws?token=" + m.token + "&contextId=" + g.name;
      } else if (j == 4) {
        m.role = Role::kAnalytics;
        m.user = g.name + "-a";
        m.token = guideToken(m.user);
        m.path = "/api/analytics/ws?token=" + m.token + "&contextId=" + g.name;
      } else {
        m.role = Role::kEditor;
        m.user = g.name + "-e" + std::to_string(j - 5);
        m.token = guideToken(m.user);
        m.path = "/api/collaboration/ws?token=" + m.token + "&contextId=" + g.name;
      }
      break;
  }
  g.members.push_back(m.index);
  members_.push_back(std::move(m));
}

// --- the loop -----------------------------------------------------------------------------------

void Soak::serveOnce() {
  fleet_->serviceOnce();
  tick();
}

void Soak::tick() {
  TimePoint now = Clock::now();
  if (secondsBetween(lastDrive_, now) >= 0.02) {
    lastDrive_ = now;
    if (!restarting_) {
      updatePhases(now);
      driveMembers(now);
      publishDue(now);
    }
    collectPublishes(now);
  }
  if (secondsBetween(lastTick_, now) < 0.5) return;
  lastTick_ = now;
  if (!restarting_ && host_) {
    std::string how;
    if (!host_->alive(&how)) {
      crashed_ = true;
      crash_ = how;
      return;
    }
  }
  if (restarting_) return;
  checkOutcomes(now, false);
  // The restart's reconnects are done when (almost) every member is back; then the warm-up.
  if (!reconnected_) {
    size_t down = 0;
    for (const Member& m : members_) down += m.state != Member::State::kOpen;
    if (down <= members_.size() / 50 || secondsBetween(lifetimeStart_, now) > 180) {
      reconnected_ = true;
      warmAt_ = after(now, o_.warmup);
      std::printf("  lifetime %d: %zu of %zu sockets back %.1f s after the restart\n", host_->lifetime(),
                  members_.size() - down, members_.size(), secondsBetween(lifetimeStart_, now));
      std::fflush(stdout);
    }
  } else if (!warmTaken_ && now >= warmAt_) {
    warmTaken_ = true;
    sampleAndReport(true);
  }
  if (now >= nextReport_) {
    nextReport_ = after(nextReport_, o_.reportEvery);
    sampleAndReport(false);
  }
}

void Soak::updatePhases(TimePoint now) {
  for (Group& g : groups_) {
    if (now < g.phaseEnd) continue;
    g.quiet = !g.quiet && !draining_;
    // Quiet long enough for the idle eviction (which the host checks about once a second).
    g.phaseEnd = g.quiet ? after(now, o_.idleEvict * uniform(1.5, 3) + 1.2) : after(now, uniform(4, 20));
  }
}

void Soak::driveMembers(TimePoint now) {
  for (Member& m : members_) {
    const Group& g = groups_[m.group];
    if (m.state == Member::State::kDown) {
      // Back after leaving, or after the restart; a quiet object is not woken by a connect.
      if (draining_ || g.quiet || now < m.nextAt || connecting_ >= kMaxConnecting) continue;
      connect(m);
      continue;
    }
    if (m.state != Member::State::kOpen || !m.ready || m.leaving) continue;
    // Answers an agent owes go out when its project is active.
    while (!g.quiet && !m.owed.empty() && m.owed.front().due <= now) {
      OwedAnswer a = std::move(m.owed.front());
      m.owed.pop_front();
      if (auto q = queries_.find(a.requestId); q != queries_.end()) {
        q->second.trail += "; answered after " + std::to_string(secondsBetween(q->second.sentAt, now)).substr(0, 5) + " s";
      }
      Json answer{{"type", a.kind}, {"requestId", a.requestId}, {"timestamp", wallMs()}};
      answer["data"] = a.kind == "docs" ? Json{{"tables", Json::object()}} : Json{{"soak", true}};
      fleet_->send(m.slot, answer.dump());
    }
    if (g.quiet || draining_ || now < m.nextAt) continue;
    m.nextAt = after(now, expo(1.0 / o_.rate));
    if (m.outstanding + m.unechoed.size() >= kWindow) continue;  // the host is behind: wait
    if (rand01() < 0.02) {
      leave(m);
    } else {
      act(m, now);
    }
  }
}

void Soak::connect(Member& m) {
  int port = host_->port(groups_[m.group].app);
  if (m.hasSlot && !fleet_->conn(m.slot).done) return;  // the last connection is not gone yet
  // The member is connecting before the fleet is asked: a connection that fails on the spot
  // reports its end from inside start/restart.
  m.state = Member::State::kConnecting;
  m.connectWallMs = wallMs();
  ++connecting_;
  ++n_.connects;
  if (!m.hasSlot) {
    m.slot = fleet_->size();
    m.hasSlot = true;
    m.gen = 1;
    slotMember_.resize(m.slot + 1);
    slotMember_[m.slot] = m.index;
    fleet_->start(port, m.path);
  } else {
    m.gen = fleet_->conn(m.slot).generation + 1;
    fleet_->restart(m.slot, port, m.path);
  }
}

void Soak::leave(Member& m) {
  m.leaving = true;
  ++n_.leaves;
  double r = rand01();
  fleet_->closeConn(m.slot, r < 0.6 ? 1000 : r < 0.7 ? 1001 : 0);
}

void Soak::act(Member& m, TimePoint now) {
  switch (groups_[m.group].app) {
    case SoakApp::kChannels: return actChannels(m);
    case SoakApp::kBroadcaster: return actBroadcaster(m);
    case SoakApp::kBridge: return actBridge(m);
    case SoakApp::kHopeflow: return actHopeflow(m);
    case SoakApp::kGuide: return actGuide(m);
  }
}

void Soak::actChannels(Member& m) {
  double r = rand01();
  if (r < 0.05) {
    fleet_->send(m.slot, Json{{"type", "typing"}, {"isTyping", rand01() < 0.7}}.dump());
    return;
  }
  if (r < 0.08) {
    fleet_->send(m.slot, Json{{"type", "presence"}, {"status", rand01() < 0.5 ? "away" : "online"}}.dump());
    return;
  }
  if (r < 0.10) {
    fleet_->send(m.slot, R"({"type":"ping"})");
    return;
  }
  std::string tag = groups_[m.group].name + "/" + std::to_string(++seq_);
  std::string content = tag + " " + std::string(pick(120), 'x');
  m.unechoed.insert(tag);
  ++n_.sent;
  Json msg{{"type", "message"}, {"content", content}};
  if (rand01() < 0.2) msg["threadId"] = "t-" + std::to_string(pick(5));
  fleet_->send(m.slot, msg.dump());
}

void Soak::actBroadcaster(Member& m) {
  if (m.role == Role::kAdmin) return;  // admins watch
  Group& g = groups_[m.group];
  uint64_t n = ++seq_;
  Json msg{{"id", "b" + std::to_string(n)}, {"type", "soak"}, {"payload", {{"n", n}, {"t", wallMs()}}}};
  double r = rand01();
  if (r < 0.5) {
    // To one other client by id: a record that must end in a delivery or an error.
    std::vector<size_t> targets;
    for (size_t i : g.members) {
      const Member& t = members_[i];
      if (i != m.index && t.role != Role::kAdmin && t.stable(t.gen) && t.ready && !t.clientId.empty()) {
        targets.push_back(i);
      }
    }
    if (!targets.empty()) {
      const Member& t = members_[targets[pick(targets.size())]];
      msg["to"] = {{"id", t.clientId}};
      routed_[msg["id"].get<std::string>()] = {m.index, t.index, m.gen, t.gen, Clock::now()};
      ++m.outstanding;
      ++n_.sent;
    }
  } else if (r < 0.75) {
    msg["to"] = {{"type", rand01() < 0.5 ? "runtime" : "data-agent"}};
  }
  fleet_->send(m.slot, msg.dump());
}

void Soak::actBridge(Member& m) {
  if (m.role == Role::kAgent) return;  // agents answer
  if (m.role == Role::kAdmin) {
    fleet_->send(m.slot, R"({"type":"ping"})");
    return;
  }
  double r = rand01();
  if (r < 0.1) {
    fleet_->send(m.slot, Json{{"type", "ping"}, {"requestId", "p" + std::to_string(++seq_)}}.dump());
    return;
  }
  std::string id = "q" + std::to_string(++seq_);
  Json msg{{"requestId", id}, {"projectId", groups_[m.group].name}};
  if (r < 0.25) {
    msg["type"] = "get_docs";
  } else {
    msg["type"] = "graphql_query";
    msg["query"] = rand01() < 0.5 ? "query { posts { id title } }" : "query { users { id name } }";
    msg["variables"] = Json::object();
  }
  queries_[id] = {m.index, m.gen, m.group, wallMs(), Clock::now(), {}};
  ++m.outstanding;
  ++n_.sent;
  fleet_->send(m.slot, msg.dump());
}

void Soak::actHopeflow(Member& m) {
  double r = rand01();
  if (r < 0.5) {
    fleet_->send(m.slot, "ping");  // the host's auto-response: the object stays asleep
  } else if (r < 0.8) {
    fleet_->send(m.slot, R"({"type":"ping"})");
  } else {
    // Filters already there: the answer lists the same set again.
    fleet_->send(m.slot, R"({"type":"subscribe","filters":[{"type":"soak"}]})");
  }
}

// guide: chat members chat (each message's content starts with a tag of its own), type, read
// the history and ping; analytics subscribers ping and subscribe again; editors append a tag of
// their own to the shared text, at its end as they know it (the room transforms the insert
// over what others inserted since).
void Soak::actGuide(Member& m) {
  Group& g = groups_[m.group];
  double r = rand01();
  // The seed's heartbeat exactly is answered by the host without waking the room; any other
  // spelling reaches the room, which answers it too.
  const char* ping = rand01() < 0.5 ? R"({"type":"ping"})" : R"({"type": "ping"})";
  if (m.role == Role::kAnalytics) {
    if (r < 0.8) {
      fleet_->send(m.slot, ping);
    } else {
      fleet_->send(m.slot, R"({"type":"subscribe","data":{"metrics":["activity","engagement"]}})");
    }
    return;
  }
  if (m.role == Role::kEditor) {
    if (r < 0.1 || m.text.size() > kMaxEditText) {
      fleet_->send(m.slot, ping);
      return;
    }
    std::string tag = "[" + g.name + "/" + std::to_string(++seq_) + "]";
    m.unechoed.insert(tag);
    ++n_.sent;
    fleet_->send(m.slot, Json{{"type", "edit"},
                              {"data", {{"operation", "insert"},
                                        {"position", m.text.size()},
                                        {"content", tag},
                                        {"version", m.version}}}}
                             .dump());
    return;
  }
  if (r < 0.05) {
    fleet_->send(m.slot, Json{{"type", "typing"}, {"data", {{"isTyping", rand01() < 0.7}}}}.dump());
    return;
  }
  if (r < 0.08) {
    fleet_->send(m.slot, Json{{"type", "history"}, {"data", {{"limit", 20}}}}.dump());
    return;
  }
  if (r < 0.11) {
    fleet_->send(m.slot, ping);
    return;
  }
  std::string tag = g.name + "/" + std::to_string(++seq_);
  std::string content = tag + " " + std::string(pick(120), 'x');
  m.unechoed.insert(tag);
  ++n_.sent;
  fleet_->send(m.slot, Json{{"type", "message"}, {"data", {{"content", content}, {"messageType", "text"}}}}.dump());
}

void Soak::publishDue(TimePoint now) {
  if (draining_) return;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    Group& g = groups_[gi];
    if (g.app != SoakApp::kHopeflow || g.quiet || now < g.nextPublish) continue;
    g.nextPublish = after(now, expo(1.0 / g.publishRate));
    if (publishers_->busy() >= 4 * o_.publishers) continue;  // the publishers are behind
    Publish p;
    p.group = gi;
    p.lifetime = host_->lifetime();
    for (size_t i : g.members) {
      const Member& m = members_[i];
      if (m.stable(m.gen) && m.ready) p.subscribed.emplace_back(i, m.gen);
    }
    uint64_t n = ++seq_;
    std::string body = Json{{"userId", g.name}, {"type", "soak"}, {"payload", {{"n", n}, {"lane", "a"}}}}.dump();
    std::string request = "POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
                          members_[g.members[0]].token +
                          "\r\nContent-Type: application/json\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body;
    publishes_[n] = std::move(p);
    ++n_.sent;
    publishers_->post({n, std::move(request)});
  }
}

void Soak::collectPublishes(TimePoint now) {
  for (Publishers::Result& r : publishers_->take()) {
    auto it = publishes_.find(r.seq);
    if (it == publishes_.end()) continue;
    Publish& p = it->second;
    if (r.status != 200) {
      // A publish cut by a SIGKILL is not acknowledged; anything else is a surprise.
      if (p.lifetime == host_->lifetime() && !restarting_) {
        ++n_.unexpected;
        std::fprintf(stderr, "  unexpected: POST /publish answered %d: %s\n", r.status, r.body.substr(0, 200).c_str());
      }
      publishes_.erase(it);
      continue;
    }
    ++n_.acked;
    Json a = Json::parse(r.body, nullptr, false);
    if (a.is_object() && a.contains("results") && a["results"].is_array()) {
      for (const Json& res : a["results"]) {
        if (res.is_object() && res.contains("m") && res["m"].is_number_unsigned() && res.contains("g") &&
            res["g"].is_number_unsigned()) {
          p.inAnswer.emplace(res["m"].get<size_t>(), res["g"].get<uint64_t>());
        }
      }
    }
    p.answered = true;
    p.answerSeconds = r.seconds;
    // Frames to other sockets may still be on their way: look a little later.
    p.checkAt = after(now, 3);
  }
}

// Outcomes that are due: a publish's deliveries, routed messages and queries without an
// outcome, echoes that never came. With `final`, everything still open is judged now.
void Soak::checkOutcomes(TimePoint now, bool final) {
  for (auto it = publishes_.begin(); it != publishes_.end();) {
    Publish& p = it->second;
    if (!p.answered || (!final && now < p.checkAt)) {
      ++it;
      continue;
    }
    for (const auto& [mi, g] : p.subscribed) {
      if (!members_[mi].stable(g)) continue;
      if (!p.received.count({mi, g})) {
        lose(n_.lostPublish, "publish " + std::to_string(it->first) + " to " + groups_[p.group].name +
                                 " answered 200 but never reached socket " + std::to_string(mi) +
                                 ", subscribed and connected throughout");
      } else if (p.answerSeconds < kAckTimeoutMs / 1000.0 - 1 && !p.inAnswer.count({mi, g})) {
        lose(n_.lostPublish, "publish " + std::to_string(it->first) + " to " + groups_[p.group].name +
                                 " answered before the ack timeout without the ack of socket " +
                                 std::to_string(mi));
      }
    }
    it = publishes_.erase(it);
  }
  for (auto it = routed_.begin(); it != routed_.end();) {
    const Routed& r = it->second;
    bool due = final || secondsBetween(r.sentAt, now) > kOutcomeTimeoutSeconds;
    if (!due) {
      ++it;
      continue;
    }
    if (members_[r.sender].stable(r.senderGen) && members_[r.target].stable(r.targetGen)) {
      lose(n_.unanswered, "broadcaster message " + it->first + " to client " +
                              members_[r.target].clientId + " in " + groups_[members_[r.target].group].name +
                              ": neither delivered nor refused, both connected");
    }
    it = eraseRouted(it);
  }
  double queryTimeout = kOutcomeTimeoutSeconds + 3 * o_.idleEvict + 2;
  for (auto it = queries_.begin(); it != queries_.end();) {
    const Query& q = it->second;
    if (!final && secondsBetween(q.sentAt, now) <= queryTimeout) {
      ++it;
      continue;
    }
    if (members_[q.runtime].stable(q.runtimeGen)) {
      const Member& agent = members_[groups_[q.group].members[0]];
      lose(n_.unanswered, "bridge query " + it->first + " in " + groups_[q.group].name + " from runtime " +
                              std::to_string(q.runtime) + "/" + std::to_string(q.runtimeGen) +
                              ": no answer and no error, the runtime connected throughout" +
                              (q.trail.empty() ? "; it reached no agent" : q.trail) + "; the agent is " +
                              std::to_string(agent.index) + "/" + std::to_string(agent.gen) +
                              (agent.state == Member::State::kOpen ? (agent.ready ? " open" : " open, not greeted")
                               : agent.state == Member::State::kConnecting ? " connecting" : " down"));
    }
    it = eraseQuery(it);
  }
  if (final) {
    for (Member& m : members_) {
      if (m.stable(m.gen) && !m.unechoed.empty()) {
        lose(n_.unanswered, std::to_string(m.unechoed.size()) +
                                (m.role == Role::kEditor ? " edit(s) of " : " chat message(s) of ") + m.user +
                                " never echoed, connected throughout (first: " + *m.unechoed.begin() + ")");
      }
    }
  }
}

// A record has its outcome: its sender's window opens again (if it is still that connection).
std::unordered_map<std::string, Routed>::iterator Soak::eraseRouted(std::unordered_map<std::string, Routed>::iterator it) {
  Member& m = members_[it->second.sender];
  if (m.gen == it->second.senderGen && m.outstanding > 0) --m.outstanding;
  return routed_.erase(it);
}

std::unordered_map<std::string, Query>::iterator Soak::eraseQuery(std::unordered_map<std::string, Query>::iterator it) {
  Member& m = members_[it->second.runtime];
  if (m.gen == it->second.runtimeGen && m.outstanding > 0) --m.outstanding;
  return queries_.erase(it);
}

void Soak::lose(uint64_t& counter, const std::string& what) {
  ++counter;
  if (lossesDescribed_++ < kLossesDescribed) {
    std::fprintf(stderr, "  %s at %.0f s: %s\n", &counter == &n_.unanswered ? "UNANSWERED" : "LOST", secondsBetween(t0_, Clock::now()), what.c_str());
  }
}

// --- client events --------------------------------------------------------------------------------

void Soak::onOpen(ClientConn& c) {
  Member& m = memberOf(c);
  if (c.generation != m.gen) return;
  if (m.state == Member::State::kConnecting) --connecting_;
  m.state = Member::State::kOpen;
  m.ready = false;
  m.leaving = false;
  m.clientId.clear();
  m.unechoed.clear();
  m.owed.clear();
  m.outstanding = 0;
  m.lastSeq = -1;
  m.lastStamp.clear();
  m.text.clear();
  m.version = -1;
  const Group& g = groups_[m.group];
  if (g.app == SoakApp::kHopeflow) {
    fleet_->send(m.slot, R"({"type":"subscribe","filters":[{"type":"soak"},{"type":"soak","lane":"a"}]})");
  } else if (g.app == SoakApp::kGuide) {
    // A chat socket with a token in the query hears nothing on connect: it is in the room.
    if (m.role == Role::kChat && !m.viaLobby) m.ready = true;
    if (m.role == Role::kChat && m.viaLobby) {
      fleet_->send(m.slot, Json{{"type", "auth"}, {"token", m.token}, {"contextId", g.name}}.dump());
    } else if (m.role == Role::kAnalytics) {
      fleet_->send(m.slot, R"({"type":"subscribe","data":{"metrics":["activity","engagement"]}})");
    } else if (m.role == Role::kEditor) {
      fleet_->send(m.slot, Json{{"type", "join_session"}, {"data", {{"sessionId", kGuideSession}, {"role", "editor"}}}}.dump());
    }
  }
}

void Soak::onEnd(ClientConn& c) {
  Member& m = memberOf(c);
  if (c.generation != m.gen) return;
  if (m.state == Member::State::kConnecting) {
    --connecting_;
    if (!restarting_) {
      ++n_.connectFailures;
      std::fprintf(stderr, "  connect failed: %s %s: %s\n", appName(groups_[m.group].app),
                   m.path.substr(0, 80).c_str(), c.error.c_str());
    }
  } else if (m.state == Member::State::kOpen && !m.leaving && !restarting_ && !draining_) {
    ++n_.hostCloses;  // closed by the host, not asked for
  }
  m.state = Member::State::kDown;
  m.ready = false;
  m.leaving = false;
  m.nextAt = after(Clock::now(), uniform(0.3, 3));
}

void Soak::onMessage(ClientConn& c, std::string_view text) {
  Member& m = memberOf(c);
  if (c.generation != m.gen) return;
  Group& g = groups_[m.group];
  if (g.app == SoakApp::kHopeflow && (text == "pong")) return;
  Json j = Json::parse(text, nullptr, false);
  if (!j.is_object()) {
    ++n_.unexpected;
    std::fprintf(stderr, "  unexpected frame on %s: %s\n", appName(g.app), std::string(text.substr(0, 200)).c_str());
    return;
  }
  switch (g.app) {
    case SoakApp::kChannels: return onChannels(m, j);
    case SoakApp::kBroadcaster: return onBroadcaster(m, j);
    case SoakApp::kBridge: return onBridge(m, j);
    case SoakApp::kHopeflow: return onHopeflow(m, text, j);
    case SoakApp::kGuide: return onGuide(m, j);
  }
}

// A message's place in the channel's order: `seq` when the message has one, else an integer id.
int64_t orderOf(const Json& msg) {
  if (auto s = msg.find("seq"); s != msg.end() && s->is_number_integer()) return s->get<int64_t>();
  if (auto s = msg.find("id"); s != msg.end() && s->is_number_integer()) return s->get<int64_t>();
  return -1;
}

void Soak::onChannels(Member& m, const Json& j) {
  Group& g = groups_[m.group];
  std::string type = j.value("type", "");
  if (type == "initial_state") {
    m.ready = true;
    if (j.contains("messages") && j["messages"].is_array()) {
      for (const Json& msg : j["messages"]) m.lastSeq = std::max(m.lastSeq, orderOf(msg));
    }
    // Back after a drop: ask for what was missed since the newest message this member saw.
    if (!m.lastSeenId.is_null()) {
      fleet_->send(m.slot, Json{{"type", "sync"}, {"afterMessageId", m.lastSeenId}}.dump());
    }
    return;
  }
  if (type == "message" && j.contains("message") && j["message"].is_object()) {
    const Json& msg = j["message"];
    int64_t order = orderOf(msg);
    if (order >= 0) {
      if (order <= m.lastSeq) {
        ++n_.outOfOrder;
        std::fprintf(stderr, "  out of order in %s: %lld after %lld\n", g.name.c_str(),
                     static_cast<long long>(order), static_cast<long long>(m.lastSeq));
      }
      m.lastSeq = order;
    }
    if (msg.contains("id")) m.lastSeenId = msg["id"];
    std::string content = msg.value("content", "");
    std::string tag = content.substr(0, content.find(' '));
    if (m.unechoed.erase(tag) > 0) {
      // The sender saw its message come back: it is in the history from now on.
      ++n_.acked;
      g.unverified.insert(tag);
      g.ackedAll.insert(tag);
    }
    return;
  }
  if (type == "sync") {
    if (j.value("done", false)) ++n_.syncs;
    return;
  }
  if (type == "error") {
    ++n_.unexpected;
    std::fprintf(stderr, "  unexpected error in %s: %s\n", g.name.c_str(), j.dump().substr(0, 200).c_str());
  }
  // typing, presence, user_connected, user_disconnected, pong: nothing to check.
}

void Soak::onBroadcaster(Member& m, const Json& j) {
  Group& g = groups_[m.group];
  std::string type = j.value("type", "");
  const Json empty = Json::object();
  const Json& payload = j.contains("payload") && j["payload"].is_object() ? j["payload"] : empty;
  if (type == "connected") {
    m.clientId = payload.value("clientId", "");
    m.ready = true;
    g.activityEvidenceMs = std::max(g.activityEvidenceMs, m.connectWallMs);
    return;
  }
  if (type == "soak") {
    g.activityEvidenceMs = std::max(g.activityEvidenceMs, payload.value("t", int64_t{0}));
    std::string id = j.value("id", "");
    auto it = routed_.find(id);
    if (it != routed_.end() && it->second.target == m.index && it->second.targetGen == m.gen) {
      ++n_.acked;
      eraseRouted(it);
    }
    return;
  }
  if (type == "error") {
    std::string code = payload.value("code", "");
    std::string id = payload.contains("messageId") ? plain(payload["messageId"]) : "";
    auto it = routed_.find(id);
    if (code == "unknown_target") {
      // Expected when the target left meanwhile; a loss when it is still connected.
      if (it != routed_.end()) {
        const Routed& r = it->second;
        if (members_[r.target].stable(r.targetGen) && r.sender == m.index) {
          lose(n_.lostRouted, "broadcaster refused " + id + " to " + members_[r.target].clientId +
                                  ", which is connected: " + payload.value("message", ""));
        }
        eraseRouted(it);
      }
      return;
    }
    ++n_.unexpected;
    std::fprintf(stderr, "  unexpected error in %s: %s\n", g.name.c_str(), j.dump().substr(0, 200).c_str());
  }
  // client_left and the admins' copies: nothing to check.
}

void Soak::onBridge(Member& m, const Json& j) {
  Group& g = groups_[m.group];
  std::string type = j.value("type", "");
  if (type == "connected") {
    m.clientId = j.value("clientId", "");
    m.ready = true;
    g.activityEvidenceMs = std::max(g.activityEvidenceMs, m.connectWallMs);
    return;
  }
  std::string id = j.contains("requestId") ? plain(j["requestId"]) : "";
  auto it = queries_.find(id);
  if ((type == "graphql_query" || type == "get_docs") && m.role == Role::kAgent) {
    // Forwarded: the pending request is stored. The answer waits a little, sometimes across
    // the project's quiet time, so that the object answers it after an eviction.
    if (it != queries_.end()) {
      g.activityEvidenceMs = std::max(g.activityEvidenceMs, it->second.sentWallMs);
      it->second.trail += "; reached agent " + std::to_string(m.index) + "/" + std::to_string(m.gen) + " after " +
                          std::to_string(secondsBetween(it->second.sentAt, Clock::now())).substr(0, 5) + " s";
    }
    double delay = rand01() < 0.2 ? uniform(0.5, 3) : uniform(0, 0.3);
    m.owed.push_back({id, type == "get_docs" ? "docs" : "query_response", after(Clock::now(), delay)});
    return;
  }
  if ((type == "query_response" || type == "docs") && m.role == Role::kRuntime) {
    if (it == queries_.end()) return;  // asked by a connection before a restart
    const Query& q = it->second;
    if (q.runtime == m.index && q.runtimeGen == m.gen) {
      ++n_.acked;
      g.activityEvidenceMs = std::max(g.activityEvidenceMs, q.sentWallMs);
      eraseQuery(it);
    } else if (members_[q.runtime].stable(q.runtimeGen)) {
      // The asker is connected, so its pending request should have routed the answer to it.
      lose(n_.lostBridge, "bridge answer to " + id + " reached another runtime of " + g.name +
                              " while the asker is connected (the pending request was lost)");
    }
    return;
  }
  if (type == "error") {
    std::string code = j.value("code", "");
    if (code == "agent_gone" && it != queries_.end() && it->second.runtime == m.index) {
      eraseQuery(it);  // its agent left before answering: an outcome
      return;
    }
    if (code == "requester_gone" || code == "no_runtime" || code == "agent_gone") return;
    ++n_.unexpected;
    std::fprintf(stderr, "  unexpected error in %s: %s\n", g.name.c_str(), j.dump().substr(0, 200).c_str());
  }
  // pong, and the admins' copies: nothing to check.
}

void Soak::onHopeflow(Member& m, std::string_view text, const Json& j) {
  if (j.contains("envelopeId")) {
    std::string envelope = j.value("envelopeId", "");
    uint64_t n = 0;
    if (j.contains("payload") && j["payload"].is_object()) n = j["payload"].value("n", uint64_t{0});
    if (auto it = publishes_.find(n); it != publishes_.end()) it->second.received.emplace(m.index, m.gen);
    fleet_->send(m.slot, Json{{"type", "ack"}, {"envelopeId", envelope}, {"result", {{"m", m.index}, {"g", m.gen}}}}.dump());
    return;
  }
  std::string type = j.value("type", "");
  if (type == "subscribed") {
    m.ready = true;
    return;
  }
  if (type == "error") {
    ++n_.unexpected;
    std::fprintf(stderr, "  unexpected error in hopeflow: %s\n", std::string(text.substr(0, 200)).c_str());
  }
}

void Soak::onGuide(Member& m, const Json& j) {
  Group& g = groups_[m.group];
  std::string type = j.value("type", "");
  const Json empty = Json::object();
  const Json& data = j.contains("data") && j["data"].is_object() ? j["data"] : empty;
  if (type == "error") {
    ++n_.unexpected;
    std::fprintf(stderr, "  unexpected error in guide %s (%s): %s\n", g.name.c_str(), roleName(m.role),
                 j.dump().substr(0, 200).c_str());
    return;
  }
  if (m.role == Role::kChat) {
    if (type == "auth_success") {
      m.ready = true;
      return;
    }
    if (type != "message") return;  // history, typing, user_joined, user_left, pong
    // Timestamps are unique in a room and strictly increase in the order of the broadcasts;
    // ISO 8601 in UTC with milliseconds sorts as text.
    std::string stamp = data.value("timestamp", "");
    if (!m.lastStamp.empty() && stamp <= m.lastStamp) {
      ++n_.outOfOrder;
      std::fprintf(stderr, "  out of order in guide %s: %s after %s\n", g.name.c_str(), stamp.c_str(),
                   m.lastStamp.c_str());
    }
    m.lastStamp = stamp;
    std::string content = data.value("content", "");
    std::string tag = content.substr(0, content.find(' '));
    std::string id = data.value("id", "");
    if (m.unechoed.erase(tag) > 0) {
      // Its sender saw the broadcast, which goes out after the commit: it is stored.
      ++n_.acked;
      if (id.empty() || j.value("id", "") != id) {
        ++n_.unexpected;
        std::fprintf(stderr, "  unexpected: guide message %s without its id: %s\n", tag.c_str(),
                     j.dump().substr(0, 200).c_str());
      }
      g.chatAcked[id] = tag;
    }
    return;
  }
  if (m.role == Role::kAnalytics) {
    if (type == "subscribed") {
      m.ready = true;
    } else if (type == "metric_update") {
      ++n_.metricUpdates;
      std::string metric = data.value("metric", "");
      bool builtIn = metric == "activity" || metric == "engagement";
      if (!builtIn || !data.contains("value") || !data["value"].is_number_integer() ||
          data["value"].get<int64_t>() < 0) {
        ++n_.unexpected;
        std::fprintf(stderr, "  unexpected metric_update in guide %s: %s\n", g.name.c_str(),
                     j.dump().substr(0, 200).c_str());
      }
    }
    return;  // pong
  }
  // An editor.
  if (type == "session_state") {
    m.text = data.value("text", "");
    m.version = data.value("version", int64_t{-1});
    m.ready = m.version >= 0;
    return;
  }
  if (type != "edit" || m.version < 0) return;  // participant_joined, participant_left, pong
  // Every edit of the session, in the room's order: applied here, the text stays the room's.
  std::string operation = data.value("operation", "");
  int64_t position = data.value("position", int64_t{-1});
  int64_t version = data.value("version", int64_t{-1});
  std::string content = data.value("content", "");
  bool fits = position >= 0 && static_cast<size_t>(position) <= m.text.size();
  if (operation != "insert" || !fits || version != m.version + 1) {
    ++n_.unexpected;
    std::fprintf(stderr, "  unexpected edit in guide %s at version %lld, text of %zu: %s\n", g.name.c_str(),
                 static_cast<long long>(m.version), m.text.size(), j.dump().substr(0, 200).c_str());
    fleet_->send(m.slot, Json{{"type", "join_session"}, {"data", {{"sessionId", kGuideSession}, {"role", "editor"}}}}.dump());
    m.version = -1;  // the session's state again
    m.ready = false;
    return;
  }
  m.text.insert(static_cast<size_t>(position), content);
  m.version = version;
  if (m.unechoed.erase(content) > 0) {
    ++n_.acked;
    g.editsAcked.insert(content);
  }
}

// --- restarts and checks ------------------------------------------------------------------------

void Soak::restartHost() {
  TimePoint k0 = Clock::now();
  std::printf("  SIGKILL at %.0f s (lifetime %d, up %.0f s)\n", secondsBetween(t0_, k0), host_->lifetime(),
              host_->upSeconds());
  std::fflush(stdout);
  restarting_ = true;
  host_->kill();
  // Every client sees its connection end.
  TimePoint end = after(Clock::now(), 20);
  auto open = [&] {
    size_t n = 0;
    for (const Member& m : members_) n += m.state != Member::State::kDown;
    return n;
  };
  while (open() > 0 && Clock::now() < end) serveOnce();
  // What the publishers had in flight fails now; nothing of it was acknowledged.
  while (publishers_->busy() > 0 && Clock::now() < end) {
    sleepMillis(10);
    collectPublishes(Clock::now());
  }
  collectPublishes(Clock::now());
  std::string error;
  if (!host_->start(&error)) {
    crashed_ = true;
    crash_ = "the host did not start again after a SIGKILL: " + error;
    return;
  }
  // Before any client is back: what was acknowledged before the kill must be there.
  verifyAllOnline();
  restartSeconds_.push_back(secondsBetween(k0, Clock::now()));
  restarting_ = false;
  TimePoint now = Clock::now();
  lifetimeStart_ = now;
  reconnected_ = false;
  warmTaken_ = false;
  for (Group& g : groups_) {
    g.quiet = false;
    g.phaseEnd = after(now, uniform(10, 25));
  }
  for (Member& m : members_) m.nextAt = after(now, uniform(0, 1));
  nextKill_ = after(now, o_.killEvery * uniform(0.5, 1.5));
}

void Soak::verifyAllOnline() {
  for (Group& g : groups_) {
    switch (g.app) {
      case SoakApp::kChannels:
        verifyChannelsHttp(g);
        break;
      case SoakApp::kBroadcaster:
      case SoakApp::kBridge: {
        if (g.activityEvidenceMs == 0) break;
        HttpResult r = httpRequest(host_->port(g.app), "GET", "/health?projectId=" + g.name, {}, 30000);
        Json h = r.status == 200 ? Json::parse(r.body, nullptr, false) : Json();
        if (!h.is_object()) {
          lose(n_.lostActivity, std::string(appName(g.app)) + " /health?projectId=" + g.name + " answered " +
                                    std::to_string(r.status));
          break;
        }
        verifyActivity(g, h.contains("lastActivity") && h["lastActivity"].is_number_integer()
                              ? h["lastActivity"].get<int64_t>() : -1,
                       "/health");
        break;
      }
      case SoakApp::kHopeflow:
        break;  // nothing stored: its checks are the deliveries of each publish
      case SoakApp::kGuide:
        break;  // all contexts at once, below
    }
  }
  verifyGuideOnline();
}

// guide: reads each context's chat history (paging back with `before`) and its shared text
// (`join_session`) over fresh sockets of a fleet of its own, all contexts at once, and finds
// every acknowledged chat message and insert in them exactly once.
void Soak::verifyGuideOnline() {
  struct Check {
    size_t group = 0;
    bool chat = true;  // else the shared text
    std::string path;
    bool done = false;
    bool closing = false;
    std::string failure;
    std::unordered_map<std::string, int> ids, tags;
    std::string text;
  };
  std::vector<Check> checks;
  const std::string token = guideToken("soak-checker");
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const Group& g = groups_[gi];
    if (g.app != SoakApp::kGuide) continue;
    std::string query = "?token=" + token + "&contextId=" + g.name;
    for (bool chat : {true, false}) {
      if (chat ? g.chatAcked.empty() : g.editsAcked.empty()) continue;
      Check k;
      k.group = gi;
      k.chat = chat;
      k.path = (chat ? "/api/chat/ws" : "/api/collaboration/ws") + query;
      checks.push_back(std::move(k));
    }
  }
  if (checks.empty()) return;
  ClientFleet fleet;
  std::string error;
  if (!fleet.open(&error)) {
    lose(n_.lostGuideChat, "guide: no client fleet for the checks: " + error);
    return;
  }
  auto page = [&](size_t i, const std::string& before) {
    Json data{{"limit", kGuideHistoryPage}};
    if (!before.empty()) data["before"] = before;
    fleet.send(i, Json{{"type", "history"}, {"data", data}}.dump());
  };
  fleet.onOpen = [&](ClientConn& c) {
    if (checks[c.index].chat) {
      page(c.index, "");
    } else {
      fleet.send(c.index, Json{{"type", "join_session"},
                               {"data", {{"sessionId", kGuideSession}, {"role", "checker"}}}}.dump());
    }
  };
  fleet.onEnd = [&](ClientConn& c) {
    Check& k = checks[c.index];
    if (!k.done) {
      k.done = true;
      k.failure = "the connection ended before the answer" + (c.error.empty() ? "" : ": " + c.error);
    }
  };
  fleet.onMessage = [&](ClientConn& c, std::string_view text, SteadyClock::time_point) {
    Check& k = checks[c.index];
    if (k.done) return;
    Json j = Json::parse(text, nullptr, false);
    std::string type = j.is_object() ? j.value("type", "") : "";
    const Json empty = Json::object();
    const Json& data = j.is_object() && j.contains("data") && j["data"].is_object() ? j["data"] : empty;
    if (type == "error" || !j.is_object()) {
      k.done = true;
      k.failure = "answered " + std::string(text.substr(0, 200));
    } else if (k.chat && type == "history") {
      const Json& messages = data.contains("messages") && data["messages"].is_array() ? data["messages"] : empty;
      std::string oldest;
      for (const Json& msg : messages) {
        if (!msg.is_object()) continue;
        std::string content = msg.value("content", "");
        ++k.ids[msg.value("id", "")];
        ++k.tags[content.substr(0, content.find(' '))];
        if (oldest.empty()) oldest = msg.value("timestamp", "");  // oldest first
      }
      if (data.value("hasMore", false) && !oldest.empty()) {
        page(c.index, oldest);
      } else {
        k.done = true;
      }
    } else if (!k.chat && type == "session_state") {
      k.text = data.value("text", "");
      k.done = true;
    }
    // user_joined, participant_joined (live clients at the end), pong: nothing to check.
  };
  // At most kMaxConnecting handshakes at once; each check's socket closes when it is done.
  size_t started = 0;
  double seconds = 60 + 0.1 * static_cast<double>(checks.size());
  auto finished = [&] {
    size_t running = 0;
    for (size_t i = 0; i < started; ++i) {
      if (checks[i].done) {
        if (!checks[i].closing) fleet.closeConn(i, 1000);
        checks[i].closing = true;
      } else {
        ++running;
      }
    }
    while (started < checks.size() && running < kMaxConnecting) {
      fleet.start(host_->port(SoakApp::kGuide), checks[started++].path);
      ++running;
    }
    return started == checks.size() && running == 0;
  };
  fleet.serveUntil(finished, seconds);
  fleet.onOpen = nullptr;
  fleet.onEnd = nullptr;
  fleet.onMessage = nullptr;
  fleet.close();
  for (size_t i = 0; i < checks.size(); ++i) {
    Check& k = checks[i];
    Group& g = groups_[k.group];
    std::string what = k.chat ? "the chat history of " + g.name : "the shared text of " + g.name;
    if (!k.done || !k.failure.empty()) {
      lose(k.chat ? n_.lostGuideChat : n_.lostEdit,
           "guide: " + what + " could not be read: " +
               (k.done ? k.failure : "no answer within " + std::to_string(static_cast<int>(seconds)) + " s"));
      continue;
    }
    if (k.chat) {
      judgeGuideChat(g, k.ids, k.tags, what);
    } else {
      judgeEdits(g, k.text, what);
    }
  }
}

// Every acknowledged chat message of `g` is in `ids` (how often each stored id came) exactly
// once, and no tag was stored twice.
void Soak::judgeGuideChat(Group& g, const std::unordered_map<std::string, int>& ids,
                          const std::unordered_map<std::string, int>& tags, const std::string& where) {
  for (auto it = g.chatAcked.begin(); it != g.chatAcked.end();) {
    auto found = ids.find(it->first);
    if (found == ids.end()) {
      lose(n_.lostGuideChat, "guide chat message " + it->second + " (" + it->first +
                                 ") was echoed to its sender but is not in " + where);
      it = g.chatAcked.erase(it);  // counted once
      continue;
    }
    if (found->second > 1) storedTwice(g, it->first, where);
    ++it;
  }
  for (const auto& [tag, count] : tags) {
    if (count > 1) storedTwice(g, tag, where);
  }
}

// Every acknowledged insert of `g` is in the shared text exactly once, and no tag twice. The
// inserts only ever land between two tags, so the text is a row of whole tags.
void Soak::judgeEdits(Group& g, const std::string& text, const std::string& where) {
  std::unordered_map<std::string, int> tags;
  for (size_t at = text.find('['); at != std::string::npos; at = text.find('[', at + 1)) {
    size_t end = text.find(']', at);
    if (end == std::string::npos) break;
    ++tags[text.substr(at, end - at + 1)];
  }
  for (auto it = g.editsAcked.begin(); it != g.editsAcked.end();) {
    auto found = tags.find(*it);
    if (found == tags.end()) {
      lose(n_.lostEdit, "guide insert " + *it + " was echoed to its editor but is not in " + where);
      it = g.editsAcked.erase(it);
      continue;
    }
    ++it;
  }
  for (const auto& [tag, count] : tags) {
    if (count > 1) storedTwice(g, tag, where);
  }
}

void Soak::storedTwice(Group& g, const std::string& tag, const std::string& where) {
  if (!g.reportedTwice.insert(tag).second) return;  // each restart reads it all again
  ++n_.duplicated;
  std::fprintf(stderr, "  DUPLICATE in %s: %s\n", where.c_str(), tag.c_str());
}

// Reads what the channel's history gained since the last read and finds every acknowledged
// message in it, each exactly once.
void Soak::verifyChannelsHttp(Group& g) {
  const std::string& token = members_[g.members[0]].token;
  while (true) {
    HttpResult r = httpRequest(host_->port(g.app), "GET",
                               "/channel/" + g.name + "/messages?after=" + g.cursor + "&limit=1000&token=" + token,
                               {}, 30000);
    Json page = r.status == 200 ? Json::parse(r.body, nullptr, false) : Json();
    if (!page.is_object() || !page.contains("messages")) {
      lose(n_.lostChannel, "GET /channel/" + g.name + "/messages answered " + std::to_string(r.status) + ": " +
                               r.body.substr(0, 200));
      return;
    }
    for (const Json& msg : page["messages"]) {
      std::string content = msg.value("content", "");
      std::string tag = content.substr(0, content.find(' '));
      if (++g.stored[tag] == 2) {
        ++n_.duplicated;
        std::fprintf(stderr, "  DUPLICATE in the history of %s: %s\n", g.name.c_str(), tag.c_str());
      }
    }
    if (page.contains("lastMessageId") && !page["lastMessageId"].is_null()) g.cursor = plain(page["lastMessageId"]);
    if (!page.value("hasMore", false)) break;
  }
  for (const std::string& tag : g.unverified) {
    if (!g.stored.count(tag)) {
      lose(n_.lostChannel, "chat message " + tag + " was echoed to its sender but is not in the history");
      g.ackedAll.erase(tag);  // counted once
    }
  }
  g.unverified.clear();
}

void Soak::verifyActivity(Group& g, int64_t lastActivity, const char* where) {
  // Written at most once a second while clients talk (docs/apps/broadcaster.md), in the same
  // commit as the event whose output the clients saw.
  if (lastActivity < g.activityEvidenceMs - 1001) {
    lose(n_.lostActivity, std::string(appName(g.app)) + " " + g.name + ": lastActivity " + where + " is " +
                              std::to_string(lastActivity) + ", an event committed at or after " +
                              std::to_string(g.activityEvidenceMs) + " ms");
  }
}

bool Soak::runDoctl(const std::vector<std::string>& args, std::string* out) {
  std::string cmd = "'" + o_.doctlPath + "' --data '" + host_->dataDir() + "'";
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return false;
  out->clear();
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out->append(buf, n);
  return pclose(p) == 0;
}

// After the host stopped: the data folder read offline with doctl, every channel's whole
// history, every project's stored activity, every guide context's chat messages and shared
// text.
void Soak::finalOfflineChecks() {
  if (o_.doctlPath.empty()) return;
  for (Group& g : groups_) {
    std::string out;
    if (g.app == SoakApp::kChannels) {
      if (g.ackedAll.empty()) continue;
      if (!runDoctl({"history", g.name, "--json"}, &out)) {
        lose(n_.lostChannel, "doctl history " + g.name + " failed: " + out.substr(0, 200));
        continue;
      }
      std::unordered_map<std::string, int> seen;
      size_t at = 0;
      while (at < out.size()) {
        size_t eol = out.find('\n', at);
        if (eol == std::string::npos) eol = out.size();
        Json msg = Json::parse(out.substr(at, eol - at), nullptr, false);
        at = eol + 1;
        if (!msg.is_object()) continue;
        std::string content = msg.value("content", "");
        std::string tag = content.substr(0, content.find(' '));
        if (++seen[tag] == 2) {
          ++n_.duplicated;
          std::fprintf(stderr, "  DUPLICATE in doctl history %s: %s\n", g.name.c_str(), tag.c_str());
        }
      }
      for (const std::string& tag : g.ackedAll) {
        if (!seen.count(tag)) lose(n_.lostChannel, "chat message " + tag + " acknowledged, not in doctl history");
      }
    } else if (g.app == SoakApp::kBroadcaster || g.app == SoakApp::kBridge) {
      if (g.activityEvidenceMs == 0) continue;
      const char* cls = g.app == SoakApp::kBroadcaster ? "Broadcaster" : "WebSocketBridge";
      if (!runDoctl({"kv", cls, g.name, "--json"}, &out)) {
        lose(n_.lostActivity, std::string("doctl kv ") + cls + " " + g.name + " failed: " + out.substr(0, 200));
        continue;
      }
      // [{"key": "lastActivity", "value": "1763771234570"}, ...]
      Json kv = Json::parse(out, nullptr, false);
      int64_t stored = -1;
      if (kv.is_array()) {
        for (const Json& e : kv) {
          if (!e.is_object() || e.value("key", "") != "lastActivity" || !e.contains("value")) continue;
          try {
            stored = std::stoll(plain(e["value"]));
          } catch (const std::exception&) {
          }
        }
      }
      verifyActivity(g, stored, "in doctl kv");
    } else if (g.app == SoakApp::kGuide) {
      // {"columns": [...], "rows": [[...], ...]}
      auto query = [&](const std::string& cls, const std::string& sql, uint64_t& counter, Json* rows) {
        Json result;
        if (runDoctl({"sql", cls, g.name, sql, "--json"}, &out)) result = Json::parse(out, nullptr, false);
        if (!result.is_object() || !result.contains("rows") || !result["rows"].is_array()) {
          lose(counter, "doctl sql " + cls + " " + g.name + " failed: " + out.substr(0, 200));
          return false;
        }
        *rows = std::move(result["rows"]);
        return true;
      };
      Json rows;
      if (!g.chatAcked.empty() &&
          query("ChatRoom", "SELECT id, content FROM chat_messages", n_.lostGuideChat, &rows)) {
        std::unordered_map<std::string, int> ids, tags;
        for (const Json& row : rows) {
          if (!row.is_array() || row.size() != 2 || !row[0].is_string() || !row[1].is_string()) continue;
          std::string content = row[1].get<std::string>();
          ++ids[row[0].get<std::string>()];
          ++tags[content.substr(0, content.find(' '))];
        }
        judgeGuideChat(g, ids, tags, "doctl sql ChatRoom " + g.name);
      }
      if (!g.editsAcked.empty() &&
          query("CollaborationRoom", "SELECT session_id, text FROM collab_sessions", n_.lostEdit, &rows)) {
        std::string text;
        for (const Json& row : rows) {
          if (row.is_array() && row.size() == 2 && row[0].is_string() &&
              row[0].get<std::string>() == kGuideSession && row[1].is_string()) {
            text = row[1].get<std::string>();
          }
        }
        judgeEdits(g, text, "doctl sql CollaborationRoom " + g.name);
      }
    }
  }
}

// --- figures ----------------------------------------------------------------------------------------

Json Soak::sampleJson(const HostSample& s) const {
  return Json{{"at", s.at},          {"lifetime", s.lifetime},   {"up", s.up},
              {"rssKib", s.rssKib},  {"fds", s.fds},             {"socketFds", s.socketFds},
              {"dbFds", s.dbFds},    {"dbFiles", s.dbFiles},     {"otherFds", s.otherFds},
              {"websocketsOpen", s.websocketsOpen},              {"objectsLive", s.objectsLive},
              {"evictions", s.evictions}, {"rehydrations", s.rehydrations}, {"commits", s.commits}};
}

void Soak::sampleAndReport(bool warm) {
  HostSample s = host_->sample(secondsBetween(t0_, Clock::now()));
  size_t open = 0;
  for (const Member& m : members_) open += m.state == Member::State::kOpen;
  std::printf("[%6.0f s]%s rss %s  fds %d (sockets %d, databases %d in %d files, other %d)  "
              "clients open %zu/%zu (connecting %zu)  sent %llu  acked %llu  lost %llu  restarts %d  live objects %.0f  "
              "evictions %.0f  wake-ups %.0f  (lifetime %d, up %.0f s)\n",
              s.at, warm ? " warm" : "", mib(s.rssKib).c_str(), s.fds, s.socketFds, s.dbFds, s.dbFiles,
              s.otherFds, open, members_.size(), connecting_, static_cast<unsigned long long>(n_.sent),
              static_cast<unsigned long long>(n_.acked), static_cast<unsigned long long>(n_.lost()),
              s.lifetime - 1, s.objectsLive, s.evictions, s.rehydrations, s.lifetime, s.up);
  std::fflush(stdout);
  if (warm) warm_[s.lifetime] = s;
  samples_.push_back(s);
  checkGrowth(s);
}

// Growth is judged at comparable points: against the warm-up sample of the same lifetime (a
// leak within one process), and warm-up samples against the first one (growth that survives
// restarts: files, the data folder's effect on memory). Open files are judged without the
// sockets and databases the host is expected to hold (those move with the clients and the
// objects that are live or parked).
void Soak::checkGrowth(const HostSample& s) {
  size_t before = growth_.size();
  auto judge = [&](const HostSample& base, const char* what) {
    // Comparable only with about as many sockets open (a restart's reconnects may still be
    // under way on a starved machine, or clients be away).
    if (s.websocketsOpen < 0 || base.websocketsOpen < 0 ||
        std::abs(s.websocketsOpen - base.websocketsOpen) > 20 + 0.05 * base.websocketsOpen) {
      ++incomparable_;
      return;
    }
    int64_t rssAllowed = std::max<int64_t>(static_cast<int64_t>(o_.rssSlackMib * 1024),
                                           static_cast<int64_t>(o_.rssTolerance * static_cast<double>(base.rssKib)));
    if (s.rssKib - base.rssKib > rssAllowed) {
      growth_.push_back("RSS " + mib(s.rssKib) + " at " + std::to_string(static_cast<int>(s.at)) + " s, " +
                        mib(base.rssKib) + " at the " + what + " (allowed growth " + mib(rssAllowed) + ")");
    }
    if (s.websocketsOpen >= 0 && base.websocketsOpen >= 0 && s.residualFds() - base.residualFds() > o_.fdTolerance) {
      growth_.push_back("open files beyond sockets and databases: " + std::to_string(s.residualFds()) + " at " +
                        std::to_string(static_cast<int>(s.at)) + " s, " + std::to_string(base.residualFds()) +
                        " at the " + what + " (allowed growth " + std::to_string(o_.fdTolerance) + ")");
    }
  };
  // A database holds at most three files (the database, -wal, -shm); more is a leaked handle.
  if (s.dbFds > 3 * s.dbFiles) {
    growth_.push_back(std::to_string(s.dbFds) + " open database files for " + std::to_string(s.dbFiles) +
                      " databases at " + std::to_string(static_cast<int>(s.at)) + " s");
  }
  auto own = warm_.find(s.lifetime);
  if (own != warm_.end() && own->second.at < s.at) judge(own->second, "warm-up of the same lifetime");
  if (!warm_.empty() && warm_.begin()->first != s.lifetime && own != warm_.end() && own->second.at == s.at) {
    judge(warm_.begin()->second, "first warm-up");
  }
  for (size_t i = before; i < growth_.size(); ++i) {
    std::fprintf(stderr, "  GROWTH: %s\n", growth_[i].c_str());
  }
}

void Soak::printSummary(bool ok, const std::vector<std::string>& failures) {
  std::printf("\nsoak %s: %.0f s, %zu sockets, %d restarts by SIGKILL\n", ok ? "passed" : "FAILED",
              secondsBetween(t0_, Clock::now()), members_.size(), host_ ? host_->lifetime() - 1 : 0);
  std::printf("  writes sent %llu, acknowledged %llu, acknowledged and lost %llu (chat %llu, publish %llu, "
              "activity %llu, routed %llu, bridge %llu, guide chat %llu, guide edits %llu), without any outcome %llu, "
              "duplicated %llu, out of order %llu\n",
              static_cast<unsigned long long>(n_.sent), static_cast<unsigned long long>(n_.acked),
              static_cast<unsigned long long>(n_.lost()), static_cast<unsigned long long>(n_.lostChannel),
              static_cast<unsigned long long>(n_.lostPublish), static_cast<unsigned long long>(n_.lostActivity),
              static_cast<unsigned long long>(n_.lostRouted), static_cast<unsigned long long>(n_.lostBridge),
              static_cast<unsigned long long>(n_.lostGuideChat), static_cast<unsigned long long>(n_.lostEdit),
              static_cast<unsigned long long>(n_.unanswered), static_cast<unsigned long long>(n_.duplicated), static_cast<unsigned long long>(n_.outOfOrder));
  std::printf("  connects %llu (failed %llu), leaves %llu, closed by the host %llu, syncs %llu, unexpected frames %llu\n",
              static_cast<unsigned long long>(n_.connects), static_cast<unsigned long long>(n_.connectFailures),
              static_cast<unsigned long long>(n_.leaves), static_cast<unsigned long long>(n_.hostCloses),
              static_cast<unsigned long long>(n_.syncs), static_cast<unsigned long long>(n_.unexpected));
  size_t contexts = 0, chats = 0, inserts = 0;
  for (const Group& g : groups_) {
    if (g.app != SoakApp::kGuide) continue;
    ++contexts;
    chats += g.chatAcked.size();
    inserts += g.editsAcked.size();
  }
  if (contexts > 0) {
    std::printf("  guide: %zu chat messages and %zu inserts into the shared texts acknowledged and kept in %zu "
                "contexts (the lost not counted), %llu built-in metric updates\n",
                chats, inserts, contexts, static_cast<unsigned long long>(n_.metricUpdates));
  }
  if (!warm_.empty()) {
    std::printf("  warm-up samples (lifetime: RSS, fds, beyond sockets and databases):");
    for (const auto& [k, s] : warm_) std::printf(" %d: %s, %d, %d;", k, mib(s.rssKib).c_str(), s.fds, s.residualFds());
    std::printf("\n");
  }
  if (incomparable_ > 0) {
    std::printf("  %zu comparisons skipped: sockets open differed by more than 5%% from the warm-up sample\n",
                incomparable_);
  }
  if (!restartSeconds_.empty()) {
    double worst = *std::max_element(restartSeconds_.begin(), restartSeconds_.end());
    std::printf("  restart (kill, start, checks before the clients return): at most %.1f s\n", worst);
  }
  for (const std::string& f : failures) std::printf("  FAILED: %s\n", f.c_str());
  if (!o_.jsonOut.empty()) {
    Json samples = Json::array();
    for (const HostSample& s : samples_) samples.push_back(sampleJson(s));
    Json out{{"ok", ok},
             {"seconds", o_.seconds},
             {"sockets", members_.size()},
             {"killEvery", o_.killEvery},
             {"seed", o_.seed},
             {"restarts", host_ ? host_->lifetime() - 1 : 0},
             {"sent", n_.sent},
             {"acked", n_.acked},
             {"lost", n_.lost()},
             {"unanswered", n_.unanswered},
             {"duplicated", n_.duplicated},
             {"outOfOrder", n_.outOfOrder},
             {"unexpected", n_.unexpected},
             {"connects", n_.connects},
             {"connectFailures", n_.connectFailures},
             {"leaves", n_.leaves},
             {"samples", samples},
             {"failures", failures}};
    std::ofstream(o_.jsonOut) << out.dump(2) << "\n";
  }
  if (o_.summaryLine) {
    std::printf("[doctest] test cases: 1 | %d passed | %d failed | 0 skipped\n", ok ? 1 : 0, ok ? 0 : 1);
  }
  std::fflush(stdout);
}

int Soak::run() {
  if (o_.sockets < 20 || o_.sockets > 10000) {
    std::fprintf(stderr, "dohost-soak: --sockets must be from 20 to 10,000 (one process)\n");
    return 2;
  }
  raiseFileLimit();
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(rng_()));
  secret_ = std::string("soak-") + hex;
  std::string base = o_.tempParent.empty() ? std::filesystem::temp_directory_path().string() : o_.tempParent;
  std::string pattern = base + "/dohost-soak-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    std::fprintf(stderr, "dohost-soak: cannot create a folder under %s\n", base.c_str());
    return 2;
  }
  dir_ = pattern;
  buildGroups();
  size_t per[kSoakAppCount] = {};
  for (const Group& g : groups_) per[static_cast<size_t>(g.app)] += g.members.size();
  auto objects = [&](SoakApp app) {
    return static_cast<size_t>(std::count_if(groups_.begin(), groups_.end(), [&](const Group& g) { return g.app == app; }));
  };
  std::printf("dohost-soak: %zu sockets (channels %zu in %zu, broadcaster %zu, bridge %zu, hopeflow %zu, "
              "guide %zu in %zu contexts), %.0f s, SIGKILL every %.0f s on average, seed %llu, idle-evict %g s\n"
              "  host %s\n  data %s\n",
              members_.size(), per[0], objects(SoakApp::kChannels), per[1], per[2], per[3], per[4],
              objects(SoakApp::kGuide), o_.seconds, o_.killEvery, static_cast<unsigned long long>(o_.seed),
              o_.idleEvict, o_.dohostPath.c_str(), dir_.c_str());
  std::fflush(stdout);

  size_t biggest = 0;
  for (const Group& g : groups_) biggest = std::max(biggest, g.members.size());
  // guide: its rate limits are per client IP, and every socket of the soak comes from
  // 127.0.0.1, so they are raised out of the way. The engagement window is short: the chat
  // room's alarm that pushes the lower count fires early in a quiet time, not through it (which
  // would keep the room from being evicted).
  const std::string unlimited = "1000000000";
  host_ = std::make_unique<SoakHost>(
      o_.dohostPath, dir_, o_.idleEvict,
      std::vector<std::pair<std::string, std::string>>{
          {"JWT_SECRET", secret_},
          {"DOHOST_CHANNELS_MAX_CONNECTIONS", std::to_string(biggest + 10)},
          {"DOHOST_HOPEFLOW_ACK_TIMEOUT_MS", std::to_string(kAckTimeoutMs)},
          {"DOHOST_GUIDE_CONNECTIONS_PER_MINUTE", unlimited},
          {"DOHOST_GUIDE_MESSAGES_PER_MINUTE", unlimited},
          {"DOHOST_GUIDE_BROADCASTS_PER_MINUTE", unlimited},
          {"DOHOST_GUIDE_ENGAGEMENT_WINDOW_MS",
           std::to_string(std::max<int64_t>(1, static_cast<int64_t>(o_.idleEvict * 250)))}});
  std::string error;
  if (!host_->start(&error)) {
    std::fprintf(stderr, "dohost-soak: the host did not start: %s\n", error.c_str());
    return 1;
  }
  fleet_ = std::make_unique<ClientFleet>();
  if (!fleet_->open(&error)) {
    std::fprintf(stderr, "dohost-soak: %s\n", error.c_str());
    return 1;
  }
  fleet_->onOpen = [this](ClientConn& c) { onOpen(c); };
  fleet_->onEnd = [this](ClientConn& c) { onEnd(c); };
  fleet_->onMessage = [this](ClientConn& c, std::string_view m, SteadyClock::time_point) { onMessage(c, m); };
  publishers_ = std::make_unique<Publishers>(host_->port(SoakApp::kHopeflow), o_.publishers);

  t0_ = lastTick_ = lastDrive_ = lifetimeStart_ = Clock::now();
  nextReport_ = after(t0_, o_.reportEvery);
  nextKill_ = after(t0_, o_.killEvery * uniform(0.5, 1.5));
  for (Group& g : groups_) g.phaseEnd = after(t0_, uniform(10, 25));
  for (Member& m : members_) m.nextAt = after(t0_, uniform(0, 2));
  TimePoint end = after(t0_, o_.seconds);
  while (!crashed_ && Clock::now() < end) {
    serveOnce();
    if (o_.killEvery > 0 && Clock::now() >= nextKill_ && secondsBetween(Clock::now(), end) > 5) restartHost();
  }

  std::vector<std::string> failures;
  if (!crashed_) {
    // Drain: no new writes; what is in flight gets its outcome.
    draining_ = true;
    for (Group& g : groups_) g.quiet = false;
    TimePoint drainEnd = after(Clock::now(), kDrainSeconds);
    // Settled when every record whose clients are still connected has its outcome.
    auto settled = [&] {
      if (publishers_->busy() > 0) return false;
      for (const auto& [n, p] : publishes_) {
        if (!p.answered || Clock::now() < p.checkAt) return false;
      }
      for (const auto& [id, r] : routed_) {
        if (members_[r.sender].stable(r.senderGen) && members_[r.target].stable(r.targetGen)) return false;
      }
      for (const auto& [id, q] : queries_) {
        if (members_[q.runtime].stable(q.runtimeGen)) return false;
      }
      for (const Member& m : members_) {
        if (m.stable(m.gen) && (!m.unechoed.empty() || !m.owed.empty())) return false;
      }
      return true;
    };
    while (!crashed_ && !settled() && Clock::now() < drainEnd) serveOnce();
    checkOutcomes(Clock::now(), true);
  }
  if (!crashed_) {
    sampleAndReport(false);
    verifyAllOnline();
    std::string how;
    restarting_ = true;  // the closes that follow are the shutdown's
    if (!host_->stop(20, &how)) failures.push_back("the host did not stop cleanly on SIGTERM: " + how);
    finalOfflineChecks();
  }
  if (crashed_) failures.push_back(crash_);
  if (n_.lost() > 0) failures.push_back(std::to_string(n_.lost()) + " acknowledged writes lost");
  if (n_.unanswered > 0) failures.push_back(std::to_string(n_.unanswered) + " writes without any outcome");
  if (n_.duplicated > 0) failures.push_back(std::to_string(n_.duplicated) + " chat messages stored twice");
  if (n_.outOfOrder > 0) failures.push_back(std::to_string(n_.outOfOrder) + " chat messages out of order");
  if (n_.unexpected > 0) failures.push_back(std::to_string(n_.unexpected) + " unexpected answers or errors");
  for (const std::string& g : growth_) failures.push_back("growth: " + g);
  for (const std::string& r : host_->sanitizerReports()) failures.push_back("sanitizer: " + r);
  bool ok = failures.empty();
  printSummary(ok, failures);
  publishers_.reset();
  fleet_->onOpen = nullptr;
  fleet_->onEnd = nullptr;
  fleet_->onMessage = nullptr;
  fleet_->close();
  host_.reset();
  if (ok && !o_.keepData) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  } else {
    std::printf("  data and logs kept in %s\n", dir_.c_str());
  }
  return ok ? 0 : 1;
}

}  // namespace

int runSoak(const SoakOptions& options) {
  Soak soak(options);
  return soak.run();
}

}  // namespace dohost::bench
