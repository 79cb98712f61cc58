// Time for the runtime and for objects. Every timer in the runtime (idle eviction, alarms,
// object timeouts, alarm backoff) reads one Clock, so tests can drive a ManualClock and run
// minutes of object life in milliseconds.
#pragma once

#include <chrono>
#include <cstdint>

namespace dohost {

using Duration = std::chrono::milliseconds;
using TimePoint = std::chrono::time_point<std::chrono::system_clock, Duration>;

inline int64_t toUnixMillis(TimePoint t) { return t.time_since_epoch().count(); }
inline TimePoint fromUnixMillis(int64_t ms) { return TimePoint(Duration(ms)); }

// Thread: the loop thread (SystemClock: any thread).
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint now() const override {
    return std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
  }
};

// A clock that moves only when told to. Runtime::advance() moves it and runs what fell due.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimePoint start = fromUnixMillis(1'700'000'000'000)) : now_(start) {}
  TimePoint now() const override { return now_; }
  void advance(Duration d) { now_ += d; }
  void set(TimePoint t) { now_ = t; }

 private:
  TimePoint now_;
};

}  // namespace dohost
