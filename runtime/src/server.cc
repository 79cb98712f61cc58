#include "server.h"

#include <ev.h>
#include <libwebsockets.h>

#include <unistd.h>

#include <cstring>
#include <deque>

#include "admin.h"
#include "frame_queue.h"
#include "dohost/log.h"
#include "object_slot.h"
#include "utf8.h"

namespace dohost {

static_assert(LWS_PRE <= kFrameHeadroom, "frames need LWS_PRE bytes of headroom");

// One connection, HTTP or WebSocket (the same wsi carries both across an upgrade).
struct Conn final : detail::Transport {
  Server* server = nullptr;
  lws* wsi = nullptr;
  Listener* listener = nullptr;
  // HTTP
  Request request;
  std::string body;
  bool bodyTooLarge = false;
  std::shared_ptr<detail::PendingResponseState> pending;
  std::optional<Response> response;  // ready to write (deferred answers)
  // WebSocket
  std::shared_ptr<detail::SocketRecord> record;
  bool established = false;
  FrameQueue outbox;
  size_t queued = 0;
  std::string rx;
  bool rxBinary = false;
  bool closing = false;     // we decided to close; close frame goes after the outbox drains
  int closeCode = 1000;
  std::string closeReason;
  bool errorReported = false;  // the object got webSocketError; no close event follows
  std::optional<CloseInfo> peerClose;

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

  // One frame to lws; the header goes into the frame's headroom. What the kernel does not take
  // now lws keeps (lws_partial_buffered) and sends before anything else.
  bool writeFrame(Frame& frame) {
    auto* payload = reinterpret_cast<unsigned char*>(frame.bytes.data()) + kFrameHeadroom;
    int n = lws_write(wsi, payload, frame.size(), frame.binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
    return n >= static_cast<int>(frame.size());
  }

  // A protocol or resource error: close with `code` at once and tell the object (error event).
  void fail(int code, const std::string& reason) {
    outbox.clear();
    queued = 0;
    closing = true;
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
};

// The runtime's next deadline: a libev timer on our loop (an lws_sul when lws runs its own).
struct Server::TimerBox {
  lws_sorted_usec_list_t sul{};
  ev_timer timer{};
  Server* server = nullptr;
};

namespace {

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

const lws_protocols kProtocols[] = {
    {"dohost", trampoline, 0, 1024, 0, nullptr, 0},
    {nullptr, nullptr, 0, 0, 0, nullptr, 0},
};

std::string copyHeader(lws* wsi, lws_token_indexes token) {
  int n = lws_hdr_total_length(wsi, token);
  if (n <= 0) return {};
  std::string s(static_cast<size_t>(n) + 1, '\0');
  int got = lws_hdr_copy(wsi, s.data(), n + 1, token);
  s.resize(got > 0 ? static_cast<size_t>(got) : 0);
  return s;
}

const char* statusText(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

}  // namespace

Server::Server(const HostOptions& options, Runtime& runtime, const Registry& registry)
    : options_(options), runtime_(runtime), registry_(registry), timer_(std::make_unique<TimerBox>()) {
  timer_->server = this;
}

Server::~Server() {
  // The runtime outlives the server: from here on nothing re-arms our timer (what the closes
  // below schedule, Runtime::shutdown finishes).
  runtime_.setWakeHook(nullptr);
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
  for (lws* wsi : left) connectionGone(wsi);
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
  static lws_retry_bo_t retry{};
  retry.secs_since_valid_ping = static_cast<uint16_t>(options_.pingIntervalSeconds);
  retry.secs_since_valid_hangup =
      static_cast<uint16_t>(options_.pingIntervalSeconds + options_.pingTimeoutSeconds);

  auto add = [&](std::unique_ptr<Listener> l) -> bool {
    lws_context_creation_info v{};
    v.port = l->options.port;
    v.iface = l->options.host.c_str();
    v.protocols = kProtocols;
    v.vhost_name = l->appName.empty() ? "admin" : l->appName.c_str();
    v.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND | LWS_SERVER_OPTION_DISABLE_IPV6;
    if (options_.pingIntervalSeconds > 0) v.retry_and_idle_policy = &retry;
    v.keepalive_timeout = 5;
    v.timeout_secs = 30;
    if (!l->options.tlsCert.empty()) {
      v.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
      v.ssl_cert_filepath = l->options.tlsCert.c_str();
      v.ssl_private_key_filepath = l->options.tlsKey.c_str();
    }
    v.user = l.get();
    l->vhost = lws_create_vhost(context_, &v);
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
    } catch (const std::exception& e) {
      *error = "app " + app.name + ": " + e.what();  // a bad setting is bad configuration
      return false;
    }
    if (!add(std::move(l))) return false;
  }
  auto admin = std::make_unique<Listener>();
  admin->options = options_.admin;
  if (!add(std::move(admin))) return false;

  ev_init(&timer_->timer, [](struct ev_loop*, ev_timer* w, int) {
    // The ev_timer is a member of TimerBox; step back to the box.
    auto* box = reinterpret_cast<TimerBox*>(reinterpret_cast<char*>(w) - offsetof(TimerBox, timer));
    box->server->onTimer();
  });
  runtime_.setWakeHook([this] { armTimer(); });
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
  std::optional<TimePoint> next = runtime_.timers().next();
  if (!next) {
    if (loop_ != nullptr) ev_timer_stop(static_cast<struct ev_loop*>(loop_), &timer_->timer);
    lws_sul_cancel(&timer_->sul);
    return;
  }
  int64_t deltaMs = toUnixMillis(*next) - toUnixMillis(runtime_.clock().now());
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
// TimerQueue::runDue; this catches what is left (re-arming), so the loop carries on.
void Server::onTimer() noexcept {
  try {
    runtime_.runDue();
    armTimer();
  } catch (const std::exception& e) {
    logLine(LogLevel::kError, std::string("timer callback failed: ") + e.what());
  } catch (...) {
    logLine(LogLevel::kError, "timer callback failed: unknown exception");
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

void Server::beginShutdown() {
  stopping_ = true;
  // Stop accepting, then close every WebSocket with 1001 and let the close frames go out.
  for (auto& [wsi, c] : conns_) {
    if (c->record && c->established) c->close(1001, "server shutting down");
  }
  TimePoint deadline = SystemClock().now() + Duration(2000);
  while (SystemClock().now() < deadline) {
    bool anyWs = false;
    for (auto& [wsi, c] : conns_) anyWs = anyWs || (c->record != nullptr);
    if (!anyWs) break;
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
  auto c = std::make_unique<Conn>();
  c->server = this;
  c->wsi = wsi;
  c->listener = static_cast<Listener*>(lws_vhost_user(lws_get_vhost(wsi)));
  Conn& ref = *c;
  conns_[wsi] = std::move(c);
  return ref;
}

void Server::dropConn(lws* wsi) { conns_.erase(wsi); }

void Server::connectionGone(lws* wsi) {
  Conn* c = conn(wsi);
  if (c == nullptr) return;
  if (c->record) {
    onClosed(wsi, *c);
  } else {
    if (c->pending) c->pending->clientGone = true;
    dropConn(wsi);
  }
}

Request Server::readRequest(lws* wsi, Conn& c) {
  struct MethodToken {
    lws_token_indexes token;
    const char* name;
  };
  static const MethodToken kMethods[] = {
      {WSI_TOKEN_GET_URI, "GET"},         {WSI_TOKEN_POST_URI, "POST"},
      {WSI_TOKEN_OPTIONS_URI, "OPTIONS"}, {WSI_TOKEN_PUT_URI, "PUT"},
      {WSI_TOKEN_PATCH_URI, "PATCH"},     {WSI_TOKEN_DELETE_URI, "DELETE"},
      {WSI_TOKEN_HEAD_URI, "HEAD"},
  };
  std::string method = "GET", path = "/";
  for (const MethodToken& m : kMethods) {
    if (lws_hdr_total_length(wsi, m.token) > 0) {
      method = m.name;
      path = copyHeader(wsi, m.token);
      break;
    }
  }
  // lws hands the query over as decoded fragments; re-encode them into one query string.
  std::string query;
  char buf[8192];
  for (int i = 0;; ++i) {
    int n = lws_hdr_copy_fragment(wsi, buf, sizeof buf, WSI_TOKEN_HTTP_URI_ARGS, i);
    if (n < 0) break;
    appendQueryFragment(query, std::string_view(buf, static_cast<size_t>(n)));
  }
  Request::Headers headers;
  for (int t = 0; t < WSI_TOKEN_COUNT; ++t) {
    auto token = static_cast<lws_token_indexes>(t);
    bool isMethod = false;
    for (const MethodToken& m : kMethods) isMethod = isMethod || m.token == token;
    if (isMethod || token == WSI_TOKEN_HTTP_URI_ARGS) continue;
    if (lws_hdr_total_length(wsi, token) <= 0) continue;
    const char* name = reinterpret_cast<const char*>(lws_token_to_string(token));
    if (name == nullptr || name[0] == ':') continue;
    std::string n(name);
    if (!n.empty() && n.back() == ':') n.pop_back();
    headers.emplace_back(n, copyHeader(wsi, token));
  }
  Request request(method, path, query, std::move(headers), std::move(c.body));
  char peer[64] = {0};
  if (lws_get_peer_simple(wsi, peer, sizeof peer) != nullptr) request.setRemoteAddress(peer);
  return request;
}

int Server::writeResponse(lws* wsi, const Response& response, bool finishTransaction) {
  std::vector<unsigned char> head(LWS_PRE + 4096 + 64 * response.headers().size());
  unsigned char* start = head.data() + LWS_PRE;
  unsigned char* p = start;
  unsigned char* end = head.data() + head.size() - 1;
  std::string contentType = response.header("content-type").value_or("text/plain");
  if (lws_add_http_common_headers(wsi, static_cast<unsigned>(response.status()),
                                  contentType.c_str(), response.body().size(), &p, end)) {
    return -1;
  }
  for (const auto& [name, value] : response.headers()) {
    if (name == "content-type") continue;
    std::string n = name + ":";
    if (lws_add_http_header_by_name(wsi, reinterpret_cast<const unsigned char*>(n.c_str()),
                                    reinterpret_cast<const unsigned char*>(value.data()),
                                    static_cast<int>(value.size()), &p, end)) {
      return -1;
    }
  }
  if (lws_finalize_write_http_header(wsi, start, &p, end)) return -1;
  if (!response.body().empty()) {
    std::string body(LWS_PRE, '\0');
    body += response.body();
    auto* data = reinterpret_cast<unsigned char*>(body.data()) + LWS_PRE;
    if (lws_write(wsi, data, response.body().size(), LWS_WRITE_HTTP_FINAL) <
        static_cast<int>(response.body().size())) {
      return -1;
    }
  }
  if (finishTransaction && lws_http_transaction_completed(wsi)) return -1;
  return 0;
}

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

int Server::handleHttp(lws* wsi, Conn& c) {
  if (c.bodyTooLarge) {
    return writeResponse(wsi, Response::json(413, R"({"error":"request body too large"})"), true);
  }
  Request request = readRequest(wsi, c);
  Response response;
  if (c.listener->app == nullptr) {
    response = handleAdmin(runtime_, options_, request);
  } else {
    c.pending = std::make_shared<detail::PendingResponseState>();
    lws* w = wsi;
    Server* self = this;
    std::weak_ptr<detail::PendingResponseState> weak = c.pending;
    c.pending->deliver = [self, w, weak](Response r) {
      Conn* cc = self->conn(w);
      auto p = weak.lock();
      if (cc == nullptr || !p || cc->pending != p) return;
      cc->response = std::move(r);
      lws_callback_on_writable(w);
    };
    request.setPendingState(c.pending);
    Route route = routeRequest(*c.listener, request);
    if (route.answer) {
      response = std::move(*route.answer);
    } else {
      auto slot = runtime_.resolve(route.className, route.name, route.id);
      if (!slot.isOk()) {
        response = Response::json(slot.status().code() == Status::Code::kNotFound ? 404 : 400,
                                  jsonError(slot.status().message()));
      } else {
        response = runtime_.fetch(**slot, request);
      }
    }
    if (response.isDeferred()) {
      lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, 600);
      return 0;  // answered later through c.pending
    }
    c.pending->answered = true;
  }
  return writeResponse(wsi, response, true);
}

// Refuses an upgrade with `response`. During LWS_CALLBACK_HTTP_CONFIRM_UPGRADE lws has not
// settled the HTTP version yet (its helpers would write "HTTP/1.0"), so the answer is written
// whole: status line, headers and body in one buffer.
int Server::refuseUpgrade(lws* wsi, const Response& response) {
  std::string text = "HTTP/1.1 " + std::to_string(response.status()) + " " +
                     statusText(response.status()) + "\r\n";
  for (const auto& [name, value] : response.headers()) text += name + ": " + value + "\r\n";
  text += "content-length: " + std::to_string(response.body().size()) + "\r\n";
  text += "connection: close\r\n\r\n";
  text += response.body();
  std::string buf(LWS_PRE, '\0');
  buf += text;
  auto* data = reinterpret_cast<unsigned char*>(buf.data()) + LWS_PRE;
  if (lws_write(wsi, data, text.size(), LWS_WRITE_HTTP_HEADERS) < static_cast<int>(text.size())) {
    return -1;
  }
  return 1;
}

int Server::handleUpgrade(lws* wsi, Conn& c) {
  Request request = readRequest(wsi, c);
  if (c.listener->app == nullptr) {
    return refuseUpgrade(wsi, Response::json(400, R"({"error":"the admin API has no WebSockets"})"));
  }
  detail::UpgradeContext upgrade;
  request.setUpgradeContext(&upgrade);
  Route route = routeRequest(*c.listener, request);
  Response response;
  if (route.answer) {
    response = std::move(*route.answer);
  } else {
    auto slot = runtime_.resolve(route.className, route.name, route.id);
    if (!slot.isOk()) {
      response = Response::json(400, jsonError(slot.status().message()));
    } else {
      response = runtime_.fetch(**slot, request);
    }
  }
  if (response.status() == 101 && upgrade.accepted) {
    c.record = upgrade.accepted;
    return 0;  // lws completes the handshake; LWS_CALLBACK_ESTABLISHED follows
  }
  if (response.status() == 101) response = Response::json(500, R"({"error":"upgrade not accepted"})");
  return refuseUpgrade(wsi, response);
}

int Server::onEvent(lws* wsi, int reason, void* in, size_t len) {
  switch (reason) {
    case LWS_CALLBACK_HTTP: {
      Conn& c = newConn(wsi);
      if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0 ||
          lws_hdr_total_length(wsi, WSI_TOKEN_PUT_URI) > 0 ||
          lws_hdr_total_length(wsi, WSI_TOKEN_PATCH_URI) > 0) {
        if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 &&
            copyHeader(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) != "0") {
          return 0;  // the body follows: LWS_CALLBACK_HTTP_BODY / _COMPLETION
        }
      }
      return handleHttp(wsi, c);
    }
    case LWS_CALLBACK_HTTP_BODY: {
      Conn* c = conn(wsi);
      if (c == nullptr) return -1;
      if (c->body.size() + len > options_.maxRequestBodyBytes) {
        c->bodyTooLarge = true;
      } else {
        c->body.append(static_cast<const char*>(in), len);
      }
      return 0;
    }
    case LWS_CALLBACK_HTTP_BODY_COMPLETION: {
      Conn* c = conn(wsi);
      return c ? handleHttp(wsi, *c) : -1;
    }
    case LWS_CALLBACK_HTTP_WRITEABLE: {
      Conn* c = conn(wsi);
      if (c == nullptr || !c->response) return 0;
      Response r = std::move(*c->response);
      c->response.reset();
      c->pending.reset();
      return writeResponse(wsi, r, true);
    }
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP: {
      Conn* c = conn(wsi);
      if (c && !c->record) {
        if (c->pending) c->pending->clientGone = true;
        dropConn(wsi);
      }
      return 0;
    }
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
      if (in == nullptr || std::strcmp(static_cast<const char*>(in), "websocket") != 0) return -1;
      return handleUpgrade(wsi, newConn(wsi));  // never reuse state of an earlier request
    }
    case LWS_CALLBACK_ESTABLISHED: {
      Conn* c = conn(wsi);
      if (c == nullptr || !c->record) return -1;
      c->established = true;
      c->record->transport = c;
      for (FramePtr& f : c->record->early) c->send(f);
      c->record->early.clear();
      if (c->record->earlyClose) {
        c->close(c->record->earlyClose->first, c->record->earlyClose->second);
      } else if (c->record->state == detail::SocketState::kClosing) {
        c->close(1000, "");
      }
      if (!c->outbox.empty() || c->closing) lws_callback_on_writable(wsi);
      return 0;
    }
    case LWS_CALLBACK_RECEIVE: {
      Conn* c = conn(wsi);
      return c ? onReceive(wsi, *c, static_cast<const char*>(in), len) : -1;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE: {
      Conn* c = conn(wsi);
      return c ? onWritable(wsi, *c) : -1;
    }
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE: {
      Conn* c = conn(wsi);
      if (c == nullptr) return 0;
      CloseInfo info{1005, "", true};
      auto* b = static_cast<const unsigned char*>(in);
      if (len >= 2) {
        info.code = (b[0] << 8) | b[1];
        info.reason.assign(reinterpret_cast<const char*>(b) + 2, len - 2);
      }
      c->peerClose = info;
      return 0;  // lws answers the Close
    }
    case LWS_CALLBACK_CLOSED: {
      Conn* c = conn(wsi);
      if (c) onClosed(wsi, *c);
      return 0;
    }
    case LWS_CALLBACK_WSI_DESTROY:
      connectionGone(wsi);  // the last word on a connection, whatever path closed it
      return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
      return 0;
    default:
      return INT32_MIN;  // not ours: lws' default HTTP handling
  }
}

int Server::onReceive(lws* wsi, Conn& c, const char* data, size_t len) {
  if (c.closing) return 0;
  if (lws_is_first_fragment(wsi)) {
    c.rx.clear();
    c.rxBinary = lws_frame_is_binary(wsi);
  }
  if (c.rx.size() + len > options_.maxMessageBytes) {
    c.fail(1009, "message too big: the limit is " + std::to_string(options_.maxMessageBytes) + " bytes");
    c.rx.clear();
    c.rx.shrink_to_fit();
    return 0;
  }
  c.rx.append(data, len);
  if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) > 0) return 0;
  Message message{c.rxBinary, std::move(c.rx)};
  c.rx = std::string();
  if (!message.binary && !isValidUtf8(message.data)) {
    c.fail(1007, "text frame is not valid UTF-8");
    return 0;
  }
  runtime_.onMessage(c.record, std::move(message));
  return 0;
}

int Server::onWritable(lws* wsi, Conn& c) {
  // Several frames per callback while the kernel takes them; the rest on the next one.
  // lws_partial_buffered says, without a system call, that the kernel stopped taking bytes.
  for (int i = 0; i < 64 && !c.outbox.empty() && !lws_partial_buffered(wsi); ++i) {
    FramePtr frame = std::move(c.outbox.front());
    c.outbox.pop_front();
    c.queued -= frame->size();
    if (!c.writeFrame(*frame)) return -1;
  }
  if (!c.outbox.empty()) {
    lws_callback_on_writable(wsi);
    return 0;
  }
  if (c.closing) {
    lws_close_reason(wsi, static_cast<lws_close_status>(c.closeCode),
                     reinterpret_cast<unsigned char*>(c.closeReason.data()), c.closeReason.size());
    return -1;
  }
  return 0;
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
  dropConn(wsi);
  // After an error the object already has (or is about to get) its one webSocketError event.
  if (record && !errorReported) runtime_.onClose(record, std::move(info));
}

}  // namespace dohost
