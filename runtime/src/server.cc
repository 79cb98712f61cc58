#include "server.h"

#include <arpa/inet.h>
#include <ev.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "admin.h"
#include "cluster/relay.h"
#include "dohost/log.h"
#include "frame_queue.h"
#include "http_parser.h"
#include "object_slot.h"
#include "ws_protocol.h"

namespace dohost {

static_assert(ws::kMaxHeaderBytes <= kFrameHeadroom, "frames need room for their header");

namespace {

// Seconds a closing connection may still take: the peer's answer to our Close, or the rest of
// a request we refused while we read and drop it (so our answer is not lost to a TCP reset).
constexpr int kCloseWaitSeconds = 5;
constexpr int kLingerSeconds = 2;
// A request waiting for its object's deferred answer gets 503 after this long.
constexpr int kDeferredAnswerSeconds = 600;

}  // namespace

// One client connection. libwebsockets gives us its bytes (a raw socket: TCP, or TLS it has
// decrypted) and writes ours; the HTTP/1.1 requests on it and, after an upgrade, its WebSocket
// are read and answered here.
struct Conn final : cluster::EdgeClient, ws::FrameSink {
  Server* server = nullptr;
  lws* wsi = nullptr;
  Listener* listener = nullptr;
  bool closingTcp = false;  // once what is queued is written: FIN, then read until the peer's
  bool lingering = false;   // FIN sent: reading and dropping until the peer closes too
  std::optional<TimePoint> closeAt;  // the sweep closes the connection then (idle, lingering)

  // HTTP
  std::string in;  // request bytes not yet handled
  http::HeadReader headReader;
  std::optional<http::RequestHead> head;  // read; its body awaited
  std::optional<TimePoint> requestSince;  // the first byte of the request being read arrived
  std::shared_ptr<detail::PendingResponseState> pending;
  std::optional<Response> response;       // a deferred answer, ready to write
  std::optional<TimePoint> pendingSince;  // waiting for a deferred answer since
  bool keepAlive = true;
  bool headRequest = false;
  bool rxStopped = false;

  // WebSocket
  std::shared_ptr<detail::SocketRecord> record;
  cluster::SocketId relayed = 0;  // a socket of an object another host owns (no record here)
  bool established = false;
  std::unique_ptr<ws::FrameReader> reader;
  FrameQueue outbox;
  size_t queued = 0;
  std::optional<std::string> pong;  // the payload of the last ping not answered yet
  bool pingDue = false;
  bool pingOutstanding = false;
  TimePoint lastRx{};
  TimePoint pingSentAt{};
  bool closing = false;    // a Close goes out after the outbox drains
  bool failing = false;    // ... and then the TCP connection closes at once
  bool closeSent = false;
  int closeCode = 1000;
  std::string closeReason;
  bool errorReported = false;  // the object got webSocketError; no close event follows
  std::optional<CloseInfo> peerClose;

  // Cluster: the request waiting for its object's owner to be known (Server::parkForOwner).
  uint64_t serial = 0;  // tells this connection from a later one lws gives the same wsi
  struct Parked {
    Request request;
    ObjectRef object;
    bool upgrade = false;
    std::string accept;  // the upgrade's Sec-WebSocket-Accept
    std::unique_ptr<detail::UpgradeContext> upgradeContext;
    bool relayRetried = false;  // the owner said NotOwner once; the next one is a 503
  };
  std::unique_ptr<Parked> parked;

  explicit Conn(const http::Limits& limits) : headReader(limits) {}

  SendResult send(const FramePtr& frame) override {
    if (closing) return SendResult::kClosed;
    if (queued + frame->size() > server->options().maxQueuedBytesPerSocket) {
      fail(1008, "outbound queue full: the client does not keep up");
      return SendResult::kDropped;
    }
    // Nothing waiting and the kernel took everything so far: write now, as the loop would on
    // the next writable callback, without a loop turn per receiver.
    if (established && outbox.empty() && !lws_partial_buffered(wsi)) {
      if (writeFrame(*frame)) return SendResult::kQueued;
      fail(1011, "write failed");
      return SendResult::kClosed;
    }
    outbox.push_back(frame);
    queued += frame->size();
    if (established) lws_callback_on_writable(wsi);
    return SendResult::kQueued;
  }

  void close(int code, const std::string& reason) override {
    if (closing) return;
    closing = true;
    closeCode = code;
    closeReason = reason;
    if (established) lws_callback_on_writable(wsi);
  }

  size_t queuedBytes() const override { return queued; }

  // The object of this relayed socket is now served here (cluster::Relay::adoptHere).
  void adoptLocal(std::shared_ptr<detail::SocketRecord> r) override {
    relayed = 0;
    record = std::move(r);
    record->transport = this;
    if (closing) record->state = detail::SocketState::kClosing;
  }
  // The relay knows the socket now: what the client sent behind its handshake is read.
  void relayReady() override {
    std::string rest = std::move(in);
    in = std::string();
    if (!rest.empty()) server->feedWebSocket(*this, rest);
  }

  bool writeRaw(std::string_view bytes) {
    auto* p = reinterpret_cast<unsigned char*>(const_cast<char*>(bytes.data()));
    return lws_write(wsi, p, bytes.size(), LWS_WRITE_RAW) >= 0;
  }

  // One frame to lws; the header goes into the frame's headroom (the same bytes for every
  // socket the frame goes to). What the kernel does not take now lws keeps and sends first.
  bool writeFrame(Frame& frame) {
    unsigned char head[ws::kMaxHeaderBytes];
    size_t n = ws::writeHeader(head, frame.binary ? ws::kBinary : ws::kText, frame.size());
    char* start = frame.bytes.data() + kFrameHeadroom - n;
    std::memcpy(start, head, n);
    return writeRaw(std::string_view(start, n + frame.size()));
  }

  // A protocol or resource error: close with `code` at once and tell the object (error event).
  void fail(int code, const std::string& reason) {
    outbox.clear();
    queued = 0;
    closing = true;
    failing = true;
    closeCode = code;
    closeReason = reason;
    if (record) record->state = detail::SocketState::kClosing;
    if (record && !errorReported) {
      errorReported = true;
      auto r = record;
      Runtime& rt = server->runtime();
      rt.defer([&rt, r, reason] { rt.onError(r, reason); });
    }
    if (established) lws_callback_on_writable(wsi);
  }

  // ws::FrameSink: what the client's frames mean.
  void onMessage(bool binary, std::string data) override {
    if (closing) return;
    if (relayed != 0) {
      if (cluster::Relay* relay = server->relay()) relay->clientMessage(relayed, Message{binary, std::move(data)});
      return;
    }
    if (!record) return;
    server->runtime().onMessage(record, Message{binary, std::move(data)});
  }
  void onPing(std::string_view payload) override {
    pong = std::string(payload);  // only the latest ping needs its pong (RFC 6455 5.5.3)
    lws_callback_on_writable(wsi);
  }
  void onPong(std::string_view) override {}
  void onClose(int code, std::string_view reason) override {
    peerClose = CloseInfo{code, std::string(reason), true};
    if (closeSent) {
      closingTcp = true;  // the closing handshake is complete
    } else {
      // Answer with the same code; frames not yet written are dropped (the client is leaving).
      outbox.clear();
      queued = 0;
      closing = true;
      failing = true;
      closeCode = code;
      closeReason.clear();
      if (record) record->state = detail::SocketState::kClosing;
    }
    lws_callback_on_writable(wsi);
  }
};

// The runtime's next deadline and the connection sweep: a libev timer on our loop (an lws_sul
// when lws runs its own).
struct Server::TimerBox {
  lws_sorted_usec_list_t sul{};
  ev_timer timer{};
  Server* server = nullptr;
};

struct Server::SharedAcceptor {
  ev_io io{};
  int fd = -1;
  lws_vhost* vhost = nullptr;
  bool tls = false;
};

// The connections under the relay's links. A link's connection is found by its wsi; a dial's
// wsi is known once lws_client_connect_via_info returns (a failure reported from inside that
// call is noted in `dialFailed`).
struct Server::PeerLinks final : cluster::LinkIo {
  struct Wire {
    cluster::LinkId id = 0;
    lws* wsi = nullptr;
    bool established = false;
    bool closing = false;
    TimePoint closingSince{};
    std::string rx;  // the message being received
    std::string host;
  };
  Server* server = nullptr;
  lws_context* context = nullptr;
  lws_vhost* vhost = nullptr;
  std::map<cluster::LinkId, std::unique_ptr<Wire>> wires;
  std::unordered_map<lws*, Wire*> byWsi;
  bool inDial = false;
  bool dialFailed = false;
  std::string scratch;

  Wire* find(cluster::LinkId id) {
    auto it = wires.find(id);
    return it == wires.end() ? nullptr : it->second.get();
  }
  Wire* find(lws* wsi) {
    auto it = byWsi.find(wsi);
    return it == byWsi.end() ? nullptr : it->second;
  }

  bool dial(cluster::LinkId id, const std::string& peer) override {
    size_t colon = peer.rfind(':');
    if (colon == std::string::npos || vhost == nullptr) return false;
    auto w = std::make_unique<Wire>();
    w->id = id;
    w->host = peer.substr(0, colon);
    int port = std::atoi(peer.c_str() + colon + 1);
    lws_client_connect_info info{};
    info.context = context;
    info.vhost = vhost;
    info.address = w->host.c_str();
    info.port = port;
    info.path = "/";
    info.host = w->host.c_str();
    info.origin = w->host.c_str();
    info.protocol = "dohost-link";
    info.local_protocol_name = "dohost-link";  // kLinkProtocols
    inDial = true;
    dialFailed = false;
    lws* wsi = lws_client_connect_via_info(&info);
    inDial = false;
    if (wsi == nullptr || dialFailed) return false;
    w->wsi = wsi;
    byWsi[wsi] = w.get();
    wires[id] = std::move(w);
    return true;
  }

  void wantWrite(cluster::LinkId id) override {
    Wire* w = find(id);
    if (w != nullptr && w->established) lws_callback_on_writable(w->wsi);
  }

  void close(cluster::LinkId id) override {
    Wire* w = find(id);
    if (w == nullptr || w->closing) return;
    w->closing = true;
    w->closingSince = server->runtime().clock().now();
    if (w->established) lws_callback_on_writable(w->wsi);  // the write callback closes it
  }

  // lws is done with the connection: the relay hears of it once.
  void gone(lws* wsi, const std::string& why) {
    Wire* w = find(wsi);
    if (w == nullptr) {
      if (inDial) dialFailed = true;
      return;
    }
    cluster::LinkId id = w->id;
    byWsi.erase(wsi);
    wires.erase(id);
    if (server->relay()) server->relay()->linkGone(id, why);
  }

  // Connections asked to close that lws has not closed yet (a dial still connecting).
  void sweep(TimePoint now) {
    std::vector<lws*> late;
    for (auto& [id, w] : wires) {
      if (w->closing && now - w->closingSince >= Duration(1000)) late.push_back(w->wsi);
    }
    for (lws* wsi : late) lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
  }
};

namespace {

// A listening socket other processes may bind too (SO_REUSEPORT); -1 and `error` if not.
int sharedListenSocket(const std::string& host, int port, std::string* error) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host.c_str(), &addr.sin_addr) != 1) {
    *error = "not an IPv4 address: " + host;
    return -1;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::strerror(errno);
    return -1;
  }
  int on = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0 ||
      bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, SOMAXCONN) != 0) {
    *error = std::strerror(errno);
    close(fd);
    return -1;
  }
  return fd;
}

int trampoline(lws* wsi, lws_callback_reasons reason, void* user, void* in, size_t len) noexcept {
  lws_context* ctx = lws_get_context(wsi);
  auto* server = ctx ? static_cast<Server*>(lws_context_user(ctx)) : nullptr;
  if (server == nullptr) return lws_callback_http_dummy(wsi, reason, user, in, len);
  try {
    int r = server->onEvent(wsi, reason, in, len);
    if (r == INT32_MIN) return lws_callback_http_dummy(wsi, reason, user, in, len);
    return r;
  } catch (const std::exception& e) {
    logLine(LogLevel::kError, std::string("connection callback failed: ") + e.what());
    return -1;
  }
}

// rx_buffer_size 0: lws reads into its per-thread buffer (pt_serv_buf_size) and writes up to
// that much per system call; connections own no lws buffer of their own.
const lws_protocols kProtocols[] = {
    {"dohost", trampoline, 0, 0, 0, nullptr, 0},
    {nullptr, nullptr, 0, 0, 0, nullptr, 0},
};

// The inter-host links: WebSockets lws reads and writes itself (both roles), one link frame
// per message (cluster/link_protocol.h).
int linkTrampoline(lws* wsi, lws_callback_reasons reason, void* user, void* in, size_t len) noexcept {
  lws_context* ctx = lws_get_context(wsi);
  auto* server = ctx ? static_cast<Server*>(lws_context_user(ctx)) : nullptr;
  if (server == nullptr) return lws_callback_http_dummy(wsi, reason, user, in, len);
  try {
    int r = server->onLinkEvent(wsi, reason, in, len);
    if (r == INT32_MIN) return lws_callback_http_dummy(wsi, reason, user, in, len);
    return r;
  } catch (const std::exception& e) {
    logLine(LogLevel::kError, std::string("link callback failed: ") + e.what());
    return -1;
  }
}

constexpr const char* kLinkProtocol = "dohost-link";
const lws_protocols kLinkProtocols[] = {
    {kLinkProtocol, linkTrampoline, 0, 64 * 1024, 0, nullptr, 0},
    {nullptr, nullptr, 0, 0, 0, nullptr, 0},
};

// Header values an app sets must not end the header early.
std::string headerValue(std::string_view v) {
  std::string out(v);
  for (char& c : out) {
    if (c == '\r' || c == '\n' || c == '\0') c = ' ';
  }
  return out;
}

// A whole HTTP/1.1 response: status line, the response's headers, content-length, body.
std::string formatResponse(const Response& response, bool keepAlive, bool withBody) {
  std::string text = "HTTP/1.1 " + std::to_string(response.status()) + " " +
                     http::reasonPhrase(response.status()) + "\r\n";
  for (const auto& [name, value] : response.headers()) {
    if (name == "content-length" || name == "connection" || name == "transfer-encoding") continue;
    text += name + ": " + headerValue(value) + "\r\n";
  }
  text += "content-length: " + std::to_string(response.body().size()) + "\r\n";
  if (!keepAlive) text += "connection: close\r\n";
  text += "\r\n";
  if (withBody) text += response.body();
  return text;
}

}  // namespace

Server::Server(const HostOptions& options, Runtime& runtime, const Registry& registry)
    : options_(options), runtime_(runtime), registry_(registry), timer_(std::make_unique<TimerBox>()) {
  timer_->server = this;
  limits_.maxRequestLineBytes = options_.maxRequestLineBytes;
  limits_.maxHeaderBytes = options_.maxHeaderBytes;
  limits_.maxHeaderLines = options_.maxHeaderLines;
  limits_.maxBodyBytes = options_.maxRequestBodyBytes;
}

Server::~Server() {
  // The runtime outlives the server: from here on nothing re-arms our timer (what the closes
  // below schedule, Runtime::shutdown finishes).
  runtime_.setWakeHook(nullptr);
  runtime_.inbox().setWake(nullptr);  // no lws call from another thread from here on
  runtime_.setRelay(nullptr);
  destroying_ = true;
  closeSharedListeners();
  if (loop_ != nullptr) ev_timer_stop(static_cast<struct ev_loop*>(loop_), &timer_->timer);
  if (context_) {
    lws_sul_cancel(&timer_->sul);
    // Closes every connection still open (a client that stopped reading keeps its socket past
    // the drain); each close reaches its object through the callbacks, as any close does.
    lws_context_destroy(context_);
    context_ = nullptr;
  }
  // A connection lws did not report as closed is closed here the same way, so no socket keeps a
  // pointer to its connection and no pending answer to the server.
  std::vector<lws*> left;
  for (const auto& [wsi, c] : conns_) left.push_back(wsi);
  for (lws* wsi : left) {
    if (Conn* c = conn(wsi)) connectionGone(wsi, *c);
  }
  if (loop_ != nullptr) ev_loop_destroy(static_cast<struct ev_loop*>(loop_));
}

bool Server::start(std::string* error) {
  // lws' own messages duplicate ours (a failed bind becomes our one-line error); show them only
  // when debugging, through the structured log.
  lws_set_log_level(logEnabled(LogLevel::kDebug) ? (LLL_ERR | LLL_WARN) : 0,
                    [](int level, const char* line) {
                      std::string text(line);
                      while (!text.empty() && text.back() == '\n') text.pop_back();
                      logLine(LogLevel::kDebug, "libwebsockets: " + text);
                    });
  lws_context_creation_info info{};
  info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT |
                 LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
  info.user = this;
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.pt_serv_buf_size = 64 * 1024;
  info.fd_limit_per_thread = 0;
  // epoll through lws' libev event library, on a loop we own: a loop turn then costs what the
  // ready sockets cost, not every open (mostly hibernated) socket as poll() would.
  loop_ = ev_loop_new(EVBACKEND_EPOLL);
  void* loops[1] = {loop_};
  if (loop_ != nullptr) {
    info.foreign_loops = loops;
    info.options |= LWS_SERVER_OPTION_LIBEV;
  }
  context_ = lws_create_context(&info);
  if (context_ == nullptr) {
    *error = "cannot create the event loop";
    return false;
  }

  auto add = [&](std::unique_ptr<Listener> l) -> bool {
    lws_context_creation_info v{};
    v.port = l->options.port;
    v.iface = l->options.host.c_str();
    v.protocols = kProtocols;
    v.vhost_name = l->appName.empty() ? "admin" : l->appName.c_str();
    // Every accepted connection is a raw socket of our protocol (after TLS, if the listener
    // has it): HTTP and WebSocket are read and written by this file, not by lws.
    v.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND | LWS_SERVER_OPTION_DISABLE_IPV6 |
                LWS_SERVER_OPTION_ADOPT_APPLY_LISTEN_ACCEPT_CONFIG;
    // A cluster's hosts on one machine share the app ports (SO_REUSEPORT: the kernel spreads
    // connections over them), through listeners of our own below; the admin API stays one per
    // host.
    v.listen_accept_role = "raw-skt";
    v.listen_accept_protocol = "dohost";
    v.timeout_secs = 30;  // the TLS handshake
    if (!l->options.tlsCert.empty()) {
      v.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
      v.ssl_cert_filepath = l->options.tlsCert.c_str();
      v.ssl_private_key_filepath = l->options.tlsKey.c_str();
    }
    v.user = l.get();
    int sharedFd = -1;
    if (runtime_.ownership() != nullptr && !l->appName.empty() && loop_ != nullptr) {
      std::string why;
      sharedFd = sharedListenSocket(l->options.host, l->options.port, &why);
      if (sharedFd < 0) {
        *error = "cannot listen on " + l->options.host + ":" + std::to_string(l->options.port) +
                 " for app " + l->appName + " (" + why + ")";
        return false;
      }
      v.port = CONTEXT_PORT_NO_LISTEN_SERVER;  // lws keeps the TLS context; we accept
    }
    l->vhost = lws_create_vhost(context_, &v);
    if (sharedFd >= 0) {
      if (l->vhost == nullptr) {
        close(sharedFd);
      } else {
        auto acceptor = std::make_unique<SharedAcceptor>();
        acceptor->fd = sharedFd;
        acceptor->vhost = l->vhost;
        acceptor->tls = !l->options.tlsCert.empty();
        ev_io_init(&acceptor->io, [](struct ev_loop*, ev_io* w, int) {
          auto* a = reinterpret_cast<SharedAcceptor*>(reinterpret_cast<char*>(w) -
                                                      offsetof(SharedAcceptor, io));
          for (int i = 0; i < 64; ++i) {  // a burst per turn; the rest on the next one
            int c = accept4(a->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (c < 0) break;
            lws_sock_file_fd_type d;
            d.sockfd = c;
            int type = LWS_ADOPT_SOCKET | (a->tls ? LWS_ADOPT_ALLOW_SSL : 0);
            // On failure lws closes the descriptor itself.
            (void)lws_adopt_descriptor_vhost(a->vhost, static_cast<lws_adoption_type>(type), d,
                                             "dohost", nullptr);
          }
        }, sharedFd, EV_READ);
        ev_io_start(static_cast<struct ev_loop*>(loop_), &acceptor->io);
        shared_.push_back(std::move(acceptor));
      }
    }
    if (l->vhost == nullptr) {
      *error = "cannot listen on " + l->options.host + ":" + std::to_string(l->options.port) +
               " for " + (l->appName.empty() ? std::string("the admin API") : "app " + l->appName) +
               (l->options.tlsCert.empty() ? " (port in use or not allowed?)"
                                           : " (port in use, or a bad TLS certificate or key?)");
      return false;
    }
    listeners_.push_back(std::move(l));
    return true;
  };

  for (const AppInfo& app : registry_.apps()) {
    if (std::find(options_.appsOff.begin(), options_.appsOff.end(), app.name) !=
        options_.appsOff.end()) {
      continue;
    }
    auto l = std::make_unique<Listener>();
    l->appName = app.name;
    auto configured = options_.apps.find(app.name);
    if (configured != options_.apps.end()) l->options = configured->second;
    auto settings = options_.appSettings.find(app.name);
    try {
      l->app = app.factory(settings == options_.appSettings.end() ? AppSettings{} : settings->second);
      if (l->app) detail::ApiAccess::setAppClock(*l->app, runtime_.clock());
    } catch (const std::exception& e) {
      *error = "app " + app.name + ": " + e.what();  // a bad setting is bad configuration
      return false;
    }
    if (!add(std::move(l))) return false;
  }
  auto admin = std::make_unique<Listener>();
  admin->options = options_.admin;
  if (!add(std::move(admin))) return false;
  if (runtime_.ownership() != nullptr && !options_.peer.empty() && !startPeerListener(error)) {
    return false;
  }

  ev_init(&timer_->timer, [](struct ev_loop*, ev_timer* w, int) {
    // The ev_timer is a member of TimerBox; step back to the box.
    auto* box = reinterpret_cast<TimerBox*>(reinterpret_cast<char*>(w) - offsetof(TimerBox, timer));
    box->server->onTimer();
  });
  runtime_.setWakeHook([this] { armTimer(); });
  lws_context* ctx = context_;
  runtime_.inbox().setWake([ctx] { lws_cancel_service(ctx); });
  runtime_.inbox().drain();  // what was posted before the loop could be woken
  nextSweep_ = runtime_.clock().now() + Duration(1000);
  armTimer();
  for (const auto& l : listeners_) {
    logLine(LogLevel::kInfo, "listening on " + std::string(l->options.tlsCert.empty() ? "http://" : "https://") +
                                 l->options.host + ":" + std::to_string(l->options.port) + " (" +
                                 (l->appName.empty() ? "admin" : l->appName) + ")");
  }
  return true;
}

void Server::armTimer() {
  if (context_ == nullptr) return;
  TimePoint next = nextSweep_;
  if (std::optional<TimePoint> due = runtime_.timers().next(); due && *due < next) next = *due;
  int64_t deltaMs = toUnixMillis(next) - toUnixMillis(runtime_.clock().now());
  if (loop_ != nullptr) {
    auto* loop = static_cast<struct ev_loop*>(loop_);
    ev_timer_stop(loop, &timer_->timer);
    ev_timer_set(&timer_->timer, deltaMs <= 0 ? 0.0 : static_cast<double>(deltaMs) / 1000.0, 0.0);
    ev_timer_start(loop, &timer_->timer);
    return;
  }
  lws_usec_t us = deltaMs <= 0 ? 1 : static_cast<lws_usec_t>(deltaMs) * 1000;
  lws_sul_schedule(context_, 0, &timer_->sul,
                   [](lws_sorted_usec_list_t* sul) {
                     auto* box = reinterpret_cast<TimerBox*>(sul);
                     box->server->onTimer();
                   },
                   us);
}

// Called from libev or lws_sul (C): nothing may unwind out of it. Each timer is guarded in
// TimerQueue::runDue; this catches what is left (the sweep, re-arming), so the loop carries on.
void Server::onTimer() noexcept {
  try {
    runtime_.runDue();
    TimePoint now = runtime_.clock().now();
    if (now >= nextSweep_) {
      nextSweep_ = now + Duration(1000);
      sweep(now);
    }
    armTimer();
  } catch (const std::exception& e) {
    logLine(LogLevel::kError, std::string("timer callback failed: ") + e.what());
  } catch (...) {
    logLine(LogLevel::kError, "timer callback failed: unknown exception");
  }
}

// Once a second: keepalive pings and the hang-up of WebSockets that stopped answering, and the
// HTTP requests that take too long (408) or whose object never answered (503).
void Server::sweep(TimePoint now) {
  const auto interval = Duration(int64_t{options_.pingIntervalSeconds} * 1000);
  const auto timeout = Duration(int64_t{options_.pingTimeoutSeconds} * 1000);
  const auto requestTimeout = Duration(int64_t{options_.httpRequestTimeoutSeconds} * 1000);
  std::vector<lws*> late, gone;
  for (auto& [wsi, c] : conns_) {
    if (c->closeAt && now >= *c->closeAt) {
      gone.push_back(wsi);
      continue;
    }
    if (c->established) {
      if (options_.pingIntervalSeconds <= 0 || c->closing) continue;
      if (c->pingOutstanding) {
        if (now - c->pingSentAt >= timeout) gone.push_back(wsi);  // it stopped answering
      } else if (now - c->lastRx >= interval) {
        c->pingDue = true;
        c->pingOutstanding = true;
        c->pingSentAt = now;
        lws_callback_on_writable(wsi);
      }
      continue;
    }
    if (c->closingTcp || c->record || c->relayed) continue;
    if ((c->requestSince && now - *c->requestSince >= requestTimeout) ||
        (c->pendingSince && now - *c->pendingSince >= Duration(kDeferredAnswerSeconds * 1000))) {
      late.push_back(wsi);
    }
  }
  if (relay_) relay_->tick(now);
  if (peerLinks_) peerLinks_->sweep(now);
  // lws' own timeouts (lws_set_timeout) do not fire reliably on a foreign libev loop in 4.1:
  // the sweep closes connections itself. Closing calls back into connectionGone.
  for (lws* wsi : gone) {
    if (conn(wsi) != nullptr) lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
  }
  for (lws* wsi : late) {
    Conn* c = conn(wsi);
    if (c == nullptr) continue;
    c->parked.reset();  // a relayed answer arriving later finds nobody
    if (c->pending) {
      c->pending->clientGone = true;  // a late answer finds nobody
      c->pending.reset();
      c->pendingSince.reset();
      answerAndClose(*c, 503, "the object did not answer in time");
    } else {
      answerAndClose(*c, 408, "the request did not arrive in time");
    }
  }
}

void Server::requestStop() {
  stopRequested_ = true;
  if (context_) lws_cancel_service(context_);
}

bool Server::serviceOnce(bool wait) {
  if (loop_ != nullptr) {
    ev_run(static_cast<struct ev_loop*>(loop_), wait ? EVRUN_ONCE : EVRUN_NOWAIT);
    return true;
  }
  return lws_service(context_, wait ? 0 : -1) >= 0;
}

void Server::run() {
  while (!stopRequested_) {
    if (!serviceOnce(true)) break;
  }
  beginShutdown();
}

void Server::closeSharedListeners() {
  for (auto& a : shared_) {
    if (loop_ != nullptr) ev_io_stop(static_cast<struct ev_loop*>(loop_), &a->io);
    if (a->fd >= 0) close(a->fd);
    a->fd = -1;
  }
  shared_.clear();
}

void Server::hurry() {
  hurry_ = true;
  if (context_) lws_cancel_service(context_);
}

void Server::beginShutdown() {
  stopping_ = true;
  // Shared app ports: the kernel sends new connections to the other hosts from now on.
  closeSharedListeners();
  bool clustered = runtime_.ownership() != nullptr;
  auto isWebSocket = [](const Conn& c) { return (c.record || c.relayed) && c.established; };
  // Alone: close every WebSocket with 1001 at once. In a cluster, 1012 (service restart: the
  // object is served on by another host), spread over cluster_leave_spread.
  std::vector<std::pair<uint64_t, lws*>> order;  // by connection serial: oldest first
  if (clustered) {
    // Ownership goes first, so that the objects of clients that reconnect elsewhere can be
    // claimed at once. Relayed sockets of this host's objects stay open at their edges (they
    // hear Leaving and re-attach them to the next owners); then every event that ran commits
    // and the claims are released. From here on nothing runs here: what the clients still on
    // this host send to objects that were owned here is dropped unanswered until their close.
    if (relay_) relay_->leaving();
    if (handOver_) handOver_();
    for (auto& [wsi, c] : conns_) {
      if (isWebSocket(*c)) order.emplace_back(c->serial, wsi);
    }
    std::sort(order.begin(), order.end());
  } else {
    for (auto& [wsi, c] : conns_) {
      if (isWebSocket(*c)) c->close(1001, "server shutting down");
    }
  }
  SystemClock wall;
  TimePoint start = wall.now();
  Duration spread =
      clustered ? Duration(static_cast<int64_t>(options_.clusterLeaveSpreadSeconds * 1000))
                : Duration(0);
  if (clustered) {
    logLine(LogLevel::kInfo, "cluster: leaving: " + std::to_string(order.size()) +
                                 " WebSockets to close with 1012 over " +
                                 std::to_string(spread.count()) + " ms");
  }
  // The leave is bounded: the closes, then two seconds for them to go out.
  TimePoint deadline = start + spread + Duration(2000);
  bool hurried = false;
  size_t next = 0;
  while (true) {
    TimePoint now = wall.now();
    if (hurry_ && !hurried) {
      hurried = true;
      deadline = std::min(deadline, now + Duration(2000));
      if (next < order.size()) {
        logLine(LogLevel::kInfo, "cluster: leaving: asked again; the last " +
                                     std::to_string(order.size() - next) +
                                     " WebSockets are closed now");
      }
    }
    // Connection i's turn is start + spread * i / n: a batch per pass of this loop.
    while (next < order.size() &&
           (hurried || now >= start + spread * static_cast<int64_t>(next) /
                                          static_cast<int64_t>(order.size()))) {
      auto [serial, wsi] = order[next++];
      Conn* c = conn(wsi);
      if (c != nullptr && c->serial == serial && isWebSocket(*c)) {
        c->close(1012, "host leaving the cluster; reconnect");
      }
    }
    bool anyWs = false;
    for (auto& [wsi, c] : conns_) anyWs = anyWs || c->record != nullptr || c->relayed != 0;
    if (peerLinks_) {
      for (auto& [id, w] : peerLinks_->wires) anyWs = anyWs || relay_->linkQueuedBytes(id) > 0;
    }
    if (next == order.size() && !anyWs) break;
    if (now >= deadline) break;
    if (!serviceOnce(false)) break;
    usleep(2000);
  }
  runtime_.runDue();
}

Conn* Server::conn(lws* wsi) {
  auto it = conns_.find(wsi);
  return it == conns_.end() ? nullptr : it->second.get();
}

Conn& Server::newConn(lws* wsi) {
  auto c = std::make_unique<Conn>(limits_);
  c->server = this;
  c->wsi = wsi;
  c->listener = static_cast<Listener*>(lws_vhost_user(lws_get_vhost(wsi)));
  c->serial = ++lastConnSerial_;
  Conn& ref = *c;
  conns_[wsi] = std::move(c);
  return ref;
}

void Server::dropConn(lws* wsi) { conns_.erase(wsi); }

// ---------------------------------------------------------------------------------------------
// HTTP

// The app's router, which is the app's own code: what it throws is answered 500 and logged,
// and the connection and the host carry on.
Route Server::routeRequest(Listener& listener, Request& request) {
  try {
    return listener.app->route(request);
  } catch (const std::exception& e) {
    logLine(LogLevel::kError, "app " + listener.appName + ": the router failed on " +
                                  request.method() + " " + request.path() + ": " + e.what());
  } catch (...) {
    logLine(LogLevel::kError, "app " + listener.appName + ": the router failed on " +
                                  request.method() + " " + request.path());
  }
  return Route::respond(Response::json(500, R"({"error":"internal error in the router"})"));
}

// Writes an answer to the request just read; a connection that does not stay open closes
// once it is out.
void Server::writeHttpResponse(Conn& c, const Response& response) {
  if (!c.writeRaw(formatResponse(response, c.keepAlive, !c.headRequest))) {
    c.closingTcp = true;
  } else if (!c.keepAlive) {
    c.closingTcp = true;
  }
  if (c.closingTcp) lws_callback_on_writable(c.wsi);
}

// A request the server refuses before any app sees it: the answer, then the connection closes
// (the rest of what the client sends is read and dropped for a moment, so the answer is not
// lost to a reset).
void Server::answerAndClose(Conn& c, int status, std::string_view message) {
  c.keepAlive = false;
  c.head.reset();
  c.requestSince.reset();
  c.in.clear();
  Response r = Response::json(status, jsonError(message));
  if (status == 426) r.setHeader("sec-websocket-version", "13");
  writeHttpResponse(c, r);
}

// Handles what the buffer holds: request heads, bodies, and the next pipelined request, until
// it needs more bytes or an answer is outstanding.
void Server::processHttp(Conn& c) {
  while (!c.closingTcp && !c.established && !c.pending && !c.response && !c.parked) {
    if (lws_partial_buffered(c.wsi)) return;  // answers wait until the last one is out
    if (!c.head) {
      if (c.in.empty()) {
        c.requestSince.reset();
        break;
      }
      if (!c.requestSince) c.requestSince = runtime_.clock().now();
      http::RequestHead head;
      http::Outcome o = c.headReader.read(c.in, &head);
      if (o.kind == http::Outcome::kIncomplete) break;
      if (o.kind == http::Outcome::kError) {
        logLine(LogLevel::kDebug, "refused a request: " + std::to_string(o.status) + " " + o.message);
        answerAndClose(c, o.status, o.message);
        return;
      }
      c.in.erase(0, o.headBytes);
      c.headReader.reset();
      c.keepAlive = head.keepAlive;
      c.headRequest = head.method == "HEAD";
      if (head.webSocketUpgrade) {
        handleUpgrade(c, head);
        return;
      }
      if (head.expectContinue && c.in.size() < head.contentLength) {
        c.writeRaw("HTTP/1.1 100 Continue\r\n\r\n");
      }
      c.head = std::move(head);
    }
    if (c.in.size() < c.head->contentLength) break;
    auto length = static_cast<size_t>(c.head->contentLength);
    std::string body = c.in.substr(0, length);
    c.in.erase(0, length);
    http::RequestHead head = std::move(*c.head);
    c.head.reset();
    c.requestSince.reset();
    handleHttp(c, head, std::move(body));
  }
  // Between requests, an idle connection is closed after a while.
  if (!c.closingTcp && !c.established && c.in.empty() && !c.head && !c.pending && !c.response &&
      !c.parked) {
    c.closeAt = runtime_.clock().now() + Duration(int64_t{options_.httpIdleTimeoutSeconds} * 1000);
  }
  // Do not read without bound while an answer is outstanding (a pipelining client).
  bool full = c.in.size() > limits_.maxRequestLineBytes + limits_.maxHeaderBytes + limits_.maxBodyBytes;
  if (full != c.rxStopped) {
    c.rxStopped = full;
    lws_rx_flow_control(c.wsi, full ? 0 : 1);
  }
}

Request Server::makeRequest(lws* wsi, http::RequestHead& head, std::string body) {
  Request request(std::move(head.method), std::move(head.path), std::move(head.query),
                  std::move(head.headers), std::move(body));
  char peer[64] = {0};
  if (lws_get_peer_simple(wsi, peer, sizeof peer) != nullptr) detail::ApiAccess::setRemoteAddress(request, peer);
  return request;
}

void Server::handleHttp(Conn& c, http::RequestHead& head, std::string body) {
  Request request = makeRequest(c.wsi, head, std::move(body));
  Response response;
  if (c.listener->app == nullptr) {
    response = handleAdmin(runtime_, options_, request);
  } else {
    c.pending = std::make_shared<detail::PendingResponseState>();
    lws* w = c.wsi;
    Server* self = this;
    std::weak_ptr<detail::PendingResponseState> weak = c.pending;
    c.pending->deliver = [self, w, weak](Response r) {
      Conn* cc = self->conn(w);
      auto p = weak.lock();
      if (cc == nullptr || !p || cc->pending != p) return;
      cc->response = std::move(r);
      lws_callback_on_writable(w);
    };
    detail::ApiAccess::setPendingState(request, c.pending);
    Route route = routeRequest(*c.listener, request);
    if (route.answer) {
      response = std::move(*route.answer);
    } else if (runtime_.ownership() != nullptr && parkForOwner(c, request, route, false, {})) {
      return;  // answered once the owner is known
    } else {
      auto slot = runtime_.resolve(route.className, route.name, route.id);
      if (!slot.isOk()) {
        response = Response::json(slot.status().code() == Status::Code::kNotFound ? 404 : 400,
                                  jsonError(slot.status().message()));
      } else {
        response = runtime_.fetch(**slot, request);
      }
    }
    answerHttp(c, std::move(response));
    return;
  }
  writeHttpResponse(c, response);
}

void Server::answerHttp(Conn& c, Response response) {
  if (response.isDeferred()) {
    c.pendingSince = runtime_.clock().now();
    return;  // answered later through c.pending
  }
  c.pending->answered = true;
  c.pending.reset();
  writeHttpResponse(c, response);
}

namespace {

// The answer for an object that lives on another host when this one has no relay.
Response ownedElsewhere(const OwnerInfo& owner) {
  nlohmann::json body{{"error", "the object is served by another host of the cluster; "
                                "connect to that host"},
                      {"owner", owner.hostId}};
  if (!owner.peer.empty()) body["peer"] = owner.peer;
  return Response::json(503, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace))
      .setHeader("retry-after", "1");
}

Response clusterUnavailable(const Status& why) {
  return Response::json(503, jsonError("cluster unavailable: " + why.message()))
      .setHeader("retry-after", "1");
}

}  // namespace

bool Server::parkForOwner(Conn& c, Request& request, const Route& route, bool upgrade,
                          const std::string& accept) {
  Result<ObjectRef> ref = runtime_.objectRef(route.className, route.name, route.id);
  if (!ref.isOk() || runtime_.mayRun(ref->className, ref->id)) return false;
  auto parked = std::make_unique<Conn::Parked>();
  parked->object = *ref;
  parked->upgrade = upgrade;
  parked->accept = accept;
  if (upgrade) {
    parked->upgradeContext = std::make_unique<detail::UpgradeContext>();
  } else {
    c.pendingSince = runtime_.clock().now();  // the sweep's bound, behind the cluster's own
  }
  parked->request = std::move(request);
  if (upgrade) detail::ApiAccess::setUpgradeContext(parked->request, parked->upgradeContext.get());
  c.parked = std::move(parked);
  lws* wsi = c.wsi;
  uint64_t serial = c.serial;
  runtime_.acquire(ref->className, ref->id, [this, wsi, serial](Result<OwnerInfo> owner) {
    resumeParked(wsi, serial, std::move(owner));
  });
  return true;
}

void Server::resumeParked(lws* wsi, uint64_t serial, Result<OwnerInfo> owner) {
  Conn* c = conn(wsi);
  if (c == nullptr || c->serial != serial || !c->parked) return;  // the client left meanwhile
  std::unique_ptr<Conn::Parked> parked = std::move(c->parked);
  Response response;
  if (!owner.isOk()) {
    logLine(LogLevel::kWarn, "cluster: a request waited in vain: " + owner.status().message(),
            parked->object.className, parked->object.id);
    response = clusterUnavailable(owner.status());
  } else if (!owner->local && relay_) {
    c->parked = std::move(parked);
    relayParked(*c, *owner);
    return;
  } else if (!owner->local) {
    response = ownedElsewhere(*owner);
  } else {
    ObjectSlot& slot = runtime_.slot(parked->object.className, parked->object.id, parked->object.name);
    response = runtime_.fetch(slot, parked->request);
  }
  if (parked->upgrade) {
    finishUpgrade(*c, std::move(response), parked->accept, *parked->upgradeContext);
    return;
  }
  c->pendingSince.reset();
  answerHttp(*c, std::move(response));
  if (!c->pending && !c->response) processHttp(*c);  // requests pipelined behind it
}

// An upgrade request: the app's router and the object decide; 101 makes the connection a
// WebSocket, anything else is an HTTP answer and the connection closes.
void Server::handleUpgrade(Conn& c, http::RequestHead& head) {
  c.keepAlive = false;
  std::string accept;
  if (head.method != "GET" || head.minorVersion != 1) {
    return answerAndClose(c, 400, "a WebSocket upgrade is a GET over HTTP/1.1");
  }
  if (head.header("sec-websocket-version").value_or("") != "13") {
    return answerAndClose(c, 426, "only WebSocket version 13 is served");
  }
  accept = ws::acceptKey(head.header("sec-websocket-key").value_or(""));
  if (accept.empty()) return answerAndClose(c, 400, "Sec-WebSocket-Key must be the base64 of 16 bytes");
  if (c.listener->app == nullptr) return answerAndClose(c, 400, "the admin API has no WebSockets");

  Request request = makeRequest(c.wsi, head, {});
  detail::UpgradeContext upgrade;
  detail::ApiAccess::setUpgradeContext(request, &upgrade);
  Route route = routeRequest(*c.listener, request);
  Response response;
  if (route.answer) {
    response = std::move(*route.answer);
  } else if (runtime_.ownership() != nullptr && parkForOwner(c, request, route, true, accept)) {
    return;  // finished once the owner is known
  } else {
    auto slot = runtime_.resolve(route.className, route.name, route.id);
    if (!slot.isOk()) {
      response = Response::json(400, jsonError(slot.status().message()));
    } else {
      response = runtime_.fetch(**slot, request);
    }
  }
  detail::ApiAccess::setUpgradeContext(request, nullptr);
  finishUpgrade(c, std::move(response), accept, upgrade);
}

// 101 makes the connection a WebSocket, anything else is an HTTP answer and the connection
// closes.
void Server::finishUpgrade(Conn& c, Response response, const std::string& accept,
                           detail::UpgradeContext& upgrade) {
  if (response.status() != 101 || !upgrade.accepted) {
    if (response.status() == 101) response = Response::json(500, R"({"error":"upgrade not accepted"})");
    c.in.clear();
    writeHttpResponse(c, response);
    return;
  }
  c.writeRaw("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
             "sec-websocket-accept: " + accept + "\r\n\r\n");
  c.record = upgrade.accepted;
  c.requestSince.reset();
  c.established = true;
  c.lastRx = runtime_.clock().now();
  c.reader = std::make_unique<ws::FrameReader>(options_.maxMessageBytes);
  c.record->transport = &c;
  for (FramePtr& f : c.record->early) c.send(f);
  c.record->early.clear();
  if (c.record->earlyClose) {
    c.close(c.record->earlyClose->first, c.record->earlyClose->second);
  } else if (c.record->state == detail::SocketState::kClosing) {
    c.close(1000, "");
  }
  if (!c.outbox.empty() || c.closing) lws_callback_on_writable(c.wsi);
  // Frames the client sent right behind its handshake.
  std::string rest = std::move(c.in);
  c.in = std::string();
  if (!rest.empty()) onWebSocketBytes(c, rest);
}

// ---------------------------------------------------------------------------------------------
// WebSocket

void Server::onWebSocketBytes(Conn& c, std::string_view data) {
  c.lastRx = runtime_.clock().now();
  c.pingOutstanding = false;
  if (c.reader->failed() || (c.closing && c.failing)) return;  // failing: drop the rest
  if (!c.reader->feed(data, c)) c.fail(c.reader->errorCode(), c.reader->errorReason());
}

// Returns -1 when the connection is to be closed now.
int Server::onWritable(Conn& c) {
  if (!c.established) {
    if (c.response) {  // a deferred answer arrived
      Response r = std::move(*c.response);
      c.response.reset();
      c.pending.reset();
      c.pendingSince.reset();
      writeHttpResponse(c, r);
    }
    if (c.closingTcp) return finishTcp(c);
    processHttp(c);
    return 0;
  }
  if (c.closeSent) return c.closingTcp ? finishTcp(c) : 0;
  if (c.pong) {
    if (!c.writeRaw(ws::controlFrame(ws::kPong, *c.pong))) return -1;
    c.pong.reset();
  }
  if (c.pingDue && !c.closing) {
    if (!c.writeRaw(ws::controlFrame(ws::kPing, ""))) return -1;
    c.pingDue = false;
  }
  // Several frames per callback while the kernel takes them; the rest on the next one.
  // lws_partial_buffered says, without a system call, that the kernel stopped taking bytes.
  for (int i = 0; i < 64 && !c.outbox.empty() && !lws_partial_buffered(c.wsi); ++i) {
    FramePtr frame = std::move(c.outbox.front());
    c.outbox.pop_front();
    c.queued -= frame->size();
    if (!c.writeFrame(*frame)) return -1;
  }
  if (!c.outbox.empty()) {
    lws_callback_on_writable(c.wsi);
    return 0;
  }
  if (!c.closing || lws_partial_buffered(c.wsi)) {
    if (c.closing) lws_callback_on_writable(c.wsi);
    return 0;
  }
  // Codes that never go on the wire (1005, 1006, 1015) leave the Close without a payload.
  int code = ws::isValidCloseCode(c.closeCode) ? c.closeCode : ws::kNoStatusCode;
  if (!c.writeRaw(ws::controlFrame(ws::kClose, ws::closePayload(code, c.closeReason)))) return -1;
  c.closeSent = true;
  if (c.failing || c.peerClose) {
    c.closingTcp = true;  // the server closes the TCP connection first (RFC 6455 7.1.1)
    return finishTcp(c);
  }
  c.closeAt = runtime_.clock().now() + Duration(kCloseWaitSeconds * 1000);  // for the client's Close
  return 0;
}

// Ends a connection whose last bytes are queued: once lws has written them, FIN; then what the
// client still sends is read and dropped until it closes too, or for a moment.
int Server::finishTcp(Conn& c) {
  if (lws_partial_buffered(c.wsi)) {
    lws_callback_on_writable(c.wsi);
    return 0;
  }
  if (c.lingering) return 0;
  c.lingering = true;
  if (lws_is_ssl(c.wsi)) return -1;  // TLS records cannot be half closed here: close now
  shutdown(lws_get_socket_fd(c.wsi), SHUT_WR);
  if (c.rxStopped) lws_rx_flow_control(c.wsi, 1);
  c.closeAt = runtime_.clock().now() + Duration(kLingerSeconds * 1000);
  return 0;
}

int Server::onEvent(lws* wsi, int reason, void* in, size_t len) {
  switch (reason) {
    case LWS_CALLBACK_RAW_ADOPT:
      // A connection that sends nothing is closed like an idle kept-alive one.
      newConn(wsi).closeAt =
          runtime_.clock().now() + Duration(int64_t{options_.httpIdleTimeoutSeconds} * 1000);
      return 0;
    case LWS_CALLBACK_RAW_RX: {
      Conn* c = conn(wsi);
      if (c == nullptr) return -1;
      std::string_view data(static_cast<const char*>(in), len);
      if (c->lingering) return 0;
      if (c->established) {
        onWebSocketBytes(*c, data);
        return 0;
      }
      if (c->closingTcp) return 0;
      c->closeAt.reset();  // a request is coming: timed by requestSince from here on
      c->in.append(data);
      processHttp(*c);
      return 0;
    }
    case LWS_CALLBACK_RAW_WRITEABLE: {
      Conn* c = conn(wsi);
      return c ? onWritable(*c) : -1;
    }
    case LWS_CALLBACK_RAW_CLOSE: {
      if (Conn* c = conn(wsi)) connectionGone(wsi, *c);
      return 0;
    }
    case LWS_CALLBACK_WSI_DESTROY: {
      // The last word on a connection, whatever path closed it.
      if (Conn* c = conn(wsi)) connectionGone(wsi, *c);
      return 0;
    }
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
      // Another thread posted to the runtime's inbox (once per vhost: the rest find it empty).
      runtime_.inbox().drain();
      armTimer();
      return 0;
    default:
      return INT32_MIN;  // not ours: lws' default handling
  }
}

void Server::connectionGone(lws* wsi, Conn& c) {
  if (c.record || c.relayed) {
    onClosed(wsi, c);
    return;
  }
  if (c.pending) c.pending->clientGone = true;
  dropConn(wsi);
}

void Server::onClosed(lws* wsi, Conn& c) {
  std::shared_ptr<detail::SocketRecord> record = std::move(c.record);
  bool errorReported = c.errorReported;
  CloseInfo info;
  if (c.peerClose) {
    info = *c.peerClose;
  } else if (c.closing) {
    info = CloseInfo{c.closeCode, c.closeReason, true};
  } else {
    info = CloseInfo{1006, "WebSocket disconnected without sending Close frame.", false};
  }
  if (record) record->transport = nullptr;
  cluster::SocketId relayed = c.relayed;
  dropConn(wsi);
  if (relayed != 0 && relay_) relay_->clientClosed(relayed, info);
  // After an error the object already has (or is about to get) its one webSocketError event.
  if (record && !errorReported) runtime_.onClose(record, std::move(info));
}


// ---------------------------------------------------------------------------------------------
// Cluster: the relay

bool Server::startPeerListener(std::string* error) {
  size_t colon = options_.peer.rfind(':');
  std::string host = colon == std::string::npos ? options_.peer : options_.peer.substr(0, colon);
  int port = colon == std::string::npos ? 0 : std::atoi(options_.peer.c_str() + colon + 1);
  lws_context_creation_info v{};
  v.port = port;
  v.iface = host.c_str();
  v.protocols = kLinkProtocols;
  v.vhost_name = "peer";
  v.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND | LWS_SERVER_OPTION_DISABLE_IPV6;
  v.timeout_secs = 10;
  lws_vhost* vhost = lws_create_vhost(context_, &v);
  if (vhost == nullptr) {
    *error = "cannot listen on " + options_.peer + " for the inter-host link (--peer)";
    return false;
  }
  peerLinks_ = std::make_unique<PeerLinks>();
  peerLinks_->server = this;
  peerLinks_->context = context_;
  peerLinks_->vhost = vhost;
  cluster::RelayOptions ro;
  ro.clusterToken = options_.clusterToken;
  ro.limits.maxBodyBytes = std::max(options_.maxRequestBodyBytes, ro.limits.maxBodyBytes);
  ro.limits.maxPayloadBytes = std::max(options_.maxMessageBytes, ro.limits.maxPayloadBytes);
  ro.limits.maxAttachmentBytes = std::max(options_.maxAttachmentBytes, ro.limits.maxAttachmentBytes);
  ro.limits.maxFrameBytes = std::max(ro.limits.maxFrameBytes,
                                     2 * std::max(ro.limits.maxBodyBytes, ro.limits.maxPayloadBytes));
  relay_ = std::make_unique<cluster::Relay>(runtime_, *runtime_.ownership(), std::move(ro));
  relay_->setIo(peerLinks_.get());
  runtime_.setRelay(relay_.get());
  logLine(LogLevel::kInfo, "listening on ws://" + options_.peer + " (inter-host link)");
  return true;
}

int Server::onLinkEvent(lws* wsi, int reason, void* in, size_t len) {
  if (!peerLinks_ || !relay_) return onEvent(wsi, reason, in, len);
  PeerLinks& links = *peerLinks_;
  switch (reason) {
    case LWS_CALLBACK_ESTABLISHED: {
      auto w = std::make_unique<PeerLinks::Wire>();
      w->wsi = wsi;
      w->established = true;
      w->id = relay_->accepted();
      links.byWsi[wsi] = w.get();
      links.wires[w->id] = std::move(w);
      return 0;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED: {
      PeerLinks::Wire* w = links.find(wsi);
      if (w == nullptr) return -1;
      w->established = true;
      relay_->connected(w->id);
      lws_callback_on_writable(wsi);
      return 0;
    }
    case LWS_CALLBACK_RECEIVE:
    case LWS_CALLBACK_CLIENT_RECEIVE: {
      PeerLinks::Wire* w = links.find(wsi);
      if (w == nullptr || w->closing) return w == nullptr ? -1 : 0;
      w->rx.append(static_cast<const char*>(in), len);
      if (w->rx.size() > relay_->options().limits.maxFrameBytes) {
        logLine(LogLevel::kWarn, "relay: a link message passed " +
                                     std::to_string(relay_->options().limits.maxFrameBytes) +
                                     " bytes; the link is closed");
        return -1;
      }
      if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0) {
        std::string message = std::move(w->rx);
        w->rx = std::string();
        cluster::LinkId id = w->id;
        relay_->received(id, message);  // may close the link (and so forget `w`)
      }
      return 0;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE:
    case LWS_CALLBACK_CLIENT_WRITEABLE: {
      PeerLinks::Wire* w = links.find(wsi);
      if (w == nullptr || w->closing) return -1;
      if (lws_partial_buffered(wsi)) {
        lws_callback_on_writable(wsi);
        return 0;
      }
      std::string message;
      if (!relay_->nextOutgoing(w->id, &message)) return 0;
      links.scratch.resize(LWS_PRE + message.size());
      std::memcpy(links.scratch.data() + LWS_PRE, message.data(), message.size());
      auto* p = reinterpret_cast<unsigned char*>(links.scratch.data() + LWS_PRE);
      if (lws_write(wsi, p, message.size(), LWS_WRITE_BINARY) < 0) return -1;
      lws_callback_on_writable(wsi);  // the next frame, or nothing
      return 0;
    }
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
      links.gone(wsi, std::string("cannot connect: ") +
                          (in != nullptr ? std::string(static_cast<const char*>(in), strnlen(static_cast<const char*>(in), len ? len : 256)) : "error"));
      return 0;
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_CLIENT_CLOSED:
      links.gone(wsi, "connection closed");
      return 0;
    case LWS_CALLBACK_WSI_DESTROY:
      links.gone(wsi, "connection closed");
      return 0;
    default:
      return onEvent(wsi, reason, in, len);
  }
}

void Server::relayParked(Conn& c, const OwnerInfo& owner) {
  Conn::Parked& parked = *c.parked;
  lws* wsi = c.wsi;
  uint64_t serial = c.serial;
  relay_->forward(owner, parked.object, parked.request, parked.upgrade,
                  [this, wsi, serial](cluster::RelayOutcome o) -> cluster::EdgeClient* {
    Conn* c = destroying_ ? nullptr : conn(wsi);
    if (c == nullptr || c->serial != serial || !c->parked) return nullptr;  // the client left
    if (o.kind == cluster::RelayOutcome::Kind::kNotOwner) {
      if (!c->parked->relayRetried) {
        // The owner moved: look it up again (etcd), once; it may be this host now.
        c->parked->relayRetried = true;
        const ObjectRef& ref = c->parked->object;
        runtime_.acquire(ref.className, ref.id, [this, wsi, serial](Result<OwnerInfo> owner) {
          resumeParked(wsi, serial, std::move(owner));
        });
        return nullptr;
      }
      o.response = Response::json(503, jsonError("the object's owner moved; try again"))
                       .setHeader("retry-after", "1");
    }
    std::unique_ptr<Conn::Parked> parked = std::move(c->parked);
    if (parked->upgrade) {
      if (o.response.status() == 101 && o.socket != 0) {
        finishRelayedUpgrade(*c, parked->accept, o.socket);
        return c;
      }
      c->in.clear();
      writeHttpResponse(*c, o.response);
      return nullptr;
    }
    c->pendingSince.reset();
    answerHttp(*c, std::move(o.response));
    if (!c->pending && !c->response) {
      // Requests pipelined behind it, once this callback is over.
      runtime_.defer([this, wsi, serial] {
        Conn* cc = conn(wsi);
        if (cc != nullptr && cc->serial == serial && !cc->parked) processHttp(*cc);
      });
    }
    return nullptr;
  });
}

// The owner's object accepted the upgrade: 101 to the client, whose connection is now the
// edge's end of a relayed socket.
void Server::finishRelayedUpgrade(Conn& c, const std::string& accept, uint64_t socket) {
  c.writeRaw("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
             "sec-websocket-accept: " + accept + "\r\n\r\n");
  c.relayed = socket;
  c.requestSince.reset();
  c.established = true;
  c.lastRx = runtime_.clock().now();
  c.reader = std::make_unique<ws::FrameReader>(options_.maxMessageBytes);
  // Frames the client sent right behind its handshake wait for relayReady().
}

}  // namespace dohost
