// The relay's owner side without a network: a real Runtime, a claim table as its Ownership,
// and a fake LinkIo; the test plays the edge by feeding frames in and reading what goes out.
// The hosts and their links for real are the integration suite's (test_relay).
#include "cluster/relay.h"
#include "ownership.h"
#include "runtime/test_objects.h"

namespace dohost::testing {
namespace {

using namespace dohost::cluster;

TEST_CASE("SendCoalescer: consecutive sends of one frame become one Send; another frame starts the next") {
  SendCoalescer c(3);
  auto one = std::make_shared<Frame>("one", false);
  auto two = std::make_shared<Frame>("two", true);
  CHECK_FALSE(c.add(1, one));
  CHECK_FALSE(c.add(2, one));
  std::optional<Send> first = c.add(3, two);  // another frame: the first Send is ready
  REQUIRE(first);
  CHECK(first->sockets == std::vector<SocketId>{1, 2});
  CHECK(first->frame == one);  // shared, not copied
  CHECK_FALSE(c.add(4, two));
  CHECK_FALSE(c.add(5, two));
  std::optional<Send> full = c.add(6, two);  // three sockets at most in one Send
  REQUIRE(full);
  CHECK(full->sockets == std::vector<SocketId>{3, 4, 5});
  CHECK(full->binary());
  std::optional<Send> rest = c.take();
  REQUIRE(rest);
  CHECK(rest->sockets == std::vector<SocketId>{6});
  CHECK(c.empty());
  CHECK_FALSE(c.take());
}

class Claims final : public Ownership {
 public:
  const std::string& selfId() const override { return self_; }
  uint64_t incarnation() const override { return 9; }
  std::optional<int64_t> claimToken(const std::string& className,
                                    const std::string& id) const override {
    return claimed.count(className + "/" + id) ? std::optional<int64_t>(7) : std::nullopt;
  }
  void resolve(const std::string&, const std::string&,
               std::function<void(Result<OwnerInfo>)> done) override {
    done(Status::ioError("not in this test"));
  }
  void forget(const std::string& className, const std::string& id, bool) override {
    claimed.erase(className + "/" + id);
  }
  std::optional<std::string> knownOwner(const std::string&, const std::string&) const override {
    return std::nullopt;
  }
  std::set<std::string> claimed;

 private:
  std::string self_ = "owner";
};

class FakeIo final : public LinkIo {
 public:
  bool dial(LinkId, const std::string&) override { return true; }
  void wantWrite(LinkId) override {}
  void close(LinkId link) override { closed.push_back(link); }
  std::vector<LinkId> closed;
};

class OwnerSide : public RuntimeFixture {
 public:
  OwnerSide() : relay(*runtime, claims, RelayOptions{}) {
    claims.claimed.insert("Counter/" + idFromName("Counter", "alpha"));
    runtime->setOwnership(&claims);
    relay.setIo(&io);
    link = relay.accepted();
    relay.received(link, encode(Hello{"edge", kEdgeIncarnation, kLinkProtocolVersion, ""}));
    REQUIRE(std::holds_alternative<HelloOk>(out().at(0)));
  }
  ~OwnerSide() { runtime->setOwnership(nullptr); }

  // What the relay wrote to the edge since the last call, decoded.
  std::vector<LinkFrame> out() {
    std::vector<LinkFrame> frames;
    std::string bytes;
    while (relay.nextOutgoing(link, &bytes)) {
      Result<LinkFrame> f = decode(bytes);
      REQUIRE(f.isOk());
      frames.push_back(std::move(f).value());
    }
    return frames;
  }
  SocketId upgrade(uint64_t serial) {
    HttpRequest r;
    r.stream = serial;
    r.className = "Counter";
    r.objectId = idFromName("Counter", "alpha");
    r.method = "GET";
    r.path = "/ws";
    r.isUpgrade = true;
    r.socket = makeSocketId(edgeTagFor(kEdgeIncarnation), serial);
    relay.received(link, encode(r));
    return r.socket;
  }

  static constexpr uint64_t kEdgeIncarnation = 5;
  Claims claims;
  FakeIo io;
  Relay relay;
  LinkId link = 0;
};

TEST_CASE_FIXTURE(OwnerSide, "a broadcast to an edge's sockets crosses the link once per loop turn, as one Send") {
  std::vector<SocketId> ids = {upgrade(1), upgrade(2), upgrade(3)};
  runtime->runDue();  // the per-turn flush (SocketMeta)
  std::vector<LinkFrame> accepted = out();
  int answers = 0;
  for (const LinkFrame& f : accepted) {
    if (auto* r = std::get_if<HttpResponse>(&f)) {
      CHECK(r->status == 101);
      CHECK(r->acceptedSocket == ids[answers++]);
    }
  }
  CHECK(answers == 3);

  ObjectSlot& s = slot();
  CHECK(s.broadcast("to all", {}) == 3);
  CHECK(out().empty());  // gathered until the turn ends (or another frame comes)
  CHECK(s.broadcast("again", {}) == 3);
  std::vector<LinkFrame> early = out();  // the second frame sent the first Send on its way
  runtime->runDue();                      // the end of the turn
  std::vector<LinkFrame> late = out();
  REQUIRE(early.size() == 1);
  REQUIRE(late.size() == 1);
  const Send& first = std::get<Send>(early[0]);
  const Send& second = std::get<Send>(late[0]);
  CHECK(first.sockets == ids);
  CHECK(first.payload() == "to all");
  CHECK(second.sockets == ids);
  CHECK(second.payload() == "again");
  CHECK(relay.frameCounts()[0][static_cast<uint8_t>(LinkKind::kSend)] == 2);
  CHECK(metrics().messagesOut == 6);
}

TEST_CASE_FIXTURE(OwnerSide, "sends of different frames and to single sockets keep their order on the link") {
  std::vector<SocketId> ids = {upgrade(1), upgrade(2)};
  runtime->runDue();
  (void)out();
  ObjectSlot& s = slot();
  CHECK(s.broadcast("a", {}) == 2);
  for (const auto& [id, record] : s.sockets()) {
    record->transport->send(std::make_shared<Frame>("private", false));
  }
  CHECK(s.broadcast("b", {}) == 2);
  runtime->runDue();
  std::vector<std::pair<std::vector<SocketId>, std::string>> sends;
  for (const LinkFrame& f : out()) {
    if (auto* send = std::get_if<Send>(&f)) {
      sends.emplace_back(send->sockets, std::string(send->payload()));
    }
  }
  REQUIRE(sends.size() == 4);
  CHECK(sends[0] == std::make_pair(ids, std::string("a")));
  CHECK(sends[1].second == "private");
  CHECK(sends[1].first.size() == 1);
  CHECK(sends[2].second == "private");
  CHECK(sends[3] == std::make_pair(ids, std::string("b")));
}

TEST_CASE_FIXTURE(OwnerSide, "a socket closed by the edge reaches the object's webSocketClose; a dropped link gives 1006") {
  SocketId first = upgrade(1);
  upgrade(2);
  runtime->runDue();
  (void)out();
  relay.received(link, encode(SocketClosed{first, 4000, "bye", true}));
  runtime->runDue();
  CHECK(journal.closeCodes == std::vector<int>{4000});
  // Frames for sockets or streams it does not know change nothing.
  relay.received(link, encode(SocketMessage{makeSocketId(edgeTagFor(kEdgeIncarnation), 99), false, "x"}));
  relay.received(link, encode(HttpResponse{12345, 200, {}, "", 0}));
  CHECK(io.closed.empty());
  relay.linkGone(link, "test");
  runtime->runDue();
  CHECK(journal.closeCodes == std::vector<int>{4000, 1006});
  CHECK(slot().sockets().empty());
}

TEST_CASE_FIXTURE(OwnerSide, "garbage on a link closes it") {
  relay.received(link, std::string("\xff\x01", 2));
  CHECK(io.closed == std::vector<LinkId>{link});
}

// --- The edge side: sockets whose owner went away ----------------------------------------

// The owner a resolve names is the test's to set.
class Resolver final : public Ownership {
 public:
  const std::string& selfId() const override { return self_; }
  uint64_t incarnation() const override { return 3; }
  std::optional<int64_t> claimToken(const std::string&, const std::string&) const override {
    return std::nullopt;
  }
  void resolve(const std::string&, const std::string&,
               std::function<void(Result<OwnerInfo>)> done) override {
    if (!owner) return done(Status::ioError("etcd is away"));
    done(*owner);
  }
  void forget(const std::string&, const std::string&, bool) override {}
  std::optional<std::string> knownOwner(const std::string&, const std::string&) const override {
    return std::nullopt;
  }
  void dropCached(const std::string&, const std::string&) override { ++dropped; }
  std::optional<OwnerInfo> owner;
  int dropped = 0;

 private:
  std::string self_ = "edge";
};

class DialingIo final : public LinkIo {
 public:
  bool dial(LinkId link, const std::string& peer) override {
    dialed[peer] = link;
    return true;
  }
  void wantWrite(LinkId) override {}
  void close(LinkId) override {}
  std::map<std::string, LinkId> dialed;
};

struct Client final : EdgeClient {
  SendResult send(const FramePtr& frame) override {
    frames.emplace_back(frame->payload());
    return SendResult::kQueued;
  }
  void close(int code, const std::string&) override { closed = code; }
  size_t queuedBytes() const override { return 0; }
  void adoptLocal(std::shared_ptr<detail::SocketRecord>) override {}
  std::vector<std::string> frames;
  std::optional<int> closed;
};

class EdgeSide : public RuntimeFixture {
 public:
  EdgeSide() : relay(*runtime, resolver, RelayOptions{}) { relay.setIo(&io); }

  std::vector<LinkFrame> out(LinkId link) {
    std::vector<LinkFrame> frames;
    std::string bytes;
    while (relay.nextOutgoing(link, &bytes)) {
      Result<LinkFrame> f = decode(bytes);
      REQUIRE(f.isOk());
      frames.push_back(std::move(f).value());
    }
    return frames;
  }
  // The dialed link to `host` comes up.
  LinkId up(const std::string& host) {
    REQUIRE(io.dialed.count(host + ":1"));
    LinkId l = io.dialed[host + ":1"];
    relay.connected(l);
    relay.received(l, encode(HelloOk{host, 1}));
    return l;
  }
  // A client's WebSocket to the object, relayed to host-b, which accepts it.
  SocketId relayedSocket() {
    Request request("GET", "/ws");
    relay.forward(OwnerInfo{"host-b", "host-b:1", 4, false},
                  ObjectRef{"Counter", idFromName("Counter", "alpha"), std::string("alpha")},
                  request, true, [this](RelayOutcome o) -> EdgeClient* {
                    CHECK(o.response.status() == 101);
                    return &client;
                  });
    b = up("host-b");
    SocketId socket = 0;
    for (const LinkFrame& f : out(b)) {
      if (auto* r = std::get_if<HttpRequest>(&f)) {
        relay.received(b, encode(HttpResponse{r->stream, 101, {}, "", r->socket}));
        socket = r->socket;
      }
    }
    REQUIRE(socket != 0);
    return socket;
  }
  template <typename T>
  static std::vector<T> only(const std::vector<LinkFrame>& frames) {
    std::vector<T> out;
    for (const LinkFrame& f : frames) {
      if (auto* t = std::get_if<T>(&f)) out.push_back(*t);
    }
    return out;
  }

  Resolver resolver;
  DialingIo io;
  Relay relay;
  Client client;
  LinkId b = 0;
};

TEST_CASE_FIXTURE(EdgeSide, "what a client sends while its socket is re-attached reaches the host that takes it, not one that refuses") {
  SocketId socket = relayedSocket();
  relay.received(b, encode(Leaving{"host-b"}));
  relay.clientMessage(socket, Message{false, "held while ownerless"});
  CHECK(only<SocketMessage>(out(b)).empty());

  // A stale entry names host-c, which does not own the object.
  resolver.owner = OwnerInfo{"host-c", "host-c:1", 5, false};
  advance(relay.options().recoveryRetry);
  LinkId c = up("host-c");
  advance(relay.options().recoveryRetry);
  std::vector<LinkFrame> sent = out(c);
  REQUIRE(only<Reattach>(sent).size() == 1);
  CHECK(only<SocketMessage>(sent).empty());  // not before host-c takes the socket
  relay.clientMessage(socket, Message{false, "sent while re-attaching"});
  CHECK(out(c).empty());
  relay.received(c, encode(ReattachResult{socket, false, "this host does not own the object"}));
  CHECK(resolver.dropped == 1);  // the next resolve asks etcd
  CHECK(relay.edgeSockets().heldMessages(ObjectKey{"Counter", idFromName("Counter", "alpha")}) == 2);

  // The real owner, host-d, takes the socket: both messages follow, in order.
  resolver.owner = OwnerInfo{"host-d", "host-d:1", 6, false};
  advance(relay.options().recoveryRetry);
  LinkId d = up("host-d");
  advance(relay.options().recoveryRetry);
  REQUIRE(only<Reattach>(out(d)).size() == 1);
  relay.received(d, encode(ReattachResult{socket, true, ""}));
  std::vector<SocketMessage> delivered = only<SocketMessage>(out(d));
  REQUIRE(delivered.size() == 2);
  CHECK(delivered[0].payload == "held while ownerless");
  CHECK(delivered[1].payload == "sent while re-attaching");
  // Attached again: what comes next goes straight to host-d.
  relay.clientMessage(socket, Message{false, "after"});
  CHECK(only<SocketMessage>(out(d)).size() == 1);
  CHECK(only<SocketMessage>(out(c)).empty());
  CHECK_FALSE(client.closed);
}

}  // namespace
}  // namespace dohost::testing
