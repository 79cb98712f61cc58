// Runtime: the objects of one host process. Owns every ObjectSlot, the timers, the scheduler
// (alarms and named schedules, scheduler.h) and the metrics; runs events through the one
// dispatch path (implicit transaction, output gate, the single place that catches what object code throws). Knows nothing of the
// network: the server feeds it requests and socket events, tests feed it directly.
//
// Thread: the loop thread.
#pragma once

#include <functional>
#include <list>
#include <unordered_map>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dohost/registry.h"
#include "dohost/storage/object_db.h"
#include "dohost/time.h"
#include "internal.h"
#include "loop_inbox.h"
#include "ownership.h"
#include "scheduler.h"
#include "timer_queue.h"

namespace dohost {
namespace cluster {
class Relay;
}

using namespace std::chrono_literals;

struct RuntimeOptions {
  std::string dataDir = "./data";
  Duration idleEvict = 10s;  // Cloudflare hibernates an idle object after about 10 s
  storage::Durability durability = storage::Durability::kFull;  // nothing acknowledged is lost
  storage::Limits storageLimits;
  size_t maxSocketsPerObject = 32768;     // Cloudflare's per-object limit
  size_t maxAttachmentBytes = 16 * 1024;  // Cloudflare's attachment limit
  Duration alarmRetryBase = 2s;           // Cloudflare: 2 s, doubling
  int alarmMaxRetries = 6;                // Cloudflare: six retries, then the alarm is given up
  // Database handles kept open for evicted objects, so waking one does not reopen its file
  // (and recreate its WAL); the least recently evicted beyond this are closed.
  size_t maxParkedDatabases = 256;
  // Crash loops: an object whose constructor, fetch or alarm fails this many times within the
  // window is put in the failed state (not run, its clients told) for the backoff, which
  // doubles each time it fails again after a retry, up to the maximum.
  int objectFailureLimit = 5;
  Duration objectFailureWindow = 60s;
  Duration objectFailureBackoff = 10s;
  Duration objectFailureBackoffMax = 600s;
  // Cluster (with an Ownership): how often the shared alarm index is read again for alarms
  // other hosts set (a dead host's objects' alarms fire here once it is gone).
  Duration alarmRescanInterval = 1s;
  // Named schedules (state.schedule, scheduleEvery) one object may keep.
  size_t maxSchedulesPerObject = 1000;
};

// An object as a route names it: its class, its id (64 hex) and the name, if routed by name.
struct ObjectRef {
  std::string className;
  std::string id;
  std::optional<std::string> name;
};

struct ClassMetrics {
  int64_t evictions = 0;
  int64_t rehydrations = 0;
  int64_t messagesIn = 0;
  int64_t messagesOut = 0;
  int64_t autoResponses = 0;
  int64_t alarmsFired = 0;
  int64_t alarmRetries = 0;
  int64_t schedulesFired = 0;
  int64_t scheduleRetries = 0;
  int64_t commits = 0;
  int64_t objectFailures = 0;  // failures that count toward the failed state
};

class ObjectSlot;

class Runtime {
 public:
  Runtime(RuntimeOptions options, const Registry& registry, Clock& clock);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Opens the host alarm index and schedules every alarm in it (overdue ones fire at once).
  Status start();
  // Commits what is pending, drops every instance and slot, closing databases. The server is
  // destroyed first, so the closes of its last connections reach their objects; a socket still
  // open here is detached (a close arriving later finds no object).
  void shutdown();
  // SIGTERM in a cluster, before the claims are released: what ran commits, every instance
  // goes and the alarms stop. The slots keep their sockets (the server closes them with 1012
  // over the leave spread); with no claim left, nothing runs here again.
  void handOver();

  const RuntimeOptions& options() const { return options_; }
  const Registry& registry() const { return registry_; }
  Clock& clock() { return clock_; }
  TimerQueue& timers() { return timers_; }

  // The server sets this to re-arm its wake-up whenever a timer is scheduled.
  void setWakeHook(std::function<void()> hook) { wake_ = std::move(hook); }
  TimerQueue::Id schedule(TimePoint at, std::function<void()> fn);
  void defer(std::function<void()> fn) { schedule(clock_.now(), std::move(fn)); }
  // Runs what is due now. With a ManualClock, tests advance the clock and call this.
  void runDue();
  // Work other threads hand to the loop (the cluster's answers); the server drains it.
  LoopInbox& inbox() { return inbox_; }

  // --- Cluster ------------------------------------------------------------------------------
  // Who may run objects here; nullptr (the default, no cluster): every object runs here.
  // Set before the loop runs; with one, rescans of the alarm index start.
  void setOwnership(Ownership* ownership);
  Ownership* ownership() const { return ownership_; }
  // The inter-host links (set by the server in a cluster), for the admin API.
  void setRelay(cluster::Relay* relay) { relay_ = relay; }
  const cluster::Relay* relay() const { return relay_; }
  cluster::Relay* relay() { return relay_; }
  // Whether an event for the object may start now: no cluster, or this host holds its claim.
  bool mayRun(const std::string& className, const std::string& id) const {
    return ownership_ == nullptr || ownership_->claimToken(className, id).has_value();
  }
  // Calls `then` with the object's owner: at once when mayRun (local), else once
  // Ownership::resolve answered (later, on the loop thread).
  void acquire(const std::string& className, const std::string& id,
               std::function<void(Result<OwnerInfo>)> then);
  // The host stopped serving every object (self-fence, lost lease): instances are dropped,
  // their sockets closed with 1012, every claim forgotten.
  void dropAllClaims(const std::string& why);
  // A commit of `slot` was refused: the file carries `stored`, a newer owner's token than
  // this host's `mine`. Called by the slot after it rolled back and dropped the instance.
  void fencedOut(ObjectSlot& slot, int64_t stored, int64_t mine);
  int64_t fencingRefusals() const { return fencingRefusals_; }

  // The object (class, id), creating its slot. `name` is recorded when given.
  ObjectSlot& slot(const std::string& className, const std::string& id,
                   const std::optional<std::string>& name);
  ObjectSlot* findSlot(const std::string& className, const std::string& id);
  // The object a route target (name or id) names, without making a slot; an unknown class or
  // a bad id is an error.
  Result<ObjectRef> objectRef(const std::string& className, const std::optional<std::string>& name,
                              const std::optional<std::string>& id) const;
  // Resolves a route target (name or id) to a slot; an unknown class or a bad id is an error.
  Result<ObjectSlot*> resolve(const std::string& className, const std::optional<std::string>& name,
                              const std::optional<std::string>& id);
  std::vector<ObjectSlot*> slots();

  // Events from outside.
  Response fetch(ObjectSlot& slot, Request& request);
  void onMessage(const std::shared_ptr<detail::SocketRecord>& socket, Message message);
  void onClose(const std::shared_ptr<detail::SocketRecord>& socket, CloseInfo info);
  void onError(const std::shared_ptr<detail::SocketRecord>& socket, std::string reason);
  // Hands `socket` from `from` to the object (className, name): see
  // ObjectState::transferWebSocket. Runs after the handing event committed.
  void transferSocket(ObjectSlot& from, const std::shared_ptr<detail::SocketRecord>& socket,
                      const std::string& className, const std::string& name, Request request);

  // Admin: evict now (sockets stay open); run the alarm now. False if there is nothing to do.
  bool evictNow(ObjectSlot& slot);
  bool runAlarmNow(ObjectSlot& slot);

  // Alarms and schedules: their timers, the alarm index, retries (scheduler.h).
  Scheduler& scheduler() { return scheduler_; }
  // The time the alarm timer of (class, id) is set for, if any (no disk access).
  std::optional<TimePoint> scheduledAlarm(const std::string& className, const std::string& id) const {
    return scheduler_.scheduledAlarm(className, id);
  }
  // Objects with a pending alarm or schedule but nothing in memory (no slot): they are
  // "known" too.
  std::vector<Scheduler::Pending> waitingWithoutSlot() const {
    std::vector<Scheduler::Pending> out;
    for (Scheduler::Pending& a : scheduler_.pending()) {
      if (slots_.find(a.className + "/" + a.id) == slots_.end()) out.push_back(std::move(a));
    }
    return out;
  }
  ClassMetrics& metrics(const std::string& className) { return metrics_[className]; }
  const std::map<std::string, ClassMetrics>& allMetrics() const { return metrics_; }
  uint64_t nextSocketId() { return ++lastSocketId_; }
  size_t openSockets() const { return openSockets_; }
  void socketOpened() { ++openSockets_; }
  void socketClosed() { --openSockets_; }

  // The LRU of evicted objects whose database stays open (see maxParkedDatabases).
  void parkDatabase(ObjectSlot& slot);
  void unparkDatabase(ObjectSlot& slot);

  // Called by a slot when it may have become evictable or removable.
  void touch(ObjectSlot& slot);

 private:
  void idleCheck(ObjectSlot& slot);
  void endSocket(const std::shared_ptr<detail::SocketRecord>& socket, const char* what,
                 const std::function<void(DurableObject&, WebSocket)>& handler);
  void maybeForget(ObjectSlot& slot);
  static bool forgettable(const ObjectSlot& slot);
  // Closes the object's sockets with 1012 (the host no longer serves it) and drops its
  // instance; the claim itself is the caller's business.
  void stopServing(ObjectSlot& slot, const std::string& why);

  RuntimeOptions options_;
  const Registry& registry_;
  Clock& clock_;
  TimerQueue timers_;
  std::function<void()> wake_;
  std::list<ObjectSlot*> parked_;  // oldest first; declared before slots_, which unpark on exit
  std::unordered_map<ObjectSlot*, std::list<ObjectSlot*>::iterator> parkedIndex_;
  std::map<std::string, std::unique_ptr<ObjectSlot>> slots_;  // key: class + "/" + id
  std::map<std::string, ClassMetrics> metrics_;
  uint64_t lastSocketId_ = 0;
  size_t openSockets_ = 0;
  bool shuttingDown_ = false;
  LoopInbox inbox_;
  Ownership* ownership_ = nullptr;
  cluster::Relay* relay_ = nullptr;
  int64_t fencingRefusals_ = 0;
  Scheduler scheduler_{*this};  // after timers_ and slots_ (its timers call into both)
};

}  // namespace dohost
