// TimerQueue: every timer of the runtime (idle eviction, alarms and their retries, object
// timeouts, deferred work), ordered by due time on the runtime's Clock. The server arms one
// lws_sul for the earliest; tests move a ManualClock and call runDue().
//
// Thread: the loop thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <unordered_map>
#include <utility>

#include "dohost/time.h"

namespace dohost {

class TimerQueue {
 public:
  using Id = uint64_t;

  Id schedule(TimePoint at, std::function<void()> fn);
  void cancel(Id id);
  bool pending(Id id) const { return index_.count(id) != 0; }
  std::optional<TimePoint> next() const;
  // Runs every timer due at `now`, including ones scheduled by those it runs when they are
  // also due. Returns how many ran. A timer that throws is logged; the rest still run.
  size_t runDue(TimePoint now);
  size_t size() const { return index_.size(); }

 private:
  using Queue = std::multimap<TimePoint, std::pair<Id, std::function<void()>>>;
  Queue queue_;
  std::unordered_map<Id, Queue::iterator> index_;
  Id nextId_ = 1;
};

}  // namespace dohost
