// CronExpression: the five standard cron fields, read as UTC. Used by the scheduler for
// scheduleEvery(name, cron, ...) and by nothing else.
//
//   minute (0-59) hour (0-23) day-of-month (1-31) month (1-12) day-of-week (0-7, 0 and 7 Sunday)
//
// Each field is `*` or a comma list of items; an item is a number, a range `a-b` (a <= b), or
// `*` or a range followed by a step `/n` (1 <= n <= the field's maximum). No names (JAN, MON),
// no `?`, `L`, `W` or `#`. Day of month and day of week follow Vixie cron: when both fields
// are restricted (neither starts with `*`), a day matches if either matches; otherwise both
// must (so `*/2` in one of them leaves the other alone). An expression that can never match
// (`0 0 30 2 *`) is refused, so nextAfter() always finds a time.
//
// Thread: any (a parsed expression is an immutable value).
#pragma once

#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dohost/status.h"

namespace dohost {

class CronExpression {
 public:
  static constexpr size_t kMaxLength = 256;  // longer input is refused before parsing

  // kInvalidArgument with a message that names the field and what is wrong.
  static Result<CronExpression> parse(std::string_view text);

  // The first whole minute strictly after `afterMs` (milliseconds since the Unix epoch, UTC)
  // that the expression matches. REQUIRES: afterMs >= 0. Always found for a parsed expression
  // within eight years (a 29 February can be that far off around 2100).
  int64_t nextAfter(int64_t afterMs) const;

  // Whether the minute containing `ms` matches.
  bool matches(int64_t ms) const;

 private:
  CronExpression() = default;
  bool dayMatches(int64_t day) const;

  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> daysOfMonth_;  // bit 0 unused
  std::bitset<13> months_;       // bit 0 unused
  std::bitset<7> daysOfWeek_;    // 0 = Sunday
  bool domStar_ = false;
  bool dowStar_ = false;
};

// Milliseconds since the Unix epoch of a UTC date and time (proleptic Gregorian calendar).
int64_t utcMillis(int year, int month, int day, int hour = 0, int minute = 0, int second = 0);

}  // namespace dohost
