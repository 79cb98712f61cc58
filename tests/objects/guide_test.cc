// The guide app's pure parts: operational transformation, ISO 8601 times, rate windows and the
// socket attachment, settings. The app itself is tested end to end in
// tests/integration/test_guide.py.
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "objects/guide_common.h"
#include "objects/guide_ot.h"

namespace dohost::objects::guide {
namespace {

ot::Edit insert(int64_t at, std::u16string text) {
  ot::Edit e;
  e.kind = ot::Edit::Kind::kInsert;
  e.position = at;
  e.length = static_cast<int64_t>(text.size());
  e.text = std::move(text);
  return e;
}

ot::Edit erase(int64_t at, int64_t length) {
  ot::Edit e;
  e.kind = ot::Edit::Kind::kDelete;
  e.position = at;
  e.length = length;
  return e;
}

}  // namespace

TEST_CASE("an insert moves past what was inserted at or before it and deleted before it") {
  CHECK(ot::transformInsert(5, insert(2, u"ab")) == 7);
  CHECK(ot::transformInsert(5, insert(5, u"ab")) == 7);  // the earlier insert stays in front
  CHECK(ot::transformInsert(5, insert(6, u"ab")) == 5);
  CHECK(ot::transformInsert(5, erase(1, 2)) == 3);
  CHECK(ot::transformInsert(5, erase(3, 2)) == 3);       // right behind the deleted text
  CHECK(ot::transformInsert(5, erase(4, 3)) == 4);       // inside it: where it was
  CHECK(ot::transformInsert(5, erase(5, 3)) == 5);
}

TEST_CASE("a delete keeps text inserted inside it and does not delete twice") {
  ot::Ranges r = {{2, 6}};
  ot::transformDelete(r, insert(4, u"xyz"));
  CHECK(r == ot::Ranges{{2, 4}, {7, 9}});
  ot::transformDelete(r, erase(3, 5));  // [3,8) takes the end of the first and start of the second
  CHECK(r == ot::Ranges{{2, 4}});       // [2,3) and [3,4) join
  ot::transformDelete(r, erase(0, 10));
  CHECK(r.empty());
  r = {{2, 6}};
  ot::transformDelete(r, insert(2, u"ab"));  // at its start: before it
  CHECK(r == ot::Ranges{{4, 8}});
  ot::transformDelete(r, insert(8, u"ab"));  // at its end: after it
  CHECK(r == ot::Ranges{{4, 8}});
}

// Intention: whatever was applied meanwhile, a transformed delete removes exactly the
// characters it named (each character carries its identity), and a transformed insert lands
// between the same neighbours unless they were deleted.
TEST_CASE("transformed edits act on the characters they meant, for random histories") {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    // The text as ids: original characters 1..n, inserted ones from 1000 up.
    std::vector<int> base;
    int n = static_cast<int>(rng() % 12) + 1;
    for (int i = 1; i <= n; ++i) base.push_back(i);
    std::vector<int> text = base;
    int nextId = 1000;
    // The client's delete against `base`.
    int64_t start = rng() % n;
    int64_t length = 1 + rng() % (n - start);
    std::vector<int> meant(base.begin() + start, base.begin() + start + length);
    ot::Ranges ranges = {{start, start + length}};
    int steps = static_cast<int>(rng() % 6);
    for (int s = 0; s < steps; ++s) {
      ot::Edit e;
      if (text.empty() || rng() % 2 == 0) {
        int64_t at = rng() % (text.size() + 1);
        int count = 1 + static_cast<int>(rng() % 3);
        e = insert(at, std::u16string(static_cast<size_t>(count), u'x'));
        for (int k = 0; k < count; ++k) text.insert(text.begin() + at + k, nextId++);
      } else {
        int64_t at = rng() % text.size();
        int64_t len = 1 + rng() % (text.size() - at);
        e = erase(at, len);
        text.erase(text.begin() + at, text.begin() + at + len);
      }
      ot::transformDelete(ranges, e);
    }
    std::vector<int> removed;
    for (auto [a, b] : ranges) {
      REQUIRE(a < b);
      REQUIRE(b <= static_cast<int64_t>(text.size()));
      removed.insert(removed.end(), text.begin() + a, text.begin() + b);
    }
    std::vector<int> stillThere;
    for (int id : meant) {
      if (std::find(text.begin(), text.end(), id) != text.end()) stillThere.push_back(id);
    }
    CHECK(removed == stillThere);
  }
}

TEST_CASE("UTF-8 and UTF-16 convert both ways; invalid UTF-8 is refused") {
  std::string s = "a\xC3\xA9\xF0\x9F\x98\x80z";  // a é 😀 z
  auto u = ot::toUtf16(s);
  REQUIRE(u);
  CHECK(u->size() == 5);  // the emoji is a surrogate pair
  CHECK(ot::toUtf8(*u) == s);
  CHECK(ot::splitsSurrogatePair(*u, 3));
  CHECK_FALSE(ot::splitsSurrogatePair(*u, 2));
  CHECK_FALSE(ot::splitsSurrogatePair(*u, 4));
  CHECK_FALSE(ot::toUtf16("\xC3"));              // cut short
  CHECK_FALSE(ot::toUtf16("\xC0\xAF"));          // overlong
  CHECK_FALSE(ot::toUtf16("\xED\xA0\x80"));      // a surrogate
  CHECK_FALSE(ot::toUtf16("\xF4\x90\x80\x80"));  // past U+10FFFF
  CHECK(ot::toUtf8(u"\xD800x") == "\xEF\xBF\xBDx");  // a lone surrogate becomes U+FFFD
}

TEST_CASE("ISO 8601 times as clients write them") {
  CHECK(toUnixMillis(*parseIsoTime("2024-01-01T00:00:00Z")) == 1704067200000);
  CHECK(toUnixMillis(*parseIsoTime("2024-01-01")) == 1704067200000);
  CHECK(toUnixMillis(*parseIsoTime("2024-01-01T01:00:00+01:00")) == 1704067200000);
  CHECK(toUnixMillis(*parseIsoTime("2023-12-31T19:00:00-0500")) == 1704067200000);
  CHECK(toUnixMillis(*parseIsoTime("2024-01-01T00:00:00.123456Z")) == 1704067200123);
  CHECK(toUnixMillis(*parseIsoTime("2024-01-01T00:00")) == 1704067200000);
  CHECK(toUnixMillis(*parseIsoTime("2024-02-29T12:00:00.5Z")) == 1709208000500);
  for (const char* bad : {"", "2024", "2024-13-01", "2023-02-29", "2024-01-01T24:00:00Z",
                          "2024-01-01T00:00:00Q", "2024-01-01T00:00:00.Z", "2024-01-01T00:00:00Zjunk",
                          "yesterday", "2024-1-1"}) {
    CAPTURE(bad);
    CHECK_FALSE(parseIsoTime(bad));
  }
  CHECK(isoTime(fromUnixMillis(1704067200123)) == "2024-01-01T00:00:00.123Z");
  CHECK(isoTime(fromUnixMillis(0)) == "1970-01-01T00:00:00.000Z");
  TimePoint t = fromUnixMillis(1764578412345);
  CHECK(*parseIsoTime(isoTime(t)) == t);
}

TEST_CASE("a rate window admits its limit, then refuses until the next window") {
  RateWindow w;
  for (int i = 0; i < 3; ++i) CHECK(w.admit(1000 + i, 3, 60000));
  CHECK_FALSE(w.admit(1010, 3, 60000));
  CHECK(w.count == 3);  // a refusal is not counted
  CHECK(w.retryAfterMs(1010, 60000) == 59990);
  CHECK(w.admit(61000, 3, 60000));
  CHECK(w.count == 1);
  CHECK(w.admit(10, 3, 60000));  // the clock went back: a new window
}

TEST_CASE("the socket attachment keeps the window and the state") {
  SocketAttachment a{RateWindow{1764578400000, 42}, R"({"userId":"u"})"};
  std::string bytes = a.encode();
  CHECK(bytes.size() == 2 + RateWindow::kEncodedBytes + a.state.size());
  auto back = SocketAttachment::decode(bytes);
  REQUIRE(back);
  CHECK(back->rate.startMs == 1764578400000);
  CHECK(back->rate.count == 42);
  CHECK(back->state == a.state);
  CHECK_FALSE(SocketAttachment::decode(""));
  CHECK_FALSE(SocketAttachment::decode(R"({"userId":"u"})"));
  CHECK_FALSE(SocketAttachment::decode("g" + std::string(24, 'z') + "\n{}"));
  std::string reused = "something much longer than what comes next, to be overwritten";
  a.encodeInto(reused);
  CHECK(reused == bytes);
  Settings s;
  s.messagesPerMinute = 1;
  RateWindow w;
  std::string out = "untouched";
  CHECK(admitMessage(w, a.state, 5, s, out));
  CHECK(SocketAttachment::decode(out)->rate.count == 1);
  std::string before = out;
  CHECK_FALSE(admitMessage(w, a.state, 6, s, out));
  CHECK(out == before);
}

TEST_CASE("settings are parsed and checked") {
  Settings s = Settings::parse({{"messages_per_minute", " 5 "}, {"jwt_secret", "x"},
                                {"default_context_id", "c-1"}});
  CHECK(s.messagesPerMinute == 5);
  CHECK(s.connectionsPerMinute == 10);
  CHECK(s.broadcastsPerMinute == 1000);
  CHECK(s.jwtSecret == "x");
  CHECK(s.defaultContextId == "c-1");
  CHECK_THROWS_WITH_AS(Settings::parse({{"messages_per_minute", "0"}}),
                       doctest::Contains("messages_per_minute must be an integer"),
                       std::invalid_argument);
  CHECK_THROWS_AS(Settings::parse({{"rate_window_ms", "1.5"}}), std::invalid_argument);
  CHECK_THROWS_AS(Settings::parse({{"default_context_id", "a b"}}), std::invalid_argument);
  CHECK_THROWS_WITH_AS(Settings::parse({{"messages_per_minutes", "5"}}),
                       doctest::Contains("unknown setting"), std::invalid_argument);
}

TEST_CASE("ids and metric names") {
  CHECK(validId("a"));
  CHECK(validId(std::string(128, 'x')));
  CHECK_FALSE(validId(std::string(129, 'x')));
  CHECK_FALSE(validId(""));
  CHECK(validId("A-z_0.9:@~"));
  CHECK_FALSE(validId("a/b"));
  CHECK_FALSE(validMetricName("a@b"));
  CHECK(validMetricName("quiz.score:avg"));
  std::mt19937_64 rng(1);
  std::string u = newUuid(rng);
  CHECK(u.size() == 36);
  CHECK(u[14] == '4');
  CHECK(std::string("89ab").find(u[19]) != std::string::npos);
  CHECK(newUuid(rng) != u);
}

}  // namespace dohost::objects::guide
