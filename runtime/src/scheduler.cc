// The scheduler (see scheduler.h). The object's own database is the source of truth; the host
// index only guarantees the wake-up. A wake-up re-reads the object's alarm and schedules and
// runs only what is due there, so spurious wake-ups are harmless and none is missed.
#include "scheduler.h"

#include <algorithm>
#include <cmath>

#include "cron.h"
#include "dohost/errors.h"
#include "dohost/log.h"
#include "object_slot.h"
#include "runtime.h"

namespace dohost {
namespace {

std::string keyOf(const std::string& className, const std::string& id) {
  return className + "/" + id;
}

constexpr char kOnce[] = "once";
constexpr char kEvery[] = "every";
constexpr char kCron[] = "cron";
constexpr Duration kMaxScheduleInterval = std::chrono::hours(24 * 3650);

bool validNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == ':' || c == '-';
}

}  // namespace

Scheduler::Scheduler(Runtime& runtime) : runtime_(runtime) {}

Scheduler::~Scheduler() = default;

Status Scheduler::start(const std::string& indexPath) {
  auto index = storage::AlarmIndex::open(indexPath);
  if (!index.isOk()) return index.status();
  index_ = std::move(index).value();
  auto entries = index_->all();
  if (!entries.isOk()) return entries.status();
  for (const storage::AlarmEntry& e : entries.value()) {
    if (runtime_.registry().findClass(e.className) == nullptr) {
      logLine(LogLevel::kWarn, "alarm for a class that is not registered; kept for later",
              e.className, e.id);
      continue;
    }
    // The entry may stand for the alarm or a schedule: the alarm's wake-up reads both.
    scheduleAlarm(e.className, e.id, e.name, fromUnixMillis(e.timeMs), 0);
  }
  return Status::ok();
}

void Scheduler::stop() {
  stopped_ = true;
  alarms_.clear();
  schedules_.clear();
  index_.reset();
}

void Scheduler::startRescans() {
  runtime_.schedule(runtime_.clock().now() + runtime_.options().alarmRescanInterval,
                    [this] { rescan(); });
}

// --- the index ------------------------------------------------------------------------------

std::optional<TimePoint> Scheduler::earliest(const std::string& key) const {
  std::optional<TimePoint> t;
  if (auto a = alarms_.find(key); a != alarms_.end()) t = a->second.time;
  if (auto s = schedules_.find(key); s != schedules_.end()) {
    t = t ? std::min(*t, s->second.time) : s->second.time;
  }
  return t;
}

void Scheduler::syncIndex(const std::string& className, const std::string& id,
                          const std::optional<std::string>& name) {
  if (!index_) return;
  std::optional<TimePoint> t = earliest(keyOf(className, id));
  Status s = t ? index_->upsert({className, id, name, toUnixMillis(*t)})
               : index_->remove(className, id);
  if (!s.isOk()) {
    logLine(LogLevel::kError, "cannot update the alarm index: " + s.toString(), className, id);
  }
}

Status Scheduler::alarmWillBeSet(ObjectSlot& slot, TimePoint when) {
  if (!index_) return Status::ok();
  auto s = schedules_.find(keyOf(slot.className(), slot.id()));
  if (s != schedules_.end()) when = std::min(when, s->second.time);
  return index_->upsert({slot.className(), slot.id(), slot.name(), toUnixMillis(when)});
}

Status Scheduler::scheduleWillBeSet(ObjectSlot& slot, TimePoint when) {
  if (!index_) return Status::ok();
  if (auto t = earliest(keyOf(slot.className(), slot.id()))) when = std::min(when, *t);
  return index_->upsert({slot.className(), slot.id(), slot.name(), toUnixMillis(when)});
}

void Scheduler::rolledBack(ObjectSlot& slot) {
  std::string key = keyOf(slot.className(), slot.id());
  std::optional<TimePoint> t = earliest(key);
  // Nothing kept: an entry the failed turn wrote only causes a wake-up that finds nothing.
  if (!t || !index_) return;
  std::optional<std::string> name = slot.name();
  if (auto a = alarms_.find(key); a != alarms_.end() && a->second.name) name = a->second.name;
  Status s = index_->upsert({slot.className(), slot.id(), name, toUnixMillis(*t)});
  if (!s.isOk()) {
    logLine(LogLevel::kError, "cannot restore the alarm index: " + s.toString(),
            slot.className(), slot.id());
  }
}

void Scheduler::committed(ObjectSlot& slot, const TurnChange& change) {
  std::string key = keyOf(slot.className(), slot.id());
  if (change.schedules) reloadSchedules(slot);
  if (change.alarm) {
    if (*change.alarm) {
      scheduleAlarm(slot.className(), slot.id(), slot.name(), **change.alarm, 0);
    } else {
      if (auto it = alarms_.find(key); it != alarms_.end()) {
        runtime_.timers().cancel(it->second.timer);
        alarms_.erase(it);
      }
      syncIndex(slot.className(), slot.id(), slot.name());
      return;
    }
  }
  if (change.schedules) syncIndex(slot.className(), slot.id(), slot.name());
}

// --- alarms ---------------------------------------------------------------------------------

void Scheduler::scheduleAlarm(const std::string& className, const std::string& id,
                              const std::optional<std::string>& name, TimePoint when,
                              int retryCount, int readFailures) {
  std::string key = keyOf(className, id);
  AlarmTimer& a = alarms_[key];
  if (a.timer) runtime_.timers().cancel(a.timer);
  a.className = className;
  a.id = id;
  if (name) a.name = name;
  a.time = when;
  a.retryCount = retryCount;
  a.readFailures = readFailures;
  a.timer = runtime_.schedule(when, [this, key] { fireAlarm(key, false); });
}

bool Scheduler::runAlarmNow(ObjectSlot& slot) {
  std::string key = keyOf(slot.className(), slot.id());
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
    a.time = stored.value_or(runtime_.clock().now());
  }
  fireAlarm(key, true);
  return true;
}

std::optional<TimePoint> Scheduler::scheduledAlarm(const std::string& className,
                                                   const std::string& id) const {
  auto it = alarms_.find(keyOf(className, id));
  if (it == alarms_.end() || it->second.timer == 0) return std::nullopt;
  return it->second.time;
}

std::optional<TimePoint> Scheduler::nextScheduleRun(const std::string& className,
                                                    const std::string& id) const {
  auto it = schedules_.find(keyOf(className, id));
  if (it == schedules_.end()) return std::nullopt;
  return it->second.time;
}

std::vector<Scheduler::Pending> Scheduler::pending() const {
  std::map<std::string, Pending> byKey;
  for (const auto& [key, a] : alarms_) {
    if (a.timer != 0) byKey[key] = {a.className, a.id, a.name, a.time, std::nullopt};
  }
  for (const auto& [key, s] : schedules_) {
    Pending& p = byKey[key];
    p.className = s.className;
    p.id = s.id;
    if (!p.name) p.name = s.name;
    p.nextSchedule = s.time;
  }
  std::vector<Pending> out;
  for (auto& [key, p] : byKey) out.push_back(std::move(p));
  return out;
}

void Scheduler::fireAlarm(const std::string& key, bool force) {
  auto it = alarms_.find(key);
  if (it == alarms_.end()) return;
  AlarmTimer a = it->second;
  runtime_.timers().cancel(a.timer);
  it->second.timer = 0;
  Clock& clock = runtime_.clock();
  if (!runtime_.mayRun(a.className, a.id)) {
    // Cluster: every host sees every alarm in the shared index; the claim decides which one
    // fires it. Unowned: claim, then fire. Owned elsewhere: its owner fires it; a rescan
    // brings it back here if that host goes away.
    runtime_.acquire(a.className, a.id, [this, key, force](Result<OwnerInfo> owner) {
      auto again = alarms_.find(key);
      if (again == alarms_.end() || again->second.timer != 0) return;  // changed meanwhile
      if (!owner.isOk()) {
        logLine(LogLevel::kWarn, "alarm waits: " + owner.status().message(),
                again->second.className, again->second.id);
        again->second.timer = runtime_.schedule(runtime_.clock().now() + Duration(1000),
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
    slot = &runtime_.slot(a.className, a.id, a.name);
  } catch (const std::exception& e) {
    logLine(LogLevel::kError, std::string("alarm for an unknown object: ") + e.what());
    alarms_.erase(key);
    return;
  }
  if (slot->inEvent()) {  // never inside another event of the object: try again right after
    it->second.timer = runtime_.schedule(clock.now(), [this, key] { fireAlarm(key, true); });
    return;
  }
  std::optional<TimePoint> stored;
  try {
    stored = slot->storedAlarm();  // opening the database also arms the object's schedules
  } catch (const std::exception& e) {
    // Unknown is not gone: the alarm stays scheduled (and in the index) and is read again
    // after a backoff, for as long as the storage fails.
    Duration delay = backoff(a.readFailures);
    logLine(LogLevel::kError,
            std::string("cannot read the stored alarm, trying again in ") +
                std::to_string(delay.count()) + " ms: " + e.what(),
            a.className, a.id);
    scheduleAlarm(a.className, a.id, a.name, clock.now() + delay, a.retryCount,
                  a.readFailures + 1);
    runtime_.touch(*slot);
    return;
  }
  if (!force) {
    if (!stored) {  // deleted meanwhile, or the wake-up was for a schedule
      alarms_.erase(key);
      syncIndex(a.className, a.id, a.name);
      runtime_.touch(*slot);
      return;
    }
    if (*stored > clock.now()) {  // moved later: wait for the new time
      scheduleAlarm(a.className, a.id, a.name, *stored, 0);
      runtime_.touch(*slot);
      return;
    }
  }
  if (auto until = slot->failedUntil()) {  // a failed object's alarm waits for its retry time
    scheduleAlarm(a.className, a.id, a.name, *until, a.retryCount);
    return;
  }
  ClassMetrics& m = runtime_.metrics(a.className);
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
    // The commit already applied the handler's own alarm change (beginAlarmRun cleared it, so
    // either a new alarm was scheduled or the alarm was removed).
    if (auto after = alarms_.find(key); after != alarms_.end() && after->second.timer == 0) {
      alarms_.erase(after);
    }
    return;
  }
  logLine(LogLevel::kWarn, "alarm failed (retry " + std::to_string(a.retryCount) + "): " + error,
          a.className, a.id);
  if (a.retryCount < runtime_.options().alarmMaxRetries) {
    ++m.alarmRetries;
    scheduleAlarm(a.className, a.id, a.name, clock.now() + backoff(a.retryCount),
                  a.retryCount + 1);
    return;
  }
  // Retries exhausted: keep it visible as failed, with its last error, instead of dropping it.
  alarms_.erase(key);
  if (!recordAlarmFailure(*slot, info.scheduledTime, a.retryCount, error)) {
    // Not recorded (storage fails too): still the object's alarm, so it stays scheduled.
    scheduleAlarm(a.className, a.id, a.name, clock.now() + backoff(a.retryCount),
                  a.retryCount);
    runtime_.touch(*slot);
    return;
  }
  syncIndex(a.className, a.id, a.name);
  logLine(LogLevel::kError, "alarm given up after " + std::to_string(a.retryCount) + " retries",
          a.className, a.id);
  runtime_.touch(*slot);
}

// Cluster: entries other hosts wrote into the shared index since this host read it (at start,
// or the last rescan) get a timer here too; those of objects known to be owned by another host
// are left to it. Firing goes through the claim (fireAlarm), so an alarm runs on one host.
void Scheduler::rescan() {
  if (!runtime_.ownership() || stopped_) return;
  Ownership& ownership = *runtime_.ownership();
  if (index_) {
    auto entries = index_->all();
    if (!entries.isOk()) {
      logLine(LogLevel::kWarn, "cannot read the alarm index: " + entries.status().toString());
    } else {
      for (const storage::AlarmEntry& e : entries.value()) {
        std::string key = keyOf(e.className, e.id);
        if (alarms_.count(key) || schedules_.count(key) ||
            runtime_.registry().findClass(e.className) == nullptr) {
          continue;
        }
        std::optional<std::string> owner = ownership.knownOwner(e.className, e.id);
        if (owner && *owner != ownership.selfId()) continue;
        scheduleAlarm(e.className, e.id, e.name, fromUnixMillis(e.timeMs), 0);
      }
    }
  }
  startRescans();
}

Duration Scheduler::backoff(int attempt) const {
  const RuntimeOptions& o = runtime_.options();
  int doublings = std::clamp(std::min(attempt, o.alarmMaxRetries - 1), 0, 30);
  return o.alarmRetryBase * (int64_t{1} << doublings);
}

bool Scheduler::recordAlarmFailure(ObjectSlot& slot, TimePoint scheduled, int retries,
                                   const std::string& error) {
  try {
    if (!slot.flush()) return false;  // other events' grouped writes first; then the record alone
    storage::ObjectDatabase& db = slot.database();
    storage::AlarmFailure failure{toUnixMillis(scheduled), retries, error,
                                  toUnixMillis(runtime_.clock().now())};
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

// --- schedules: the rows --------------------------------------------------------------------

storage::ScheduleRecord Scheduler::validated(std::string_view name,
                                             std::string_view payload) const {
  if (name.empty() || name.size() > kMaxScheduleNameBytes) {
    throw UsageError("a schedule name has 1 to " + std::to_string(kMaxScheduleNameBytes) +
                     " characters");
  }
  if (!std::all_of(name.begin(), name.end(), validNameChar)) {
    throw UsageError("a schedule name may only use A-Z a-z 0-9 _ . : -");
  }
  if (payload.size() > kMaxSchedulePayloadBytes) {
    throw UsageError("a schedule payload is at most " +
                     std::to_string(kMaxSchedulePayloadBytes) + " bytes");
  }
  storage::ScheduleRecord r;
  r.name = std::string(name);
  r.payload = std::string(payload);
  return r;
}

storage::ScheduleRecord Scheduler::onceRecord(std::string_view name, TimePoint when,
                                              std::string_view payload, TimePoint now) const {
  storage::ScheduleRecord r = validated(name, payload);
  if (toUnixMillis(when) <= 0) throw UsageError("schedule() needs a time after the Unix epoch");
  if (when < now) when = now;  // a past time runs as soon as possible
  r.kind = kOnce;
  r.plannedMs = toUnixMillis(when);
  r.nextMs = r.plannedMs;
  return r;
}

storage::ScheduleRecord Scheduler::everyRecord(std::string_view name, Duration interval,
                                               std::string_view payload, TimePoint now) const {
  storage::ScheduleRecord r = validated(name, payload);
  if (interval < kMinScheduleInterval || interval > kMaxScheduleInterval) {
    throw UsageError("a schedule interval is between " +
                     std::to_string(kMinScheduleInterval.count()) + " ms and 3650 days");
  }
  r.kind = kEvery;
  r.spec = std::to_string(interval.count());
  r.plannedMs = toUnixMillis(now + interval);
  r.nextMs = r.plannedMs;
  return r;
}

storage::ScheduleRecord Scheduler::cronRecord(std::string_view name, std::string_view cron,
                                              std::string_view payload, TimePoint now) const {
  storage::ScheduleRecord r = validated(name, payload);
  Result<CronExpression> parsed = CronExpression::parse(cron);
  if (!parsed.isOk()) throw UsageError("bad cron expression: " + parsed.status().message());
  r.kind = kCron;
  r.spec = std::string(cron);
  r.plannedMs = parsed->nextAfter(std::max<int64_t>(0, toUnixMillis(now)));
  r.nextMs = r.plannedMs;
  return r;
}

void Scheduler::checkLimit(int64_t existing, bool replacing) const {
  size_t limit = runtime_.options().maxSchedulesPerObject;
  if (!replacing && existing >= static_cast<int64_t>(limit)) {
    throw UsageError("an object has at most " + std::to_string(limit) +
                     " schedules (max_schedules_per_object)");
  }
}

TimePoint Scheduler::nextPlanned(const storage::ScheduleRecord& row, TimePoint now) const {
  int64_t nowMs = toUnixMillis(now);
  if (row.kind == kEvery) {
    int64_t interval = std::max<int64_t>(1, std::stoll(row.spec));
    int64_t next = row.plannedMs + interval;
    // Missed runs are skipped: the first planned time after now, on the same grid.
    if (next <= nowMs) next = row.plannedMs + ((nowMs - row.plannedMs) / interval + 1) * interval;
    return fromUnixMillis(next);
  }
  Result<CronExpression> parsed = CronExpression::parse(row.spec);
  if (!parsed.isOk()) throw StorageError(Status::invalidArgument("bad stored cron expression: " + row.spec));
  return fromUnixMillis(parsed->nextAfter(std::max<int64_t>(0, std::max(row.plannedMs, nowMs))));
}

std::optional<storage::ScheduleRecord> Scheduler::afterRun(const storage::ScheduleRecord& row,
                                                           TimePoint now) const {
  if (row.kind != kEvery && row.kind != kCron) return std::nullopt;
  storage::ScheduleRecord next = row;
  next.plannedMs = toUnixMillis(nextPlanned(row, now));
  next.nextMs = next.plannedMs;
  next.retryCount = 0;
  return next;
}

Schedule Scheduler::toSchedule(const storage::ScheduleRecord& row) {
  Schedule s;
  s.name = row.name;
  if (row.kind == kEvery) {
    s.kind = Schedule::Kind::kEvery;
    s.interval = Duration(std::stoll(row.spec));
  } else if (row.kind == kCron) {
    s.kind = Schedule::Kind::kCron;
    s.cron = row.spec;
  }
  s.payload = row.payload;
  if (row.nextMs) s.nextRun = fromUnixMillis(*row.nextMs);
  s.scheduledTime = fromUnixMillis(row.plannedMs);
  s.retryCount = row.retryCount;
  s.lastError = row.lastError;
  return s;
}

// --- schedules: the timers ------------------------------------------------------------------

void Scheduler::armSchedules(ObjectSlot& slot, std::optional<TimePoint> next, int readFailures) {
  std::string key = keyOf(slot.className(), slot.id());
  auto it = schedules_.find(key);
  if (it != schedules_.end() && it->second.timer) runtime_.timers().cancel(it->second.timer);
  if (!next) {
    if (it != schedules_.end()) schedules_.erase(it);
    return;
  }
  ScheduleTimer& s = schedules_[key];
  s.className = slot.className();
  s.id = slot.id();
  s.name = slot.name();
  s.time = *next;
  s.readFailures = readFailures;
  s.timer = runtime_.schedule(*next, [this, key] { fireSchedules(key); });
}

void Scheduler::objectOpened(ObjectSlot& slot, storage::ObjectDatabase& db) {
  if (stopped_) return;
  Result<std::optional<int64_t>> next = db.nextScheduleMs();
  if (!next.isOk()) {
    logLine(LogLevel::kWarn, "cannot read the schedules: " + next.status().toString(),
            slot.className(), slot.id());
    return;
  }
  std::string key = keyOf(slot.className(), slot.id());
  auto it = schedules_.find(key);
  if (!next.value()) {
    if (it != schedules_.end()) armSchedules(slot, std::nullopt);
    return;
  }
  TimePoint t = fromUnixMillis(*next.value());
  if (it != schedules_.end() && it->second.time == t && it->second.timer != 0) return;
  armSchedules(slot, t);
}

void Scheduler::reloadSchedules(ObjectSlot& slot) {
  std::string key = keyOf(slot.className(), slot.id());
  try {
    Result<std::optional<int64_t>> next = slot.database().nextScheduleMs();
    if (!next.isOk()) throw StatusError(next.status());
    std::optional<TimePoint> t;
    if (next.value()) t = fromUnixMillis(*next.value());
    armSchedules(slot, t);
  } catch (const std::exception& e) {
    // Unknown is not gone: read again after a backoff.
    auto it = schedules_.find(key);
    int failures = it == schedules_.end() ? 0 : it->second.readFailures;
    Duration delay = backoff(failures);
    logLine(LogLevel::kError,
            std::string("cannot read the schedules, trying again in ") +
                std::to_string(delay.count()) + " ms: " + e.what(),
            slot.className(), slot.id());
    armSchedules(slot, runtime_.clock().now() + delay, failures + 1);
  }
}

void Scheduler::fireSchedules(const std::string& key) {
  auto it = schedules_.find(key);
  if (it == schedules_.end()) return;
  ScheduleTimer s = it->second;
  runtime_.timers().cancel(s.timer);
  it->second.timer = 0;
  Clock& clock = runtime_.clock();
  if (!runtime_.mayRun(s.className, s.id)) {  // the same rule as alarms (fireAlarm)
    runtime_.acquire(s.className, s.id, [this, key](Result<OwnerInfo> owner) {
      auto again = schedules_.find(key);
      if (again == schedules_.end() || again->second.timer != 0) return;  // changed meanwhile
      if (!owner.isOk()) {
        logLine(LogLevel::kWarn, "schedule waits: " + owner.status().message(),
                again->second.className, again->second.id);
        again->second.timer = runtime_.schedule(runtime_.clock().now() + Duration(1000),
                                                [this, key] { fireSchedules(key); });
        return;
      }
      if (!owner->local) {
        schedules_.erase(again);
        return;
      }
      fireSchedules(key);
    });
    return;
  }
  ObjectSlot* slot = nullptr;
  try {
    slot = &runtime_.slot(s.className, s.id, s.name);
  } catch (const std::exception& e) {
    logLine(LogLevel::kError, std::string("schedule for an unknown object: ") + e.what());
    schedules_.erase(key);
    return;
  }
  if (slot->inEvent()) {
    it->second.timer = runtime_.schedule(clock.now(), [this, key] { fireSchedules(key); });
    return;
  }
  if (auto until = slot->failedUntil()) {  // a failed object's schedules wait for its retry
    armSchedules(*slot, std::max(*until, s.time), s.readFailures);
    return;
  }
  std::vector<storage::ScheduleRecord> rows;
  try {
    rows = slot->storedSchedules();
  } catch (const std::exception& e) {
    Duration delay = backoff(s.readFailures);
    logLine(LogLevel::kError,
            std::string("cannot read the schedules, trying again in ") +
                std::to_string(delay.count()) + " ms: " + e.what(),
            s.className, s.id);
    armSchedules(*slot, clock.now() + delay, s.readFailures + 1);
    runtime_.touch(*slot);
    return;
  }
  int64_t nowMs = toUnixMillis(clock.now());
  std::vector<const storage::ScheduleRecord*> due;
  for (const storage::ScheduleRecord& r : rows) {
    if (r.nextMs && *r.nextMs <= nowMs) due.push_back(&r);
  }
  std::stable_sort(due.begin(), due.end(), [](const auto* a, const auto* b) {
    return *a->nextMs < *b->nextMs;
  });
  std::optional<TimePoint> holdUntil;  // a failure could not be recorded: do not spin
  for (const storage::ScheduleRecord* r : due) {
    if (slot->failedUntil() || !runtime_.mayRun(s.className, s.id)) break;
    ++runtime_.metrics(s.className).schedulesFired;
    storage::ScheduleRecord ran = *r;
    std::string error;
    TimePoint now = clock.now();
    bool ok = slot->runEvent(
        [&](DurableObject& o) {
          std::optional<storage::ScheduleRecord> current = slot->beginScheduleRun(r->name, now);
          if (!current) return;  // changed by an earlier run: no longer due
          ran = *current;
          o.onSchedule(ran.name, ran.payload, ScheduleInfo{fromUnixMillis(ran.plannedMs),
                                                           ran.retryCount});
        },
        &error, ObjectSlot::CommitMode::kNow, ObjectSlot::EventKind::kAlarm);
    // A failure before the handler (constructor, storage) counts as a failed run too.
    if (ok) continue;
    logLine(LogLevel::kWarn,
            "schedule " + ran.name + " failed (retry " + std::to_string(ran.retryCount) +
                "): " + error,
            s.className, s.id);
    if (!recordScheduleFailure(*slot, ran, error)) {
      holdUntil = clock.now() + backoff(ran.retryCount);
    }
  }
  if (auto until = slot->failedUntil()) {
    holdUntil = holdUntil ? std::max(*holdUntil, *until) : *until;
  }
  reloadSchedules(*slot);
  if (holdUntil) {
    auto again = schedules_.find(key);
    if (again != schedules_.end() && again->second.time < *holdUntil) {
      armSchedules(*slot, holdUntil, again->second.readFailures);
    }
  }
  syncIndex(s.className, s.id, slot->name());
  runtime_.touch(*slot);
}

bool Scheduler::recordScheduleFailure(ObjectSlot& slot, const storage::ScheduleRecord& row,
                                      const std::string& error) {
  try {
    if (!slot.flush()) return false;  // other events' grouped writes first; then the record alone
    storage::ObjectDatabase& db = slot.database();
    Result<std::optional<storage::ScheduleRecord>> current = db.schedule(row.name);
    if (!current.isOk()) throw StatusError(current.status());
    if (!current.value()) return true;  // gone meanwhile: nothing to retry
    TimePoint now = runtime_.clock().now();
    storage::ScheduleRecord r = row;
    r.lastError = error;
    r.lastErrorMs = toUnixMillis(now);
    bool gaveUp = row.retryCount >= runtime_.options().alarmMaxRetries;
    if (!gaveUp) {
      ++runtime_.metrics(slot.className()).scheduleRetries;
      r.retryCount = row.retryCount + 1;
      r.nextMs = toUnixMillis(now + backoff(row.retryCount));
    } else if (row.kind == kOnce) {
      r.nextMs.reset();  // kept, failed, until it is set again or cancelled
    } else {
      r.retryCount = 0;  // this run is given up; the schedule goes on
      r.plannedMs = toUnixMillis(nextPlanned(row, now));
      r.nextMs = r.plannedMs;
    }
    Status s = db.begin();
    if (s.isOk()) s = db.putSchedule(r);
    if (s.isOk()) s = db.commit();
    if (!s.isOk()) {
      (void)db.rollback();
      throw StatusError(s);
    }
    if (gaveUp) {
      logLine(LogLevel::kError,
              "schedule " + row.name + " run given up after " + std::to_string(row.retryCount) +
                  " retries",
              slot.className(), slot.id());
    }
    return true;
  } catch (const std::exception& e) {
    logLine(LogLevel::kError, std::string("cannot record the failed schedule: ") + e.what(),
            slot.className(), slot.id());
    return false;
  }
}

}  // namespace dohost
