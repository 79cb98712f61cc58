// EdgeSockets: the edge's copy of relayed sockets through an owner's death, the hold while
// an object has no owner, and re-attachment to the next owner.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "cluster/edge_sockets.h"

namespace dohost::cluster {
namespace {

const ObjectKey kRoom{"ChatRoom", std::string(64, 'a')};
const ObjectKey kOther{"ChatRoom", std::string(64, 'b')};
const ObjectKey kCounter{"Counter", std::string(64, 'a')};

SocketId sid(uint64_t n) { return makeSocketId(9, n); }

SocketMeta metaOf(SocketId id, std::vector<std::string> tags, std::optional<std::string> attachment,
                  std::optional<AutoResponse> pair = std::nullopt) {
  return SocketMeta{id, std::move(tags), std::move(attachment), std::move(pair)};
}

TEST_CASE("a socket is added once, with a real id") {
  EdgeSockets edge;
  CHECK(edge.add(sid(1), kRoom, "host-b").isOk());
  CHECK(!edge.add(sid(1), kRoom, "host-b").isOk());
  CHECK(edge.add(0, kRoom, "host-b").code() == Status::Code::kInvalidArgument);
  const EdgeSocket* s = edge.find(sid(1));
  REQUIRE(s != nullptr);
  CHECK(s->object == kRoom);
  CHECK(s->owner == "host-b");
  CHECK(s->state == EdgeSocketState::kAttached);
  CHECK(edge.size() == 1);
  CHECK(edge.find(sid(2)) == nullptr);
}

TEST_CASE("socket metadata replaces the copy, and only its owner may send it") {
  EdgeSockets edge;
  REQUIRE(edge.add(sid(1), kRoom, "host-b").isOk());
  CHECK(edge.applyMeta("host-b", metaOf(sid(1), {"member"}, "alice", AutoResponse{"ping", "pong"})).isOk());
  CHECK(edge.find(sid(1))->tags == std::vector<std::string>{"member"});
  CHECK(edge.find(sid(1))->attachment == "alice");
  CHECK(edge.applyMeta("host-b", metaOf(sid(1), {"member", "admin"}, std::nullopt)).isOk());
  CHECK(edge.find(sid(1))->tags == std::vector<std::string>{"member", "admin"});
  CHECK(!edge.find(sid(1))->attachment.has_value());
  CHECK(!edge.find(sid(1))->autoResponse.has_value());

  CHECK(edge.applyMeta("host-c", metaOf(sid(1), {}, "mallory")).code() == Status::Code::kNotAllowed);
  CHECK(!edge.find(sid(1))->attachment.has_value());
  CHECK(edge.applyMeta("host-b", metaOf(sid(2), {}, "x")).code() == Status::Code::kNotFound);
}

TEST_CASE("when an owner dies exactly its sockets become ownerless") {
  EdgeSockets edge;
  REQUIRE(edge.add(sid(1), kRoom, "host-b").isOk());
  REQUIRE(edge.add(sid(2), kRoom, "host-b").isOk());
  REQUIRE(edge.add(sid(3), kOther, "host-b").isOk());
  REQUIRE(edge.add(sid(4), kCounter, "host-c").isOk());
  REQUIRE(edge.add(sid(5), kCounter, "host-c").isOk());

  std::vector<ObjectKey> lost = edge.ownerLost("host-b");
  CHECK(lost == std::vector<ObjectKey>{kRoom, kOther});
  for (uint64_t n : {1, 2, 3}) {
    CHECK(edge.find(sid(n))->state == EdgeSocketState::kOwnerless);
    CHECK(!edge.find(sid(n))->owner.has_value());
  }
  for (uint64_t n : {4, 5}) {
    CHECK(edge.find(sid(n))->state == EdgeSocketState::kAttached);
    CHECK(edge.find(sid(n))->owner == "host-c");
  }
  CHECK(edge.socketsOwnedBy("host-b").empty());
  CHECK(edge.socketsOwnedBy("host-c") == std::vector<SocketId>{sid(4), sid(5)});
  CHECK(edge.socketsOf(kRoom) == std::vector<SocketId>{sid(1), sid(2)});
  CHECK(edge.ownerLost("host-b").empty());
  CHECK(edge.ownerLost("host-z").empty());
}

TEST_CASE("messages for an ownerless object are held up to the per-object message bound") {
  EdgeSockets edge(HoldLimits{.maxMessagesPerObject = 3, .maxBytesPerObject = 1000, .maxBytesTotal = 1000});
  REQUIRE(edge.add(sid(1), kRoom, "host-b").isOk());
  REQUIRE(edge.add(sid(2), kOther, "host-b").isOk());
  edge.ownerLost("host-b");
  CHECK(edge.hold(sid(1), false, "a") == HoldResult::kHeld);
  CHECK(edge.hold(sid(1), false, "b") == HoldResult::kHeld);
  CHECK(edge.hold(sid(1), true, "c") == HoldResult::kHeld);
  CHECK(edge.hold(sid(1), false, "d") == HoldResult::kOverLimit);
  CHECK(edge.heldMessages(kRoom) == 3);
  CHECK(edge.heldBytes(kRoom) == 3);
  // The bound is per object: another object still has room.
  CHECK(edge.hold(sid(2), false, "x") == HoldResult::kHeld);
  CHECK(edge.hold(sid(99), false, "x") == HoldResult::kUnknownSocket);
  CHECK(kHoldRefusedCloseCode == 1013);
}

TEST_CASE("held bytes are bounded per object and in total") {
  EdgeSockets edge(HoldLimits{.maxMessagesPerObject = 100, .maxBytesPerObject = 10, .maxBytesTotal = 15});
  REQUIRE(edge.add(sid(1), kRoom, "host-b").isOk());
  REQUIRE(edge.add(sid(2), kOther, "host-b").isOk());
  edge.ownerLost("host-b");
  CHECK(edge.hold(sid(1), false, std::string(6, 'x')) == HoldResult::kHeld);
  CHECK(edge.hold(sid(1), false, std::string(4, 'x')) == HoldResult::kHeld);  // exactly 10
  CHECK(edge.hold(sid(1), false, "y") == HoldResult::kOverLimit);            // 11
  CHECK(edge.hold(sid(1), false, "") == HoldResult::kHeld);                  // still 10
  CHECK(edge.hold(sid(2), false, std::string(5, 'x')) == HoldResult::kHeld);  // total 15
  CHECK(edge.hold(sid(2), false, "z") == HoldResult::kOverLimit);            // total 16
  CHECK(edge.heldBytesTotal() == 15);
  edge.closed(sid(1));
  CHECK(edge.heldBytesTotal() == 5);
  CHECK(edge.hold(sid(2), false, std::string(5, 'x')) == HoldResult::kHeld);
}

TEST_CASE("re-attach frames carry the latest tags, attachment and auto-response") {
  EdgeSockets edge;
  REQUIRE(edge.add(sid(1), kRoom, "host-b").isOk());
  REQUIRE(edge.add(sid(2), kRoom, "host-b").isOk());
  REQUIRE(edge.add(sid(3), kOther, "host-b").isOk());
  REQUIRE(edge.applyMeta("host-b", metaOf(sid(1), {"member"}, "v1")).isOk());
  REQUIRE(edge.applyMeta("host-b", metaOf(sid(1), {"member", "user:alice"}, "v2",
                                          AutoResponse{"ping", "pong"})).isOk());
  REQUIRE(edge.applyMeta("host-b", metaOf(sid(2), {"member"}, std::nullopt)).isOk());
  CHECK(edge.reattachFramesFor(kRoom, "host-c").empty());  // still owned: nothing to re-attach

  edge.ownerLost("host-b");
  std::optional<std::string> answer = edge.autoRespond(sid(1), "ping", 1767225600123);
  CHECK(answer == "pong");

  std::vector<Reattach> frames = edge.reattachFramesFor(kRoom, "host-c");
  REQUIRE(frames.size() == 2);
  CHECK(frames[0] == Reattach{sid(1), "ChatRoom", kRoom.objectId, {"member", "user:alice"},
                              std::string("v2"), AutoResponse{"ping", "pong"}, int64_t{1767225600123}});
  CHECK(frames[1] == Reattach{sid(2), "ChatRoom", kRoom.objectId, {"member"}, std::nullopt,
                              std::nullopt, std::nullopt});
  for (const Reattach& f : frames) CHECK(decode(encode(f)).isOk());
  CHECK(edge.find(sid(1))->state == EdgeSocketState::kReattaching);
  CHECK(edge.find(sid(1))->owner == "host-c");
  CHECK(edge.find(sid(3))->state == EdgeSocketState::kOwnerless);  // another object
  CHECK(edge.socketsOwnedBy("host-c") == std::vector<SocketId>{sid(1), sid(2)});
  // A second call finds nothing left to re-attach.
  CHECK(edge.reattachFramesFor(kRoom, "host-c").empty());
}

TEST_CASE("held messages flush to the new owner in order after re-attach") {
  EdgeSockets edge;
  REQUIRE(edge.add(sid(1), kRoom, "host-b").isOk());
  REQUIRE(edge.add(sid(2), kRoom, "host-b").isOk());
  edge.ownerLost("host-b");
  REQUIRE(edge.hold(sid(1), false, "one") == HoldResult::kHeld);
  REQUIRE(edge.hold(sid(2), true, "two") == HoldResult::kHeld);
  REQUIRE(edge.hold(sid(1), false, "three") == HoldResult::kHeld);
  CHECK(edge.takeHeld(kRoom).empty());  // no owner yet: they stay
  CHECK(edge.heldMessages(kRoom) == 3);

  REQUIRE(edge.reattachFramesFor(kRoom, "host-c").size() == 2);
  // Re-attaching: the new owner may still refuse the sockets, so their messages wait.
  CHECK(edge.hold(sid(1), false, "four") == HoldResult::kHeld);
  CHECK(edge.takeHeld(kRoom).empty());
  CHECK(edge.heldMessages(kRoom) == 4);

  CHECK(edge.applyReattachResult("host-c", ReattachResult{sid(1), true, ""}).isOk());
  CHECK(edge.find(sid(1))->state == EdgeSocketState::kAttached);
  CHECK(edge.takeHeld(kRoom) == std::vector<SocketMessage>{{sid(1), false, "one"},
                                                           {sid(1), false, "three"},
                                                           {sid(1), false, "four"}});
  CHECK(edge.applyReattachResult("host-c", ReattachResult{sid(2), true, ""}).isOk());
  CHECK(edge.takeHeld(kRoom) == std::vector<SocketMessage>{{sid(2), true, "two"}});
  CHECK(edge.heldMessages(kRoom) == 0);
  CHECK(edge.heldBytesTotal() == 0);
  CHECK(edge.takeHeld(kRoom).empty());
}

TEST_CASE("a host adopting the sockets itself takes their messages while re-attaching") {
  EdgeSockets edge;
  REQUIRE(edge.add(sid(1), kRoom, "host-b").isOk());
  edge.ownerLost("host-b");
  REQUIRE(edge.hold(sid(1), false, "one") == HoldResult::kHeld);
  REQUIRE(edge.reattachFramesFor(kRoom, "host-a").size() == 1);
  REQUIRE(edge.hold(sid(1), false, "two") == HoldResult::kHeld);
  CHECK(edge.takeHeld(kRoom, EdgeSocketState::kReattaching) ==
        std::vector<SocketMessage>{{sid(1), false, "one"}, {sid(1), false, "two"}});
  CHECK(edge.heldBytesTotal() == 0);
}

TEST_CASE("a refused re-attach leaves the socket ownerless and counts the failure") {
  EdgeSockets edge;
  REQUIRE(edge.add(sid(1), kRoom, "host-b").isOk());
  REQUIRE(edge.add(sid(2), kRoom, "host-b").isOk());
  edge.ownerLost("host-b");
  REQUIRE(edge.hold(sid(1), false, "kept") == HoldResult::kHeld);
  REQUIRE(edge.hold(sid(2), false, "sent") == HoldResult::kHeld);
  REQUIRE(edge.reattachFramesFor(kRoom, "host-c").size() == 2);
  // An answer from a host the socket was not sent to is not taken.
  CHECK(edge.applyReattachResult("host-d", ReattachResult{sid(1), true, ""}).code() ==
        Status::Code::kNotAllowed);
  CHECK(edge.applyReattachResult("host-c", ReattachResult{sid(1), false, "not owner"}).isOk());
  CHECK(edge.applyReattachResult("host-c", ReattachResult{sid(2), true, ""}).isOk());
  CHECK(edge.applyReattachResult("host-c", ReattachResult{sid(2), true, ""}).code() ==
        Status::Code::kNotAllowed);  // already attached
  CHECK(edge.applyReattachResult("host-c", ReattachResult{sid(7), true, ""}).code() ==
        Status::Code::kNotFound);
  const EdgeSocket* s = edge.find(sid(1));
  CHECK(s->state == EdgeSocketState::kOwnerless);
  CHECK(!s->owner.has_value());
  CHECK(s->failedReattaches == 1);
  CHECK(edge.socketsOwnedBy("host-c") == std::vector<SocketId>{sid(2)});
  // Only the attached socket's message goes; the refused one's stays for the next owner.
  CHECK(edge.takeHeld(kRoom) == std::vector<SocketMessage>{{sid(2), false, "sent"}});
  CHECK(edge.heldMessages(kRoom) == 1);
  REQUIRE(edge.reattachFramesFor(kRoom, "host-d").size() == 1);
  CHECK(edge.applyReattachResult("host-d", ReattachResult{sid(1), true, ""}).isOk());
  CHECK(edge.find(sid(1))->failedReattaches == 0);
  CHECK(edge.takeHeld(kRoom) == std::vector<SocketMessage>{{sid(1), false, "kept"}});
}

TEST_CASE("a new owner that dies while re-attaching leaves the sockets ownerless again") {
  EdgeSockets edge;
  REQUIRE(edge.add(sid(1), kRoom, "host-b").isOk());
  edge.ownerLost("host-b");
  REQUIRE(edge.reattachFramesFor(kRoom, "host-c").size() == 1);
  CHECK(edge.ownerLost("host-c") == std::vector<ObjectKey>{kRoom});
  CHECK(edge.find(sid(1))->state == EdgeSocketState::kOwnerless);
  CHECK(edge.hold(sid(1), false, "m") == HoldResult::kHeld);
}

TEST_CASE("a closed socket leaves every index and its held messages go") {
  EdgeSockets edge;
  REQUIRE(edge.add(sid(1), kRoom, "host-b").isOk());
  REQUIRE(edge.add(sid(2), kRoom, "host-b").isOk());
  REQUIRE(edge.add(sid(3), kOther, "host-c").isOk());
  edge.closed(sid(3));
  CHECK(edge.find(sid(3)) == nullptr);
  CHECK(edge.socketsOf(kOther).empty());
  CHECK(edge.socketsOwnedBy("host-c").empty());
  CHECK(edge.ownerLost("host-c").empty());

  edge.ownerLost("host-b");
  REQUIRE(edge.hold(sid(1), false, "from one") == HoldResult::kHeld);
  REQUIRE(edge.hold(sid(2), false, "from two") == HoldResult::kHeld);
  edge.closed(sid(1));
  CHECK(edge.find(sid(1)) == nullptr);
  CHECK(edge.socketsOf(kRoom) == std::vector<SocketId>{sid(2)});
  CHECK(edge.heldMessages(kRoom) == 1);
  CHECK(edge.heldBytesTotal() == 8);
  std::vector<Reattach> frames = edge.reattachFramesFor(kRoom, "host-d");
  REQUIRE(frames.size() == 1);
  CHECK(frames[0].socket == sid(2));
  REQUIRE(edge.applyReattachResult("host-d", ReattachResult{sid(2), true, ""}).isOk());
  CHECK(edge.takeHeld(kRoom) == std::vector<SocketMessage>{{sid(2), false, "from two"}});
  edge.closed(sid(2));
  CHECK(edge.size() == 0);
  CHECK(edge.socketsOf(kRoom).empty());
  CHECK(edge.socketsOwnedBy("host-d").empty());
  edge.closed(sid(2));  // twice: ignored
}

TEST_CASE("a closing socket is neither held for nor re-attached") {
  EdgeSockets edge;
  REQUIRE(edge.add(sid(1), kRoom, "host-b").isOk());
  REQUIRE(edge.add(sid(2), kRoom, "host-b").isOk());
  edge.markClosing(sid(1));
  CHECK(edge.hold(sid(1), false, "late") == HoldResult::kClosing);
  edge.ownerLost("host-b");
  CHECK(edge.find(sid(1))->state == EdgeSocketState::kClosing);
  CHECK(edge.hold(sid(1), false, "late") == HoldResult::kClosing);
  std::vector<Reattach> frames = edge.reattachFramesFor(kRoom, "host-c");
  REQUIRE(frames.size() == 1);
  CHECK(frames[0].socket == sid(2));
}

TEST_CASE("the edge answers a matching auto-response request itself") {
  EdgeSockets edge;
  REQUIRE(edge.add(sid(1), kRoom, "host-b").isOk());
  CHECK(!edge.autoRespond(sid(1), "ping", 1).has_value());  // no pair yet
  REQUIRE(edge.applyMeta("host-b", metaOf(sid(1), {}, std::nullopt, AutoResponse{"ping", "pong"})).isOk());
  CHECK(edge.autoRespond(sid(1), "ping", 5) == "pong");
  CHECK(edge.find(sid(1))->autoResponseAtMs == 5);
  CHECK(!edge.autoRespond(sid(1), "ping ", 6).has_value());  // exact match only
  CHECK(edge.find(sid(1))->autoResponseAtMs == 5);
  CHECK(!edge.autoRespond(sid(2), "ping", 7).has_value());
  edge.ownerLost("host-b");
  CHECK(edge.autoRespond(sid(1), "ping", 8) == "pong");  // without an owner too
  edge.markClosing(sid(1));
  CHECK(!edge.autoRespond(sid(1), "ping", 9).has_value());
}

}  // namespace
}  // namespace dohost::cluster
