// ObjectState: everything an instance can reach. It belongs to the runtime and outlives the
// instance (it is the object's slot), so an instance may keep a reference to it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dohost/http.h"
#include "dohost/storage.h"
#include "dohost/time.h"
#include "dohost/websocket.h"

namespace dohost {

using TimerId = uint64_t;

struct BroadcastOptions {
  std::vector<std::string> tags;   // sockets with any of these tags; empty: every socket
  std::vector<WebSocket> except;   // never these
  bool binary = false;
  // Set: only these sockets of the object (a group the object keeps itself, e.g. the
  // subscribers of a topic), still filtered by the fields above. Not owned; read during the
  // call only.
  const std::vector<WebSocket>* only = nullptr;
};

// A named schedule as ObjectState::schedules() lists it.
struct Schedule {
  enum class Kind { kOnce, kEvery, kCron };
  std::string name;
  Kind kind = Kind::kOnce;
  Duration interval{0};  // kEvery
  std::string cron;      // kCron: the expression as given
  std::string payload;
  std::optional<TimePoint> nextRun;  // empty: a one-off schedule given up after its retries
  TimePoint scheduledTime;           // the planned time of the next run (a retry keeps it)
  int retryCount = 0;                // failed attempts of that run so far
  std::optional<std::string> lastError;  // of the last failed run, kept after a success
};

// The bounds of the schedule API; breaking one throws UsageError and stores nothing. The
// number of schedules per object is the host's max_schedules_per_object (1,000 by default).
inline constexpr size_t kMaxScheduleNameBytes = 128;  // [A-Za-z0-9_.:-], not empty
inline constexpr size_t kMaxSchedulePayloadBytes = 16 * 1024;
inline constexpr Duration kMinScheduleInterval{1000};

// Builds an auto-response when a matching message comes (see setWebSocketAutoResponder).
using AutoResponder = std::function<std::string(TimePoint now)>;

// A reference to another object. Calls are asynchronous: the callee runs its own event after
// the caller's event ends, and the reply arrives as an event of the caller (so neither object
// ever runs inside the other, and the loop never blocks).
class Stub {
 public:
  virtual ~Stub() = default;
  // Sends `request` to the object's fetch(); `onResponse` runs as an event of the caller.
  virtual void fetch(Request request, std::function<void(Response)> onResponse) = 0;
};

class ObjectState {
 public:
  virtual ~ObjectState() = default;

  virtual const std::string& className() const = 0;
  virtual const std::string& id() const = 0;
  // The name the object was reached by (idFromName), in every entry point, also after
  // eviction and restart; empty for ids from newUniqueId.
  virtual const std::optional<std::string>& name() const = 0;

  virtual Storage& storage() = 0;
  virtual TimePoint now() const = 0;

  // Accepts the upgrade in `request` for this object, with up to 10 tags of up to 256
  // characters each. Throws UsageError on bad tags or if the request is not an upgrade; a
  // full object (maxSocketsPerObject) makes the upgrade fail with 503.
  virtual WebSocket acceptWebSocket(Request& request, std::vector<std::string> tags = {}) = 0;
  // Open sockets, optionally only those with `tag`, in the order they were accepted.
  virtual std::vector<WebSocket> getWebSockets(std::string_view tag = {}) = 0;
  virtual size_t countWebSockets(std::string_view tag = {}) = 0;
  // Sends one message to many sockets: framed once, the bytes shared. Returns how many
  // sockets it was queued for.
  virtual size_t broadcast(std::string_view message, const BroadcastOptions& options = {}) = 0;

  // Messages equal to `request` are answered with `response` by the host, without waking the
  // object. Empty request clears it. Each at most 2,048 bytes.
  virtual void setWebSocketAutoResponse(std::string request, std::string response) = 0;
  virtual std::optional<TimePoint> getWebSocketAutoResponseTimestamp(const WebSocket& ws) = 0;
  // Like setWebSocketAutoResponse, but each answer is made by `responder` when the message
  // comes, so it can carry the time or a fresh id. The host calls it outside any event, also
  // while the object is evicted: it must not refer to the instance or use storage. Replaces
  // the pair set before; an empty request clears it.
  virtual void setWebSocketAutoResponder(std::string request, AutoResponder responder) = 0;

  // Hands an accepted socket over to another object (any class, by name), for connections
  // that say who they are only in a message. After this event commits, the target's fetch()
  // gets `request` as the upgrade of this socket: it accepts it with acceptWebSocket(request,
  // tags) (its own tags; the attachment starts empty) and returns Response::upgrade(ws),
  // as for a new connection. From then on every event of the socket goes to the target, and
  // this object sees no webSocketClose for it. Messages that arrive in between wait and reach
  // the target, in order, once it accepted. If the target answers anything else, or this
  // event fails, the socket is closed (1008 after a 4xx answer, else 1011).
  // REQUIRES: `ws` is open and this object's; `request` is not itself an upgrade.
  virtual void transferWebSocket(WebSocket ws, std::string_view className, std::string_view name,
                                 Request request) = 0;

  // Runs fn as an event of this object after `delay`. A pending timer keeps the object in
  // memory (it is not evicted while one is pending).
  virtual TimerId setTimeout(Duration delay, std::function<void()> fn) = 0;
  virtual void clearTimeout(TimerId id) = 0;

  // Named schedules, many per object, beside the one alarm of storage().setAlarm(). Each is
  // stored in the object's database inside the running event's transaction (an event that
  // fails leaves no trace of it), survives eviction and restarts, and is delivered to
  // onSchedule(name, payload, info) at least once, retried like alarms. Setting a name again
  // replaces that schedule. Bad names, payloads, intervals or cron expressions, and a schedule
  // past the per-object limit, throw UsageError.
  // Once at `when` (a past time runs as soon as possible), then the schedule is gone.
  virtual void schedule(std::string_view name, TimePoint when, std::string_view payload = {}) = 0;
  // Every `interval` (at least kMinScheduleInterval), first at now + interval. The next run is
  // planned from the previous planned time, so runs do not drift; runs missed while the host
  // was down are skipped (the overdue one runs once, then the next planned time after now).
  virtual void scheduleEvery(std::string_view name, Duration interval,
                             std::string_view payload = {}) = 0;
  // At the times a five-field cron expression in UTC matches ("*/5 * * * *"); see docs/api.md.
  virtual void scheduleEvery(std::string_view name, std::string_view cron,
                             std::string_view payload = {}) = 0;
  // Removes the schedule; false if there was none. Inside its own onSchedule() it ends a
  // recurring schedule after this run (if the handler then throws, the cancel rolls back too).
  virtual bool cancel(std::string_view name) = 0;
  // Every schedule of the object, by name, as this event sees them.
  virtual std::vector<Schedule> schedules() = 0;

  // Another object of any registered class, by name or by id.
  virtual std::unique_ptr<Stub> stubByName(std::string_view className, std::string_view name) = 0;
  virtual std::unique_ptr<Stub> stubById(std::string_view className, std::string_view id) = 0;
};

}  // namespace dohost
