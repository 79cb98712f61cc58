#include "cluster/relay.h"

#include <openssl/crypto.h>

#include <algorithm>

#include "object_slot.h"
#include "runtime.h"
#include "utf8.h"

namespace dohost::cluster {

namespace {

// Header values a peer's decode refuses (CR, LF, NUL) become spaces, as the server writes them.
std::string headerValue(std::string_view v) {
  std::string out(v);
  for (char& c : out) {
    if (c == '\r' || c == '\n' || c == '\0') c = ' ';
  }
  return out;
}

bool sameToken(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Response unavailable(const std::string& why) {
  return Response::json(503, R"({"error":")" + why + "\"}").setHeader("retry-after", "1");
}

// The answer the owner gave, as the server writes it.
Response toResponse(HttpResponse& r) {
  std::string contentType = "application/octet-stream";
  for (const auto& [name, value] : r.headers) {
    if (name == "content-type") contentType = value;
  }
  Response out(r.status, std::move(r.body), contentType);
  for (auto& [name, value] : r.headers) {
    if (name == "content-type" || name == "content-length" || name == "connection" ||
        name == "transfer-encoding") {
      continue;
    }
    out.setHeader(std::move(name), std::move(value));
  }
  return out;
}

}  // namespace

// --- SendCoalescer ---------------------------------------------------------------------------

std::optional<Send> SendCoalescer::add(SocketId socket, const FramePtr& frame) {
  std::optional<Send> ready;
  if (current_ && (current_->frame != frame || current_->sockets.size() >= max_)) {
    ready = std::move(current_);
    current_.reset();
  }
  if (!current_) current_ = Send{{}, frame};
  current_->sockets.push_back(socket);
  return ready;
}

std::optional<Send> SendCoalescer::take() {
  std::optional<Send> out = std::move(current_);
  current_.reset();
  return out;
}

// --- Owner-side sockets ------------------------------------------------------------------------

// The Transport of a socket an edge holds for an object of this host: what the object sends
// goes over the link.
class Relay::RelayTransport final : public detail::Transport {
 public:
  RelayTransport(Relay& relay, LinkId link, SocketId socket)
      : relay_(relay), link_(link), socket_(socket) {}
  SendResult send(const FramePtr& frame) override {
    if (closed_) return SendResult::kClosed;
    relay_.queueSend(link_, socket_, frame);
    return SendResult::kQueued;
  }
  void close(int code, const std::string& reason) override {
    if (closed_) return;
    closed_ = true;
    relay_.ownerClose(link_, socket_, code, reason);
  }
  size_t queuedBytes() const override { return relay_.linkQueuedBytes(link_); }
  void metaChanged() override { relay_.metaChanged(socket_); }

 private:
  Relay& relay_;
  LinkId link_;
  SocketId socket_;
  bool closed_ = false;
};

struct Relay::OwnedSocket {
  LinkId link = 0;
  SocketId id = 0;
  std::shared_ptr<detail::SocketRecord> record;
  std::unique_ptr<RelayTransport> transport;
};

// --- Relay ---------------------------------------------------------------------------------------

Relay::Relay(Runtime& runtime, Ownership& ownership, RelayOptions options)
    : runtime_(runtime), ownership_(ownership), options_(std::move(options)),
      edge_(options_.holdLimits) {}

Relay::~Relay() {
  // Records may outlive the relay (the runtime shuts down after the server): none keeps a
  // pointer to a transport of ours.
  for (auto& [id, o] : owned_) {
    if (o->record && o->record->transport == o->transport.get()) o->record->transport = nullptr;
  }
}

Relay::Link* Relay::link(LinkId id) {
  auto it = links_.find(id);
  return it == links_.end() ? nullptr : &it->second;
}

Relay::Link* Relay::linkTo(const std::string& hostId, const std::string& peerAddr) {
  if (auto it = byHost_.find(hostId); it != byHost_.end()) {
    Link* l = link(it->second);
    if (l != nullptr && l->state != LinkState::kClosed) return l;
    byHost_.erase(it);
  }
  if (peerAddr.empty() || io_ == nullptr || leaving_) return nullptr;
  LinkId id = ++lastLink_;
  Link& l = links_[id];
  l.id = id;
  l.dialed = true;
  l.state = LinkState::kDialing;
  l.peerId = hostId;
  l.peerAddr = peerAddr;
  l.since = runtime_.clock().now();
  l.lastRx = l.since;
  l.coalescer = SendCoalescer(options_.limits.maxSocketsPerSend);
  byHost_[hostId] = id;
  send(l, Hello{ownership_.selfId(), ownership_.incarnation(), kLinkProtocolVersion,
                options_.clusterToken});
  if (!io_->dial(id, peerAddr)) {
    closeLink(l, "cannot connect to " + peerAddr, LogLevel::kWarn);
    runtime_.defer([this, id] { linkGone(id, {}); });
    return nullptr;
  }
  return &l;
}

LinkId Relay::accepted() {
  LinkId id = ++lastLink_;
  Link& l = links_[id];
  l.id = id;
  l.state = LinkState::kAwaitHello;
  l.since = runtime_.clock().now();
  l.lastRx = l.since;
  l.coalescer = SendCoalescer(options_.limits.maxSocketsPerSend);
  return id;
}

void Relay::connected(LinkId id) {
  Link* l = link(id);
  if (l == nullptr || l->state != LinkState::kDialing) return;
  l->state = LinkState::kAwaitHello;  // HelloOk awaited
  if (io_ && !l->out.empty()) io_->wantWrite(id);
}

void Relay::send(Link& l, const LinkFrame& frame) {
  if (l.state == LinkState::kClosed) return;
  if (!std::holds_alternative<Send>(frame)) flushSends(l);
  // What the objects produce (texts, headers, tags) is checked here as the peer's decode
  // would check it: a frame it refuses would take the whole link down.
  if (const auto* s = std::get_if<Send>(&frame); s && !s->binary() && !isValidUtf8(s->payload())) {
    for (SocketId sid : s->sockets) {
      if (auto it = owned_.find(sid); it != owned_.end() && it->second->record) {
        it->second->record->state = detail::SocketState::kClosing;
        it->second->transport->close(1011, "a text message that is not UTF-8");
      }
    }
    return;
  }
  std::string bytes = encode(frame);
  if (std::holds_alternative<SocketMeta>(frame) || std::holds_alternative<HttpResponse>(frame)) {
    if (Result<LinkFrame> back = decode(bytes, options_.limits); !back.isOk()) {
      logLine(LogLevel::kWarn, "relay: a frame this host built cannot be relayed (" +
                                   back.status().message() + ")");
      if (!std::holds_alternative<HttpResponse>(frame)) return;
      HttpResponse instead;
      instead.stream = std::get<HttpResponse>(frame).stream;
      instead.status = 502;
      instead.headers = {{"content-type", "application/json"}};
      instead.body = R"({"error":"the object's answer cannot be relayed"})";
      bytes = encode(instead);
    }
  }
  ++frames_[0][static_cast<uint8_t>(kindOf(frame))];
  l.outBytes += bytes.size();
  l.out.push_back(std::move(bytes));
  if (l.outBytes > options_.maxLinkQueueBytes) {
    closeLink(l, "its send queue passed " + std::to_string(options_.maxLinkQueueBytes) +
                     " bytes (the peer does not keep up)", LogLevel::kWarn);
    return;
  }
  if (io_ && l.state != LinkState::kDialing) io_->wantWrite(l.id);
}

bool Relay::nextOutgoing(LinkId id, std::string* out) {
  Link* l = link(id);
  if (l == nullptr || l->out.empty()) return false;
  *out = std::move(l->out.front());
  l->out.pop_front();
  l->outBytes -= out->size();
  return true;
}

size_t Relay::linkQueuedBytes(LinkId id) const {
  auto it = links_.find(id);
  return it == links_.end() ? 0 : it->second.outBytes;
}

void Relay::flushSends(Link& l) {
  if (std::optional<Send> s = l.coalescer.take()) {
    LinkFrame frame = std::move(*s);
    send(l, frame);
  }
}

void Relay::scheduleFlush(Link& l) {
  if (l.flushScheduled) return;
  l.flushScheduled = true;
  LinkId id = l.id;
  runtime_.defer([this, id] {
    Link* l = link(id);
    if (l == nullptr) return;
    l->flushScheduled = false;
    flushSends(*l);
  });
}

void Relay::queueSend(LinkId id, SocketId socket, const FramePtr& frame) {
  Link* l = link(id);
  if (l == nullptr || l->state == LinkState::kClosed) return;
  if (frame->size() > options_.limits.maxPayloadBytes) {
    // A peer would refuse the frame (and drop the link): this socket goes instead.
    if (auto it = owned_.find(socket); it != owned_.end() && it->second->record) {
      it->second->record->state = detail::SocketState::kClosing;
      it->second->transport->close(1009, "message too big to relay");
    }
    return;
  }
  if (std::optional<Send> ready = l->coalescer.add(socket, frame)) {
    LinkFrame f = std::move(*ready);
    send(*l, f);
  }
  scheduleFlush(*l);
}

void Relay::ownerClose(LinkId id, SocketId socket, int code, const std::string& reason) {
  Link* l = link(id);
  if (l == nullptr) return;
  send(*l, Close{socket, code, reason.substr(0, options_.limits.maxCloseReasonBytes)});
}

void Relay::metaChanged(SocketId socket) {
  metaDirty_.insert(socket);
  if (metaFlushScheduled_) return;
  metaFlushScheduled_ = true;
  runtime_.defer([this] {
    metaFlushScheduled_ = false;
    std::set<SocketId> dirty = std::move(metaDirty_);
    metaDirty_.clear();
    for (SocketId sid : dirty) {
      auto it = owned_.find(sid);
      if (it == owned_.end()) continue;
      OwnedSocket& o = *it->second;
      Link* l = link(o.link);
      if (l == nullptr || !o.record || o.record->slot == nullptr) continue;
      SocketMeta meta;
      meta.socket = sid;
      meta.tags = o.record->tags;
      if (o.record->hasAttachment) meta.attachment = o.record->attachment;
      if (auto pair = o.record->slot->autoResponsePair()) {
        meta.autoResponse = AutoResponse{pair->first, pair->second};
      }
      send(*l, meta);
    }
  });
}

void Relay::closeLink(Link& l, const std::string& why, LogLevel level) {
  if (l.state == LinkState::kClosed) return;
  bool wasUp = l.state == LinkState::kUp;
  l.state = LinkState::kClosed;
  l.out.clear();
  l.outBytes = 0;
  (void)l.coalescer.take();
  // A dial that never came up (a dead host, tried again while its objects wait) is no news.
  if (!wasUp && level == LogLevel::kWarn && l.dialed) level = LogLevel::kInfo;
  logLine(level, "relay: link " + std::string(wasUp ? "down" : "closed") +
                     (l.peerId.empty() ? std::string() : " (host " + l.peerId + ")") + ": " + why);
  if (io_) io_->close(l.id);
  if (auto it = byHost_.find(l.peerId); it != byHost_.end() && it->second == l.id) {
    byHost_.erase(it);
  }
  // Edge: requests in flight are answered 503; none is sent again (it may have run).
  std::map<uint64_t, PendingRequest> requests = std::move(l.requests);
  l.requests.clear();
  for (auto& [stream, p] : requests) {
    RelayOutcome o;
    o.kind = RelayOutcome::Kind::kUnavailable;
    o.response = unavailable("the object's host cannot be reached; try again");
    p.done(std::move(o));
  }
  // Owner: the sockets the peer held are gone for the objects (1006).
  std::vector<SocketId> gone;
  for (const auto& [sid, o] : owned_) {
    if (o->link == l.id) gone.push_back(sid);
  }
  for (SocketId sid : gone) {
    auto it = owned_.find(sid);
    std::shared_ptr<detail::SocketRecord> record = it->second->record;
    record->transport = nullptr;
    owned_.erase(it);
    if (!leaving_) {
      // Deferred: the close may come from inside an object's send (a queue over its bound).
      runtime_.defer([this, record] {
        runtime_.onClose(record, CloseInfo{1006, "the link to the client's host went down", false});
      });
    }
  }
  // Edge: sockets of the peer's objects outlive it.
  if (!l.peerId.empty() && (wasUp || l.dialed)) ownerGone(l.peerId, why, !wasUp);
}

void Relay::linkGone(LinkId id, const std::string& why) {
  Link* l = link(id);
  if (l == nullptr) return;
  closeLink(*l, why.empty() ? "connection closed" : why, LogLevel::kWarn);
  links_.erase(id);
}

void Relay::tick(TimePoint now) {
  std::vector<LinkId> ids;
  for (const auto& [id, l] : links_) ids.push_back(id);
  for (LinkId id : ids) {
    Link* l = link(id);
    if (l == nullptr || l->state == LinkState::kClosed) continue;
    if (l->state != LinkState::kUp) {
      if (now - l->since >= options_.handshakeTimeout) {
        closeLink(*l, "no handshake within " +
                          std::to_string(options_.handshakeTimeout.count()) + " ms",
                  LogLevel::kWarn);
      }
      continue;
    }
    if (now - l->lastRx >= options_.pingInterval) {
      if (++l->missedPings >= options_.missedPingsForDown) {
        closeLink(*l, std::to_string(l->missedPings) + " pings unanswered", LogLevel::kWarn);
        continue;
      }
    }
    send(*l, Ping{nextNonce_++});
  }
}

void Relay::leaving() {
  leaving_ = true;
  for (auto& [id, l] : links_) {
    if (l.state == LinkState::kUp) send(l, Leaving{ownership_.selfId()});
  }
  // The edges keep their clients and re-attach them to the objects' next owners.
  for (auto& [sid, o] : owned_) {
    if (o->record && o->record->transport == o->transport.get()) o->record->transport = nullptr;
  }
  owned_.clear();
}

void Relay::letGo(const std::string& why) {
  size_t n = owned_.size();
  for (auto& [sid, o] : owned_) {
    if (!o->record) continue;
    if (o->record->transport == o->transport.get()) o->record->transport = nullptr;
    if (ObjectSlot* slot = o->record->slot) slot->detachSocket(o->record->id);
  }
  owned_.clear();
  for (auto& [id, l] : links_) {
    if (l.state == LinkState::kUp) send(l, Leaving{ownership_.selfId()});
  }
  logLine(LogLevel::kWarn, "relay: " + why + ": " + std::to_string(n) +
                               " relayed sockets are left to their edges, which re-attach them "
                               "to the objects' next owners");
}

// --- Receiving ------------------------------------------------------------------------------------

void Relay::received(LinkId id, std::string_view bytes) {
  Link* l = link(id);
  if (l == nullptr || l->state == LinkState::kClosed) return;
  Result<LinkFrame> frame = decode(bytes, options_.limits);
  if (!frame.isOk()) {
    closeLink(*l, "bad frame: " + frame.status().message(), LogLevel::kWarn);
    return;
  }
  ++frames_[1][static_cast<uint8_t>(kindOf(*frame))];
  l->lastRx = runtime_.clock().now();
  l->missedPings = 0;
  onFrame(*l, std::move(frame).value());
}

void Relay::onFrame(Link& l, LinkFrame frame) {
  if (l.refused) return;
  if (l.state != LinkState::kUp) {
    if (!l.dialed) {
      if (auto* hello = std::get_if<Hello>(&frame)) return onHello(l, *hello);
      return closeLink(l, std::string("expected Hello, got ") + kindName(kindOf(frame)),
                       LogLevel::kWarn);
    }
    if (auto* ok = std::get_if<HelloOk>(&frame)) {
      if (ok->hostId != l.peerId) {
        return closeLink(l, "dialed host " + l.peerId + " but " + ok->hostId + " answered",
                         LogLevel::kWarn);
      }
      l.peerIncarnation = ok->incarnation;
      l.state = LinkState::kUp;
      supersede(l);
      leftHosts_.erase(l.peerId);
      logLine(LogLevel::kInfo, "relay: link up (host " + l.peerId + ", dialed)");
      return;
    }
    if (auto* refused = std::get_if<Refused>(&frame)) {
      return closeLink(l, "refused by the peer: " + refused->reason, LogLevel::kWarn);
    }
    return closeLink(l, std::string("expected HelloOk, got ") + kindName(kindOf(frame)),
                     LogLevel::kWarn);
  }
  std::visit(
      [&](auto& f) {
        using T = std::decay_t<decltype(f)>;
        if constexpr (std::is_same_v<T, Hello> || std::is_same_v<T, HelloOk> ||
                      std::is_same_v<T, Refused>) {
          closeLink(l, std::string("unexpected ") + kindName(kindOf(frame)) + " on a link that is up",
                    LogLevel::kWarn);
        } else if constexpr (std::is_same_v<T, HttpRequest>) {
          onHttpRequest(l, std::move(f));
        } else if constexpr (std::is_same_v<T, HttpResponse>) {
          SocketId accepted = f.acceptedSocket;
          uint64_t stream = f.stream;
          RelayOutcome o;
          o.kind = RelayOutcome::Kind::kAnswered;
          o.response = toResponse(f);
          onAnswer(l, stream, std::move(o), accepted);
        } else if constexpr (std::is_same_v<T, NotOwner>) {
          RelayOutcome o;
          o.kind = RelayOutcome::Kind::kNotOwner;
          o.ownerHint = f.ownerHint;
          onAnswer(l, f.stream, std::move(o), 0);
        } else if constexpr (std::is_same_v<T, SocketMessage>) {
          onSocketMessage(l, std::move(f));
        } else if constexpr (std::is_same_v<T, Send>) {
          onSend(l, f);
        } else if constexpr (std::is_same_v<T, Close>) {
          onOwnerClose(l, f);
        } else if constexpr (std::is_same_v<T, SocketClosed>) {
          onSocketClosed(l, f);
        } else if constexpr (std::is_same_v<T, SocketMeta>) {
          onMeta(l, f);
        } else if constexpr (std::is_same_v<T, Reattach>) {
          onReattach(l, f);
        } else if constexpr (std::is_same_v<T, ReattachResult>) {
          onReattachResult(l, f);
        } else if constexpr (std::is_same_v<T, Ping>) {
          send(l, Pong{f.nonce});
        } else if constexpr (std::is_same_v<T, Pong>) {
          // lastRx is enough
        } else if constexpr (std::is_same_v<T, Leaving>) {
          logLine(LogLevel::kInfo, "relay: host " + l.peerId + " is leaving the cluster");
          leftHosts_.insert(l.peerId);
          ownerGone(l.peerId, "it is leaving the cluster", false);
        }
      },
      frame);
}

void Relay::onHello(Link& l, const Hello& hello) {
  auto refuse = [&](const std::string& why) {
    send(l, Refused{why});
    LinkId id = l.id;
    logLine(LogLevel::kWarn, "relay: refused a link from " +
                                 (hello.hostId.empty() ? std::string("?") : hello.hostId) + ": " +
                                 why);
    // The Refused goes out first; then the connection closes.
    runtime_.schedule(runtime_.clock().now() + Duration(200), [this, id] {
      if (Link* l = link(id)) closeLink(*l, "refused", LogLevel::kDebug);
    });
    l.refused = true;
  };
  if (!sameToken(hello.clusterToken, options_.clusterToken)) return refuse("bad cluster token");
  if (hello.hostId.empty() || hello.hostId == ownership_.selfId()) return refuse("bad host id");
  l.peerId = hello.hostId;
  l.peerIncarnation = hello.incarnation;
  l.state = LinkState::kUp;
  leftHosts_.erase(l.peerId);
  send(l, HelloOk{ownership_.selfId(), ownership_.incarnation()});
  supersede(l);
  if (Link* current = byHost_.count(l.peerId) ? link(byHost_[l.peerId]) : nullptr;
      current == nullptr || current->state == LinkState::kClosed) {
    byHost_[l.peerId] = l.id;
  }
  logLine(LogLevel::kInfo, "relay: link up (host " + l.peerId + ", accepted)");
}

// Links to an earlier life of the same host (it restarted or registered again) are dead even
// if their connection has not noticed yet.
void Relay::supersede(Link& l) {
  std::vector<LinkId> old;
  for (const auto& [id, other] : links_) {
    if (id != l.id && other.state == LinkState::kUp && other.peerId == l.peerId &&
        other.peerIncarnation != l.peerIncarnation) {
      old.push_back(id);
    }
  }
  for (LinkId id : old) {
    if (Link* o = link(id)) closeLink(*o, "the host registered again", LogLevel::kInfo);
  }
}

// --- Edge ----------------------------------------------------------------------------------------

std::optional<SocketId> Relay::nextSocketId() {
  if (!allocator_ || allocatorIncarnation_ != ownership_.incarnation()) {
    allocatorIncarnation_ = ownership_.incarnation();
    allocator_.emplace(allocatorIncarnation_);
  }
  return allocator_->next();
}

void Relay::forward(const OwnerInfo& owner, const ObjectRef& object, const Request& request,
                    bool upgrade, Done done) {
  auto refuse = [&](int status, const std::string& why) {
    RelayOutcome o;
    o.kind = RelayOutcome::Kind::kAnswered;
    o.response = Response::json(status, R"({"error":")" + why + "\"}");
    done(std::move(o));
  };
  // What a peer's decode would refuse is refused here, so no client can take a link down.
  const LinkLimits& lim = options_.limits;
  size_t headerBytes = 0;
  for (const auto& [n, v] : request.headers()) headerBytes += n.size() + v.size();
  if (request.headers().size() + 1 > lim.maxHeaders || headerBytes + 64 > lim.maxHeaderBytes ||
      request.path().size() > lim.maxFieldBytes || request.query().size() > lim.maxFieldBytes ||
      request.method().size() > lim.maxFieldBytes ||
      (object.name && object.name->size() > lim.maxHeaderBytes / 2)) {
    return refuse(431, "the request is too large to relay to the object's host");
  }
  if (request.body().size() > lim.maxBodyBytes) {
    return refuse(413, "the body is too large to relay to the object's host");
  }
  Link* l = linkTo(owner.hostId, owner.peer);
  if (l == nullptr) {
    RelayOutcome o;
    o.response = unavailable("the object's host cannot be reached; try again");
    done(std::move(o));
    return;
  }
  HttpRequest f;
  f.stream = l->nextStream++;
  f.className = object.className;
  f.objectId = object.id;
  f.method = request.method();
  f.path = request.path();
  f.query = request.query();
  for (const auto& [n, v] : request.headers()) {
    if (n != kObjectNameHeader) f.headers.emplace_back(n, headerValue(v));
  }
  if (object.name) f.headers.emplace_back(std::string(kObjectNameHeader), headerValue(*object.name));
  f.body = request.body();
  f.clientIp = request.remoteAddress().substr(0, lim.maxFieldBytes);
  f.isUpgrade = upgrade;
  PendingRequest p;
  p.done = std::move(done);
  p.object = ObjectKey{object.className, object.id};
  if (upgrade) {
    std::optional<SocketId> sid = nextSocketId();
    if (!sid) {
      RelayOutcome o;
      o.response = unavailable("this host ran out of socket ids; it must register again");
      p.done(std::move(o));
      return;
    }
    f.socket = *sid;
    p.socket = *sid;
  }
  l->requests.emplace(f.stream, std::move(p));
  send(*l, f);
}

void Relay::onAnswer(Link& l, uint64_t stream, RelayOutcome outcome, SocketId accepted) {
  auto it = l.requests.find(stream);
  if (it == l.requests.end()) {
    logLine(LogLevel::kWarn, "relay: host " + l.peerId + " answered stream " +
                                 std::to_string(stream) + ", which has no request (ignored)");
    return;
  }
  PendingRequest p = std::move(it->second);
  l.requests.erase(it);
  if (outcome.kind == RelayOutcome::Kind::kNotOwner) {
    ownership_.dropCached(p.object.className, p.object.objectId);
    p.done(std::move(outcome));
    return;
  }
  if (p.socket == 0 || outcome.response.status() != 101) {
    if (outcome.response.status() == 101) {
      outcome.response = Response::json(502, R"({"error":"the object's host accepted no upgrade"})");
    }
    p.done(std::move(outcome));
    return;
  }
  if (accepted != p.socket) {
    outcome.response = Response::json(502, R"({"error":"the object's host accepted another socket"})");
    p.done(std::move(outcome));
    return;
  }
  outcome.socket = accepted;
  EdgeClient* client = p.done(std::move(outcome));
  if (client == nullptr) {  // the client left during the handshake
    send(l, SocketClosed{accepted, 1006, "", false});
    return;
  }
  if (Status s = edge_.add(accepted, p.object, l.peerId); !s.isOk()) {
    logLine(LogLevel::kWarn, "relay: " + s.message());
    client->close(1011, "internal error");
    return;
  }
  clients_[accepted] = client;
  edgeLink_[accepted] = l.id;
  client->relayReady();
}

void Relay::clientMessage(SocketId socket, Message message) {
  const EdgeSocket* s = edge_.find(socket);
  auto c = clients_.find(socket);
  if (s == nullptr || c == clients_.end()) return;
  if (!message.binary) {
    if (std::optional<std::string> reply =
            edge_.autoRespond(socket, message.data, toUnixMillis(runtime_.clock().now()))) {
      ClassMetrics& m = runtime_.metrics(s->object.className);
      ++m.autoResponses;
      ++m.messagesOut;
      c->second->send(std::make_shared<Frame>(*reply, false));
      return;
    }
  }
  // Only to an owner that has taken the socket: one being re-attached may refuse it, and what
  // it was sent before its answer would be lost. Anything else is held, in order.
  if (s->owner && s->state == EdgeSocketState::kAttached) {
    auto e = edgeLink_.find(socket);
    Link* l = e == edgeLink_.end() ? nullptr : link(e->second);
    if (l != nullptr && l->state != LinkState::kClosed) {
      send(*l, SocketMessage{socket, message.binary, std::move(message.data)});
      return;
    }
  }
  switch (edge_.hold(socket, message.binary, std::move(message.data))) {
    case HoldResult::kOverLimit:
      logLine(LogLevel::kWarn, "relay: a client sent more than the hold allows while its object "
                               "has no owner; closed with 1013",
              s->object.className, s->object.objectId);
      closeEdgeSocket(socket, kHoldRefusedCloseCode, std::string(kHoldRefusedReason));
      break;
    default:
      break;
  }
}

void Relay::closeEdgeSocket(SocketId socket, int code, const std::string& reason) {
  const EdgeSocket* s = edge_.find(socket);
  if (s == nullptr) return;
  if (s->owner) {
    auto e = edgeLink_.find(socket);
    if (Link* l = e == edgeLink_.end() ? nullptr : link(e->second)) send(*l, Close{socket, code, reason});
  }
  edge_.markClosing(socket);
  if (auto c = clients_.find(socket); c != clients_.end()) c->second->close(code, reason);
}

void Relay::clientClosed(SocketId socket, const CloseInfo& info) {
  const EdgeSocket* s = edge_.find(socket);
  if (s != nullptr && s->owner) {
    auto e = edgeLink_.find(socket);
    if (Link* l = e == edgeLink_.end() ? nullptr : link(e->second)) {
      std::string reason = info.reason.size() <= options_.limits.maxCloseReasonBytes ? info.reason : "";
      send(*l, SocketClosed{socket, info.code, reason, info.wasClean});
    }
  }
  edge_.closed(socket);
  clients_.erase(socket);
  edgeLink_.erase(socket);
}

void Relay::onSend(Link& l, const Send& send) {
  // A Send's sockets are mostly of one object: the class's metrics are looked up once per run.
  const std::string* className = nullptr;
  ClassMetrics* metrics = nullptr;
  for (SocketId sid : send.sockets) {
    const EdgeSocket* s = edge_.find(sid);
    if (s == nullptr || s->owner != l.peerId) continue;
    auto c = clients_.find(sid);
    if (c == clients_.end()) continue;
    if (className == nullptr || *className != s->object.className) {
      className = &s->object.className;
      metrics = &runtime_.metrics(*className);
    }
    ++metrics->messagesOut;
    c->second->send(send.frame);
  }
}

void Relay::onOwnerClose(Link& l, const Close& close) {
  if (auto o = owned_.find(close.socket); o != owned_.end() && o->second->link == l.id) {
    // The edge closes the client on its own (1013); its SocketClosed follows.
    if (o->second->record) o->second->record->state = detail::SocketState::kClosing;
    return;
  }
  const EdgeSocket* s = edge_.find(close.socket);
  if (s == nullptr || s->owner != l.peerId) return;
  edge_.markClosing(close.socket);
  if (auto c = clients_.find(close.socket); c != clients_.end()) {
    c->second->close(close.code, close.reason);
  }
}

void Relay::onMeta(Link& l, const SocketMeta& meta) {
  (void)edge_.applyMeta(l.peerId, meta);  // a late or foreign frame changes nothing
}

void Relay::ownerGone(const std::string& host, const std::string& why, bool quiet) {
  std::vector<ObjectKey> objects = edge_.ownerLost(host);
  if (objects.empty()) return;
  size_t sockets = 0;
  for (const ObjectKey& o : objects) sockets += edge_.socketsOf(o).size();
  logLine(quiet ? LogLevel::kInfo : LogLevel::kWarn, "relay: host " + host + " is lost (" + why + "): " +
                               std::to_string(sockets) + " relayed sockets of " +
                               std::to_string(objects.size()) +
                               " objects stay open and wait for a new owner");
  for (const ObjectKey& o : objects) startRecovery(o, host);
}

void Relay::startRecovery(const ObjectKey& object, const std::string& lostHost) {
  auto [it, fresh] = recovering_.try_emplace(object);
  if (fresh) it->second.since = runtime_.clock().now();
  it->second.lostHost = lostHost;
  if (it->second.scheduled) return;
  it->second.scheduled = true;
  runtime_.schedule(runtime_.clock().now() + options_.recoveryRetry, [this, object] { recover(object); });
}

void Relay::recover(const ObjectKey& object) {
  auto it = recovering_.find(object);
  if (it == recovering_.end()) return;
  it->second.scheduled = false;
  std::vector<SocketId> waiting;
  for (SocketId sid : edge_.socketsOf(object)) {
    const EdgeSocket* s = edge_.find(sid);
    if (s != nullptr && s->state == EdgeSocketState::kOwnerless) waiting.push_back(sid);
  }
  if (waiting.empty()) {
    recovering_.erase(it);
    return;
  }
  if (runtime_.clock().now() - it->second.since >= options_.recoveryTimeout) {
    logLine(LogLevel::kWarn, "relay: no new owner for the object within " +
                                 std::to_string(options_.recoveryTimeout.count()) +
                                 " ms; its relayed sockets are closed with 1011",
            object.className, object.objectId);
    recovering_.erase(it);
    for (SocketId sid : waiting) closeEdgeSocket(sid, 1011, "the object has no host; reconnect");
    return;
  }
  ownership_.resolve(object.className, object.objectId, [this, object](Result<OwnerInfo> owner) {
    auto it = recovering_.find(object);
    if (it == recovering_.end()) return;
    auto retry = [&] {
      if (it->second.scheduled) return;
      it->second.scheduled = true;
      runtime_.schedule(runtime_.clock().now() + options_.recoveryRetry,
                        [this, object] { recover(object); });
    };
    if (!owner.isOk()) return retry();
    if (owner->local) {
      recovering_.erase(it);
      return adoptHere(object);
    }
    if (owner->hostId == it->second.lostHost && leftHosts_.count(owner->hostId)) {
      if (!it->second.leftToken) it->second.leftToken = owner->token;
      if (owner->token == *it->second.leftToken) return retry();  // its keys are not gone yet
    }
    Link* l = linkTo(owner->hostId, owner->peer);
    // Not before the link is up: held messages sent to a host that turns out dead are lost.
    if (l == nullptr || l->state != LinkState::kUp) return retry();
    std::vector<Reattach> frames = edge_.reattachFramesFor(object, owner->hostId);
    // The entry stays (with its start time) until every socket is attached again.
    if (frames.empty()) return;
    for (const Reattach& f : frames) {
      edgeLink_[f.socket] = l->id;
      send(*l, f);
    }
    logLine(LogLevel::kInfo, "relay: re-attaching " + std::to_string(frames.size()) +
                                 " sockets to host " + owner->hostId + " (" +
                                 std::to_string(edge_.heldMessages(object)) +
                                 " held messages follow once it takes them)",
            object.className, object.objectId);
  });
}

void Relay::adoptHere(const ObjectKey& object) {
  std::vector<Reattach> frames = edge_.reattachFramesFor(object, ownership_.selfId());
  std::vector<SocketMessage> held = edge_.takeHeld(object, EdgeSocketState::kReattaching);
  if (frames.empty()) return;
  ObjectSlot& slot = runtime_.slot(object.className, object.objectId, std::nullopt);
  std::unordered_map<SocketId, std::shared_ptr<detail::SocketRecord>> records;
  for (const Reattach& f : frames) {
    auto c = clients_.find(f.socket);
    if (c == clients_.end()) {
      edge_.closed(f.socket);
      continue;
    }
    auto record = std::make_shared<detail::SocketRecord>();
    record->id = runtime_.nextSocketId();
    record->tags = f.tags;
    record->hasAttachment = f.attachment.has_value();
    record->attachment = f.attachment.value_or("");
    if (f.autoResponseAtMs) record->autoResponseAt = fromUnixMillis(*f.autoResponseAtMs);
    slot.addSocket(record);
    c->second->adoptLocal(record);
    records[f.socket] = record;
    if (f.autoResponse && !slot.autoResponsePair()) {
      slot.setWebSocketAutoResponse(f.autoResponse->request, f.autoResponse->response);
    }
    clients_.erase(c);
    edgeLink_.erase(f.socket);
    edge_.closed(f.socket);
  }
  logLine(LogLevel::kInfo, "relay: this host owns the object now; " +
                               std::to_string(records.size()) +
                               " relayed sockets adopted as its hibernated sockets (" +
                               std::to_string(held.size()) + " held messages follow)",
          object.className, object.objectId);
  for (SocketMessage& m : held) {
    auto r = records.find(m.socket);
    if (r != records.end()) runtime_.onMessage(r->second, Message{m.binary, std::move(m.payload)});
  }
}

void Relay::onReattachResult(Link& l, const ReattachResult& result) {
  if (Status s = edge_.applyReattachResult(l.peerId, result); !s.isOk()) {
    logLine(LogLevel::kDebug, "relay: ReattachResult ignored: " + s.message());
    return;
  }
  const EdgeSocket* s = edge_.find(result.socket);
  if (result.ok) {
    if (s == nullptr) return;
    sendHeld(s->object);
    bool settled = true;
    for (SocketId sid : edge_.socketsOf(s->object)) {
      const EdgeSocket* o = edge_.find(sid);
      settled = settled && o != nullptr && o->state != EdgeSocketState::kOwnerless &&
                o->state != EdgeSocketState::kReattaching;
    }
    if (settled) recovering_.erase(s->object);
    return;
  }
  if (s == nullptr) return;
  logLine(LogLevel::kWarn, "relay: host " + l.peerId + " refused to re-attach a socket: " +
                               result.reason,
          s->object.className, s->object.objectId);
  // The host was taken for the owner from a cached entry that may be stale: ask etcd next.
  ownership_.dropCached(s->object.className, s->object.objectId);
  if (s->failedReattaches >= options_.maxReattachRefusals) {
    closeEdgeSocket(result.socket, 1011, "the object's new host refused the socket; reconnect");
    return;
  }
  startRecovery(s->object, l.peerId);
}

void Relay::sendHeld(const ObjectKey& object) {
  for (SocketMessage& m : edge_.takeHeld(object)) {
    auto e = edgeLink_.find(m.socket);
    Link* l = e == edgeLink_.end() ? nullptr : link(e->second);
    if (l != nullptr && l->state != LinkState::kClosed) {
      send(*l, m);
    } else {
      (void)edge_.hold(m.socket, m.binary, std::move(m.payload));  // back, in order, for the next owner
    }
  }
}

// --- Owner ---------------------------------------------------------------------------------------

Relay::OwnedSocket* Relay::ownedFor(Link& l, SocketId socket) {
  auto it = owned_.find(socket);
  if (it == owned_.end() || it->second->link != l.id) {
    logLine(LogLevel::kDebug, "relay: a frame from host " + l.peerId + " for socket " +
                                  std::to_string(socket) + ", which is not relayed here (ignored)");
    return nullptr;
  }
  return it->second.get();
}

void Relay::dropOwned(SocketId socket) {
  auto it = owned_.find(socket);
  if (it == owned_.end()) return;
  if (it->second->record && it->second->record->transport == it->second->transport.get()) {
    it->second->record->transport = nullptr;
  }
  owned_.erase(it);
}

void Relay::onHttpRequest(Link& l, HttpRequest r) {
  auto answer = [this, id = l.id, stream = r.stream](Response response, SocketId accepted) {
    Link* l = link(id);
    if (l == nullptr) return;
    if (response.body().size() > options_.limits.maxBodyBytes) {
      response = Response::json(502, R"({"error":"the answer is too large to relay"})");
    }
    HttpResponse out;
    out.stream = stream;
    out.status = response.status();
    for (const auto& [n, v] : response.headers()) out.headers.emplace_back(n, headerValue(v));
    out.body = response.body();
    out.acceptedSocket = accepted;
    send(*l, out);
  };
  if (!runtime_.mayRun(r.className, r.objectId)) {
    std::optional<std::string> known = ownership_.knownOwner(r.className, r.objectId);
    if (known || leaving_) {
      send(l, NotOwner{r.stream, known.value_or("")});
      return;
    }
    // The edge read this host as the owner, but it has let the object go (an idle object's
    // key is deleted after its claim here is dropped) or not claimed it yet. Its claim, queued
    // after any release of the object, says who owns it now: answering NotOwner at once would
    // send the edge's one more look-up back here while the key is still there.
    auto request = std::make_shared<HttpRequest>(std::move(r));
    runtime_.acquire(request->className, request->objectId,
                     [this, id = l.id, request](Result<OwnerInfo> owner) {
                       Link* l = link(id);
                       if (l == nullptr) return;
                       if (owner.isOk() && owner->local &&
                           runtime_.mayRun(request->className, request->objectId)) {
                         onHttpRequest(*l, std::move(*request));
                         return;
                       }
                       send(*l, NotOwner{request->stream, owner.isOk() ? owner->hostId : ""});
                     });
    return;
  }
  // Ids are unique per edge incarnation (its tag); an edge that registered again keeps its
  // link, so only an id already in use is refused.
  if (r.isUpgrade && (r.socket == 0 || owned_.count(r.socket))) {
    logLine(LogLevel::kWarn, "relay: host " + l.peerId + " sent an upgrade with a socket id "
                             "already in use (refused)");
    answer(Response::json(400, R"({"error":"bad relayed socket id"})"), 0);
    return;
  }
  std::optional<std::string> name;
  Request::Headers headers;
  for (auto& [n, v] : r.headers) {
    if (n == kObjectNameHeader) {
      name = std::move(v);
    } else {
      headers.emplace_back(std::move(n), std::move(v));
    }
  }
  ObjectSlot* slot = nullptr;
  try {
    slot = &runtime_.slot(r.className, r.objectId, name);
  } catch (const std::exception& e) {
    answer(Response::json(404, R"({"error":"no such object class"})"), 0);
    return;
  }
  Request request(std::move(r.method), std::move(r.path), std::move(r.query), std::move(headers),
                  std::move(r.body));
  detail::ApiAccess::setRemoteAddress(request, std::move(r.clientIp));
  auto pending = std::make_shared<detail::PendingResponseState>();
  pending->deliver = [answer](Response response) { answer(std::move(response), 0); };
  detail::ApiAccess::setPendingState(request, pending);
  detail::UpgradeContext upgrade;
  if (r.isUpgrade) detail::ApiAccess::setUpgradeContext(request, &upgrade);
  Response response = runtime_.fetch(*slot, request);
  detail::ApiAccess::setUpgradeContext(request, nullptr);
  if (response.isDeferred() && !r.isUpgrade) return;  // answered through `pending`
  pending->answered = true;
  if (!r.isUpgrade || response.status() != 101 || !upgrade.accepted) {
    if (response.isDeferred()) response = Response::json(500, R"({"error":"upgrade not accepted"})");
    answer(std::move(response), 0);
    return;
  }
  std::shared_ptr<detail::SocketRecord> record = upgrade.accepted;
  auto owned = std::make_unique<OwnedSocket>();
  owned->link = l.id;
  owned->id = r.socket;
  owned->record = record;
  owned->transport = std::make_unique<RelayTransport>(*this, l.id, r.socket);
  RelayTransport* transport = owned->transport.get();
  owned_[r.socket] = std::move(owned);
  answer(Response(101, ""), r.socket);
  record->transport = transport;
  metaChanged(r.socket);
  // What the object sent (or closed) during the upgrade follows the answer.
  for (FramePtr& f : record->early) transport->send(f);
  record->early.clear();
  if (record->earlyClose) {
    transport->close(record->earlyClose->first, record->earlyClose->second);
  } else if (record->state == detail::SocketState::kClosing) {
    transport->close(1000, "");
  }
}

void Relay::onSocketMessage(Link& l, SocketMessage message) {
  OwnedSocket* o = ownedFor(l, message.socket);
  if (o == nullptr) return;
  std::shared_ptr<detail::SocketRecord> record = o->record;
  runtime_.onMessage(record, Message{message.binary, std::move(message.payload)});
}

void Relay::onSocketClosed(Link& l, const SocketClosed& closed) {
  OwnedSocket* o = ownedFor(l, closed.socket);
  if (o == nullptr) return;
  std::shared_ptr<detail::SocketRecord> record = o->record;
  dropOwned(closed.socket);
  runtime_.onClose(record, CloseInfo{closed.code, closed.reason, closed.wasClean});
}

void Relay::onReattach(Link& l, const Reattach& r) {
  auto result = [&](bool ok, const std::string& reason) {
    send(l, ReattachResult{r.socket, ok, reason});
  };
  if (owned_.count(r.socket)) return result(owned_[r.socket]->link == l.id, "socket id in use");
  if (!runtime_.mayRun(r.className, r.objectId)) return result(false, "this host does not own the object");
  ObjectSlot* slot = nullptr;
  try {
    slot = &runtime_.slot(r.className, r.objectId, std::nullopt);
  } catch (const std::exception&) {
    return result(false, "no such object class");
  }
  if (slot->failedUntil()) return result(false, "the object is failing");
  if (slot->sockets().size() >= runtime_.options().maxSocketsPerObject) {
    return result(false, "the object has the maximum number of sockets");
  }
  auto record = std::make_shared<detail::SocketRecord>();
  record->id = runtime_.nextSocketId();
  record->tags = r.tags;
  record->hasAttachment = r.attachment.has_value();
  record->attachment = r.attachment.value_or("");
  if (r.autoResponseAtMs) record->autoResponseAt = fromUnixMillis(*r.autoResponseAtMs);
  auto owned = std::make_unique<OwnedSocket>();
  owned->link = l.id;
  owned->id = r.socket;
  owned->record = record;
  owned->transport = std::make_unique<RelayTransport>(*this, l.id, r.socket);
  record->transport = owned->transport.get();
  owned_[r.socket] = std::move(owned);
  slot->addSocket(record);
  if (r.autoResponse && !slot->autoResponsePair()) {
    slot->setWebSocketAutoResponse(r.autoResponse->request, r.autoResponse->response);
  }
  result(true, "");
}

// --- Seeing it -----------------------------------------------------------------------------------

std::map<std::string, size_t> Relay::edgeSocketsByOwner() const {
  std::map<std::string, size_t> out;
  for (const auto& [sid, client] : clients_) {
    if (const EdgeSocket* s = edge_.find(sid); s && s->owner) ++out[*s->owner];
  }
  return out;
}

std::map<std::string, size_t> Relay::ownedSocketsByEdge() const {
  std::map<std::string, size_t> out;
  for (const auto& [sid, o] : owned_) {
    auto it = links_.find(o->link);
    if (it != links_.end()) ++out[it->second.peerId];
  }
  return out;
}

size_t Relay::linksUp() const {
  size_t n = 0;
  for (const auto& [id, l] : links_) n += l.state == LinkState::kUp;
  return n;
}

}  // namespace dohost::cluster
