// The key-value API of ObjectDatabase: calls, limits, and list() with every option.
#include "dohost/storage/object_db.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "test_support.h"

namespace dohost::storage {
namespace {

using testing::Keys;
using testing::keysOf;
using testing::openDb;
using testing::TempDir;
using testing::valueOf;

TEST_CASE("put stores a value that get returns; a missing key is absent") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  CHECK(valueOf(db->get("greeting")) == std::nullopt);
  REQUIRE_OK(db->put("greeting", "hello"));
  CHECK(valueOf(db->get("greeting")) == std::optional<std::string>("hello"));
  REQUIRE_OK(db->put("greeting", "bye"));
  CHECK(valueOf(db->get("greeting")) == std::optional<std::string>("bye"));
  CHECK(valueOf(db->keyCount()) == 1);
}

TEST_CASE("an empty key and an empty value are ordinary values, not NULL") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  REQUIRE_OK(db->put("", "empty key"));
  REQUIRE_OK(db->put("k", ""));
  CHECK(valueOf(db->get("")) == std::optional<std::string>("empty key"));
  CHECK(valueOf(db->get("k")) == std::optional<std::string>(""));
  CHECK(keysOf(valueOf(db->list({}))) == Keys{"", "k"});
}

TEST_CASE("values are opaque bytes, including NUL and 0xFF") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  std::string bytes("\0\xff\x01 text\0", 9);
  std::string key("k\0ey", 4);
  REQUIRE_OK(db->put(key, bytes));
  CHECK(valueOf(db->get(key)) == std::optional<std::string>(bytes));
  CHECK(valueOf(db->get("k")) == std::nullopt);  // the NUL is part of the key
}

TEST_CASE("remove reports whether the key existed") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  REQUIRE_OK(db->put("a", "1"));
  CHECK(valueOf(db->remove("a")) == true);
  CHECK(valueOf(db->remove("a")) == false);
  CHECK(valueOf(db->get("a")) == std::nullopt);
}

TEST_CASE("multi-key get returns entries in byte order, without missing keys or duplicates") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  REQUIRE_OK(db->put(std::vector<KvEntry>{{"b", "2"}, {"a", "1"}, {"\xc3\xa9", "e"}}));
  std::vector<KvEntry> got = valueOf(db->get(Keys{"\xc3\xa9", "missing", "b", "a", "b"}));
  CHECK(got == std::vector<KvEntry>{{"a", "1"}, {"b", "2"}, {"\xc3\xa9", "e"}});
  CHECK(valueOf(db->get(Keys{})).empty());
}

TEST_CASE("a batched put writes every entry; the last duplicate wins") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  REQUIRE_OK(db->put(std::vector<KvEntry>{{"x", "1"}, {"y", "2"}, {"x", "3"}}));
  CHECK(valueOf(db->get(Keys{"x", "y"})) == std::vector<KvEntry>{{"x", "3"}, {"y", "2"}});
  CHECK(db->commits() == 1);  // the batch ran as its own transaction
}

TEST_CASE("a batched remove counts the keys that existed") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  REQUIRE_OK(db->put(std::vector<KvEntry>{{"a", "1"}, {"b", "2"}, {"c", "3"}}));
  CHECK(valueOf(db->remove(Keys{"a", "c", "zz", "a"})) == 2);
  CHECK(keysOf(valueOf(db->list({}))) == Keys{"b"});
}

TEST_CASE("limits are enforced with Cloudflare's messages") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  const std::string longestKey(2048, 'k');
  const std::string tooLongKey(2049, 'k');
  const std::string keyMessage = "Keys cannot be larger than 2048 bytes.";
  auto expectInvalid = [](const Status& status, const std::string& message) {
    CHECK(status.code() == Status::Code::kInvalidArgument);
    CHECK(status.message() == message);
  };

  SUBCASE("keys") {
    REQUIRE_OK(db->put(longestKey, "v"));
    CHECK(valueOf(db->get(longestKey)) == std::optional<std::string>("v"));
    expectInvalid(db->put(tooLongKey, "v"), keyMessage);
    expectInvalid(db->get(tooLongKey).status(), keyMessage);
    expectInvalid(db->remove(tooLongKey).status(), keyMessage);
    expectInvalid(db->get(Keys{"a", tooLongKey}).status(), keyMessage);
    expectInvalid(db->remove(Keys{tooLongKey}).status(), keyMessage);
    expectInvalid(db->put(std::vector<KvEntry>{{"a", "1"}, {tooLongKey, "2"}}), keyMessage);
    CHECK(valueOf(db->keyCount()) == 1);  // the rejected batch wrote nothing, not even "a"
  }
  SUBCASE("values") {
    const std::string largest(2 * 1024 * 1024, 'v');
    REQUIRE_OK(db->put("big", largest));
    CHECK(valueOf(db->get("big"))->size() == largest.size());
    const std::string message = "Values cannot be larger than 2097152 bytes.";
    expectInvalid(db->put("big", largest + "v"), message);
    expectInvalid(db->put(std::vector<KvEntry>{{"a", "1"}, {"b", largest + "v"}}), message);
    CHECK(valueOf(db->get("a")) == std::nullopt);
    CHECK(valueOf(db->get("big"))->size() == largest.size());
  }
  SUBCASE("batches") {
    Keys keys;
    std::vector<KvEntry> entries;
    for (int i = 0; i < 128; ++i) {
      keys.push_back("key" + std::to_string(i));
      entries.emplace_back(keys.back(), "v");
    }
    REQUIRE_OK(db->put(entries));
    CHECK(valueOf(db->get(keys)).size() == 128);
    const std::string message = "Maximum number of key value pairs is 128.";
    keys.push_back("key128");
    entries.emplace_back("key128", "v");
    expectInvalid(db->put(entries), message);
    expectInvalid(db->get(keys).status(), message);
    expectInvalid(db->remove(keys).status(), message);
    CHECK(valueOf(db->keyCount()) == 128);
    keys.pop_back();
    CHECK(valueOf(db->remove(keys)) == 128);
  }
  SUBCASE("custom limits appear in the messages") {
    OpenOptions options;
    options.limits = Limits{.maxKeyBytes = 3, .maxValueBytes = 5, .maxBatch = 2};
    auto small = openDb(dir.file("small.sqlite"), options);
    expectInvalid(small->put("abcd", "v"), "Keys cannot be larger than 3 bytes.");
    expectInvalid(small->put("abc", "123456"), "Values cannot be larger than 5 bytes.");
    expectInvalid(small->get(Keys{"a", "b", "c"}).status(),
                  "Maximum number of key value pairs is 2.");
    REQUIRE_OK(small->put("abc", "12345"));
  }
}

TEST_CASE("list orders keys by their UTF-8 bytes") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  // U+FF21 sorts before U+1F600 by code point (and UTF-8 bytes) but after it in UTF-16.
  const Keys keys = {"b",  "\xf0\x9f\x98\x80", "a",  "ab", "\xef\xbc\xa1", "Z",
                     "",   "abc",              "aa", "z",  "\xc3\xa9",     std::string("a\0", 2)};
  for (const std::string& key : keys) REQUIRE_OK(db->put(key, "v:" + key));
  std::vector<KvEntry> all = valueOf(db->list({}));
  CHECK(keysOf(all) == Keys{"", "Z", "a", std::string("a\0", 2), "aa", "ab", "abc", "b", "z",
                            "\xc3\xa9", "\xef\xbc\xa1", "\xf0\x9f\x98\x80"});
  CHECK(all[2].second == "v:a");
  CHECK(valueOf(db->keyCount()) == 12);
}

TEST_CASE("list honours start, startAfter, end, prefix, reverse and limit") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  for (const char* key : {"a", "b", "ba", "bb", "c", "d"}) REQUIRE_OK(db->put(key, key));
  auto list = [&](ListOptions options) { return keysOf(valueOf(db->list(options))); };

  CHECK(list({}) == Keys{"a", "b", "ba", "bb", "c", "d"});
  CHECK(list({.start = "b"}) == Keys{"b", "ba", "bb", "c", "d"});
  CHECK(list({.start = "bz"}) == Keys{"c", "d"});
  CHECK(list({.startAfter = "b"}) == Keys{"ba", "bb", "c", "d"});
  CHECK(list({.startAfter = "bz"}) == Keys{"c", "d"});
  CHECK(list({.end = "c"}) == Keys{"a", "b", "ba", "bb"});
  CHECK(list({.start = "b", .end = "c"}) == Keys{"b", "ba", "bb"});
  CHECK(list({.startAfter = "b", .end = "c"}) == Keys{"ba", "bb"});
  CHECK(list({.prefix = "b"}) == Keys{"b", "ba", "bb"});
  CHECK(list({.start = "ba", .prefix = "b"}) == Keys{"ba", "bb"});
  CHECK(list({.start = "a", .prefix = "b"}) == Keys{"b", "ba", "bb"});
  CHECK(list({.startAfter = "b", .prefix = "b"}) == Keys{"ba", "bb"});
  CHECK(list({.end = "bb", .prefix = "b"}) == Keys{"b", "ba"});
  CHECK(list({.end = "z", .prefix = "b"}) == Keys{"b", "ba", "bb"});
  CHECK(list({.prefix = ""}) == Keys{"a", "b", "ba", "bb", "c", "d"});
  CHECK(list({.reverse = true}) == Keys{"d", "c", "bb", "ba", "b", "a"});
  CHECK(list({.start = "b", .end = "c", .reverse = true}) == Keys{"bb", "ba", "b"});
  CHECK(list({.prefix = "b", .reverse = true, .limit = 2}) == Keys{"bb", "ba"});
  CHECK(list({.reverse = true, .limit = 2}) == Keys{"d", "c"});
  CHECK(list({.limit = 2}) == Keys{"a", "b"});
  CHECK(list({.limit = 1}) == Keys{"a"});
  CHECK(list({.startAfter = "a", .limit = 2}) == Keys{"b", "ba"});
  CHECK(list({.limit = 100}).size() == 6);

  SUBCASE("empty and inverted ranges are empty, not errors") {
    CHECK(list({.start = "c", .end = "b"}).empty());
    CHECK(list({.start = "b", .end = "b"}).empty());
    CHECK(list({.startAfter = "bb", .end = "c"}).empty());
    CHECK(list({.end = ""}).empty());
    CHECK(list({.prefix = "x"}).empty());
    CHECK(list({.start = "c", .prefix = "b"}).empty());
    CHECK(list({.end = "b", .prefix = "b"}).empty());
    CHECK(list({.start = "c", .end = "b", .reverse = true}).empty());
  }
  SUBCASE("start with startAfter, and a limit below 1, are invalid") {
    Status both = db->list({.start = "a", .startAfter = "b"}).status();
    CHECK(both.code() == Status::Code::kInvalidArgument);
    CHECK(both.message() == "list() cannot be called with both start and startAfter.");
    for (int64_t limit : {0, -1}) {
      Status status = db->list({.limit = limit}).status();
      CHECK(status.code() == Status::Code::kInvalidArgument);
      CHECK(status.message() == "List limit must be positive.");
    }
  }
}

TEST_CASE("a prefix ending in 0xFF bytes still finds exactly its keys") {
  TempDir dir;
  auto db = openDb(dir.file("o.sqlite"));
  const Keys keys = {"a", "a\xff", "a\xff\x01", "a\xff\xff", "b", "\xff", "\xff\xff"};
  for (const std::string& key : keys) REQUIRE_OK(db->put(key, "v"));
  auto list = [&](ListOptions options) { return keysOf(valueOf(db->list(options))); };
  CHECK(list({.prefix = "a\xff"}) == Keys{"a\xff", "a\xff\x01", "a\xff\xff"});
  CHECK(list({.prefix = "\xff"}) == Keys{"\xff", "\xff\xff"});
  CHECK(list({.prefix = "a"}) == Keys{"a", "a\xff", "a\xff\x01", "a\xff\xff"});
}

}  // namespace
}  // namespace dohost::storage
