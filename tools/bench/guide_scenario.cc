// The `guide` scenario (issue 10): one ChatRoom of N members (HS256 tokens by query, one
// context), one message at a time from the send to the last member (durability FULL), next
// to the floor server at the same size and frame length; and, in process, what the
// per-connection rate limit costs a room on every message.
#include <cstdio>
#include <unordered_map>

#include "app_host.h"
#include "dohost/jwt.h"
#include "objects/guide_common.h"

namespace dohost::bench {
namespace {

namespace guide = dohost::objects::guide;

// The members of one chat room: sends `message` envelopes with a tag as content, counts each
// tag's arrivals, and records when one reached every member (the sender included).
class GuideChat {
 public:
  GuideChat(ClientFleet& fleet, size_t members) : fleet_(fleet), members_(members) {
    fleet_.onSent = [this](ClientConn& c, SteadyClock::time_point t) {
      if (!pending_.empty() && sentAt_.find(pending_.front()) == sentAt_.end()) {
        sentAt_[pending_.front()] = t;
      }
    };
    fleet_.onMessage = [this](ClientConn& c, std::string_view m, SteadyClock::time_point t) {
      onMessage(m, t);
    };
  }
  ~GuideChat() {
    fleet_.onSent = nullptr;
    fleet_.onMessage = nullptr;
  }

  // One message at a time, senders taking turns among the first `senders`.
  bool rounds(int count, size_t senders, double timeout) {
    for (int i = 0; i < count; ++i) {
      std::string tag = "g" + std::to_string(next_++);
      pending_.assign(1, tag);
      size_t before = delivered_;
      fleet_.send(static_cast<size_t>(i) % senders,
                  R"({"type":"message","data":{"content":")" + tag + R"(","messageType":"text"}})");
      if (!fleet_.serveUntil([&] { return delivered_ > before; }, timeout)) return false;
    }
    return true;
  }
  // Serves until every member heard of every later member (user_joined), or the timeout.
  bool settle(double timeout) {
    uint64_t want = static_cast<uint64_t>(members_) * (members_ - 1) / 2;
    return fleet_.serveUntil([&] { return joined_ >= want; }, timeout);
  }
  void clearSamples() {
    lastUs_.clear();
    firstUs_.clear();
  }
  const std::vector<double>& lastUs() const { return lastUs_; }
  const std::vector<double>& firstUs() const { return firstUs_; }
  size_t frameBytes() const { return frameBytes_; }
  uint64_t strayFrames() const { return stray_; }

 private:
  void onMessage(std::string_view m, SteadyClock::time_point t) {
    // {"data":{"author":..,"content":"<tag>",..},"id":..,"timestamp":..,"type":"message"}
    // (nlohmann writes keys sorted).
    if (m.ends_with(R"("type":"user_joined"})")) {
      ++joined_;
      return;
    }
    if (!m.ends_with(R"("type":"message"})")) return;
    std::string_view tag = stringAfter(m, "\"content\":\"");
    if (tag.empty()) {
      ++stray_;
      return;
    }
    frameBytes_ = m.size();
    auto& [got, first] = arrivals_[std::string(tag)];
    if (got++ == 0) first = t;
    if (got < members_) return;
    ++delivered_;
    auto sent = sentAt_.find(std::string(tag));
    if (sent != sentAt_.end()) {
      lastUs_.push_back(microsBetween(sent->second, t));
      firstUs_.push_back(microsBetween(sent->second, first));
      sentAt_.erase(sent);
    }
    arrivals_.erase(std::string(tag));
  }

  ClientFleet& fleet_;
  size_t members_;
  uint64_t next_ = 1;
  std::vector<std::string> pending_;
  std::unordered_map<std::string, SteadyClock::time_point> sentAt_;
  std::unordered_map<std::string, std::pair<size_t, SteadyClock::time_point>> arrivals_;
  std::vector<double> lastUs_, firstUs_;
  uint64_t delivered_ = 0, joined_ = 0, stray_ = 0;
  size_t frameBytes_ = 0;
};

// What GuideRoom does for the connection limit on every message: read the clock, count the
// message in the connection's window, write the window and the socket's state into the
// attachment buffer, and hand that to the host (serializeAttachment copies it into the
// socket's record: here a string assign, the same copy). Nanoseconds per message, best of
// five runs of `iterations`, for the admitted path and for the path past the limit.
Json rateLimitCost(size_t iterations) {
  guide::Settings settings;
  const std::string state =
      R"({"joinedAt":1764578400000,"userId":"user-0042","username":"User 42"})";
  std::string buffer, record;
  SystemClock clock;
  auto run = [&](int64_t limit) {
    settings.messagesPerMinute = limit;
    guide::RateWindow rate;
    size_t admitted = 0;
    auto t0 = SteadyClock::now();
    for (size_t i = 0; i < iterations; ++i) {
      if (guide::admitMessage(rate, state, toUnixMillis(clock.now()), settings, buffer)) {
        record.assign(buffer);
        ++admitted;
      }
    }
    double ns = microsBetween(t0, SteadyClock::now()) * 1000 / static_cast<double>(iterations);
    return std::make_pair(ns, admitted);
  };
  double admittedNs = 1e18, refusedNs = 1e18;
  for (int r = 0; r < 5; ++r) {
    auto [a, n] = run(INT64_MAX);
    if (n == iterations) admittedNs = std::min(admittedNs, a);
    auto [b, m] = run(100);  // the seed's limit: past the 100th message every check refuses
    if (m == 100) refusedNs = std::min(refusedNs, b);
  }
  // After a wake: the first message of a connection decodes its attachment once.
  std::string bytes = guide::SocketAttachment{guide::RateWindow{1764578400000, 42}, state}.encode();
  size_t decoded = 0;
  auto t0 = SteadyClock::now();
  for (size_t i = 0; i < iterations / 10; ++i) {
    auto a = guide::SocketAttachment::decode(bytes);
    if (a && guide::parseObject(a->state)) ++decoded;
  }
  double decodeNs =
      microsBetween(t0, SteadyClock::now()) * 1000 / static_cast<double>(iterations / 10);
  return Json{{"iterations", iterations},
              {"attachmentBytes", bytes.size()},
              {"admittedNs", admittedNs},
              {"refusedNs", refusedNs},
              {"firstAfterWakeNs", decoded == iterations / 10 ? Json(decodeNs) : Json(nullptr)}};
}

}  // namespace

Json runGuideBench(const AppBenchOptions& o) {
  size_t n = o.members;
  size_t senders = std::min(o.senders, n);
  Json out{{"members", n}, {"senders", senders}, {"durability", "FULL"}};
  std::fprintf(stderr, "  guide: the rate-limit check, in process ...\n");
  out["rateLimit"] = rateLimitCost(2'000'000);
  std::string error;
  std::string secret = "bench-" + randomHex();
  std::fprintf(stderr, "  guide: %zu members in one chat room ...\n", n);
  // The seed's limits would refuse the bench's own connections and messages: raised.
  auto host = startAppHost(o, "guide",
                           {{"JWT_SECRET", secret},
                            {"DOHOST_GUIDE_CONNECTIONS_PER_MINUTE", "1000000000"},
                            {"DOHOST_GUIDE_MESSAGES_PER_MINUTE", "1000000000"},
                            {"DOHOST_GUIDE_BROADCASTS_PER_MINUTE", "1000000000"}},
                           &error);
  if (!host) return Json{{"error", error}};
  std::string context = "bench-" + randomHex().substr(0, 8);
  ClientFleet fleet;
  if (!fleet.open(&error)) return Json{{"error", error}};
  GuideChat chat(fleet, n);  // counts the user_joined notices from the first join on
  auto c0 = SteadyClock::now();
  for (size_t i = 0; i < n; ++i) {
    std::string u = "u" + std::to_string(i);
    std::string token = signJwtHs256(Json{{"sub", u}, {"name", u}}.dump(), secret);
    if (!fleet.connect(host->port, "/api/chat/ws?token=" + token + "&contextId=" + context, 1,
                       false, 30, &error)) {
      return Json{{"error", "member " + std::to_string(i) + ": " + error},
                  {"log", host->child->logTail(600)}};
    }
  }
  out["connectSeconds"] = microsBetween(c0, SteadyClock::now()) / 1e6;
  double timeout = 10 + static_cast<double>(n) / 200;
  if (!chat.settle(30 + static_cast<double>(n) / 50)) {
    return Json{{"error", "the user_joined notices did not all arrive"}};
  }
  if (!chat.rounds(5, senders, timeout))
    return Json{{"error", "a warm-up message did not reach every member"}};
  chat.clearSamples();
  int rounds =
      o.rounds > 0
          ? o.rounds
          : static_cast<int>(std::clamp<size_t>(200000 / std::max<size_t>(n, 1), 30, 2000));

  FloorComparison floor(o, n, chat.frameBytes(), timeout, out);
  std::fprintf(stderr, "  guide: %d latency rounds%s ...\n", rounds,
               floor.running() ? " (and the floor)" : "");
  CpuWindow::Result cpu;
  if (!floor.run(
          rounds, host->pid, [&](int count) { return chat.rounds(count, senders, timeout); },
          &cpu)) {
    return Json{{"error", "a message did not reach every member in time"}};
  }
  double frames = static_cast<double>(rounds) * static_cast<double>(n);
  out["latency"] = Json{{"rounds", rounds},
                        {"frameBytes", chat.frameBytes()},
                        {"latencyLastUs", toJson(summarize(chat.lastUs()))},
                        {"latencyFirstUs", toJson(summarize(chat.firstUs()))},
                        {"cpuPerFrameUs", cpu.server * 1e6 / frames},
                        {"otherCpu", cpu.other / cpu.wall},
                        {"strayFrames", chat.strayFrames()}};
  floor.report(rounds);
  floor.close();
  std::fprintf(stderr, "  guide: last member p50 %.0f / p99 %.0f us; rate-limit check %.0f ns\n",
               out["latency"]["latencyLastUs"]["median"].get<double>(),
               out["latency"]["latencyLastUs"]["p99"].get<double>(),
               out["rateLimit"]["admittedNs"].get<double>());
  host.reset();  // SIGKILL first, then the clients go
  fleet.close();
  return out;
}

void printGuideTable(const Json& g) {
  std::printf("\nGuide: a ChatRoom of %s members, one message at a time, durability FULL\n",
              g.contains("members") ? std::to_string(g["members"].get<size_t>()).c_str() : "?");
  if (g.contains("error")) {
    std::printf("    failed: %s\n", g["error"].get<std::string>().c_str());
    return;
  }
  auto line = [](const std::string& label, const std::string& a, const std::string& b = "",
                 const std::string& c = "") {
    std::printf("  %-52s %14s %14s %10s\n", label.c_str(), a.c_str(), b.c_str(), c.c_str());
  };
  auto ratio = [](double a, double b) {
    if (a <= 0 || b <= 0) return std::string("-");
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2fx", a / b);
    return std::string(buf);
  };
  auto ns = [](double v) {
    if (v < 0) return std::string("-");
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f ns", v);
    return std::string(buf);
  };
  const Json& l = g["latency"];
  const Json empty = Json::object();
  const Json& f = g.contains("floor") ? g["floor"] : empty;
  if (f.contains("error"))
    std::printf("    floor failed: %s\n", f["error"].get<std::string>().c_str());
  line("", "dohost", "floor", "ratio");
  double dm = num(l, {"latencyLastUs", "median"}), fm = num(f, {"latencyLastUs", "median"});
  double dp = num(l, {"latencyLastUs", "p99"}), fp = num(f, {"latencyLastUs", "p99"});
  line("to the last member, median", fmtUs(dm), fmtUs(fm), ratio(dm, fm));
  line("to the last member, p99", fmtUs(dp), fmtUs(fp), ratio(dp, fp));
  line("to the first member, median", fmtUs(num(l, {"latencyFirstUs", "median"})),
       fmtUs(num(f, {"latencyFirstUs", "median"})));
  line("server CPU per delivered frame", fmtUs(num(l, {"cpuPerFrameUs"})));
  line("rounds / frame bytes", std::to_string(static_cast<int>(num(l, {"rounds"}))) + " / " +
                                   std::to_string(static_cast<int>(num(l, {"frameBytes"}))));
  const Json& r = g["rateLimit"];
  std::printf(
      "  The per-connection rate-limit check per message (in process, %.0f-byte attachment):\n",
      num(r, {"attachmentBytes"}));
  line("admitted (count, rewrite the attachment)", ns(num(r, {"admittedNs"})));
  line("past the limit (refused)", ns(num(r, {"refusedNs"})));
  line("first message after a wake (decode the attachment)", ns(num(r, {"firstAfterWakeNs"})));
}

}  // namespace dohost::bench
