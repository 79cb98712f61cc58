// Scheduler: the one owner of the host's timed wake-ups of objects, the alarm of
// storage().setAlarm() and the named schedules of state.schedule()/scheduleEvery().
//
// What it owns:
//   - the host alarm index (DATA/_dohost/alarms.sqlite): per object, the earliest time it must
//     be woken over its alarm and its schedules;
//   - the in-memory timers: per object one alarm timer (time, retry count) and one schedule
//     timer (the earliest next run of its schedules);
//   - the retry policy (alarmRetryBase doubling, alarmMaxRetries) and what happens when it is
//     exhausted (the alarm's failure record; a schedule's last error);
//   - the validation and the rows of named schedules (what the slot writes).
// What it does not own: the stored alarm and schedule rows themselves. They live in the
// object's own database, written by the slot inside the event's transaction, and they are the
// source of truth. The slot keeps what a turn changed (TurnChange) until the commit and hands
// it over afterwards (committed) or says the turn failed (rolledBack).
//
// Invariants:
//   - Wake-ups may be spurious, never missed. The index is written before a commit that sets or
//     moves a time earlier (alarmWillBeSet, scheduleWillBeSet), and lowered or cleared only
//     after a commit, from the committed state.
//   - A timer that fires re-reads the object's database and runs only what is due there.
//   - Whenever an object's database is open, the scheduler knows its earliest schedule
//     (objectOpened), so index writes never forget a committed schedule.
//   - Events run only where the object may run (Runtime::mayRun): in a cluster a timer of an
//     object claimed elsewhere is dropped here, and one of an unclaimed object claims it first.
//
// Thread: the loop thread.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dohost/object_state.h"
#include "dohost/storage/alarm_index.h"
#include "dohost/storage/object_db.h"
#include "dohost/time.h"
#include "timer_queue.h"

namespace dohost {

class Runtime;
class ObjectSlot;

class Scheduler {
 public:
  // What one turn (or event) changed, kept by the slot until its commit.
  struct TurnChange {
    std::optional<std::optional<TimePoint>> alarm;  // set: the alarm's new time, or deleted
    bool schedules = false;                         // some schedule row was written
    bool any() const { return alarm.has_value() || schedules; }
  };

  explicit Scheduler(Runtime& runtime);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Opens the index and arms a timer for every entry (overdue ones fire at once).
  Status start(const std::string& indexPath);
  void stop();  // forgets every timer and closes the index (the runtime shuts down)
  // Cluster: rereads the index every alarmRescanInterval for entries other hosts wrote.
  void startRescans();

  // --- The slot, inside an event --------------------------------------------------------------
  // Before the slot stores the time: the index learns it first (a crash in between gives at
  // worst a spurious wake-up).
  Status alarmWillBeSet(ObjectSlot& slot, TimePoint when);
  Status scheduleWillBeSet(ObjectSlot& slot, TimePoint when);
  // The rows of the API calls. Throw UsageError (nothing is stored then).
  storage::ScheduleRecord onceRecord(std::string_view name, TimePoint when,
                                     std::string_view payload, TimePoint now) const;
  storage::ScheduleRecord everyRecord(std::string_view name, Duration interval,
                                      std::string_view payload, TimePoint now) const;
  storage::ScheduleRecord cronRecord(std::string_view name, std::string_view cron,
                                     std::string_view payload, TimePoint now) const;
  // REQUIRES: `existing` schedules are stored now, `replacing` whether the new one has one's name.
  void checkLimit(int64_t existing, bool replacing) const;
  // The row after the run of `row` starts at `now`: the next planned run, or nullopt (a one-off
  // schedule is gone). Missed runs are skipped.
  std::optional<storage::ScheduleRecord> afterRun(const storage::ScheduleRecord& row,
                                                  TimePoint now) const;
  static Schedule toSchedule(const storage::ScheduleRecord& row);

  // --- The slot, after a turn ---------------------------------------------------------------
  void committed(ObjectSlot& slot, const TurnChange& change);
  // A turn that changed something failed: the index gets back what the committed state needs.
  void rolledBack(ObjectSlot& slot);
  // The slot opened the object's database (no transaction yet): learn its earliest schedule.
  void objectOpened(ObjectSlot& slot, storage::ObjectDatabase& db);

  // --- Admin and metrics ----------------------------------------------------------------------
  bool runAlarmNow(ObjectSlot& slot);  // false if there is no alarm (nor a failed one)
  // The time the alarm timer of (class, id) is set for, if any (no disk access).
  std::optional<TimePoint> scheduledAlarm(const std::string& className,
                                          const std::string& id) const;
  // The earliest next run of the object's schedules the scheduler has armed (no disk access).
  std::optional<TimePoint> nextScheduleRun(const std::string& className,
                                           const std::string& id) const;
  struct Pending {
    std::string className, id;
    std::optional<std::string> name;
    std::optional<TimePoint> alarm;         // a pending alarm timer (index wake-ups included)
    std::optional<TimePoint> nextSchedule;  // the earliest next run of its schedules
  };
  // Objects with a pending alarm timer or schedule, by class and id.
  std::vector<Pending> pending() const;

 private:
  struct AlarmTimer {
    std::string className, id;
    std::optional<std::string> name;
    TimePoint time;
    int retryCount = 0;
    int readFailures = 0;  // consecutive failures to read the stored alarm (storage faults)
    TimerQueue::Id timer = 0;
  };
  struct ScheduleTimer {
    std::string className, id;
    std::optional<std::string> name;
    TimePoint time;  // the earliest next run
    int readFailures = 0;
    TimerQueue::Id timer = 0;
  };

  void scheduleAlarm(const std::string& className, const std::string& id,
                     const std::optional<std::string>& name, TimePoint when, int retryCount,
                     int readFailures = 0);
  void fireAlarm(const std::string& key, bool force);
  // The wait before retry number `attempt` + 1: alarmRetryBase doubling, at most the wait
  // before the last retry.
  Duration backoff(int attempt) const;
  bool recordAlarmFailure(ObjectSlot& slot, TimePoint scheduled, int retries,
                          const std::string& error);
  void rescan();

  // Schedules: one timer per object, at its earliest next run; nullopt disarms it.
  void armSchedules(ObjectSlot& slot, std::optional<TimePoint> next, int readFailures = 0);
  void reloadSchedules(ObjectSlot& slot);  // from the committed rows
  void fireSchedules(const std::string& key);
  void runSchedule(ObjectSlot& slot, const std::string& name);
  bool recordScheduleFailure(ObjectSlot& slot, const storage::ScheduleRecord& row,
                             const std::string& error);
  storage::ScheduleRecord validated(std::string_view name, std::string_view payload) const;
  TimePoint nextPlanned(const storage::ScheduleRecord& row, TimePoint now) const;

  // The index entry of the object from what is kept in memory: the earliest of its alarm and
  // its schedules, or none (then the entry goes).
  void syncIndex(const std::string& className, const std::string& id,
                 const std::optional<std::string>& name);
  std::optional<TimePoint> earliest(const std::string& key) const;

  Runtime& runtime_;
  std::unique_ptr<storage::AlarmIndex> index_;
  std::map<std::string, AlarmTimer> alarms_;        // key: class + "/" + id
  std::map<std::string, ScheduleTimer> schedules_;  // same key
  bool stopped_ = false;
};

}  // namespace dohost
