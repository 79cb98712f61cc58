// ObjectSlot's hibernation API: accepting sockets, tags, broadcast, auto-response; and the
// object's timers and stubs.
#include <algorithm>

#include "dohost/errors.h"
#include "dohost/log.h"
#include "dohost/object_id.h"
#include "cluster/relay.h"
#include "object_slot.h"
#include "runtime.h"

namespace dohost {

size_t ObjectSlot::attachmentLimit() const { return runtime_.options().maxAttachmentBytes; }

WebSocket ObjectSlot::acceptWebSocket(Request& request, std::vector<std::string> tags) {
  detail::UpgradeContext* upgrade = detail::ApiAccess::upgradeContext(request);
  if (upgrade == nullptr) throw UsageError("acceptWebSocket: the request is not a WebSocket upgrade");
  if (upgrade->accepted) throw UsageError("acceptWebSocket: this upgrade was already accepted");
  if (tags.size() > kMaxTagsPerSocket) {
    throw UsageError("acceptWebSocket: at most 10 tags per socket, got " + std::to_string(tags.size()));
  }
  for (size_t i = 0; i < tags.size(); ++i) {
    if (tags[i].empty() || tags[i].size() > kMaxTagLength) {
      throw UsageError("acceptWebSocket: a tag must have 1 to 256 characters");
    }
    for (size_t j = 0; j < i; ++j) {
      if (tags[i] == tags[j]) throw UsageError("acceptWebSocket: duplicate tag " + tags[i]);
    }
  }
  if (sockets_.size() >= runtime_.options().maxSocketsPerObject) {
    throw UsageError("acceptWebSocket: the object has the maximum number of sockets");
  }
  std::shared_ptr<detail::SocketRecord> record = upgrade->adopt;  // handed over: already open
  if (!record) {
    record = std::make_shared<detail::SocketRecord>();
    record->id = runtime_.nextSocketId();
  }
  record->tags = std::move(tags);
  upgrade->accepted = record;
  addSocket(record);
  return detail::ApiAccess::webSocket(record);
}

void ObjectSlot::addSocket(const std::shared_ptr<detail::SocketRecord>& socket) {
  socket->slot = this;
  if (sockets_.emplace(socket->id, socket).second) countTags(*socket, true);
  runtime_.socketOpened();
}

void ObjectSlot::countTags(const detail::SocketRecord& socket, bool added) {
  const std::vector<std::string>& tags = socket.tags;
  for (size_t i = 0; i < tags.size(); ++i) {
    if (std::find(tags.begin(), tags.begin() + static_cast<std::ptrdiff_t>(i), tags[i]) !=
        tags.begin() + static_cast<std::ptrdiff_t>(i)) {
      continue;  // a tag given twice counts the socket once
    }
    if (added) {
      ++tagCounts_[tags[i]];
    } else if (auto it = tagCounts_.find(tags[i]); it != tagCounts_.end() && --it->second == 0) {
      tagCounts_.erase(it);
    }
  }
}

// The one way a socket leaves its object. Whoever still holds the record afterwards (a
// WebSocket handle, the server's connection, a queued event) finds it closed and without an
// object, and does nothing with it.
void ObjectSlot::detachSocket(uint64_t id) {
  auto it = sockets_.find(id);
  if (it == sockets_.end()) return;
  detail::SocketRecord& r = *it->second;
  countTags(r, false);
  r.slot = nullptr;
  r.state = detail::SocketState::kClosed;
  r.transport = nullptr;
  r.early.clear();
  sockets_.erase(it);
  runtime_.socketClosed();
}

void ObjectSlot::releaseSocket(uint64_t id) {
  auto it = sockets_.find(id);
  if (it == sockets_.end()) return;
  countTags(*it->second, false);
  it->second->slot = nullptr;
  sockets_.erase(it);
  runtime_.socketClosed();
}

std::vector<WebSocket> ObjectSlot::getWebSockets(std::string_view tag) {
  std::vector<WebSocket> out;
  out.reserve(sockets_.size());
  for (const auto& [id, s] : sockets_) {
    if (s->state == detail::SocketState::kClosed) continue;
    if (tag.empty() || std::find(s->tags.begin(), s->tags.end(), tag) != s->tags.end()) {
      out.push_back(detail::ApiAccess::webSocket(s));
    }
  }
  return out;
}

size_t ObjectSlot::countWebSockets(std::string_view tag) {
  if (tag.empty()) return sockets_.size();
  auto it = tagCounts_.find(tag);
  return it == tagCounts_.end() ? 0 : it->second;
}

bool ObjectSlot::matches(const detail::SocketRecord& s, const BroadcastOptions& options) const {
  if (s.state != detail::SocketState::kOpen) return false;
  for (const WebSocket& ex : options.except) {
    if (detail::ApiAccess::record(ex).get() == &s) return false;
  }
  if (options.tags.empty()) return true;
  for (const std::string& t : options.tags) {
    if (std::find(s.tags.begin(), s.tags.end(), t) != s.tags.end()) return true;
  }
  return false;
}

size_t ObjectSlot::broadcast(std::string_view message, const BroadcastOptions& options) {
  FramePtr frame;  // built once, shared by every recipient
  size_t n = 0;
  if (options.only != nullptr) {
    for (const WebSocket& ws : *options.only) {
      const std::shared_ptr<detail::SocketRecord>& s = detail::ApiAccess::record(ws);
      if (s->slot != this || !matches(*s, options)) continue;
      if (!frame) frame = std::make_shared<Frame>(message, options.binary);
      enqueueSend(s, frame);
      ++n;
    }
    return n;
  }
  for (const auto& [id, s] : sockets_) {
    if (!matches(*s, options)) continue;
    if (!frame) frame = std::make_shared<Frame>(message, options.binary);
    enqueueSend(s, frame);
    ++n;
  }
  return n;
}

void ObjectSlot::setWebSocketAutoResponse(std::string request, std::string response) {
  for (const auto& [id, s] : sockets_) {
    if (s->transport) s->transport->metaChanged();
  }
  if (request.empty()) {
    autoResponse_.reset();
    return;
  }
  if (request.size() > kMaxAutoResponseBytes || response.size() > kMaxAutoResponseBytes) {
    throw UsageError("auto-response request and response are at most 2,048 bytes each");
  }
  autoResponse_ = AutoResponse{std::move(request), std::move(response), nullptr};
}

void ObjectSlot::setWebSocketAutoResponder(std::string request, AutoResponder responder) {
  for (const auto& [id, s] : sockets_) {
    if (s->transport) s->transport->metaChanged();
  }
  if (request.empty()) {
    autoResponse_.reset();
    return;
  }
  if (request.size() > kMaxAutoResponseBytes) {
    throw UsageError("auto-response request is at most 2,048 bytes");
  }
  if (!responder) throw UsageError("setWebSocketAutoResponder: no responder");
  autoResponse_ = AutoResponse{std::move(request), {}, std::move(responder)};
}

std::optional<std::pair<std::string, std::string>> ObjectSlot::autoResponsePair() const {
  if (!autoResponse_ || autoResponse_->responder) return std::nullopt;
  return std::make_pair(autoResponse_->request, autoResponse_->response);
}

std::optional<std::string> ObjectSlot::autoResponseFor(std::string_view message) const {
  if (!autoResponse_ || autoResponse_->request != message) return std::nullopt;
  if (autoResponse_->responder) return autoResponse_->responder(now());
  return autoResponse_->response;
}

void ObjectSlot::transferWebSocket(WebSocket ws, std::string_view className,
                                   std::string_view name, Request request) {
  const std::shared_ptr<detail::SocketRecord>& s = detail::ApiAccess::record(ws);
  if (s->slot != this) throw UsageError("transferWebSocket: the socket is not this object's");
  if (request.isWebSocketUpgrade()) {
    throw UsageError("transferWebSocket: the request must not be an upgrade itself");
  }
  if (s->transferring) throw UsageError("transferWebSocket: the socket is already being handed over");
  if (s->state != detail::SocketState::kOpen) return;  // closing: there is nothing to hand over
  s->transferring = true;  // from now on its messages wait for the target
  Transfer t{s, std::string(className), std::string(name), std::move(request)};
  if (effects_) {
    effects_->transfers.push_back(std::move(t));
  } else {
    runtime_.transferSocket(*this, t.socket, t.className, t.name, std::move(t.request));
  }
}

std::optional<TimePoint> ObjectSlot::getWebSocketAutoResponseTimestamp(const WebSocket& ws) {
  return detail::ApiAccess::record(ws)->autoResponseAt;
}

TimerId ObjectSlot::setTimeout(Duration delay, std::function<void()> fn) {
  uint64_t generation = generation_;
  auto holder = std::make_shared<TimerQueue::Id>(0);
  TimerQueue::Id id = runtime_.schedule(now() + delay, [this, generation, holder, fn] {
    timers_.erase(*holder);
    if (generation != generation_ || !instance_) return;  // the instance it belonged to is gone
    runEvent([&](DurableObject&) { fn(); }, nullptr, CommitMode::kGrouped);
  });
  *holder = id;
  timers_.insert(id);
  return id;
}

void ObjectSlot::clearTimeout(TimerId id) {
  if (timers_.erase(id)) runtime_.timers().cancel(id);
}

// A stub from one slot to another object. Calls run as separate events (deferred), and the
// reply is delivered as an event of the caller, guarded by the caller's instance generation.
class SlotStub final : public Stub {
 public:
  SlotStub(ObjectSlot& caller, std::string className, std::optional<std::string> name,
           std::optional<std::string> id)
      : caller_(caller), className_(std::move(className)), name_(std::move(name)), id_(std::move(id)) {}

  void fetch(Request request, std::function<void(Response)> onResponse) override {
    Runtime& rt = caller_.runtime_;
    ObjectSlot* caller = &caller_;
    uint64_t generation = caller_.generation_;
    auto state = std::make_shared<detail::PendingResponseState>();
    state->deliver = [&rt, caller, generation, onResponse](Response r) {
      rt.defer([caller, generation, onResponse, r = std::move(r)]() mutable {
        --caller->pendingStubCalls_;
        if (generation != caller->generation_ || !caller->instance_) return;
        caller->runEvent([&](DurableObject&) { onResponse(std::move(r)); }, nullptr,
                         ObjectSlot::CommitMode::kGrouped);
      });
    };
    // The request leaves like any other output: only if the caller's event commits.
    auto dispatch = [&rt, state, cls = className_, name = name_, id = id_,
                     request = std::move(request)]() mutable {
      // In a cluster the callee may be another host's: the call goes to its owner over the
      // relay, like a client's HTTP request, and the answer comes back the same way.
      if (rt.ownership() != nullptr) {
        Result<ObjectRef> ref = rt.objectRef(cls, name, id);
        if (ref.isOk() && !rt.mayRun(ref->className, ref->id)) {
          callOwner(rt, state, cls, name, id, *ref, std::make_shared<Request>(std::move(request)),
                    false);
          return;
        }
      }
      callHere(rt, state, cls, name, id, std::move(request));
    };
    caller_.enqueueCall([&rt, caller, dispatch = std::move(dispatch)]() mutable {
      ++caller->pendingStubCalls_;  // the caller stays in memory until the reply is in
      rt.defer(std::move(dispatch));
    });
  }

 private:
  // Runs the call where its callee's owner is: here, or over the relay. An owner that says it
  // no longer owns the callee (it let it go meanwhile) makes one more look-up, as a client's
  // relayed request does.
  static void callOwner(Runtime& rt, const std::shared_ptr<detail::PendingResponseState>& state,
                        const std::string& cls, const std::optional<std::string>& name,
                        const std::optional<std::string>& id, const ObjectRef& object,
                        std::shared_ptr<Request> request, bool retried) {
    rt.acquire(object.className, object.id, [&rt, state, cls, name, id, object, request,
                                             retried](Result<OwnerInfo> owner) {
      if (!owner.isOk()) {
        state->answered = true;
        state->deliver(Response::json(503, R"({"error":"cluster unavailable"})"));
      } else if (owner->local) {
        callHere(rt, state, cls, name, id, std::move(*request));
      } else if (rt.relay() == nullptr) {
        state->answered = true;
        state->deliver(Response::json(503, R"({"error":"the object is served by another host"})"));
      } else {
        rt.relay()->forward(
            *owner, object, *request, false,
            [&rt, state, cls, name, id, object, request,
             retried](cluster::RelayOutcome o) -> cluster::EdgeClient* {
              if (o.kind == cluster::RelayOutcome::Kind::kNotOwner && !retried) {
                if (Ownership* own = rt.ownership()) own->dropCached(object.className, object.id);
                callOwner(rt, state, cls, name, id, object, request, true);
                return nullptr;
              }
              if (o.kind == cluster::RelayOutcome::Kind::kNotOwner) {
                o.response = Response::json(503, R"({"error":"the object's owner moved"})");
              }
              state->answered = true;
              state->deliver(std::move(o.response));
              return nullptr;
            });
      }
    });
  }

  // Runs the call on a callee of this host.
  static void callHere(Runtime& rt, const std::shared_ptr<detail::PendingResponseState>& state,
                       const std::string& cls, const std::optional<std::string>& name,
                       const std::optional<std::string>& id, Request request) {
    auto target = rt.resolve(cls, name, id);
    if (!target.isOk()) {
      state->answered = true;
      state->deliver(Response::json(404, R"({"error":")" + target.status().message() + "\"}"));
      return;
    }
    // The callee's answer is one of its outputs: it leaves after the callee's commit, which
    // is grouped with the other events of this loop turn (one fsync for a burst of calls).
    ObjectSlot& callee = **target;
    if (callee.failedUntil()) {  // answered like an HTTP client: 503 until its retry time
      state->answered = true;
      state->deliver(callee.failedResponse());
      return;
    }
    detail::ApiAccess::setPendingState(request, state);
    callee.trackPending(state);
    std::string error;
    bool ok = callee.runEvent(
        [&](DurableObject& o) {
          Response r = o.fetch(request);
          if (!r.isDeferred()) callee.enqueueAnswer(state, std::move(r));
        },
        &error, ObjectSlot::CommitMode::kGrouped, ObjectSlot::EventKind::kFetch);
    if (!ok && state->isOpen()) {
      logLine(LogLevel::kError, "fetch from another object failed: " + error, callee.className(),
              callee.id());
      state->answered = true;
      state->deliver(Response::json(500, R"({"error":"internal error in the object"})"));
    }
  }

  ObjectSlot& caller_;
  std::string className_;
  std::optional<std::string> name_;
  std::optional<std::string> id_;
};

std::unique_ptr<Stub> ObjectSlot::stubByName(std::string_view className, std::string_view name) {
  return std::make_unique<SlotStub>(*this, std::string(className), std::string(name), std::nullopt);
}

std::unique_ptr<Stub> ObjectSlot::stubById(std::string_view className, std::string_view id) {
  return std::make_unique<SlotStub>(*this, std::string(className), std::nullopt, std::string(id));
}

}  // namespace dohost
