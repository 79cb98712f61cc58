#include "ws_fleet.h"

#include <ev.h>
#include <libwebsockets.h>

#include <sys/socket.h>

#include <cstring>

namespace dohost::bench {

// A timer that fires every 50 ms so one turn of the loop returns even when no socket has
// anything: the loops that wait for a round need to look at their deadline. lws' own poll loop
// gets an lws timer; a libev loop gets a libev one, since lws only re-arms its timer in libev
// after a turn with some activity (an idle loop would sleep until lws' next timeout).
struct ClientFleet::Tick {
  lws_sorted_usec_list_t sul{};
  ev_timer evTimer{};
  ClientFleet* fleet = nullptr;
};

namespace {

constexpr lws_usec_t kTickUs = 50 * LWS_US_PER_MS;
constexpr double kTickSeconds = 0.05;

void onTick(lws_sorted_usec_list_t*) {}

void onEvTick(struct ev_loop*, ev_timer*, int) {}

int fleetCallback(lws* wsi, lws_callback_reasons reason, void* user, void* in, size_t len) {
  auto* conn = static_cast<ClientConn*>(user);
  if (conn == nullptr || conn->fleet == nullptr) return lws_callback_http_dummy(wsi, reason, user, in, len);
  return conn->fleet->callback(wsi, reason, user, in, len);
}

const lws_protocols kFleetProtocols[] = {
    {"bench-client", fleetCallback, 0, 4096, 0, nullptr, 0},
    {nullptr, nullptr, 0, 0, 0, nullptr, 0},
};

}  // namespace

void* newEpollLoop() { return ev_loop_new(EVBACKEND_EPOLL); }

void runLoopOnce(void* loop) { ev_run(static_cast<struct ev_loop*>(loop), EVRUN_ONCE); }

void destroyEpollLoop(void* loop) {
  if (loop != nullptr) ev_loop_destroy(static_cast<struct ev_loop*>(loop));
}

ClientFleet::ClientFleet(LoopKind loop) : loopKind_(loop), tick_(std::make_unique<Tick>()) {
  tick_->fleet = this;
}

ClientFleet::~ClientFleet() { close(); }

bool ClientFleet::open(std::string* error) {
  lws_set_log_level(LLL_ERR, nullptr);
  lws_context_creation_info info{};
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.protocols = kFleetProtocols;
  info.pt_serv_buf_size = 64 * 1024;
  info.timeout_secs = 60;
  void* loops[1] = {nullptr};
  if (loopKind_ == LoopKind::kEpoll) {
    loop_ = newEpollLoop();
    if (loop_ == nullptr) {
      *error = "cannot create an epoll loop";
      return false;
    }
    loops[0] = loop_;
    info.foreign_loops = loops;
    info.options |= LWS_SERVER_OPTION_LIBEV;
  }
  context_ = lws_create_context(&info);
  if (context_ == nullptr) {
    *error = "cannot create the client context";
    return false;
  }
  if (loop_ != nullptr) {
    ev_timer_init(&tick_->evTimer, onEvTick, kTickSeconds, kTickSeconds);
    ev_timer_start(static_cast<struct ev_loop*>(loop_), &tick_->evTimer);
  }
  return true;
}

void ClientFleet::close() {
  if (context_ == nullptr) return;
  lws_sul_cancel(&tick_->sul);
  if (loop_ != nullptr) ev_timer_stop(static_cast<struct ev_loop*>(loop_), &tick_->evTimer);
  lws_context_destroy(context_);
  context_ = nullptr;
  destroyEpollLoop(loop_);
  loop_ = nullptr;
}

void ClientFleet::startOne(int port, const std::string& path) {
  auto c = std::make_unique<ClientConn>();
  c->fleet = this;
  c->index = conns_.size();
  ClientConn* raw = c.get();
  conns_.push_back(std::move(c));
  connectSlot(*raw, port, path);
}

void ClientFleet::connectSlot(ClientConn& c, int port, const std::string& path) {
  ++c.generation;
  c.wsi = nullptr;
  c.established = c.ready = c.closed = c.failed = c.done = c.ended = false;
  c.closeCode = 0;
  c.error.clear();
  c.rx.clear();
  c.out.clear();
  lws_client_connect_info ci{};
  ci.context = context_;
  ci.address = "127.0.0.1";
  ci.port = port;
  ci.path = path.c_str();
  ci.host = "127.0.0.1";
  ci.origin = "127.0.0.1";
  ci.protocol = nullptr;
  ci.local_protocol_name = kFleetProtocols[0].name;
  ci.userdata = &c;
  ci.pwsi = &c.wsi;
  if (lws_client_connect_via_info(&ci) == nullptr) {
    // The connection is scrubbed already (lws may have reported the error on the way).
    if (!c.failed) {
      c.failed = true;
      ++failed_;
      lastError_ = "lws_client_connect_via_info failed";
    }
    c.wsi = nullptr;
    c.done = true;
    endConn(c);
  }
}

size_t ClientFleet::start(int port, const std::string& path) {
  startOne(port, path);
  return conns_.size() - 1;
}

bool ClientFleet::restart(size_t i, int port, const std::string& path) {
  ClientConn& c = *conns_[i];
  if (!c.done) return false;
  connectSlot(c, port, path);
  return true;
}

void ClientFleet::closeConn(size_t i, int code) {
  ClientConn& c = *conns_[i];
  if (c.wsi == nullptr || c.done) return;
  if (code == 0 || !c.established) {
    // No close frame: the server reads the end of the stream (or a handshake cut short).
    int fd = lws_get_socket_fd(c.wsi);
    if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
    return;
  }
  c.closeCode = code;
  lws_callback_on_writable(c.wsi);
}

void ClientFleet::endConn(ClientConn& c) {
  if (c.ended) return;
  c.ended = true;
  if (onEnd) onEnd(c);
}

bool ClientFleet::connect(int port, const std::string& path, size_t count, bool greeting,
                          double timeoutSeconds, std::string* error, size_t parallel) {
  greeting_ = greeting;
  size_t target = conns_.size() + count;
  size_t started = conns_.size();
  auto deadline = SteadyClock::now() + std::chrono::duration<double>(timeoutSeconds);
  while (ready_ < target) {
    while (started < target && (started - ready_ - failed_) < parallel) {
      startOne(port, path);
      ++started;
    }
    if (failed_ > 0) {
      *error = "connection failed: " + lastError_ + " (" + std::to_string(ready_) + " of " +
               std::to_string(target) + " connected)";
      return false;
    }
    if (SteadyClock::now() > deadline) {
      *error = "timed out connecting: " + std::to_string(ready_) + " of " + std::to_string(target) +
               " ready";
      return false;
    }
    serviceOnce();
  }
  return true;
}

void ClientFleet::send(size_t i, std::string_view message) {
  ClientConn& c = *conns_[i];
  std::string framed(LWS_PRE, '\0');
  framed.append(message);
  c.out.push_back(std::move(framed));
  if (c.out.size() == 1 && c.wsi != nullptr) lws_callback_on_writable(c.wsi);
}

void ClientFleet::serviceOnce() {
  if (loop_ != nullptr) {
    runLoopOnce(loop_);
  } else {
    lws_sul_schedule(context_, 0, &tick_->sul, onTick, kTickUs);
    lws_service(context_, 0);
  }
}

bool ClientFleet::serveUntil(const std::function<bool()>& done, double timeoutSeconds) {
  auto deadline = SteadyClock::now() + std::chrono::duration<double>(timeoutSeconds);
  while (!done()) {
    if (SteadyClock::now() > deadline) return false;
    serviceOnce();
  }
  return true;
}

int ClientFleet::callback(lws* wsi, int reason, void* user, void* in, size_t len) {
  auto* c = static_cast<ClientConn*>(user);
  switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
      c->wsi = wsi;
      c->established = true;
      ++established_;
      if (!greeting_) {
        c->ready = true;
        ++ready_;
      }
      if (!c->out.empty()) lws_callback_on_writable(wsi);
      if (onOpen) onOpen(*c);
      return 0;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
      if (!c->failed) {
        c->failed = true;
        ++failed_;
        lastError_ = in ? std::string(static_cast<const char*>(in), strnlen(static_cast<const char*>(in), 200))
                        : "connection error";
      }
      c->error = in ? std::string(static_cast<const char*>(in), strnlen(static_cast<const char*>(in), 200))
                    : "connection error";
      c->wsi = nullptr;
      endConn(*c);
      return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE: {
      if (lws_is_first_fragment(wsi)) c->rx.clear();
      c->rx.append(static_cast<const char*>(in), len);
      if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) > 0) return 0;
      auto now = SteadyClock::now();
      if (!c->ready) {
        c->ready = true;
        ++ready_;
        return 0;  // the greeting
      }
      if (onMessage) onMessage(*c, c->rx, now);
      return 0;
    }
    case LWS_CALLBACK_CLIENT_WRITEABLE: {
      if (c->closeCode != 0) {
        lws_close_reason(wsi, static_cast<lws_close_status>(c->closeCode), nullptr, 0);
        return -1;
      }
      if (c->out.empty()) return 0;
      std::string& m = c->out.front();
      size_t n = m.size() - LWS_PRE;
      if (onSent) onSent(*c, SteadyClock::now());
      auto* p = reinterpret_cast<unsigned char*>(m.data()) + LWS_PRE;
      if (lws_write(wsi, p, n, LWS_WRITE_TEXT) < static_cast<int>(n)) return -1;
      c->out.pop_front();
      if (!c->out.empty()) lws_callback_on_writable(wsi);
      return 0;
    }
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
      if (!c->closed && c->established) {
        c->closed = true;
        ++closed_;
      }
      c->wsi = nullptr;
      if (reason == LWS_CALLBACK_WSI_DESTROY) c->done = true;
      endConn(*c);
      return 0;
    default:
      return lws_callback_http_dummy(wsi, static_cast<lws_callback_reasons>(reason), user, in, len);
  }
}

}  // namespace dohost::bench
