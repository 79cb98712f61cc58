// The interface an object class implements.
#pragma once

#include <string_view>

#include "dohost/http.h"
#include "dohost/time.h"
#include "dohost/websocket.h"

namespace dohost {

struct AlarmInfo {
  TimePoint scheduledTime;
  int retryCount = 0;  // 0 on the first attempt
  bool isRetry() const { return retryCount > 0; }
};

// Passed to onSchedule(). scheduledTime is the planned time of the run (a retry keeps it).
struct ScheduleInfo {
  TimePoint scheduledTime;
  int retryCount = 0;  // 0 on the first attempt
  bool isRetry() const { return retryCount > 0; }
};

// While an object is active there is exactly one instance per (class, id). The runtime
// destroys the instance when the object is idle (idle eviction) and constructs a new one with
// the registered factory when the next event arrives. Anything that must survive belongs in
// storage or in a socket attachment, never only in a data member.
//
// Thread: handlers run on the loop thread, one event at a time per object, in arrival order.
// Each handler runs in an implicit transaction: if it returns, its writes commit and then its
// messages and responses go out; if it throws, both are discarded and the instance is replaced.
class DurableObject {
 public:
  virtual ~DurableObject() = default;

  // HTTP requests and WebSocket upgrades. To take a socket: ws = state.acceptWebSocket(request,
  // tags) and return Response::upgrade(ws). Any other response refuses the upgrade.
  virtual Response fetch(Request& request) { return Response::text(404, "not found\n"); }

  // One complete message.
  virtual void webSocketMessage(WebSocket ws, const Message& message) {}

  // Exactly once per accepted socket; afterwards `ws` cannot send.
  virtual void webSocketClose(WebSocket ws, const CloseInfo& info) {}

  // The connection failed (e.g. a protocol error); webSocketClose follows only if a close
  // frame was exchanged, which it was not, so this is the last event for `ws`.
  virtual void webSocketError(WebSocket ws, std::string_view reason) {}

  // The alarm set with storage().setAlarm() is due. Throwing schedules a retry with backoff.
  virtual void alarm(const AlarmInfo& info) {}

  // A schedule set with state.schedule() or state.scheduleEvery() is due. At least once, like
  // alarm(): throwing rolls the handler's writes back and retries with the alarm's backoff.
  // `name` and `payload` are valid until return.
  virtual void onSchedule(std::string_view name, std::string_view payload,
                          const ScheduleInfo& info) {}
};

}  // namespace dohost
