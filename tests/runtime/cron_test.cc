#include <doctest/doctest.h>

#include <string>

#include "cron.h"

namespace dohost {
namespace {

bool cronParses(const std::string& text) { return CronExpression::parse(text).isOk(); }

std::string cronError(const std::string& text) {
  Result<CronExpression> r = CronExpression::parse(text);
  return r.isOk() ? std::string("(parsed)") : r.status().message();
}

int64_t cronNext(const std::string& text, int64_t after) {
  Result<CronExpression> r = CronExpression::parse(text);
  REQUIRE(r.isOk());
  return r->nextAfter(after);
}

TEST_CASE("cron: utcMillis is the proleptic Gregorian calendar in UTC") {
  CHECK(utcMillis(1970, 1, 1) == 0);
  CHECK(utcMillis(2000, 3, 1) == 951'868'800'000);
  CHECK(utcMillis(2023, 11, 14, 22, 13, 20) == 1'700'000'000'000);
}

TEST_CASE("cron: every field accepts its bounds and refuses the value just past them") {
  CHECK(cronParses("0 0 1 1 0"));
  CHECK(cronParses("59 23 31 12 7"));
  CHECK(cronParses("0-59 0-23 1-31 1-12 0-7"));
  CHECK(cronError("60 * * * *") == "cron minute field: '60' is outside 0-59");
  CHECK(cronError("* 24 * * *") == "cron hour field: '24' is outside 0-23");
  CHECK(cronError("* * 0 * *") == "cron day-of-month field: '0' is outside 1-31");
  CHECK(cronError("* * 32 * *") == "cron day-of-month field: '32' is outside 1-31");
  CHECK(cronError("* * * 0 *") == "cron month field: '0' is outside 1-12");
  CHECK(cronError("* * * 13 *") == "cron month field: '13' is outside 1-12");
  CHECK(cronError("* * * * 8") == "cron day-of-week field: '8' is outside 0-7");
  CHECK_FALSE(cronParses("-1 * * * *"));
  CHECK_FALSE(cronParses("0-60 * * * *"));
  CHECK_FALSE(cronParses("* * * * 0-8"));
}

TEST_CASE("cron: the shape of an expression") {
  CHECK(cronError("* * * *") ==
        "cron expression needs 5 fields (minute hour day-of-month month day-of-week), got 4");
  CHECK_FALSE(cronParses("* * * * * *"));
  CHECK_FALSE(cronParses(""));
  CHECK_FALSE(cronParses("   "));
  CHECK(cronParses("  */5\t*  * * *  "));  // spaces and tabs between fields
  CHECK(cronError("*/0 * * * *") == "cron minute field: '*/0' has a step outside 1-59");
  CHECK(cronParses("*/59 * * * *"));
  CHECK_FALSE(cronParses("*/60 * * * *"));
  CHECK(cronParses("* */23 * * *"));
  CHECK_FALSE(cronParses("* */24 * * *"));
  CHECK(cronError("5/2 * * * *") ==
        "cron minute field: '5/2' has a step after a single value (use * or a range)");
  CHECK(cronError("5-3 * * * *") == "cron minute field: '5-3' is a range that runs backwards");
  CHECK(cronError("1,,2 * * * *") == "cron minute field: '1,,2' has an empty list item");
  CHECK_FALSE(cronParses(",1 * * * *"));
  CHECK_FALSE(cronParses("1, * * * *"));
  CHECK_FALSE(cronParses("a * * * *"));
  CHECK_FALSE(cronParses("* * * JAN *"));  // no names
  CHECK_FALSE(cronParses("? * * * *"));
  CHECK_FALSE(cronParses("*/ * * * *"));
  CHECK_FALSE(cronParses("1- * * * *"));
  CHECK_FALSE(cronParses("0005 * * * *"));
  CHECK(cronParses("005 * * * *"));
  CHECK(cronParses("1,2,3-10/2,*/30 * * * *"));
  std::string longest = "0" + std::string(CronExpression::kMaxLength - 8, ' ') + "* * * *";
  CHECK(longest.size() == CronExpression::kMaxLength);
  CHECK(cronParses(longest));
  CHECK(cronError(longest + " ") == "cron expression longer than 256 characters");
}

TEST_CASE("cron: an expression that can never match is refused") {
  CHECK(cronError("0 0 30 2 *") ==
        "cron expression never matches: no selected month has the selected day of month");
  CHECK_FALSE(cronParses("0 0 31 4,6,9,11 *"));
  CHECK(cronParses("0 0 29 2 *"));      // leap years only
  CHECK(cronParses("0 0 30 2 1"));      // both restricted: every Monday of February
  CHECK(cronParses("0 0 31 2-3 *"));    // 31 March
}

TEST_CASE("cron: the next run is the first matching minute strictly after") {
  int64_t t = utcMillis(2026, 5, 10, 10, 7, 30);
  CHECK(cronNext("*/15 * * * *", t) == utcMillis(2026, 5, 10, 10, 15));
  CHECK(cronNext("*/15 * * * *", utcMillis(2026, 5, 10, 10, 15)) == utcMillis(2026, 5, 10, 10, 30));
  CHECK(cronNext("* * * * *", utcMillis(2026, 5, 10, 10, 15)) == utcMillis(2026, 5, 10, 10, 16));
  CHECK(cronNext("* * * * *", utcMillis(2026, 5, 10, 10, 15) + 1) == utcMillis(2026, 5, 10, 10, 16));
  CHECK(cronNext("0 9-17/4 * * *", t) == utcMillis(2026, 5, 10, 13, 0));
  CHECK(cronNext("0 9-17/4 * * *", utcMillis(2026, 5, 10, 17, 0)) == utcMillis(2026, 5, 11, 9, 0));
  CHECK(cronNext("30 2 * * *", t) == utcMillis(2026, 5, 11, 2, 30));
}

TEST_CASE("cron: month ends, year ends and leap years") {
  CHECK(cronNext("0 0 1 * *", utcMillis(2026, 1, 31, 12, 0)) == utcMillis(2026, 2, 1));
  CHECK(cronNext("0 0 31 * *", utcMillis(2026, 4, 15)) == utcMillis(2026, 5, 31));
  CHECK(cronNext("0 0 31 * *", utcMillis(2026, 5, 31)) == utcMillis(2026, 7, 31));
  CHECK(cronNext("59 23 31 12 *", utcMillis(2026, 6, 1)) == utcMillis(2026, 12, 31, 23, 59));
  CHECK(cronNext("0 0 1 1 *", utcMillis(2026, 12, 31, 23, 59)) == utcMillis(2027, 1, 1));
  CHECK(cronNext("0 0 * * *", utcMillis(2028, 2, 28, 0, 0)) == utcMillis(2028, 2, 29));
  CHECK(cronNext("0 0 * * *", utcMillis(2027, 2, 28, 0, 0)) == utcMillis(2027, 3, 1));
  CHECK(cronNext("0 12 29 2 *", utcMillis(2027, 3, 1)) == utcMillis(2028, 2, 29, 12, 0));
  // 2100 is not a leap year: eight years to the next 29 February.
  CHECK(cronNext("0 12 29 2 *", utcMillis(2096, 3, 1)) == utcMillis(2104, 2, 29, 12, 0));
  CHECK(cronNext("0 0 29 2 *", utcMillis(2000, 1, 1)) == utcMillis(2000, 2, 29));  // 2000 is
}

TEST_CASE("cron: day of month and day of week follow Vixie cron") {
  // 2026-12-01 is a Tuesday.
  int64_t t = utcMillis(2026, 12, 1);
  // Both restricted: the 13th or a Friday, whichever comes first.
  CHECK(cronNext("0 0 13 * 5", t) == utcMillis(2026, 12, 4));
  CHECK(cronNext("0 0 2 * 5", t) == utcMillis(2026, 12, 2));
  // One of them `*`: only the other counts.
  CHECK(cronNext("0 0 * * 5", t) == utcMillis(2026, 12, 4));
  CHECK(cronNext("0 0 13 * *", t) == utcMillis(2026, 12, 13));
  // A field starting with `*` counts as `*` for the rule: odd days that are Mondays.
  CHECK(cronNext("0 0 */2 * 1", t) == utcMillis(2026, 12, 7));
  // 0 and 7 are Sunday.
  CHECK(cronNext("0 0 * * 7", t) == utcMillis(2026, 12, 6));
  CHECK(cronNext("0 0 * * 0", t) == utcMillis(2026, 12, 6));
  CHECK(cronNext("0 0 * * 1-5", utcMillis(2026, 12, 5)) == utcMillis(2026, 12, 7));
  CHECK(cronNext("0 0 * * 5-7", utcMillis(2026, 12, 1)) == utcMillis(2026, 12, 4));
}

TEST_CASE("cron: matches is the minute the expression selects") {
  Result<CronExpression> e = CronExpression::parse("*/10 8 * * 1-5");
  REQUIRE(e.isOk());
  CHECK(e->matches(utcMillis(2026, 12, 1, 8, 20, 59)));
  CHECK_FALSE(e->matches(utcMillis(2026, 12, 1, 8, 21)));
  CHECK_FALSE(e->matches(utcMillis(2026, 12, 6, 8, 20)));  // a Sunday
}

}  // namespace
}  // namespace dohost
