#include "cron.h"

#include <vector>

namespace dohost {
namespace {

constexpr int64_t kMinuteMs = 60'000;
constexpr int64_t kDayMs = 86'400'000;
// A parsed expression matches some day within this many days of any day (29 February, with
// 2100 not a leap year, is at most eight years away).
constexpr int64_t kSearchDays = 8 * 366 + 2;

struct Field {
  const char* name;
  int min;
  int max;
};
constexpr Field kFields[5] = {{"minute", 0, 59},
                              {"hour", 0, 23},
                              {"day-of-month", 1, 31},
                              {"month", 1, 12},
                              {"day-of-week", 0, 7}};

struct Civil {
  int64_t year;
  int month;
  int day;
};

// Howard Hinnant's days-to-civil: days since 1970-01-01 to a proleptic Gregorian date.
Civil civilFromDays(int64_t z) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t y = yoe + era * 400;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  int d = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  int m = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  return {y + (m <= 2 ? 1 : 0), m, d};
}

int64_t daysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2 ? 1 : 0;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

Status fieldError(const Field& f, std::string_view item, const std::string& why) {
  return Status::invalidArgument("cron " + std::string(f.name) + " field: '" + std::string(item) +
                                 "' " + why);
}

// A decimal number of at most three digits (every field's bound fits).
std::optional<int> number(std::string_view s) {
  if (s.empty() || s.size() > 3) return std::nullopt;
  int n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  return n;
}

// Sets the values `text` (one field) selects in `bits` (indexed by value).
Status parseField(const Field& f, std::string_view text, std::vector<bool>& bits) {
  if (text.empty()) return Status::invalidArgument(std::string("cron ") + f.name + " field is empty");
  size_t start = 0;
  while (true) {
    size_t comma = text.find(',', start);
    std::string_view item = text.substr(start, comma == std::string_view::npos ? std::string_view::npos
                                                                               : comma - start);
    if (item.empty()) return fieldError(f, text, "has an empty list item");
    std::string_view range = item;
    int step = 1;
    bool stepped = false;
    if (size_t slash = item.find('/'); slash != std::string_view::npos) {
      range = item.substr(0, slash);
      std::optional<int> n = number(item.substr(slash + 1));
      if (!n) return fieldError(f, item, "has a step that is not a number");
      if (*n < 1 || *n > f.max) {
        return fieldError(f, item, "has a step outside 1-" + std::to_string(f.max));
      }
      step = *n;
      stepped = true;
    }
    int lo = f.min;
    int hi = f.max;
    if (range == "*") {
      if (f.max == 7) hi = 6;  // day-of-week: 7 is Sunday again
    } else {
      size_t dash = range.find('-');
      std::optional<int> a = number(range.substr(0, dash));
      std::optional<int> b = dash == std::string_view::npos ? a : number(range.substr(dash + 1));
      if (!a || !b) return fieldError(f, item, "is not a number, a range or *");
      if (*a < f.min || *a > f.max || *b < f.min || *b > f.max) {
        return fieldError(f, item, "is outside " + std::to_string(f.min) + "-" +
                                       std::to_string(f.max));
      }
      if (*a > *b) return fieldError(f, item, "is a range that runs backwards");
      if (stepped && dash == std::string_view::npos) {
        return fieldError(f, item, "has a step after a single value (use * or a range)");
      }
      lo = *a;
      hi = *b;
    }
    for (int v = lo; v <= hi; v += step) bits[static_cast<size_t>(v)] = true;
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return Status::ok();
}

}  // namespace

int64_t utcMillis(int year, int month, int day, int hour, int minute, int second) {
  return daysFromCivil(year, month, day) * kDayMs + hour * 3'600'000LL + minute * kMinuteMs +
         second * 1000LL;
}

Result<CronExpression> CronExpression::parse(std::string_view text) {
  if (text.size() > kMaxLength) {
    return Status::invalidArgument("cron expression longer than " + std::to_string(kMaxLength) +
                                   " characters");
  }
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == ' ' || text[i] == '\t') {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && text[j] != ' ' && text[j] != '\t') ++j;
    parts.push_back(text.substr(i, j - i));
    i = j;
  }
  if (parts.size() != 5) {
    return Status::invalidArgument(
        "cron expression needs 5 fields (minute hour day-of-month month day-of-week), got " +
        std::to_string(parts.size()));
  }
  CronExpression e;
  for (size_t k = 0; k < 5; ++k) {
    std::vector<bool> bits(static_cast<size_t>(kFields[k].max) + 1, false);
    if (Status s = parseField(kFields[k], parts[k], bits); !s.isOk()) return s;
    for (size_t v = 0; v < bits.size(); ++v) {
      if (!bits[v]) continue;
      switch (k) {
        case 0: e.minutes_.set(v); break;
        case 1: e.hours_.set(v); break;
        case 2: e.daysOfMonth_.set(v); break;
        case 3: e.months_.set(v); break;
        default: e.daysOfWeek_.set(v % 7); break;
      }
    }
  }
  e.domStar_ = parts[2].front() == '*';
  e.dowStar_ = parts[4].front() == '*';
  // Only "restricted day of month, any day of week" can miss every day: 31 in a month of 30.
  if (!e.domStar_ && e.dowStar_) {
    constexpr int kLongest[13] = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool possible = false;
    for (int m = 1; m <= 12 && !possible; ++m) {
      if (!e.months_.test(static_cast<size_t>(m))) continue;
      for (int d = 1; d <= kLongest[m] && !possible; ++d) {
        possible = e.daysOfMonth_.test(static_cast<size_t>(d));
      }
    }
    if (!possible) {
      return Status::invalidArgument("cron expression never matches: no selected month has the "
                                     "selected day of month");
    }
  }
  return e;
}

bool CronExpression::dayMatches(int64_t day) const {
  Civil c = civilFromDays(day);
  if (!months_.test(static_cast<size_t>(c.month))) return false;
  bool dom = daysOfMonth_.test(static_cast<size_t>(c.day));
  bool dow = daysOfWeek_.test(static_cast<size_t>(((day % 7) + 11) % 7));  // 1970-01-01: Thursday
  if (domStar_ || dowStar_) return dom && dow;
  return dom || dow;
}

bool CronExpression::matches(int64_t ms) const {
  int64_t day = ms / kDayMs;
  int64_t minuteOfDay = (ms % kDayMs) / kMinuteMs;
  return dayMatches(day) && hours_.test(static_cast<size_t>(minuteOfDay / 60)) &&
         minutes_.test(static_cast<size_t>(minuteOfDay % 60));
}

int64_t CronExpression::nextAfter(int64_t afterMs) const {
  int64_t t = (afterMs / kMinuteMs + 1) * kMinuteMs;
  int64_t firstDay = t / kDayMs;
  int firstMinute = static_cast<int>((t % kDayMs) / kMinuteMs);
  for (int64_t day = firstDay; day <= firstDay + kSearchDays; ++day) {
    if (!dayMatches(day)) continue;
    int from = day == firstDay ? firstMinute : 0;
    for (int h = from / 60; h < 24; ++h) {
      if (!hours_.test(static_cast<size_t>(h))) continue;
      for (int m = h == from / 60 ? from % 60 : 0; m < 60; ++m) {
        if (minutes_.test(static_cast<size_t>(m))) return day * kDayMs + (h * 60 + m) * kMinuteMs;
      }
    }
  }
  return -1;  // unreachable for a parsed expression (see parse)
}

}  // namespace dohost
