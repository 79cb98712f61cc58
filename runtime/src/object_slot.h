// ObjectSlot: one object as the host keeps it. It outlives the object's instance: it owns the
// database handle, the accepted sockets (with their tags and attachments) and the event queue,
// and it is the ObjectState, Storage and Sql the instance talks to. Of the alarm and the named
// schedules it keeps only what the running turn changed, until the commit; the rest belongs
// to the Scheduler (scheduler.h), which it tells before storing a time and after the commit.
//
// States: live (instance in memory), evicted (no instance; sockets may stay open). The slot is
// forgotten by the runtime once it is evicted and has no open socket.
//
// In a cluster an event runs only while this host holds the object's claim, and each commit's
// transaction checks the fencing token stored in the file (docs/cluster.md, "Fencing").
//
// Thread: the loop thread.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "dohost/durable_object.h"
#include "dohost/object_state.h"
#include "dohost/registry.h"
#include "dohost/storage/object_db.h"
#include "internal.h"
#include "scheduler.h"
#include "timer_queue.h"

namespace dohost {

class Runtime;
struct ClassMetrics;

class ObjectSlot final : public ObjectState, public Storage, public Sql {
 public:
  ObjectSlot(Runtime& runtime, const ObjectFactory& factory, std::string className,
             std::string id, std::optional<std::string> name);
  ~ObjectSlot() override;

  // --- Runtime side ---------------------------------------------------------------------
  // Runs one event: constructs the instance if needed, runs `body`, commits, then releases
  // what the event sent. Returns false (with `error`) if the constructor, the body or the
  // commit failed: then nothing was sent, the writes rolled back and the instance is dropped.
  // kGrouped: the commit (and the release of what the event sent) happens once for all events
  // of the object in this loop turn. kNow: commit before returning (fetch returns its response
  // to the server directly; alarms decide on retries from the outcome).
  // `origin`: the socket whose message the event handles, closed with 1011 if the turn fails.
  //
  // A storage fault (Status::isStorageFault) fails the whole turn, even when the object
  // catches the exception: SQLite may have rolled the transaction back under every event of
  // the turn. So does a failed commit. Then every event's writes roll back, the turn's held
  // output is dropped, and the sockets that would have heard of it (and the origins of its
  // messages) are closed with 1011, so their clients reconnect and read committed state.
  enum class CommitMode { kGrouped, kNow };
  // A failing constructor counts toward the failed state in every event; a failing handler only
  // in fetch and alarm events (a message handler's failure is about that message).
  enum class EventKind { kOther, kFetch, kAlarm };
  bool runEvent(const std::function<void(DurableObject&)>& body, std::string* error = nullptr,
                CommitMode mode = CommitMode::kNow, EventKind kind = EventKind::kOther,
                const std::shared_ptr<detail::SocketRecord>& origin = nullptr);
  // Commits what grouped events wrote and releases their output. False if the commit failed.
  bool flush(std::string* error = nullptr);
  bool flushPending() const { return flushScheduled_; }
  // Whether the last failed event or commit failed on a storage fault (503 rather than 500).
  bool failedOnStorage() const { return failedOnStorage_; }

  bool isLive() const { return instance_ != nullptr; }
  bool inEvent() const { return inEvent_; }
  // Why the instance cannot be evicted now, or nullopt if it can.
  std::optional<std::string> evictionBlocker() const;
  void evict();  // REQUIRES: no event running
  void dropInstance(const std::string& why);
  bool hasSockets() const { return !sockets_.empty(); }
  const std::map<uint64_t, std::shared_ptr<detail::SocketRecord>>& sockets() const {
    return sockets_;
  }
  // Takes the socket out of the object for good: closed, no object, no connection.
  void detachSocket(uint64_t id);
  // Takes a socket out of this object without closing it: it is being handed to another object,
  // which adopts the same record (its connection stays up).
  void releaseSocket(uint64_t id);
  void addSocket(const std::shared_ptr<detail::SocketRecord>& socket);
  std::optional<std::string> autoResponseFor(std::string_view message) const;
  // The auto-response pair, when it is a fixed one (not a responder function).
  std::optional<std::pair<std::string, std::string>> autoResponsePair() const;
  TimePoint lastActivity() const { return lastActivity_; }
  std::optional<TimerQueue::Id>& idleTimer() { return idleTimer_; }
  int64_t storageBytes();
  size_t attachmentLimit() const;
  std::optional<TimePoint> storedAlarm();  // opens the database if needed
  std::optional<storage::AlarmFailure> alarmFailure();
  storage::ObjectDatabase& database();     // opens it if needed; throws StorageError
  void closeDatabase();
  void setName(const std::optional<std::string>& name);
  void enqueueSend(const std::shared_ptr<detail::SocketRecord>& s, FramePtr frame);
  void enqueueClose(const std::shared_ptr<detail::SocketRecord>& s, int code, std::string reason);
  void enqueueAnswer(std::shared_ptr<detail::PendingResponseState> p, Response response);
  void trackPending(const std::shared_ptr<detail::PendingResponseState>& p);
  // Runs `call` after the running event commits (dropped if it fails); at once outside events.
  void enqueueCall(std::function<void()> call);
  void beginAlarmRun();  // clears the stored alarm inside the current event
  std::optional<std::optional<TimePoint>> alarmChange() const { return change_.alarm; }
  // Inside the event that runs schedule `name`: the row if it is due at `now`, after writing
  // what follows the run (the next planned run, or the row's removal). nullopt: not due.
  std::optional<storage::ScheduleRecord> beginScheduleRun(std::string_view name, TimePoint now);
  std::vector<storage::ScheduleRecord> storedSchedules();  // opens the database if needed

  // --- Crash loops (slot_failures.cc) ------------------------------------------------------
  // Failures since the last successful event. Once `count` reaches the limit within the window,
  // the object is failed until `retryAt`: no event runs, fetches are answered 503, its sockets
  // are closed with 1011. After that one event is tried: a success clears the record, a failure
  // fails it again at once, for twice as long.
  struct FailureRecord {
    int count = 0;
    TimePoint firstAt;  // the window starts here
    TimePoint lastAt;
    std::string lastError;
    int periods = 0;    // times it was put in the failed state without a success since
    std::optional<TimePoint> retryAt;
  };
  const std::optional<FailureRecord>& failure() const { return failure_; }
  std::optional<TimePoint> failedUntil() const;  // set while the object is failed
  bool keepsFailureRecord() const;               // recent failures: the slot stays known
  Response failedResponse() const;               // 503 with the last error and the retry time

  // --- ObjectState ------------------------------------------------------------------------
  const std::string& className() const override { return className_; }
  const std::string& id() const override { return id_; }
  const std::optional<std::string>& name() const override { return name_; }
  Storage& storage() override { return *this; }
  TimePoint now() const override;
  WebSocket acceptWebSocket(Request& request, std::vector<std::string> tags) override;
  std::vector<WebSocket> getWebSockets(std::string_view tag) override;
  size_t countWebSockets(std::string_view tag) override;
  size_t broadcast(std::string_view message, const BroadcastOptions& options) override;
  void setWebSocketAutoResponse(std::string request, std::string response) override;
  std::optional<TimePoint> getWebSocketAutoResponseTimestamp(const WebSocket& ws) override;
  void setWebSocketAutoResponder(std::string request, AutoResponder responder) override;
  void transferWebSocket(WebSocket ws, std::string_view className, std::string_view name,
                         Request request) override;
  TimerId setTimeout(Duration delay, std::function<void()> fn) override;
  void clearTimeout(TimerId id) override;
  std::unique_ptr<Stub> stubByName(std::string_view className, std::string_view name) override;
  std::unique_ptr<Stub> stubById(std::string_view className, std::string_view id) override;
  void schedule(std::string_view name, TimePoint when, std::string_view payload) override;
  void scheduleEvery(std::string_view name, Duration interval, std::string_view payload) override;
  void scheduleEvery(std::string_view name, std::string_view cron,
                     std::string_view payload) override;
  bool cancel(std::string_view name) override;
  std::vector<Schedule> schedules() override;

  // --- Storage ----------------------------------------------------------------------------
  std::optional<std::string> get(std::string_view key) override;
  KvPairs get(const std::vector<std::string>& keys) override;
  void put(std::string_view key, std::string_view value) override;
  void put(const KvPairs& entries) override;
  bool remove(std::string_view key) override;
  int64_t remove(const std::vector<std::string>& keys) override;
  KvPairs list(const ListOptions& options) override;
  void deleteAll() override;
  void transaction(const std::function<void()>& fn) override;
  Sql& sql() override { return *this; }
  std::optional<TimePoint> getAlarm() override;
  void setAlarm(TimePoint when) override;
  void deleteAlarm() override;

  // --- Sql --------------------------------------------------------------------------------
  SqlCursor execParams(std::string_view query, const std::vector<SqlValue>& params) override;
  int64_t databaseSize() override;

 private:
  struct SocketEffect {
    std::shared_ptr<detail::SocketRecord> socket;
    FramePtr frame;  // null: a close
    int closeCode = 0;
    std::string closeReason;
  };
  struct Transfer {
    std::shared_ptr<detail::SocketRecord> socket;
    std::string className;
    std::string name;
    Request request;
  };
  struct Effects {
    std::vector<SocketEffect> sockets;
    std::vector<std::pair<std::shared_ptr<detail::PendingResponseState>, Response>> answers;
    std::vector<std::function<void()>> calls;  // requests to other objects
    std::vector<Transfer> transfers;           // sockets handed to other objects
  };

  storage::ObjectDatabase& writable();  // database() inside the event's transaction
  void putSchedule(const storage::ScheduleRecord& record);
  // Throws StorageError for a failed status; inside an event a storage fault also marks the
  // turn as failed.
  void check(const Status& s);
  template <typename T>
  T check(Result<T> r) {
    if (!r.isOk()) check(r.status());
    return std::move(r).value();
  }
  void noteFault(const Status& s);
  // Cluster: the first event after a claim writes the claim's token into the file (after
  // checking that no newer owner wrote one); see fenceToken_.
  void takeFence();
  // A newer owner's token (`stored`) is in the file: nothing of this turn is committed or sent,
  // the instance goes, and the runtime forgets the claim and closes the sockets (1012).
  void refuseFenced(int64_t stored, Effects* current);
  void failTurn(const std::string& why, const Status& commitStatus, Effects* current,
                const std::shared_ptr<detail::SocketRecord>& origin);
  void noteFailure(const std::string& error);
  void noteSuccess();
  TimePoint failureRecordUntil() const;
  void release(Effects& effects);
  // The effects of an event that failed or whose commit failed: sockets it was handing over
  // are closed (1011), since the hand-over will not happen.
  void abandon(Effects& effects);
  void applyNow(SocketEffect& effect);
  bool matches(const detail::SocketRecord& s, const BroadcastOptions& options) const;

  Runtime& runtime_;
  const ObjectFactory& factory_;
  std::string className_;
  std::string id_;
  std::optional<std::string> name_;
  std::unique_ptr<storage::ObjectDatabase> db_;
  std::unique_ptr<DurableObject> instance_;
  uint64_t generation_ = 0;  // bumped when the instance goes; stale callbacks check it
  bool inEvent_ = false;
  bool constructedBefore_ = false;
  // Whether the object's file exists. Until its first write an object has none: reads answer
  // from "empty" without creating it (a probe of a never-used name leaves nothing on disk).
  bool fileExists_ = false;
  bool noStorageYet() const { return !db_ && !fileExists_; }
  std::unique_ptr<Effects> effects_;  // the output gate of the running event
  struct Held {
    Effects effects;
    Scheduler::TurnChange change;  // what it changed of the alarm and schedules
    std::shared_ptr<detail::SocketRecord> origin;
  };
  std::vector<Held> held_;  // events that ended but whose commit is still to come, in order
  bool flushScheduled_ = false;
  std::optional<Status> fault_;  // the first storage fault the running event met
  bool turnTxn_ = false;         // this turn opened a transaction (not yet committed)
  bool txnLost_ = false;         // ... and SQLite rolled it back under the turn
  bool failedOnStorage_ = false;
  Scheduler::TurnChange change_;  // the running event's, handed to the scheduler after commit
  int txnDepth_ = 0;
  std::map<uint64_t, std::shared_ptr<detail::SocketRecord>> sockets_;  // by id = accept order
  // How many of sockets_ carry each tag (a socket's tags are fixed while it is here, and no
  // socket in sockets_ is closed: detachSocket closes and removes at once), so counting is not
  // a walk over every socket on each upgrade and message.
  std::map<std::string, size_t, std::less<>> tagCounts_;
  void countTags(const detail::SocketRecord& socket, bool added);
  struct AutoResponse {
    std::string request;
    std::string response;
    AutoResponder responder;  // set: builds the response instead
  };
  std::optional<AutoResponse> autoResponse_;
  std::set<TimerQueue::Id> timers_;
  std::vector<std::weak_ptr<detail::PendingResponseState>> pending_;
  int pendingStubCalls_ = 0;
  TimePoint lastActivity_;
  std::optional<TimerQueue::Id> idleTimer_;
  ClassMetrics* metrics_;  // the class's counters (map nodes are stable)
  std::optional<FailureRecord> failure_;
  std::optional<TimerQueue::Id> failureTimer_;
  // Cluster: the token of this host's claim the slot last ran under, and whether a commit
  // carried it into the file. Every commit first compares the file's token with it.
  std::optional<int64_t> fenceToken_;
  bool fenceWritten_ = false;
  std::optional<int64_t> fencedBy_;  // set by takeFence when a newer token is in the file

  friend class SlotStub;
};

}  // namespace dohost
