// ObjectSlot as Storage and Sql: every call goes to the object's database inside the running
// event's implicit transaction, and failures become the author-facing exceptions.
#include <algorithm>

#include "dohost/errors.h"
#include "object_slot.h"
#include "runtime.h"

namespace dohost {
namespace {

storage::ListOptions toStorage(const ListOptions& o) {
  storage::ListOptions s;
  s.start = o.start;
  s.startAfter = o.startAfter;
  s.end = o.end;
  s.prefix = o.prefix;
  s.reverse = o.reverse;
  s.limit = o.limit;
  return s;
}

}  // namespace

std::optional<std::string> ObjectSlot::get(std::string_view key) {
  if (noStorageYet() && key.size() <= runtime_.options().storageLimits.maxKeyBytes) {
    return std::nullopt;
  }
  return check(writable().get(key));
}

KvPairs ObjectSlot::get(const std::vector<std::string>& keys) {
  if (noStorageYet() && keys.size() <= runtime_.options().storageLimits.maxBatch &&
      std::all_of(keys.begin(), keys.end(), [&](const std::string& k) {
        return k.size() <= runtime_.options().storageLimits.maxKeyBytes;
      })) {
    return {};
  }
  return check(writable().get(keys));
}

void ObjectSlot::put(std::string_view key, std::string_view value) {
  check(writable().put(key, value));
}

void ObjectSlot::put(const KvPairs& entries) { check(writable().put(entries)); }

bool ObjectSlot::remove(std::string_view key) { return check(writable().remove(key)); }

int64_t ObjectSlot::remove(const std::vector<std::string>& keys) {
  return check(writable().remove(keys));
}

KvPairs ObjectSlot::list(const ListOptions& options) {
  // Bad options still reach the database, whose errors are the reference.
  bool valid = !(options.start && options.startAfter) && !(options.limit && *options.limit <= 0);
  if (noStorageYet() && valid) return {};
  return check(writable().list(toStorage(options)));
}

void ObjectSlot::deleteAll() {
  if (txnDepth_ > 0) throw UsageError("Cannot call deleteAll() within a transaction");
  check(writable().deleteAll());
  change_.alarm = std::optional<TimePoint>();
  change_.schedules = true;
}

void ObjectSlot::transaction(const std::function<void()>& fn) {
  storage::ObjectDatabase& db = writable();
  std::string name = "_do_txn_" + std::to_string(++txnDepth_);
  check(db.savepoint(name));
  Scheduler::TurnChange changeBefore = change_;
  try {
    fn();
  } catch (...) {
    (void)db.rollbackTo(name);
    change_ = changeBefore;
    --txnDepth_;
    throw;
  }
  --txnDepth_;
  check(db.release(name));
}

std::optional<TimePoint> ObjectSlot::getAlarm() {
  if (noStorageYet()) return std::nullopt;
  auto ms = check(writable().alarm());
  if (!ms) return std::nullopt;
  return fromUnixMillis(*ms);
}

void ObjectSlot::setAlarm(TimePoint when) {
  if (toUnixMillis(when) <= 0) throw UsageError("setAlarm() needs a time after the Unix epoch");
  if (when < now()) when = now();  // a past time fires as soon as possible
  // The host index learns of the alarm before the object stores it: a crash (or a failed
  // write) in between gives at worst a spurious wake-up, never a stored alarm nobody wakes.
  check(runtime_.scheduler().alarmWillBeSet(*this, when));
  check(writable().setAlarm(toUnixMillis(when)));
  change_.alarm = when;
}

void ObjectSlot::deleteAlarm() {
  check(writable().setAlarm(std::nullopt));
  change_.alarm = std::optional<TimePoint>();
}

void ObjectSlot::beginAlarmRun() {
  check(writable().setAlarm(std::nullopt));
  change_.alarm = std::optional<TimePoint>();
}

std::optional<TimePoint> ObjectSlot::storedAlarm() {
  auto ms = check(database().alarm());
  if (!ms) return std::nullopt;
  return fromUnixMillis(*ms);
}

std::optional<storage::AlarmFailure> ObjectSlot::alarmFailure() {
  return check(database().alarmFailure());
}

// --- named schedules (the scheduler makes and checks the rows) -------------------------------

void ObjectSlot::putSchedule(const storage::ScheduleRecord& record) {
  storage::ObjectDatabase& db = writable();
  bool replacing = check(db.schedule(record.name)).has_value();
  runtime_.scheduler().checkLimit(check(db.scheduleCount()), replacing);
  // As for the alarm: the host index learns of the time before the object stores it.
  check(runtime_.scheduler().scheduleWillBeSet(*this, fromUnixMillis(*record.nextMs)));
  check(db.putSchedule(record));
  change_.schedules = true;
}

void ObjectSlot::schedule(std::string_view name, TimePoint when, std::string_view payload) {
  putSchedule(runtime_.scheduler().onceRecord(name, when, payload, now()));
}

void ObjectSlot::scheduleEvery(std::string_view name, Duration interval,
                               std::string_view payload) {
  putSchedule(runtime_.scheduler().everyRecord(name, interval, payload, now()));
}

void ObjectSlot::scheduleEvery(std::string_view name, std::string_view cron,
                               std::string_view payload) {
  putSchedule(runtime_.scheduler().cronRecord(name, cron, payload, now()));
}

bool ObjectSlot::cancel(std::string_view name) {
  if (noStorageYet()) return false;
  bool existed = check(writable().removeSchedule(name));
  if (existed) change_.schedules = true;
  return existed;
}

std::vector<Schedule> ObjectSlot::schedules() {
  std::vector<Schedule> out;
  if (noStorageYet()) return out;
  for (const storage::ScheduleRecord& r : check(writable().schedules())) {
    out.push_back(Scheduler::toSchedule(r));
  }
  return out;
}

std::optional<storage::ScheduleRecord> ObjectSlot::beginScheduleRun(std::string_view name,
                                                                    TimePoint at) {
  storage::ObjectDatabase& db = writable();
  std::optional<storage::ScheduleRecord> row = check(db.schedule(name));
  if (!row || !row->nextMs || *row->nextMs > toUnixMillis(at)) return std::nullopt;
  // Like the alarm: the run is taken off (or moved on) first, so what the handler sets wins;
  // if the handler fails, this rolls back with it and the run is retried.
  if (auto next = runtime_.scheduler().afterRun(*row, at)) {
    check(db.putSchedule(*next));
  } else {
    check(db.removeSchedule(name));
  }
  change_.schedules = true;
  return row;
}

std::vector<storage::ScheduleRecord> ObjectSlot::storedSchedules() {
  return check(database().schedules());
}

int64_t ObjectSlot::storageBytes() {
  try {
    return check(database().sizeBytes());
  } catch (const std::exception&) {
    return 0;
  }
}

SqlCursor ObjectSlot::execParams(std::string_view query, const std::vector<SqlValue>& params) {
  auto r = writable().exec(query, params);
  if (!r.isOk()) {
    noteFault(r.status());
    throw SqlError(r.status());
  }
  return SqlCursor(std::move(r).value());
}

int64_t ObjectSlot::databaseSize() { return check(writable().sizeBytes()); }

}  // namespace dohost
