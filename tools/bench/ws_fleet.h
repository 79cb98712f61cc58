// ClientFleet: many WebSocket client connections in one libwebsockets context, served by the
// calling thread. The scenarios drive it: open N connections, send from one of them, and get
// a callback with the arrival time of every message any of them receives.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bench_util.h"

struct lws;
struct lws_context;

namespace dohost::bench {

class ClientFleet;

// One client connection. Addresses are stable for the fleet's lifetime. A slot whose
// connection is over (`done`) can carry a new one (ClientFleet::restart).
struct ClientConn {
  ClientFleet* fleet = nullptr;
  size_t index = 0;
  lws* wsi = nullptr;
  bool established = false;
  bool ready = false;   // established and, when the server greets, the greeting arrived
  bool closed = false;
  bool failed = false;
  bool done = false;     // lws has destroyed the connection: the slot may be started again
  bool ended = false;    // onEnd was called for this connection
  int closeCode = 0;     // a close asked for with ClientFleet::closeConn, sent when writable
  uint64_t generation = 0;       // connections started on this slot so far
  std::string error;             // why the connection failed, as lws says it
  std::string rx;                // the message being assembled
  std::deque<std::string> out;   // messages waiting for the socket to be writable (with headroom)
};

// Which event loop a libwebsockets context of the bench runs on: lws' own poll() loop, whose
// every turn costs time in proportion to the number of open sockets, or libev on epoll
// (lws' libev event library with a loop the bench owns), whose turns cost by ready sockets.
enum class LoopKind { kPoll, kEpoll };

// A libev loop on epoll for a context of the bench: created before the context (pass it as
// the context's foreign loop with LWS_SERVER_OPTION_LIBEV), run one turn at a time, destroyed
// after the context.
void* newEpollLoop();
void runLoopOnce(void* loop);
void destroyEpollLoop(void* loop);

class ClientFleet {
 public:
  // Called for every complete message, with the time it was read.
  using MessageFn = std::function<void(ClientConn&, std::string_view, SteadyClock::time_point)>;
  // Called right before a queued message is written to the socket.
  using SentFn = std::function<void(ClientConn&, SteadyClock::time_point)>;

  explicit ClientFleet(LoopKind loop = defaultLoop());
  // The loop fleets get when none is named (--client-loop).
  static LoopKind& defaultLoop() {
    static LoopKind kind = LoopKind::kEpoll;
    return kind;
  }
  ~ClientFleet();
  ClientFleet(const ClientFleet&) = delete;
  ClientFleet& operator=(const ClientFleet&) = delete;

  bool open(std::string* error);

  // Opens `count` more connections to ws://127.0.0.1:port + path and serves the loop until
  // every one is ready (with `greeting`, ready means the server's first message arrived).
  // At most `parallel` handshakes are in flight at once.
  bool connect(int port, const std::string& path, size_t count, bool greeting,
               double timeoutSeconds, std::string* error, size_t parallel = 256);

  // Queues a text message on connection `i`; it is written when the socket is writable.
  void send(size_t i, std::string_view message);

  // Connections one at a time, without waiting (the soak's clients come and go): `start`
  // opens a connection on a new slot and returns its index; `restart` opens a new one on slot
  // `i`, whose connection must be done (false otherwise). onOpen and onEnd report them.
  size_t start(int port, const std::string& path);
  bool restart(size_t i, int port, const std::string& path);
  // Closes connection `i`: with a close frame carrying `code`, or, with code 0, by shutting
  // the TCP connection down without one (what a lost network looks like to the server).
  void closeConn(size_t i, int code);

  // Serves the loop once (waits for at most about 50 ms when nothing happens).
  void serviceOnce();
  // Serves the loop until `done()` or the timeout; false on timeout.
  bool serveUntil(const std::function<bool()>& done, double timeoutSeconds);

  size_t size() const { return conns_.size(); }
  ClientConn& conn(size_t i) { return *conns_[i]; }
  size_t closedCount() const { return closed_; }
  // Closes every connection at once (destroys the context).
  void close();

  MessageFn onMessage;
  SentFn onSent;
  // The connection is established; and, once per connection, it closed or failed.
  std::function<void(ClientConn&)> onOpen;
  std::function<void(ClientConn&)> onEnd;

  // lws entry point.
  int callback(lws* wsi, int reason, void* user, void* in, size_t len);

 private:
  void startOne(int port, const std::string& path);
  void connectSlot(ClientConn& c, int port, const std::string& path);
  void endConn(ClientConn& c);

  LoopKind loopKind_;
  void* loop_ = nullptr;  // the libev loop (kEpoll)
  lws_context* context_ = nullptr;
  std::vector<std::unique_ptr<ClientConn>> conns_;
  size_t established_ = 0;
  size_t ready_ = 0;
  size_t failed_ = 0;
  size_t closed_ = 0;
  bool greeting_ = false;
  std::string lastError_;
  struct Tick;
  std::unique_ptr<Tick> tick_;
};

}  // namespace dohost::bench
