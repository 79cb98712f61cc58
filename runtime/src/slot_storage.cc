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
  alarmChange_ = std::optional<TimePoint>();
}

void ObjectSlot::transaction(const std::function<void()>& fn) {
  storage::ObjectDatabase& db = writable();
  std::string name = "_do_txn_" + std::to_string(++txnDepth_);
  check(db.savepoint(name));
  auto alarmBefore = alarmChange_;
  try {
    fn();
  } catch (...) {
    (void)db.rollbackTo(name);
    alarmChange_ = alarmBefore;
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
  check(runtime_.alarmWillBeSet(*this, when));
  check(writable().setAlarm(toUnixMillis(when)));
  alarmChange_ = when;
}

void ObjectSlot::deleteAlarm() {
  check(writable().setAlarm(std::nullopt));
  alarmChange_ = std::optional<TimePoint>();
}

void ObjectSlot::beginAlarmRun() {
  check(writable().setAlarm(std::nullopt));
  alarmChange_ = std::optional<TimePoint>();
}

std::optional<TimePoint> ObjectSlot::storedAlarm() {
  auto ms = check(database().alarm());
  if (!ms) return std::nullopt;
  return fromUnixMillis(*ms);
}

std::optional<storage::AlarmFailure> ObjectSlot::alarmFailure() {
  return check(database().alarmFailure());
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
