// Runtime's alarm scheduling. The object's own database is the source of truth; the host index
// (DATA/_dohost/alarms.sqlite) only guarantees the wake-up. A wake-up re-reads the object's
// alarm and does nothing if it moved, so spurious wake-ups are harmless and none is missed.
#include <algorithm>
#include <cmath>

#include "dohost/log.h"
#include "object_slot.h"
#include "runtime.h"

namespace dohost {

Status Runtime::alarmWillBeSet(ObjectSlot& slot, TimePoint when) {
  if (!alarmIndex_) return Status::ok();
  return alarmIndex_->upsert({slot.className(), slot.id(), slot.name(), toUnixMillis(when)});
}

void Runtime::restoreAlarmIndex(ObjectSlot& slot) {
  auto it = alarms_.find(slot.className() + "/" + slot.id());
  // No alarm kept: an entry the failed turn wrote only causes a wake-up that finds nothing.
  if (it == alarms_.end() || !alarmIndex_) return;
  const AlarmTimer& a = it->second;
  Status s = alarmIndex_->upsert({a.className, a.id, a.name, toUnixMillis(a.time)});
  if (!s.isOk()) {
    logLine(LogLevel::kError, "cannot restore the alarm index: " + s.toString(), a.className,
            a.id);
  }
}

void Runtime::alarmChanged(ObjectSlot& slot, std::optional<TimePoint> when) {
  std::string key = slot.className() + "/" + slot.id();
  if (when) {
    scheduleAlarm(slot.className(), slot.id(), slot.name(), *when, 0);
    return;
  }
  if (auto it = alarms_.find(key); it != alarms_.end()) {
    timers_.cancel(it->second.timer);
    alarms_.erase(it);
  }
  if (alarmIndex_) (void)alarmIndex_->remove(slot.className(), slot.id());
}

void Runtime::scheduleAlarm(const std::string& className, const std::string& id,
                            const std::optional<std::string>& name, TimePoint when,
                            int retryCount, int readFailures) {
  std::string key = className + "/" + id;
  AlarmTimer& a = alarms_[key];
  if (a.timer) timers_.cancel(a.timer);
  a.className = className;
  a.id = id;
  if (name) a.name = name;
  a.time = when;
  a.retryCount = retryCount;
  a.readFailures = readFailures;
  a.timer = schedule(when, [this, key] { fireAlarm(key, false); });
}

bool Runtime::runAlarmNow(ObjectSlot& slot) {
  std::string key = slot.className() + "/" + slot.id();
  if (alarms_.find(key) == alarms_.end()) {
    std::optional<TimePoint> stored;
    bool failed = false;
    try {
      stored = slot.storedAlarm();
      failed = slot.alarmFailure().has_value();
    } catch (const std::exception&) {
      return false;
    }
    if (!stored && !failed) return false;
    AlarmTimer& a = alarms_[key];
    a.className = slot.className();
    a.id = slot.id();
    a.name = slot.name();
    a.time = stored.value_or(clock_.now());
  }
  fireAlarm(key, true);
  return true;
}

void Runtime::fireAlarm(const std::string& key, bool force) {
  auto it = alarms_.find(key);
  if (it == alarms_.end()) return;
  AlarmTimer a = it->second;
  timers_.cancel(a.timer);
  it->second.timer = 0;
  if (!mayRun(a.className, a.id)) {
    // Cluster: every host sees every alarm in the shared index; the claim decides which one
    // fires it. Unowned: claim, then fire. Owned elsewhere: its owner fires it; a rescan
    // brings it back here if that host goes away.
    acquire(a.className, a.id, [this, key, force](Result<OwnerInfo> owner) {
      auto again = alarms_.find(key);
      if (again == alarms_.end() || again->second.timer != 0) return;  // changed meanwhile
      if (!owner.isOk()) {
        logLine(LogLevel::kWarn, "alarm waits: " + owner.status().message(),
                again->second.className, again->second.id);
        again->second.timer = schedule(clock_.now() + Duration(1000),
                                       [this, key, force] { fireAlarm(key, force); });
        return;
      }
      if (!owner->local) {
        alarms_.erase(again);
        return;
      }
      fireAlarm(key, force);
    });
    return;
  }
  ObjectSlot* slot = nullptr;
  try {
    slot = &this->slot(a.className, a.id, a.name);
  } catch (const std::exception& e) {
    logLine(LogLevel::kError, std::string("alarm for an unknown object: ") + e.what());
    alarms_.erase(key);
    return;
  }
  if (slot->inEvent()) {  // never inside another event of the object: try again right after
    it->second.timer = schedule(clock_.now(), [this, key] { fireAlarm(key, true); });
    return;
  }
  std::optional<TimePoint> stored;
  try {
    stored = slot->storedAlarm();
  } catch (const std::exception& e) {
    // Unknown is not gone: the alarm stays scheduled (and in the index) and is read again
    // after a backoff, for as long as the storage fails.
    Duration delay = alarmBackoff(a.readFailures);
    logLine(LogLevel::kError,
            std::string("cannot read the stored alarm, trying again in ") +
                std::to_string(delay.count()) + " ms: " + e.what(),
            a.className, a.id);
    scheduleAlarm(a.className, a.id, a.name, clock_.now() + delay, a.retryCount,
                  a.readFailures + 1);
    touch(*slot);
    return;
  }
  if (!force) {
    if (!stored) {  // deleted meanwhile: the index entry was stale
      alarms_.erase(key);
      if (alarmIndex_) (void)alarmIndex_->remove(a.className, a.id);
      touch(*slot);
      return;
    }
    if (*stored > clock_.now()) {  // moved later: wait for the new time
      scheduleAlarm(a.className, a.id, a.name, *stored, 0);
      touch(*slot);
      return;
    }
  }
  if (auto until = slot->failedUntil()) {  // a failed object's alarm waits for its retry time
    scheduleAlarm(a.className, a.id, a.name, *until, a.retryCount);
    return;
  }
  ClassMetrics& m = metrics(a.className);
  ++m.alarmsFired;
  AlarmInfo info{stored.value_or(a.time), a.retryCount};
  std::string error;
  bool ok = slot->runEvent(
      [&](DurableObject& o) {
        slot->beginAlarmRun();
        o.alarm(info);
      },
      &error, ObjectSlot::CommitMode::kNow, ObjectSlot::EventKind::kAlarm);
  if (ok) {
    // runEvent already applied the handler's own alarm change (beginAlarmRun cleared it, so
    // either a new alarm was scheduled or the alarm was removed).
    if (auto after = alarms_.find(key); after != alarms_.end() && after->second.timer == 0) {
      alarms_.erase(after);
    }
    return;
  }
  logLine(LogLevel::kWarn, "alarm failed (retry " + std::to_string(a.retryCount) + "): " + error,
          a.className, a.id);
  if (a.retryCount < options_.alarmMaxRetries) {
    ++m.alarmRetries;
    scheduleAlarm(a.className, a.id, a.name, clock_.now() + alarmBackoff(a.retryCount),
                  a.retryCount + 1);
    return;
  }
  // Retries exhausted: keep it visible as failed, with its last error, instead of dropping it.
  alarms_.erase(key);
  if (!recordAlarmFailure(*slot, info.scheduledTime, a.retryCount, error)) {
    // Not recorded (storage fails too): still the object's alarm, so it stays scheduled.
    scheduleAlarm(a.className, a.id, a.name, clock_.now() + alarmBackoff(a.retryCount),
                  a.retryCount);
    touch(*slot);
    return;
  }
  if (alarmIndex_) (void)alarmIndex_->remove(a.className, a.id);
  logLine(LogLevel::kError, "alarm given up after " + std::to_string(a.retryCount) + " retries",
          a.className, a.id);
  touch(*slot);
}

// Cluster: alarms other hosts wrote into the shared index since this host read it (at start,
// or the last rescan) get a timer here too; those of objects known to be owned by another host
// are left to it. Firing goes through the claim (fireAlarm), so an alarm runs on one host.
void Runtime::rescanAlarms() {
  if (!ownership_ || shuttingDown_) return;
  if (alarmIndex_) {
    auto entries = alarmIndex_->all();
    if (!entries.isOk()) {
      logLine(LogLevel::kWarn, "cannot read the alarm index: " + entries.status().toString());
    } else {
      for (const storage::AlarmEntry& e : entries.value()) {
        std::string key = e.className + "/" + e.id;
        if (alarms_.count(key) || registry_.findClass(e.className) == nullptr) continue;
        std::optional<std::string> owner = ownership_->knownOwner(e.className, e.id);
        if (owner && *owner != ownership_->selfId()) continue;
        scheduleAlarm(e.className, e.id, e.name, fromUnixMillis(e.timeMs), 0);
      }
    }
  }
  schedule(clock_.now() + options_.alarmRescanInterval, [this] { rescanAlarms(); });
}

Duration Runtime::alarmBackoff(int attempt) const {
  int doublings = std::clamp(std::min(attempt, options_.alarmMaxRetries - 1), 0, 30);
  return options_.alarmRetryBase * (int64_t{1} << doublings);
}

bool Runtime::recordAlarmFailure(ObjectSlot& slot, TimePoint scheduled, int retries,
                                 const std::string& error) {
  try {
    if (!slot.flush()) return false;  // other events' grouped writes first; then the record alone
    storage::ObjectDatabase& db = slot.database();
    storage::AlarmFailure failure{toUnixMillis(scheduled), retries, error,
                                  toUnixMillis(clock_.now())};
    Status s = db.begin();
    if (s.isOk()) s = db.setAlarm(std::nullopt);
    if (s.isOk()) s = db.setAlarmFailure(failure);
    if (s.isOk()) s = db.commit();
    if (!s.isOk()) {
      (void)db.rollback();
      throw StatusError(s);
    }
    return true;
  } catch (const std::exception& e) {
    logLine(LogLevel::kError, std::string("cannot record the failed alarm: ") + e.what(),
            slot.className(), slot.id());
    return false;
  }
}

}  // namespace dohost
