// The object author's test kit: an in-process host for unit tests of object classes and apps.
//
// A TestHost is the real runtime (the same dispatch path, implicit transactions, output gate,
// hibernation, eviction, alarms and their retries) on real SQLite files in a temporary folder.
// Only two things are replaced: the network (requests and WebSockets are handed to the runtime
// in memory, with the checks the server makes: message size 1009, UTF-8 1007) and the clock
// (a manual clock that moves only when the test says so). Nothing here depends on a test
// framework; docs/testing.md shows it with doctest.
//
//   dohost::testing::TestHost host;
//   host.registry().addClass<Counter>("Counter");
//   dohost::Response r = host.fetch("Counter", "a", dohost::Request("POST", "/increment"));
//   auto ws = host.connect("Counter", "a");          // a TestSocket, or the refusal
//   ws.socket->send("hello");
//   std::optional<dohost::Message> m = ws.socket->receive();
//   host.advance(std::chrono::seconds(30));          // timers, idle eviction, alarms fall due
//
// Thread: one thread, the test's; nothing runs between calls.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dohost/http.h"
#include "dohost/registry.h"
#include "dohost/sql_value.h"
#include "dohost/status.h"
#include "dohost/time.h"
#include "dohost/websocket.h"

namespace dohost::testing {

struct TestHostOptions {
  // Where the objects' SQLite files go. Empty: a new temporary folder, removed with the host.
  std::string dataDir;
  // The clock's first reading.
  TimePoint start = fromUnixMillis(1'700'000'000'000);
  // The host's limits and timings (HostOptions and RuntimeOptions; the same defaults).
  Duration idleEvict = Duration(10'000);
  size_t maxMessageBytes = 1 << 20;
  size_t maxSocketsPerObject = 32768;
  size_t maxAttachmentBytes = 16 * 1024;
  Duration alarmRetryBase = Duration(2'000);
  int alarmMaxRetries = 6;
  // Given to every app's factory (the config file's [apps.NAME] settings: jwt_secret, ...).
  AppSettings appSettings;
};

class TestHost;

// The client end of one accepted WebSocket. Owned by its TestHost; valid until the host goes.
class TestSocket {
 public:
  // A text or binary message from the client, as the server hands it over (too big: the
  // connection fails with 1009; text that is not UTF-8: 1007). Then what fell due runs.
  // False if the socket is closed or closing.
  bool send(std::string_view text);
  bool sendBinary(std::string_view bytes);

  // The next message the object sent that has not been taken yet. If none is there, the clock
  // moves on, up to `within`, running what falls due, until one comes; nullopt if none did.
  std::optional<Message> receive(Duration within = Duration(0));
  // Every message not taken yet, oldest first.
  std::vector<Message> drain();
  size_t pending() const { return inbox_.size(); }

  // The client closes (the object's webSocketClose sees `code` and `reason`), or the
  // connection drops without a close frame (1006, wasClean false).
  void close(int code = 1000, std::string reason = "");
  void drop();

  bool isOpen() const { return !closeInfo_; }
  // How the connection ended, as the client saw it: the host's close code and reason (or
  // the client's own close, or 1006 for a drop). nullopt while open.
  const std::optional<CloseInfo>& closed() const { return closeInfo_; }

  // What the host keeps for the socket (the hibernation API's view).
  std::vector<std::string> tags() const;
  std::optional<std::string> attachment() const;  // serialized; nullopt if none was set

 private:
  friend class TestHost;
  struct Conn;
  TestSocket(TestHost& host, std::shared_ptr<Conn> conn);

  TestHost* host_;
  std::shared_ptr<Conn> conn_;
  std::deque<Message> inbox_;
  std::optional<CloseInfo> closeInfo_;
};

// What connect() gives: the socket, if the object accepted the upgrade, and the response.
struct Connection {
  TestSocket* socket = nullptr;  // null: refused, `response` says why
  Response response;
};

// A read-only view of an object's database as committed on disk (a separate SQLite
// connection, so it sees exactly what a restart would).
class StorageView {
 public:
  // A key of the object's key-value storage, or nullopt.
  std::optional<std::string> get(std::string_view key) const;
  // Every key-value pair, in key order.
  std::vector<std::pair<std::string, std::string>> list() const;
  // Any read-only SQL over the object's tables (including _do_kv and _do_meta).
  Result<SqlResult> query(std::string_view sql, const std::vector<SqlValue>& params = {}) const;
  // Whether the object has a database file at all.
  bool exists() const;
  const std::string& path() const { return path_; }

 private:
  friend class TestHost;
  explicit StorageView(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

class TestHost {
 public:
  explicit TestHost(TestHostOptions options = {});
  // Every open socket is dropped, the runtime shuts down (committing what is pending) and a
  // temporary data folder is removed.
  ~TestHost();
  TestHost(const TestHost&) = delete;
  TestHost& operator=(const TestHost&) = delete;

  // Register classes and apps here before the first event (as in a main).
  Registry& registry() { return registry_; }

  // --- time -----------------------------------------------------------------------------------
  TimePoint now() const;
  // Moves the clock by `d` in steps, running each timer when its time comes (idle eviction,
  // alarms and their retries, deferred work), as the event loop would.
  void advance(Duration d);
  // Runs what is due now without moving the clock.
  void runDue();

  // --- events ---------------------------------------------------------------------------------
  // An HTTP request to the object `name` (idFromName) of `className`. A deferred answer
  // (PendingResponse) is waited for: the clock moves up to 600 s (the server's bound), and a
  // request never answered gets 504. An unknown class is 404, as from a router.
  Response fetch(std::string_view className, std::string_view name, Request request);
  Response fetchById(std::string_view className, std::string_view id, Request request);
  // An HTTP request through the app's router (registered with Registry::addApp), exactly as
  // it would arrive on the app's listener. An unknown app: 404.
  Response request(std::string_view app, Request request);

  // A WebSocket upgrade to the object, or through an app's router. The request's method is
  // GET; the kit adds the upgrade headers if they are missing.
  Connection connect(std::string_view className, std::string_view name,
                     Request request = Request("GET", "/"));
  Connection connectApp(std::string_view app, Request request);

  // --- objects --------------------------------------------------------------------------------
  // Evicts the object now, as idle eviction would (its sockets stay open). False if it is not
  // live or is in an event.
  bool evict(std::string_view className, std::string_view name);
  // Runs the object's alarm now (as the admin API does). False if it has none.
  bool runAlarm(std::string_view className, std::string_view name);
  // When the object's alarm is set for (as the runtime schedules it), or nullopt.
  std::optional<TimePoint> alarm(std::string_view className, std::string_view name) const;
  // Whether the object has an instance in memory now.
  bool isLive(std::string_view className, std::string_view name) const;
  // The object's committed storage.
  StorageView storage(std::string_view className, std::string_view name) const;

  const std::string& dataDir() const;

 private:
  friend class TestSocket;
  struct Impl;
  Response dispatch(const Route& route, Request& request, bool upgrade);
  Response answer(Request& request, const Route& route);
  Connection upgrade(const Route& route, Request request);
  void settle();

  Registry registry_;
  std::unique_ptr<Impl> impl_;
  std::vector<std::unique_ptr<TestSocket>> sockets_;
};

}  // namespace dohost::testing
