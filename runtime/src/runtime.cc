#include "runtime.h"

#include "dohost/errors.h"
#include "dohost/log.h"
#include "dohost/object_id.h"
#include "cluster/relay.h"
#include "object_slot.h"

namespace dohost {
namespace {

std::string slotKey(const std::string& className, const std::string& id) {
  return className + "/" + id;
}

}  // namespace

Runtime::Runtime(RuntimeOptions options, const Registry& registry, Clock& clock)
    : options_(std::move(options)), registry_(registry), clock_(clock) {}

Runtime::~Runtime() { shutdown(); }

Status Runtime::start() {
  return scheduler_.start(options_.dataDir + "/_dohost/alarms.sqlite");
}

bool Runtime::runAlarmNow(ObjectSlot& slot) { return scheduler_.runAlarmNow(slot); }

void Runtime::shutdown() {
  if (shuttingDown_) return;
  shuttingDown_ = true;
  for (auto& [key, slot] : slots_) {
    if (slot->inEvent()) continue;
    slot->flush();
    slot->evict();
  }
  slots_.clear();
  scheduler_.stop();
}

void Runtime::handOver() {
  for (auto& [key, slot] : slots_) {
    if (slot->inEvent()) continue;
    slot->flush();
    slot->evict();
  }
  scheduler_.stop();
}

TimerQueue::Id Runtime::schedule(TimePoint at, std::function<void()> fn) {
  TimerQueue::Id id = timers_.schedule(at, std::move(fn));
  if (wake_) wake_();
  return id;
}

void Runtime::runDue() { timers_.runDue(clock_.now()); }

// --- slots ----------------------------------------------------------------------------------

ObjectSlot& Runtime::slot(const std::string& className, const std::string& id,
                          const std::optional<std::string>& name) {
  std::string key = slotKey(className, id);
  auto it = slots_.find(key);
  if (it != slots_.end()) {
    if (name && !it->second->name()) it->second->setName(name);
    return *it->second;
  }
  const ObjectFactory* factory = registry_.findClass(className);
  if (factory == nullptr) throw UsageError("no object class named " + className);
  auto slot = std::make_unique<ObjectSlot>(*this, *factory, className, id, name);
  ObjectSlot& ref = *slot;
  slots_.emplace(key, std::move(slot));
  return ref;
}

ObjectSlot* Runtime::findSlot(const std::string& className, const std::string& id) {
  auto it = slots_.find(slotKey(className, id));
  return it == slots_.end() ? nullptr : it->second.get();
}

Result<ObjectRef> Runtime::objectRef(const std::string& className,
                                     const std::optional<std::string>& name,
                                     const std::optional<std::string>& id) const {
  if (registry_.findClass(className) == nullptr) {
    return Status::notFound("no object class named " + className);
  }
  if (id) {
    std::string why;
    auto normalized = idFromString(className, *id, &why);
    if (!normalized) return Status::invalidArgument(why);
    return ObjectRef{className, *normalized, std::nullopt};
  }
  if (!name) return Status::invalidArgument("a route needs an object name or id");
  return ObjectRef{className, idFromName(className, *name), name};
}

Result<ObjectSlot*> Runtime::resolve(const std::string& className,
                                     const std::optional<std::string>& name,
                                     const std::optional<std::string>& id) {
  Result<ObjectRef> ref = objectRef(className, name, id);
  if (!ref.isOk()) return ref.status();
  return &slot(ref->className, ref->id, ref->name);
}

std::vector<ObjectSlot*> Runtime::slots() {
  std::vector<ObjectSlot*> out;
  out.reserve(slots_.size());
  for (auto& [key, slot] : slots_) out.push_back(slot.get());
  return out;
}

void Runtime::parkDatabase(ObjectSlot& slot) {
  unparkDatabase(slot);
  parked_.push_back(&slot);
  parkedIndex_[&slot] = std::prev(parked_.end());
  while (parked_.size() > options_.maxParkedDatabases) {
    ObjectSlot* oldest = parked_.front();
    parked_.pop_front();
    parkedIndex_.erase(oldest);
    oldest->closeDatabase();
  }
}

void Runtime::unparkDatabase(ObjectSlot& slot) {
  auto it = parkedIndex_.find(&slot);
  if (it == parkedIndex_.end()) return;
  parked_.erase(it->second);
  parkedIndex_.erase(it);
}

void Runtime::touch(ObjectSlot& slot) {
  if (slot.isLive()) {
    if (!slot.idleTimer()) {
      ObjectSlot* s = &slot;
      slot.idleTimer() = schedule(slot.lastActivity() + options_.idleEvict, [this, s] {
        s->idleTimer().reset();
        idleCheck(*s);
      });
    }
    return;
  }
  maybeForget(slot);
}

void Runtime::idleCheck(ObjectSlot& slot) {
  TimePoint due = slot.lastActivity() + options_.idleEvict;
  if (slot.isLive() && !slot.evictionBlocker() && due <= clock_.now()) {
    slot.evict();
    maybeForget(slot);
    return;
  }
  if (slot.isLive()) {
    // Still busy or recently active: look again when it could next be idle.
    TimePoint next = std::max(due, clock_.now() + std::min(options_.idleEvict, Duration(1000)));
    if (due > clock_.now()) next = due;
    ObjectSlot* s = &slot;
    slot.idleTimer() = schedule(next, [this, s] {
      s->idleTimer().reset();
      idleCheck(*s);
    });
  }
}

bool Runtime::forgettable(const ObjectSlot& slot) {
  return !slot.isLive() && !slot.inEvent() && !slot.hasSockets() && !slot.evictionBlocker() &&
         !slot.flushPending() && !slot.keepsFailureRecord();
}

void Runtime::maybeForget(ObjectSlot& slot) {
  if (!forgettable(slot)) return;
  std::string key = slotKey(slot.className(), slot.id());
  // Deferred: the caller may still be inside a method of this slot.
  defer([this, key] {
    auto it = slots_.find(key);
    if (it == slots_.end() || !forgettable(*it->second)) return;
    // Idle, no socket left: in a cluster its ownership key goes too, so any host may claim it.
    if (ownership_) ownership_->forget(it->second->className(), it->second->id(), true);
    slots_.erase(it);
  });
}

// --- cluster --------------------------------------------------------------------------------

void Runtime::setOwnership(Ownership* ownership) {
  ownership_ = ownership;
  if (ownership_) scheduler_.startRescans();
}

void Runtime::acquire(const std::string& className, const std::string& id,
                      std::function<void(Result<OwnerInfo>)> then) {
  if (ownership_ == nullptr) {
    then(OwnerInfo{{}, {}, 0, true});
    return;
  }
  if (std::optional<int64_t> token = ownership_->claimToken(className, id)) {
    then(OwnerInfo{ownership_->selfId(), {}, *token, true});
    return;
  }
  ownership_->resolve(className, id, std::move(then));
}

void Runtime::stopServing(ObjectSlot& slot, const std::string& why) {
  std::vector<std::shared_ptr<detail::SocketRecord>> sockets;
  for (const auto& [sid, s] : slot.sockets()) sockets.push_back(s);
  for (const auto& s : sockets) {
    if (s->state != detail::SocketState::kOpen) continue;
    s->state = detail::SocketState::kClosing;
    s->early.clear();
    s->held.clear();
    // 1012 (service restart): the client reconnects, and reaches the object's owner.
    if (s->transport) {
      s->transport->close(1012, "this host no longer serves the object; reconnect");
    } else {
      s->earlyClose.emplace(1012, "this host no longer serves the object; reconnect");
    }
  }
  slot.dropInstance(why);
  touch(slot);
}

void Runtime::dropAllClaims(const std::string& why) {
  // Sockets other hosts relay to objects here stay open there and move to the next owners.
  if (relay_) relay_->letGo(why);
  size_t live = 0, sockets = 0;
  for (ObjectSlot* slot : slots()) {
    if (slot->inEvent()) continue;  // never: the loop is between events here
    // Events that already ran commit now: this is before the lease can expire, so no other
    // host can have claimed the object yet.
    if (slot->flushPending()) slot->flush();
    live += slot->isLive();
    sockets += slot->sockets().size();
    if (slot->isLive() || slot->hasSockets()) stopServing(*slot, why);
  }
  logLine(LogLevel::kWarn, "cluster: " + why + ": stopped serving every object (" +
                               std::to_string(live) + " instances dropped, " +
                               std::to_string(sockets) + " WebSockets closed with 1012)");
}

void Runtime::fencedOut(ObjectSlot& slot, int64_t stored, int64_t mine) {
  ++fencingRefusals_;
  logLine(LogLevel::kWarn,
          "fencing: commit refused: the object's file carries token " + std::to_string(stored) +
              " of a newer owner, this host's claim is " + std::to_string(mine) +
              " (the turn's writes rolled back, its output dropped, the claim forgotten)",
          slot.className(), slot.id());
  if (ownership_) ownership_->forget(slot.className(), slot.id(), false);
  stopServing(slot, "fenced out by a newer owner");
}

bool Runtime::evictNow(ObjectSlot& slot) {
  if (!slot.isLive() || slot.inEvent()) return false;
  slot.evict();
  maybeForget(slot);
  return true;
}

// --- events ---------------------------------------------------------------------------------

Response Runtime::fetch(ObjectSlot& slot, Request& request) {
  Response response = Response::json(500, R"({"error":"internal error"})");
  bool upgrade = request.isWebSocketUpgrade();
  if (upgrade && slot.countWebSockets({}) >= options_.maxSocketsPerObject) {
    return Response::json(503, R"({"error":"too many WebSockets for this object"})");
  }
  if (slot.failedUntil()) return slot.failedResponse();  // also refuses an upgrade with 503
  if (!mayRun(slot.className(), slot.id())) {  // the claim went while the request waited
    return Response::json(503, R"({"error":"this host no longer owns the object; try again"})")
        .setHeader("retry-after", "1");
  }
  std::string error;
  const auto& pending = detail::ApiAccess::pendingState(request);
  if (pending) slot.trackPending(pending);
  bool ok = slot.runEvent([&](DurableObject& object) { response = object.fetch(request); }, &error,
                          ObjectSlot::CommitMode::kNow, ObjectSlot::EventKind::kFetch);
  if (!ok) {
    logLine(LogLevel::kError, "fetch failed: " + error, slot.className(), slot.id());
    response = !mayRun(slot.className(), slot.id())  // fenced out meanwhile
                   ? Response::json(503, R"({"error":"this host no longer owns the object; try again"})")
                         .setHeader("retry-after", "1")
               : slot.failedOnStorage()
                   ? Response::json(503, R"({"error":"storage unavailable, try again later"})")
                   : Response::json(500, R"({"error":"internal error in the object"})");
  }
  if (upgrade) {
    auto& accepted = detail::ApiAccess::upgradeContext(request)->accepted;
    std::optional<WebSocket> taken = response.acceptedWebSocket();
    bool took = response.status() == 101 && taken && accepted &&
                detail::ApiAccess::record(*taken) == accepted;
    if (!took && accepted) {
      if (detail::ApiAccess::upgradeContext(request)->adopt) {
        slot.releaseSocket(accepted->id);  // a hand-over refused: the caller closes it
      } else {
        slot.detachSocket(accepted->id);
      }
      accepted.reset();
      if (response.status() == 101) response = Response::json(500, R"({"error":"upgrade not accepted"})");
    } else if (response.status() == 101 && !accepted) {
      response = Response::json(500, R"({"error":"fetch returned 101 without acceptWebSocket"})");
    }
  }
  return response;
}

void Runtime::onMessage(const std::shared_ptr<detail::SocketRecord>& socket, Message message) {
  ObjectSlot* slot = socket->slot;
  if (slot == nullptr || socket->state == detail::SocketState::kClosed) return;
  if (slot->failedUntil()) return;  // the socket is being closed with 1011
  if (!mayRun(slot->className(), slot->id())) return;  // being closed with 1012
  if (socket->transferring) {
    // On its way to another object: it gets this message once it accepted the socket.
    if (socket->held.size() >= kMaxHeldMessages) {
      if (socket->transport) socket->transport->close(1008, "too many messages during hand-over");
      socket->state = detail::SocketState::kClosing;
      socket->held.clear();
      return;
    }
    socket->held.push_back(std::move(message));
    return;
  }
  ClassMetrics& m = metrics(slot->className());
  ++m.messagesIn;
  if (!message.binary) {
    if (auto reply = slot->autoResponseFor(message.data)) {
      // Answered by the host; the object is not woken.
      socket->autoResponseAt = clock_.now();
      ++m.autoResponses;
      ++m.messagesOut;
      if (socket->transport) socket->transport->send(std::make_shared<Frame>(*reply, false));
      return;
    }
  }
  WebSocket ws = detail::ApiAccess::webSocket(socket);
  std::string error;
  if (!slot->runEvent([&](DurableObject& o) { o.webSocketMessage(ws, message); }, &error,
                      ObjectSlot::CommitMode::kGrouped, ObjectSlot::EventKind::kOther, socket)) {
    logLine(LogLevel::kError, "webSocketMessage failed: " + error, slot->className(), slot->id());
  }
}

void Runtime::onClose(const std::shared_ptr<detail::SocketRecord>& socket, CloseInfo info) {
  endSocket(socket, "webSocketClose",
            [&](DurableObject& o, WebSocket ws) { o.webSocketClose(ws, info); });
}

void Runtime::onError(const std::shared_ptr<detail::SocketRecord>& socket, std::string reason) {
  endSocket(socket, "webSocketError",
            [&](DurableObject& o, WebSocket ws) { o.webSocketError(ws, reason); });
}

void Runtime::transferSocket(ObjectSlot& from, const std::shared_ptr<detail::SocketRecord>& socket,
                             const std::string& className, const std::string& name,
                             Request request) {
  if (ownership_ && !shuttingDown_) {
    Result<ObjectRef> ref = objectRef(className, name, std::nullopt);
    if (ref.isOk() && !mayRun(ref->className, ref->id)) {
      // The target is not claimed here yet: its messages keep waiting until it is.
      auto moved = std::make_shared<Request>(std::move(request));
      acquire(ref->className, ref->id,
              [this, socket, fromClass = from.className(), fromId = from.id(), className, name,
               moved](Result<OwnerInfo> owner) {
                ObjectSlot* source = findSlot(fromClass, fromId);
                if (source == nullptr || socket->slot != source ||
                    socket->state != detail::SocketState::kOpen) {
                  socket->transferring = false;
                  socket->held.clear();
                  return;
                }
                if (!owner.isOk() || !owner->local) {
                  socket->transferring = false;
                  socket->held.clear();
                  socket->state = detail::SocketState::kClosing;
                  logLine(LogLevel::kWarn,
                          "hand-over of a socket to " + className + " refused: " +
                              (owner.isOk() ? "owned by host " + owner->hostId
                                            : owner.status().message()),
                          fromClass, fromId);
                  if (socket->transport) {
                    socket->transport->close(1013, "the target is served by another host; reconnect");
                  }
                  return;
                }
                transferSocket(*source, socket, className, name, std::move(*moved));
              });
      return;
    }
  }
  socket->transferring = false;
  std::vector<Message> held = std::move(socket->held);
  socket->held.clear();
  // Closed (or closing) since: its close event went to `from`, nothing is left to hand over.
  if (socket->slot != &from || socket->state != detail::SocketState::kOpen) return;
  auto refuse = [&](int code, const std::string& reason) {
    logLine(LogLevel::kWarn, "hand-over of a socket to " + className + " refused: " + reason,
            from.className(), from.id());
    socket->state = detail::SocketState::kClosing;
    if (socket->transport) socket->transport->close(code, reason.substr(0, kMaxCloseReasonBytes));
  };
  if (shuttingDown_) {
    refuse(1001, "server shutting down");
    return;
  }
  Result<ObjectSlot*> target = resolve(className, name, std::nullopt);
  if (!target.isOk()) {
    refuse(1011, target.status().message());
    return;
  }
  from.releaseSocket(socket->id);
  socket->tags.clear();
  socket->attachment.clear();
  socket->hasAttachment = false;
  socket->autoResponseAt.reset();
  detail::UpgradeContext upgrade;
  upgrade.adopt = socket;
  detail::ApiAccess::setUpgradeContext(request, &upgrade);
  Response response = fetch(**target, request);
  detail::ApiAccess::setUpgradeContext(request, nullptr);
  if (response.status() != 101) {
    // fetch() took the socket out of the target again; the connection itself is still up.
    socket->state = detail::SocketState::kOpen;
    refuse(response.status() >= 400 && response.status() < 500 ? 1008 : 1011,
           "refused by " + className + " (" + std::to_string(response.status()) + ")");
    return;
  }
  for (Message& message : held) onMessage(socket, std::move(message));
}

// The last event of a socket: it leaves the object's socket list first (so getWebSockets no
// longer shows it), then the handler runs; nothing follows.
void Runtime::endSocket(const std::shared_ptr<detail::SocketRecord>& socket, const char* what,
                        const std::function<void(DurableObject&, WebSocket)>& handler) {
  ObjectSlot* slot = socket->slot;
  socket->transport = nullptr;  // the connection is gone
  if (slot == nullptr) return;  // already detached (refused, or its object was shut down)
  slot->detachSocket(socket->id);
  if (slot->failedUntil() || !mayRun(slot->className(), slot->id())) {
    // The object is not run (failed, or no longer served here); the socket just goes.
    touch(*slot);
    return;
  }
  WebSocket ws = detail::ApiAccess::webSocket(socket);
  std::string error;
  if (!slot->runEvent([&](DurableObject& o) { handler(o, ws); }, &error,
                      ObjectSlot::CommitMode::kGrouped)) {
    logLine(LogLevel::kError, std::string(what) + " failed: " + error, slot->className(), slot->id());
  }
}

}  // namespace dohost
