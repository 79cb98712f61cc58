// Socket lifetimes at the worst moments: a close after shutdown, during and after an eviction.
#include "runtime/test_objects.h"

namespace dohost::testing {

TEST_CASE_FIXTURE(RuntimeFixture, "a socket open at shutdown is detached, so a late close finds no object") {
  auto socket = accept();
  CHECK(runtime->openSockets() == 1);
  runtime->shutdown();  // the slot is destroyed with the socket still open
  CHECK(socket->slot == nullptr);
  CHECK(socket->state == detail::SocketState::kClosed);
  CHECK(runtime->openSockets() == 0);
  // The server's close for it arrives afterwards: nothing to tell, nothing touched.
  runtime->onClose(socket, CloseInfo{1006, "", false});
  runtime->onError(socket, "late error");
  CHECK(journal.closeCodes.empty());
  WebSocket ws = detail::ApiAccess::webSocket(socket);
  CHECK(ws.send("after shutdown") == SendResult::kClosed);
}

TEST_CASE_FIXTURE(RuntimeFixture, "a close during an eviction's turn is delivered once, before or after it") {
  auto a = accept();
  auto b = accept();
  runtime->onClose(a, CloseInfo{1000, "bye", true});  // its commit is grouped, still pending
  CHECK(slot().flushPending());
  CHECK(runtime->evictNow(slot()));  // commits the close's event first, then evicts
  CHECK_FALSE(live());
  CHECK(journal.closeCodes == std::vector<int>{1000});
  CHECK(slot().countWebSockets({}) == 1);
  runtime->onClose(b, CloseInfo{1006, "", false});  // reaches the evicted object: it wakes
  CHECK(journal.closeCodes == std::vector<int>{1000, 1006});
  runtime->onClose(a, CloseInfo{1006, "", false});  // a second word on a closed socket: ignored
  CHECK(journal.closeCodes.size() == 2);
  advance(Duration(11'000));  // idle, no sockets: evicted and forgotten
  CHECK(runtime->findSlot("Counter", idFromName("Counter", "alpha")) == nullptr);
  CHECK(runtime->openSockets() == 0);
  CHECK(body("/get") == "2");  // both closes committed
}

TEST_CASE_FIXTURE(RuntimeFixture, "socket counts by tag follow every way a socket comes and goes") {
  ObjectSlot& s = slot();
  auto add = [&](std::vector<std::string> tags) {
    auto r = std::make_shared<detail::SocketRecord>();
    r->id = runtime->nextSocketId();
    r->tags = std::move(tags);
    s.addSocket(r);
    return r;
  };
  auto a = add({"room", "user:1"});
  auto b = add({"room", "room"});  // a tag given twice counts the socket once
  auto c = add({});
  auto agree = [&](std::string_view tag) { return s.countWebSockets(tag) == s.getWebSockets(tag).size(); };
  CHECK(s.countWebSockets({}) == 3);
  CHECK(s.countWebSockets("room") == 2);
  CHECK(s.countWebSockets("user:1") == 1);
  CHECK(s.countWebSockets("nobody") == 0);
  s.detachSocket(a->id);
  CHECK(s.countWebSockets("room") == 1);
  CHECK(s.countWebSockets("user:1") == 0);
  s.releaseSocket(b->id);  // moved to another object
  CHECK(s.countWebSockets("room") == 0);
  CHECK(s.countWebSockets({}) == 1);
  s.detachSocket(b->id);  // no longer here: nothing changes
  CHECK(s.countWebSockets({}) == 1);
  for (std::string_view tag : {"", "room", "user:1"}) CHECK(agree(tag));
  s.detachSocket(c->id);
  CHECK(s.countWebSockets({}) == 0);
}

}  // namespace dohost::testing
