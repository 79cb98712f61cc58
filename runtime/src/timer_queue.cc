#include "timer_queue.h"

#include <exception>
#include <string>

#include "dohost/log.h"

namespace dohost {

TimerQueue::Id TimerQueue::schedule(TimePoint at, std::function<void()> fn) {
  Id id = nextId_++;
  index_[id] = queue_.emplace(at, std::make_pair(id, std::move(fn)));
  return id;
}

void TimerQueue::cancel(Id id) {
  auto it = index_.find(id);
  if (it == index_.end()) return;
  queue_.erase(it->second);
  index_.erase(it);
}

std::optional<TimePoint> TimerQueue::next() const {
  if (queue_.empty()) return std::nullopt;
  return queue_.begin()->first;
}

size_t TimerQueue::runDue(TimePoint now) {
  size_t ran = 0;
  while (!queue_.empty() && queue_.begin()->first <= now) {
    auto node = queue_.extract(queue_.begin());
    index_.erase(node.mapped().first);
    // Timers run from the loop's C callbacks (libev, lws_sul): nothing may unwind into them.
    // A failing timer is logged and the others still run.
    try {
      node.mapped().second();
    } catch (const std::exception& e) {
      logLine(LogLevel::kError, std::string("timer failed: ") + e.what());
    } catch (...) {
      logLine(LogLevel::kError, "timer failed: unknown exception");
    }
    ++ran;
  }
  return ran;
}

}  // namespace dohost
