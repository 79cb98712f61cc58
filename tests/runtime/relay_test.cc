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

}  // namespace
}  // namespace dohost::testing
