#include "object_slot.h"

#include <algorithm>
#include <filesystem>

#include "dohost/errors.h"
#include "dohost/log.h"
#include "dohost/object_id.h"
#include "runtime.h"

namespace dohost {

ObjectSlot::ObjectSlot(Runtime& runtime, const ObjectFactory& factory, std::string className,
                       std::string id, std::optional<std::string> name)
    : runtime_(runtime),
      factory_(factory),
      className_(std::move(className)),
      id_(std::move(id)),
      lastActivity_(runtime.clock().now()),
      metrics_(&runtime.metrics(className_)) {
  setName(name);
  std::error_code ec;
  constructedBefore_ = std::filesystem::exists(
      runtime_.options().dataDir + "/" + className_ + "/" + id_ + ".sqlite", ec);
  fileExists_ = constructedBefore_;
}

ObjectSlot::~ObjectSlot() {
  // Normally the server is gone first (its connections' closes reached this object); a socket
  // still bound to a connection is closed, and detached so its late close finds no object.
  while (!sockets_.empty()) {
    std::shared_ptr<detail::SocketRecord> r = sockets_.begin()->second;
    if (r->transport) r->transport->close(1001, "server shutting down");
    detachSocket(r->id);
  }
  runtime_.unparkDatabase(*this);
  for (TimerQueue::Id t : timers_) runtime_.timers().cancel(t);
  if (idleTimer_) runtime_.timers().cancel(*idleTimer_);
  if (failureTimer_) runtime_.timers().cancel(*failureTimer_);
}

TimePoint ObjectSlot::now() const { return runtime_.clock().now(); }

void ObjectSlot::setName(const std::optional<std::string>& name) {
  if (name && name->size() <= kMaxStoredNameBytes) name_ = name;
}

storage::ObjectDatabase& ObjectSlot::database() {
  if (!db_) {
    storage::OpenOptions options;
    options.durability = runtime_.options().durability;
    options.limits = runtime_.options().storageLimits;
    std::string path = runtime_.options().dataDir + "/" + className_ + "/" + id_ + ".sqlite";
    std::unique_ptr<storage::ObjectDatabase> db = check(storage::ObjectDatabase::open(path, options));
    fileExists_ = true;
    // Kept only once the identity is written, so a failed write is tried again next time.
    if (!check(db->meta("id")) || (name_ && !check(db->meta("name")))) {
      check(db->setIdentity(className_, id_, name_));
    } else if (!name_) {
      auto storedName = db->meta("name");
      if (storedName.isOk() && storedName.value()) name_ = storedName.value();
    }
    db_ = std::move(db);
    runtime_.scheduler().objectOpened(*this, *db_);  // arms the object's schedules
  }
  return *db_;
}

void ObjectSlot::check(const Status& s) {
  if (s.isOk()) return;
  noteFault(s);
  throw StorageError(s);
}

void ObjectSlot::noteFault(const Status& s) {
  if (inEvent_ && s.isStorageFault() && !fault_) fault_ = s;
}

void ObjectSlot::closeDatabase() {
  if (flushScheduled_ || !held_.empty()) flush();
  if (db_ && db_->inTransaction()) (void)db_->rollback();
  db_.reset();
}

storage::ObjectDatabase& ObjectSlot::writable() {
  storage::ObjectDatabase& db = database();
  if (inEvent_ && !db.inTransaction()) {
    // A transaction this turn opened is gone: SQLite rolled it back after an I/O error or a
    // full disk (even one the object caught). Earlier events' writes went with it.
    if (turnTxn_) txnLost_ = true;
    check(db.begin());
    turnTxn_ = true;
  }
  return db;
}

// --- events ---------------------------------------------------------------------------------

bool ObjectSlot::runEvent(const std::function<void(DurableObject&)>& body, std::string* error,
                          CommitMode mode, EventKind kind,
                          const std::shared_ptr<detail::SocketRecord>& origin) {
  if (inEvent_) {
    // An event never starts inside another event of the same object; the runtime defers.
    if (error) *error = "re-entrant event";
    return false;
  }
  if (failedUntil()) {  // a failed object runs nothing until its retry time
    if (error) *error = "the object is failed until its retry time: " + failure_->lastError;
    return false;
  }
  if (Ownership* ownership = runtime_.ownership()) {
    std::optional<int64_t> token = ownership->claimToken(className_, id_);
    if (!token) {  // events start only under this host's claim
      if (error) *error = "this host does not own the object";
      return false;
    }
    if (token != fenceToken_) {
      fenceToken_ = token;
      fenceWritten_ = false;
    }
  }
  inEvent_ = true;
  effects_ = std::make_unique<Effects>();
  change_ = {};
  txnDepth_ = 0;
  fault_.reset();
  std::optional<std::string> failure;
  bool building = false;  // true while the instance is being built (a failure there counts)
  // Earlier events of this loop turn may have written without committing yet (grouped
  // commit); this event's writes then sit in a savepoint so a failure undoes only them.
  bool joined = db_ && db_->inTransaction();
  try {
    if (joined) check(db_->savepoint("_do_event"));
    if (fenceToken_ && !fenceWritten_) takeFence();
    if (!instance_) {
      building = true;
      // Reached by id after a restart: the name is in the object's database.
      if (!name_ && constructedBefore_) database();
      runtime_.unparkDatabase(*this);
      instance_ = factory_(*this);
      building = false;
      if (constructedBefore_) ++runtime_.metrics(className_).rehydrations;
      constructedBefore_ = true;
    }
    body(*instance_);
    if (joined) check(db_->release("_do_event"));
  } catch (const std::exception& e) {
    failure = e.what();
  } catch (...) {
    failure = "unknown exception";
  }
  std::unique_ptr<Effects> effects = std::move(effects_);
  inEvent_ = false;
  lastActivity_ = runtime_.clock().now();
  failedOnStorage_ = false;
  if (fencedBy_) {
    int64_t stored = *fencedBy_;
    refuseFenced(stored, effects.get());
    if (error) *error = "fenced: a newer owner's token is in the object's file";
    return false;
  }
  bool txnGone = txnLost_ || (turnTxn_ && !(db_ && db_->inTransaction()));
  if ((failure && fault_) || txnGone) {
    // A storage fault the object did not handle, or one that took the turn's transaction:
    // the whole turn fails.
    failedOnStorage_ = true;
    std::string why = "storage failure: " +
                      (fault_ ? fault_->toString() : std::string("the transaction was rolled back"));
    failTurn(why, Status::ok(), effects.get(), origin);
    if (error) *error = why;
    return false;
  }
  if (failure) {
    abandon(*effects);
    if (db_ && db_->inTransaction()) {
      if (joined) {
        (void)db_->rollbackTo("_do_event");
      } else {
        (void)db_->rollback();
        turnTxn_ = false;
      }
    }
    change_ = {};
    dropInstance(*failure);
    if (error) *error = *failure;
    if (building || kind != EventKind::kOther) noteFailure(*failure);
    runtime_.touch(*this);
    return false;
  }
  if (failure_) noteSuccess();
  held_.push_back(Held{std::move(*effects), change_, origin});
  change_ = {};
  if (db_ && db_->inTransaction() && mode == CommitMode::kGrouped) {
    // Commit once for every event of this loop turn: one fsync for a burst of messages.
    if (!flushScheduled_) {
      flushScheduled_ = true;
      runtime_.defer([this] { flush(); });
    }
    runtime_.touch(*this);
    return true;
  }
  std::string commitError;
  bool committed = flush(&commitError);
  if (!committed && error) *error = commitError;
  return committed;
}

bool ObjectSlot::flush(std::string* error) {
  flushScheduled_ = false;
  turnTxn_ = false;
  if (db_ && db_->inTransaction()) {
    if (fenceToken_) {
      // In the commit's own transaction: a newer owner's token in the file refuses it.
      Result<std::optional<int64_t>> stored = db_->fenceToken();
      if (stored.isOk() && stored.value() && *stored.value() > *fenceToken_) {
        refuseFenced(*stored.value(), nullptr);
        if (error) *error = "fenced: a newer owner's token is in the object's file";
        return false;
      }
      if (!stored.isOk()) {
        failedOnStorage_ = true;
        std::string why = "commit failed: cannot read the fencing token: " +
                          stored.status().toString();
        failTurn(why, stored.status(), nullptr, nullptr);
        if (error) *error = why;
        return false;
      }
    }
    Status s = db_->commit();
    if (!s.isOk()) {
      // Nobody hears of writes that did not persist, and those who would have are told.
      failedOnStorage_ = s.isStorageFault();
      std::string why = "commit failed: " + s.toString();
      failTurn(why, s, nullptr, nullptr);
      if (error) *error = why;
      return false;
    }
    ++runtime_.metrics(className_).commits;
    if (fenceToken_) fenceWritten_ = true;
    if (Status c = db_->takeCheckpointError(); !c.isOk()) {
      logLine(LogLevel::kWarn, "checkpoint failed (the commits are safe in the log; retried "
              "after the next commit): " + c.toString(), className_, id_);
    }
  }
  std::vector<Held> held = std::move(held_);
  held_.clear();
  for (Held& h : held) {
    if (h.change.any()) runtime_.scheduler().committed(*this, h.change);
    release(h.effects);
  }
  runtime_.touch(*this);
  return true;
}

void ObjectSlot::takeFence() {
  storage::ObjectDatabase& db = writable();
  std::optional<int64_t> stored = check(db.fenceToken());
  if (stored && *stored > *fenceToken_) {
    fencedBy_ = *stored;
    throw StorageError(Status::notAllowed("fenced: the object has a newer owner"));
  }
  // Written first, so the transaction holds the write lock from here: a former owner's commit
  // waits for it and then finds this token.
  if (!stored || *stored < *fenceToken_) check(db.setFenceToken(*fenceToken_));
}

void ObjectSlot::refuseFenced(int64_t stored, Effects* current) {
  fencedBy_.reset();
  fault_.reset();
  turnTxn_ = false;
  txnLost_ = false;
  if (db_ && db_->inTransaction()) (void)db_->rollback();
  for (Held& h : held_) abandon(h.effects);
  held_.clear();
  if (current) abandon(*current);
  change_ = {};
  int64_t mine = fenceToken_.value_or(0);
  fenceToken_.reset();
  fenceWritten_ = false;
  runtime_.fencedOut(*this, stored, mine);
}

void ObjectSlot::failTurn(const std::string& why, const Status& commitStatus, Effects* current,
                          const std::shared_ptr<detail::SocketRecord>& origin) {
  // A handle that became read-only (its folder did) or reads a corrupt file is replaced: the
  // next event opens the file again, so it works once the folder is writable or the file
  // restored. Otherwise the handle stays, and the next commit overwrites what the failed one
  // left in the log.
  bool reopen = fault_ ? fault_->needsReopen() : commitStatus.needsReopen();
  fault_.reset();
  turnTxn_ = false;
  txnLost_ = false;
  if (db_) {
    if (db_->inTransaction()) (void)db_->rollback();
    if (reopen) db_.reset();
  }
  std::vector<std::shared_ptr<detail::SocketRecord>> told;
  auto tell = [&](const std::shared_ptr<detail::SocketRecord>& s) {
    if (s && std::find(told.begin(), told.end(), s) == told.end()) told.push_back(s);
  };
  bool changed = change_.any();
  for (Held& h : held_) {
    tell(h.origin);
    for (SocketEffect& e : h.effects.sockets) tell(e.socket);
    abandon(h.effects);
    changed = changed || h.change.any();
  }
  if (current) {
    for (SocketEffect& e : current->sockets) tell(e.socket);
    abandon(*current);
  }
  tell(origin);
  held_.clear();
  change_ = {};
  if (changed) runtime_.scheduler().rolledBack(*this);
  dropInstance(why);
  size_t closed = 0;
  for (const auto& s : told) {
    if (s->state != detail::SocketState::kOpen) continue;
    s->state = detail::SocketState::kClosing;
    s->early.clear();
    if (s->transport) s->transport->close(1011, "storage failure, reconnect");
    ++closed;
  }
  logLine(LogLevel::kError,
          why + " (the turn's writes rolled back; " + std::to_string(closed) +
              " WebSockets closed with 1011)",
          className_, id_);
  runtime_.touch(*this);
}

void ObjectSlot::dropInstance(const std::string& why) {
  if (!instance_) return;
  logLine(LogLevel::kWarn, "instance reset: " + why, className_, id_);
  for (TimerQueue::Id t : timers_) runtime_.timers().cancel(t);
  timers_.clear();
  for (auto& weak : pending_) {
    if (auto p = weak.lock(); p && p->isOpen()) {
      p->answered = true;
      p->deliver(Response::json(500, R"({"error":"the object was reset"})"));
    }
  }
  pending_.clear();
  instance_.reset();
  ++generation_;
}

std::optional<std::string> ObjectSlot::evictionBlocker() const {
  if (inEvent_) return "event in flight";
  if (flushScheduled_) return "commit pending";
  if (!timers_.empty()) return "pending timer";
  for (const auto& weak : pending_) {
    if (auto p = weak.lock(); p && p->isOpen()) return "pending response";
  }
  if (pendingStubCalls_ > 0) return "pending call to another object";
  return std::nullopt;
}

void ObjectSlot::evict() {
  if (!instance_) return;
  flush();  // what earlier events wrote is committed (and their messages sent) first
  instance_.reset();
  ++generation_;
  // A forced eviction (admin API, shutdown) may leave work the instance can no longer finish:
  // its timers are dropped and its pending answers get a 503 instead of hanging.
  for (TimerQueue::Id t : timers_) runtime_.timers().cancel(t);
  timers_.clear();
  for (auto& weak : pending_) {
    if (auto p = weak.lock(); p && p->isOpen()) {
      p->answered = true;
      p->deliver(Response::json(503, R"({"error":"the object was evicted before it answered"})"));
    }
  }
  pending_.clear();
  runtime_.parkDatabase(*this);  // the handle stays open (bounded): waking costs no reopen
  ++runtime_.metrics(className_).evictions;
  logLine(LogLevel::kDebug, "evicted", className_, id_);
}

// --- output gate ----------------------------------------------------------------------------

void ObjectSlot::enqueueSend(const std::shared_ptr<detail::SocketRecord>& s, FramePtr frame) {
  SocketEffect e{s, std::move(frame)};
  if (effects_) {
    effects_->sockets.push_back(std::move(e));
  } else {
    applyNow(e);
  }
}

void ObjectSlot::enqueueClose(const std::shared_ptr<detail::SocketRecord>& s, int code,
                              std::string reason) {
  SocketEffect e{s, nullptr, code, std::move(reason)};
  if (effects_) {
    effects_->sockets.push_back(std::move(e));
  } else {
    applyNow(e);
  }
}

void ObjectSlot::enqueueAnswer(std::shared_ptr<detail::PendingResponseState> p, Response r) {
  if (effects_) {
    effects_->answers.emplace_back(std::move(p), std::move(r));
  } else if (p->isOpen()) {
    p->answered = true;
    p->deliver(std::move(r));
  }
}

void ObjectSlot::enqueueCall(std::function<void()> call) {
  if (effects_) {
    effects_->calls.push_back(std::move(call));
  } else {
    call();
  }
}

void ObjectSlot::applyNow(SocketEffect& e) {
  detail::SocketRecord& s = *e.socket;
  if (s.state == detail::SocketState::kClosed) return;
  if (e.frame) {
    ++metrics_->messagesOut;
    if (s.transport) {
      s.transport->send(e.frame);
    } else if (!s.earlyClose) {
      s.early.push_back(e.frame);
    }
  } else if (s.transport) {
    s.state = detail::SocketState::kClosing;
    s.transport->close(e.closeCode, e.closeReason);
  } else if (!s.earlyClose) {
    // Closed during the upgrade: the frames sent before still go out, then this close.
    s.state = detail::SocketState::kClosing;
    s.earlyClose.emplace(e.closeCode, e.closeReason);
  }
}

void ObjectSlot::release(Effects& effects) {
  for (SocketEffect& e : effects.sockets) applyNow(e);
  for (auto& [p, response] : effects.answers) {
    if (!p->isOpen()) continue;
    p->answered = true;
    p->deliver(std::move(response));
  }
  for (auto& call : effects.calls) call();
  for (Transfer& t : effects.transfers) {
    runtime_.transferSocket(*this, t.socket, t.className, t.name, std::move(t.request));
  }
}

void ObjectSlot::abandon(Effects& effects) {
  for (Transfer& t : effects.transfers) {
    detail::SocketRecord& s = *t.socket;
    s.transferring = false;
    s.held.clear();
    if (s.state != detail::SocketState::kOpen) continue;
    s.state = detail::SocketState::kClosing;
    if (s.transport) s.transport->close(1011, "internal error");
  }
}

void ObjectSlot::trackPending(const std::shared_ptr<detail::PendingResponseState>& p) {
  p->slot = this;
  std::erase_if(pending_, [](const auto& w) { return w.expired(); });
  pending_.push_back(p);
}

void detail::PendingResponseState::answer(Response response) {
  if (!isOpen()) return;
  if (slot == nullptr) {
    answered = true;
    deliver(std::move(response));
    return;
  }
  // Queued behind the running event's commit, like every other output.
  slot->enqueueAnswer(shared_from_this(), std::move(response));
}

}  // namespace dohost
