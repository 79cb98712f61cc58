// The runtime under injected storage faults (the fault VFS under a real Runtime on real files):
// a failed grouped commit closes the sockets it would have told with 1011, an HTTP request
// that meets a fault gets 503, an alarm whose stored time cannot be read is kept and
// retried, and every other object carries on.
#include <filesystem>
#include <fstream>

#include "dohost/storage/fault_vfs.h"
#include "runtime/test_objects.h"

namespace dohost::testing {
namespace {

namespace faults = storage::faults;

// A room: each "inc" adds one to n in storage and broadcasts it. A newcomer hears n.
class Room final : public DurableObject {
 public:
  explicit Room(ObjectState& state) : state_(state) {
    state_.storage().sql().exec("CREATE TABLE IF NOT EXISTS filler(x BLOB)");
  }

  Response fetch(Request& request) override {
    WebSocket ws = state_.acceptWebSocket(request, {});
    ws.send("n=" + n());
    return Response::upgrade(ws);
  }

  void webSocketMessage(WebSocket ws, const Message& message) override {
    Storage& s = state_.storage();
    if (message.data == "inc") {
      s.put("n", std::to_string(std::stoll(n()) + 1));
      state_.broadcast("n=" + n());
    } else if (message.data == "fill") {  // pages a later read must fetch from disk
      for (int i = 0; i < 64; ++i) {
        s.sql().exec("INSERT INTO filler VALUES (?)", SqlValue(Blob{std::string(2000, 'f')}));
      }
      ws.send("filled");
    } else if (message.data == "peek") {  // a read whose failure the object handles itself
      try {
        SqlCursor c = s.sql().exec("SELECT count(*) FROM filler WHERE length(x) > 0");
        ws.send("rows=" + std::to_string(c.one().integer(0)));
      } catch (const StorageError& e) {
        ws.send(std::string("caught: ") + e.what());
      }
    } else if (message.data == "alarm") {
      try {
        s.setAlarm(state_.now() + Duration(60'000));
        ws.send("alarm set");
      } catch (const StorageError&) {
        ws.send("alarm refused");
      }
    }
  }

 private:
  std::string n() { return state_.storage().get("n").value_or("0"); }
  ObjectState& state_;
};

// The server side of a socket, as the runtime sees it: frames and the close it was asked for.
class RecordingTransport final : public detail::Transport {
 public:
  SendResult send(const FramePtr& frame) override {
    frames.emplace_back(frame->payload());
    return SendResult::kQueued;
  }
  void close(int code, const std::string& reason) override {
    if (closeCode == 0) {
      closeCode = code;
      closeReason = reason;
    }
  }
  size_t queuedBytes() const override { return 0; }

  std::vector<std::string> frames;
  int closeCode = 0;
  std::string closeReason;
};

struct Client {
  std::shared_ptr<detail::SocketRecord> record;
  std::unique_ptr<RecordingTransport> transport = std::make_unique<RecordingTransport>();
  std::string last() const { return transport->frames.empty() ? "" : transport->frames.back(); }
};

class FaultFixture : public RuntimeFixture {
 public:
  FaultFixture() {
    registry.addClass<Room>("Room");
    REQUIRE(faults::install().isOk());
  }
  ~FaultFixture() {
    for (Client& c : clients_) {
      if (c.record->transport == c.transport.get()) c.record->transport = nullptr;
    }
    faults::clear();
  }

  void arm(const std::string& spec) {
    auto rules = faults::parse(spec);
    REQUIRE_MESSAGE(rules.isOk(), rules.status().toString());
    faults::arm(std::move(rules).value());
  }
  int64_t failedCalls() {
    int64_t n = 0;
    for (const auto& r : faults::rules()) n += r.failed;
    return n;
  }

  static std::string roomId(const std::string& name) { return idFromName("Room", name); }
  ObjectSlot& room(const std::string& name) { return runtime->slot("Room", roomId(name), name); }

  // An upgrade to the room, bound to a recording transport the way the server binds its own.
  Client& connect(const std::string& name) {
    Request request("GET", "/" + name);
    detail::UpgradeContext upgrade;
    detail::ApiAccess::setUpgradeContext(request, &upgrade);
    Response response = runtime->fetch(room(name), request);
    REQUIRE(response.status() == 101);
    Client& c = clients_.emplace_back();
    c.record = upgrade.accepted;
    c.record->transport = c.transport.get();
    for (FramePtr& f : c.record->early) c.transport->send(f);
    c.record->early.clear();
    return c;
  }
  void say(Client& c, const std::string& text) { runtime->onMessage(c.record, Message{false, text}); }
  // The server finishing a close the runtime asked for.
  void finishClose(Client& c) {
    REQUIRE(c.transport->closeCode != 0);
    runtime->onClose(c.record, CloseInfo{c.transport->closeCode, c.transport->closeReason, true});
  }
  std::string stored(const std::string& name) {
    auto v = room(name).get("n");
    return v.value_or("0");
  }

  std::deque<Client> clients_;
};

TEST_CASE_FIXTURE(FaultFixture, "a failed grouped commit closes every socket it would have told with 1011") {
  Client& a = connect("lobby");
  Client& b = connect("lobby");
  Client& c = connect("lobby");
  Client& other = connect("elsewhere");
  say(a, "inc");
  advance(Duration(0));
  for (Client* x : {&a, &b, &c}) CHECK(x->last() == "n=1");

  // One loop turn: two messages to the lobby (their broadcasts held for one commit), one to
  // another object; the lobby's commit cannot write its log.
  arm("write,path=" + roomId("lobby"));
  say(a, "inc");
  say(b, "inc");
  say(other, "inc");
  advance(Duration(0));
  CHECK(failedCalls() >= 1);
  for (Client* x : {&a, &b, &c}) {
    CHECK(x->last() == "n=1");  // the held "n=2", "n=3" never left
    CHECK(x->transport->closeCode == 1011);
    CHECK(x->record->state != detail::SocketState::kOpen);
  }
  CHECK(other.last() == "n=1");  // the other object committed and carries on
  CHECK(other.transport->closeCode == 0);
  for (Client* x : {&a, &b, &c}) finishClose(*x);

  // The fault is gone: a reconnect sees the last committed state, and the room works.
  faults::clear();
  Client& again = connect("lobby");
  CHECK(again.last() == "n=1");
  say(again, "inc");
  advance(Duration(0));
  CHECK(again.last() == "n=2");
  CHECK(again.transport->closeCode == 0);
  say(other, "inc");
  advance(Duration(0));
  CHECK(other.last() == "n=2");
  restart();
  CHECK(stored("lobby") == "2");
  CHECK(stored("elsewhere") == "2");
}

TEST_CASE_FIXTURE(FaultFixture, "an fsync error fails the turn the same way; the state is whole afterwards") {
  Client& a = connect("synced");
  Client& b = connect("synced");
  say(a, "inc");
  advance(Duration(0));
  arm("sync,path=" + roomId("synced"));
  say(a, "inc");
  say(b, "inc");
  advance(Duration(0));
  for (Client* x : {&a, &b}) {
    CHECK(x->last() == "n=1");
    CHECK(x->transport->closeCode == 1011);
    finishClose(*x);
  }
  faults::clear();
  // Unlike a failed write, a failed fsync leaves the commit's bytes in the file, so the writes
  // nobody was told about may or may not be there (as after a crash right after a commit).
  // Either way the object is whole and goes on from what is stored.
  Client& again = connect("synced");
  std::string seen = again.last();
  CHECK((seen == "n=1" || seen == "n=3"));
  say(again, "inc");
  advance(Duration(0));
  CHECK(again.last() == (seen == "n=1" ? "n=2" : "n=4"));
  std::string n = stored("synced");
  restart();
  CHECK(stored("synced") == n);
}

TEST_CASE_FIXTURE(FaultFixture, "a disk that fills up fails the turn the same way; freeing space heals it") {
  Client& a = connect("big");
  Client& b = connect("big");
  arm("write,path=" + dir.path() + ",quota=0");
  say(a, "fill");
  advance(Duration(0));
  CHECK(a.transport->closeCode == 1011);
  CHECK(b.transport->closeCode != 1011);  // b would have heard nothing from that turn
  CHECK(b.transport->closeCode == 0);
  CHECK(a.last() == "n=0");
  finishClose(a);
  faults::clear();
  say(b, "inc");
  advance(Duration(0));
  CHECK(b.last() == "n=1");
}

TEST_CASE_FIXTURE(FaultFixture, "a read fault that rolls back the turn's transaction fails the turn, even when caught") {
  Client& a = connect("reader");
  Client& b = connect("reader");
  say(a, "fill");
  say(a, "inc");
  advance(Duration(0));
  CHECK(b.last() == "n=1");
  room("reader").closeDatabase();  // a cold cache: the next reads of filler go to the file

  say(a, "inc");  // writes n=2, broadcast held
  arm("read,path=" + roomId("reader"));
  say(b, "peek");  // the read fails; SQLite rolls the whole transaction back; the room catches it
  faults::clear();
  advance(Duration(0));
  // "n=2" was rolled back, so nobody may hear it, and nobody may believe it.
  CHECK(a.last() == "n=1");
  CHECK(b.last() == "n=1");
  CHECK(a.transport->closeCode == 1011);
  CHECK(b.transport->closeCode == 1011);
  CHECK(stored("reader") == "1");
}

TEST_CASE_FIXTURE(FaultFixture, "a caught fault that leaves the transaction intact keeps the object's answer") {
  Client& a = connect("alarmed");
  arm("write,path=alarms.sqlite");
  say(a, "inc");
  say(a, "alarm");  // the host's alarm index cannot be written: the room says so itself
  advance(Duration(0));
  CHECK(failedCalls() >= 1);
  CHECK(a.transport->closeCode == 0);
  REQUIRE(a.transport->frames.size() == 3);
  CHECK(a.transport->frames[1] == "n=1");
  CHECK(a.transport->frames[2] == "alarm refused");
  CHECK(stored("alarmed") == "1");
  // A refused alarm is not half set: the object's own alarm was not stored either.
  CHECK_FALSE(room("alarmed").getAlarm());
  CHECK_FALSE(runtime->scheduledAlarm("Room", roomId("alarmed")));
  faults::clear();
  say(a, "alarm");
  advance(Duration(0));
  CHECK(a.last() == "alarm set");
  CHECK(runtime->scheduledAlarm("Room", roomId("alarmed")));
}

TEST_CASE_FIXTURE(FaultFixture, "an HTTP request that meets a storage fault gets 503, and nothing committed is lost") {
  CHECK(body("/inc") == "1");
  arm("sync,path=" + idFromName("Counter", "alpha") + ",count=1");
  Response failed = fetch("/inc");
  CHECK(failed.status() == 503);
  CHECK(failed.body().find("storage") != std::string::npos);
  CHECK(body("/inc", "beta") == "1");  // another object is not affected
  CHECK(body("/get") == "1");
  CHECK(body("/inc") == "2");  // count=1: the fault is gone
  restart();
  CHECK(body("/get") == "2");
}

TEST_CASE_FIXTURE(FaultFixture, "a database file that is corrupt answers 503; the other objects carry on") {
  std::string id = idFromName("Counter", "broken");
  std::filesystem::create_directories(dir.path() + "/Counter");
  std::string path = dir.path() + "/Counter/" + id + ".sqlite";
  {
    std::ofstream garbage(path, std::ios::binary);
    garbage << std::string(8192, '\x5A');
  }
  restart();
  Response r = fetch("/inc", "broken");
  CHECK(r.status() == 503);
  CHECK(body("/inc", "fine") == "1");
  CHECK(std::filesystem::file_size(path) == 8192);  // left for the operator, not overwritten
  std::filesystem::remove(path);                   // the operator restores it (here: removes it)
  CHECK(body("/inc", "broken") == "1");
}

TEST_CASE_FIXTURE(FaultFixture, "an alarm whose stored time cannot be read is kept and fires later") {
  body("/alarm?ms=5000");
  REQUIRE(runtime->evictNow(slot()));
  slot().closeDatabase();
  arm("open,path=" + idFromName("Counter", "alpha") + ",count=1");
  advance(Duration(5'000));
  CHECK(failedCalls() == 1);  // the wake-up could not read the object's alarm
  CHECK(journal.alarms.empty());
  CHECK(runtime->scheduledAlarm("Counter", idFromName("Counter", "alpha")));
  advance(Duration(2'000));  // the first backoff step of failed alarms
  REQUIRE(journal.alarms.size() == 1);
  CHECK(journal.alarms[0].retryCount == 0);
  CHECK(body("/alarm/get") == "none");
}

TEST_CASE_FIXTURE(FaultFixture, "a failed commit that would have moved the alarm leaves the index on the kept time") {
  body("/alarm?ms=60000");
  arm("write,path=" + idFromName("Counter", "alpha"));
  CHECK(fetch("/alarm?ms=120000").status() == 503);  // the index was written, the commit failed
  faults::clear();
  restart();  // the host learns its alarms from the index
  advance(Duration(61'000));
  CHECK(journal.alarms.size() == 1);
}

TEST_CASE_FIXTURE(FaultFixture, "an alarm whose failure cannot be recorded stays scheduled") {
  journal.alarmFailuresLeft = 1000;
  body("/alarm?ms=1000");
  arm("write,path=" + idFromName("Counter", "alpha"));  // every commit of the object fails
  advance(Duration(1'000 + 2'000 + 4'000 + 8'000 + 16'000 + 32'000 + 64'000));
  CHECK(journal.alarms.size() == 7);  // the run and six retries; recording the failure failed
  CHECK(runtime->scheduledAlarm("Counter", idFromName("Counter", "alpha")));
  faults::clear();
  advance(Duration(64'000));
  CHECK(journal.alarms.size() == 8);  // tried again, failed again, and now recorded
  auto failure = slot().alarmFailure();
  REQUIRE(failure);
  CHECK(failure->retries == 6);
  CHECK_FALSE(runtime->scheduledAlarm("Counter", idFromName("Counter", "alpha")));
}

}  // namespace
}  // namespace dohost::testing
