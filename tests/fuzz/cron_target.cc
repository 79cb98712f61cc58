// Fuzz target cron: the input is a cron expression as an object author passes it to
// scheduleEvery(name, cron, ...). Parsing never crashes and either refuses with a message or
// gives an expression whose next run, from a few fixed times (a month's end, before 29 February
// 2100, the far future), is a whole minute strictly later that matches, with no matching
// minute skipped in between (checked when the gap is short).
#include <string>

#include "cron.h"
#include "harness.h"

namespace {

using namespace dohost;

constexpr int64_t kMinute = 60'000;

void checkFrom(const CronExpression& e, int64_t from) {
  int64_t t = from;
  for (int run = 0; run < 3; ++run) {
    int64_t next = e.nextAfter(t);
    if (next <= t) fuzz::fail("a next run that is not after the time it was asked from");
    if (next % kMinute != 0) fuzz::fail("a next run that is not a whole minute");
    if (!e.matches(next)) fuzz::fail("a next run the expression does not match");
    if (next - t <= 240 * kMinute) {
      for (int64_t m = (t / kMinute + 1) * kMinute; m < next; m += kMinute) {
        if (e.matches(m)) fuzz::fail("a matching minute before the next run");
      }
    }
    t = next;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  Result<CronExpression> parsed = CronExpression::parse(input);
  if (!parsed.isOk()) {
    if (parsed.status().message().empty()) fuzz::fail("a refused expression without a reason");
    return 0;
  }
  if (input.size() > CronExpression::kMaxLength) fuzz::fail("an over-long expression parsed");
  for (int64_t from : {utcMillis(2026, 1, 31, 23, 59, 30), utcMillis(2096, 3, 1),
                       utcMillis(2028, 2, 28, 12, 0), utcMillis(9000, 12, 31, 23, 59) + 1}) {
    checkFrom(*parsed, from);
  }
  return 0;
}
