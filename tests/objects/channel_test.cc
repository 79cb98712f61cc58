// The channels app's pure parts: UUIDs and the positions `sync`, `GET /messages?after=` and
// the internal history calls start from. The app itself is tested end to end in
// tests/integration/test_channels.py.
#include <doctest/doctest.h>

#include <set>
#include <string>

#include "objects/channel_common.h"
#include "objects/uuid.h"

namespace dohost::objects {
namespace {

using channel::After;
using nlohmann::json;

bool bySeq(const std::optional<After>& after, int64_t seq) {
  return after && after->id.empty() && after->seq == seq;
}

bool byId(const std::optional<After>& after, const std::string& id) {
  return after && after->id == id;
}

constexpr char kId[] = "0b9f3c2e-7d1a-4c55-9e3b-2f6a8d4c1e70";

}  // namespace

TEST_CASE("new UUIDs are version 4, lowercase, canonical and distinct") {
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) {
    std::string id = newUuid();
    REQUIRE(isUuid(id));
    CHECK(id[14] == '4');
    CHECK(std::string("89ab").find(id[19]) != std::string::npos);
    CHECK(lowerUuid(id) == id);
    CHECK(seen.insert(id).second);
  }
}

TEST_CASE("isUuid takes the canonical form in either case and nothing else") {
  CHECK(isUuid(kId));
  CHECK(isUuid("0B9F3C2E-7D1A-4C55-9E3B-2F6A8D4C1E70"));
  CHECK(lowerUuid("0B9F3C2E-7D1A-4C55-9E3B-2F6A8D4C1E70") == kId);
  CHECK_FALSE(isUuid(""));
  CHECK_FALSE(isUuid("17"));
  CHECK_FALSE(isUuid("0b9f3c2e7d1a4c559e3b2f6a8d4c1e70"));        // no dashes
  CHECK_FALSE(isUuid("{0b9f3c2e-7d1a-4c55-9e3b-2f6a8d4c1e70}"));  // braces
  CHECK_FALSE(isUuid("0b9f3c2e-7d1a-4c55-9e3b-2f6a8d4c1e7g"));
  CHECK_FALSE(isUuid("0b9f3c2e-7d1a-4c55-9e3b2-f6a8d4c1e70"));
}

TEST_CASE("a sync starts after an id, a seq, or at the start") {
  CHECK(bySeq(channel::syncAfter(json{{"type", "sync"}}), 0));
  CHECK(bySeq(channel::syncAfter(json{{"afterMessageId", nullptr}}), 0));
  CHECK(byId(channel::syncAfter(json{{"afterMessageId", kId}}), kId));
  CHECK(byId(channel::syncAfter(json{{"afterMessageId", "0B9F3C2E-7D1A-4C55-9E3B-2F6A8D4C1E70"}}),
             kId));
  CHECK(bySeq(channel::syncAfter(json{{"afterSeq", 17}}), 17));
  CHECK(bySeq(channel::syncAfter(json{{"afterSeq", "17"}}), 17));
  CHECK(bySeq(channel::syncAfter(json{{"afterSeq", 0}, {"afterMessageId", nullptr}}), 0));
  // What clients of the previous version kept: its integer ids are today's seqs.
  CHECK(bySeq(channel::syncAfter(json{{"afterMessageId", 17}}), 17));
  CHECK(bySeq(channel::syncAfter(json{{"afterMessageId", "17"}}), 17));
  CHECK(bySeq(channel::syncAfter(json{{"afterMessageId", 0}}), 0));
  // Malformed: the frame is refused.
  for (const json& bad : {json{{"afterMessageId", -1}}, json{{"afterMessageId", "abc"}},
                          json{{"afterMessageId", "-1"}}, json{{"afterMessageId", "+1"}},
                          json{{"afterMessageId", ""}}, json{{"afterMessageId", 1.5}},
                          json{{"afterMessageId", json::array()}},
                          json{{"afterMessageId", true}},
                          json{{"afterMessageId", "99999999999999999999"}},
                          json{{"afterMessageId", 18446744073709551615ULL}},
                          json{{"afterSeq", -3}}, json{{"afterSeq", kId}},
                          json{{"afterSeq", "x"}},
                          json{{"afterMessageId", kId}, {"afterSeq", 3}}}) {
    CAPTURE(bad.dump());
    CHECK_FALSE(channel::syncAfter(bad));
  }
}

TEST_CASE("after= of GET /messages is an id or a seq") {
  CHECK(bySeq(channel::afterParam(""), 0));
  CHECK(bySeq(channel::afterParam("0"), 0));
  CHECK(bySeq(channel::afterParam("42"), 42));
  CHECK(byId(channel::afterParam(kId), kId));
  for (const char* bad : {"x", "-1", "1.5", "1e3", " 1", "4 2", "0x10", "99999999999999999999",
                          "0b9f3c2e-7d1a-4c55-9e3b"}) {
    CAPTURE(bad);
    CHECK_FALSE(channel::afterParam(bad));
  }
}

}  // namespace dohost::objects
