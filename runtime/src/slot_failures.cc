// ObjectSlot's crash-loop guard: an object whose constructor, fetch or alarm keeps throwing is
// put in a failed state with backoff instead of being rebuilt for every event.
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dohost/log.h"
#include "object_slot.h"
#include "runtime.h"

namespace dohost {

std::optional<TimePoint> ObjectSlot::failedUntil() const {
  if (!failure_ || !failure_->retryAt || *failure_->retryAt <= now()) return std::nullopt;
  return failure_->retryAt;
}

// The record is kept for a window after the last failure (or the end of the failed period), so
// failures that keep coming add up, and a failure after a retry doubles the backoff.
TimePoint ObjectSlot::failureRecordUntil() const {
  TimePoint from = std::max(failure_->lastAt, failure_->retryAt.value_or(failure_->lastAt));
  return from + runtime_.options().objectFailureWindow;
}

bool ObjectSlot::keepsFailureRecord() const {
  return failure_ && now() < failureRecordUntil();
}

void ObjectSlot::noteFailure(const std::string& error) {
  const RuntimeOptions& o = runtime_.options();
  TimePoint t = now();
  ++metrics_->objectFailures;
  if (failure_ && failure_->periods == 0 && t - failure_->firstAt > o.objectFailureWindow) {
    failure_.reset();  // the earlier failures are outside the window
  }
  if (!failure_) failure_.emplace(FailureRecord{0, t, t, "", 0, std::nullopt});
  FailureRecord& f = *failure_;
  ++f.count;
  f.lastAt = t;
  f.lastError = error;
  // Below the limit it is only counted. Once it has been failed, one more failure (the retry)
  // fails it again.
  if (f.periods > 0 || f.count >= o.objectFailureLimit) {
    Duration backoff = o.objectFailureBackoff;
    for (int i = 0; i < f.periods && backoff < o.objectFailureBackoffMax; ++i) backoff *= 2;
    backoff = std::min(backoff, o.objectFailureBackoffMax);
    ++f.periods;
    f.retryAt = t + backoff;
    logLine(LogLevel::kError,
            fmt::format("object failed {} times; not run for {:g} s: {}", f.count,
                        static_cast<double>(backoff.count()) / 1000, error),
            className_, id_);
    // Its clients are told: sockets close with 1011 (they reconnect and get 503 until the retry).
    std::vector<std::shared_ptr<detail::SocketRecord>> open;
    for (const auto& [sid, s] : sockets_) {
      if (s->state == detail::SocketState::kOpen) open.push_back(s);
    }
    for (const auto& s : open) enqueueClose(s, 1011, "the object failed; try again later");
  }
  if (failureTimer_) runtime_.timers().cancel(*failureTimer_);
  failureTimer_ = runtime_.schedule(failureRecordUntil(), [this] {
    failureTimer_.reset();
    if (!keepsFailureRecord()) failure_.reset();
    runtime_.touch(*this);
  });
}

void ObjectSlot::noteSuccess() {
  if (failure_->periods > 0) logLine(LogLevel::kInfo, "object recovered after a failed state", className_, id_);
  failure_.reset();
  if (failureTimer_) runtime_.timers().cancel(*failureTimer_);
  failureTimer_.reset();
}

Response ObjectSlot::failedResponse() const {
  int64_t retryMs = toUnixMillis(*failure_->retryAt);
  nlohmann::json body{{"error", "the object failed repeatedly; it is not run until retryAt"},
                      {"lastError", failure_->lastError},
                      {"retryAt", retryMs}};
  int64_t waitMs = retryMs - toUnixMillis(now());
  Response r = Response::json(503, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  r.setHeader("retry-after", std::to_string(std::max<int64_t>(1, (waitMs + 999) / 1000)));
  return r;
}

}  // namespace dohost
