// The inter-host link's frames: every kind both ways, every limit at and one past its bound,
// every truncation, and the malformed inputs decode must refuse.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "cluster/link_protocol.h"
#include "runtime/link_samples.h"

namespace dohost::cluster {
namespace {

using testing::kSampleObjectId;
using testing::sampleFrames;

std::string errorOf(std::string_view bytes, const LinkLimits& limits = {}) {
  Result<LinkFrame> r = decode(bytes, limits);
  return r.isOk() ? std::string() : r.status().message();
}

LinkFrame roundTrip(const LinkFrame& frame, const LinkLimits& limits = {}) {
  Result<LinkFrame> r = decode(encode(frame), limits);
  REQUIRE_MESSAGE(r.isOk(), r.status().message());
  return r.value();
}

TEST_CASE("every link frame kind round-trips through encode and decode") {
  std::set<LinkKind> kinds;
  for (const LinkFrame& frame : sampleFrames()) {
    std::string kind = kindName(kindOf(frame));
    CAPTURE(kind);
    kinds.insert(kindOf(frame));
    std::string bytes = encode(frame);
    CHECK(static_cast<uint8_t>(bytes[0]) == static_cast<uint8_t>(kindOf(frame)));
    LinkFrame back = roundTrip(frame);
    CHECK(back == frame);
    CHECK(encode(back) == bytes);
  }
  CHECK(kinds.size() == kLinkKindCount);
}

TEST_CASE("a frame cut at any byte offset fails cleanly") {
  for (const LinkFrame& frame : sampleFrames()) {
    std::string bytes = encode(frame);
    std::string kind = kindName(kindOf(frame));
    CAPTURE(kind);
    for (size_t n = 0; n < bytes.size(); ++n) {
      CAPTURE(n);
      std::string error = errorOf(std::string_view(bytes).substr(0, n));
      CHECK(!error.empty());
      if (n > 0) CHECK(error.find(kindName(kindOf(frame))) != std::string::npos);
    }
  }
}

TEST_CASE("an unknown frame kind is an error that names the kind byte") {
  CHECK(errorOf(std::string(1, '\0')) == "link frame of unknown kind 0");
  CHECK(errorOf(std::string(1, static_cast<char>(kLinkKindCount + 1))) == "link frame of unknown kind 17");
  CHECK(errorOf(std::string(1, '\xff')) == "link frame of unknown kind 255");
  CHECK(errorOf("") == "link frame is empty");
}

TEST_CASE("a Hello of another protocol version is refused") {
  std::string bytes = encode(Hello{"host-a", 1, kLinkProtocolVersion, "t"});
  bytes[1] = 2;
  CHECK(errorOf(bytes) == "link frame Hello: unsupported protocol version 2 (this host speaks 1)");
  bytes[1] = 0;
  CHECK(errorOf(bytes).find("unsupported protocol version 0") != std::string::npos);
}

TEST_CASE("bytes after a frame are an error") {
  for (const LinkFrame& frame : sampleFrames()) {
    std::string kind = kindName(kindOf(frame));
    CAPTURE(kind);
    std::string bytes = encode(frame) + "x";
    CHECK(errorOf(bytes).find("1 bytes after the frame's end") != std::string::npos);
  }
}

TEST_CASE("a varint not in its shortest form, or over 64 bits, is an error") {
  // Ping's nonce is fixed; NotOwner starts with the stream varint.
  CHECK(errorOf(std::string("\x06\x80\x00\x00", 4)).find("stream is not in its shortest form") !=
        std::string::npos);
  std::string big("\x06", 1);
  big.append(9, '\xff');
  big.push_back('\x02');  // a 10th byte above 1: bit 64 and up
  big.push_back('\x00');
  CHECK(errorOf(big).find("stream is over 64 bits") != std::string::npos);
  std::string max("\x06", 1);
  max.append(9, '\xff');
  max.push_back('\x01');
  max.push_back('\x00');
  Result<LinkFrame> r = decode(max);
  REQUIRE(r.isOk());
  CHECK(std::get<NotOwner>(r.value()).stream == UINT64_MAX);
}

TEST_CASE("a flag other than 0 or 1 is an error") {
  std::string bytes = encode(SocketMessage{1, false, "x"});
  bytes[9] = 2;  // kind, 8 bytes of socket id, then binary
  CHECK(errorOf(bytes).find("binary is 2, not 0 or 1") != std::string::npos);
}

TEST_CASE("values out of range are errors that say which") {
  CHECK(errorOf(encode(HttpResponse{1, 99, {}, "", 0})).find("status 99 is not 100-599") != std::string::npos);
  CHECK(errorOf(encode(HttpResponse{1, 600, {}, "", 0})).find("status 600") != std::string::npos);
  CHECK(decode(encode(HttpResponse{1, 599, {}, "", 0})).isOk());
  CHECK(errorOf(encode(HttpResponse{1, 101, {}, "", 0})).find("status 101") != std::string::npos);
  CHECK(errorOf(encode(HttpResponse{1, 200, {}, "", 5})).find("status 101") != std::string::npos);

  CHECK(errorOf(encode(Close{1, 1006, ""})).find("close code 1006") != std::string::npos);
  CHECK(errorOf(encode(Close{1, 5000, ""})).find("close code 5000") != std::string::npos);
  CHECK(decode(encode(Close{1, 4999, ""})).isOk());
  CHECK(decode(encode(SocketClosed{1, 1006, "", false})).isOk());
  CHECK(decode(encode(SocketClosed{1, 1005, "", true})).isOk());
  CHECK(errorOf(encode(SocketClosed{1, 1015, "", false})).find("close code 1015") != std::string::npos);
  CHECK(errorOf(encode(Close{1, 1000, "\xff"})).find("reason is not valid UTF-8") != std::string::npos);

  CHECK(errorOf(encode(SocketMessage{0, false, "x"})).find("socket is 0") != std::string::npos);
  CHECK(errorOf(encode(Send{{1, 0}, std::make_shared<Frame>("x", false)})).find("socket is 0") !=
        std::string::npos);
  CHECK(errorOf(encode(Send{{}, std::make_shared<Frame>("x", false)})).find("sockets is empty") !=
        std::string::npos);
  CHECK(errorOf(encode(SocketMessage{1, false, "\xc3"})).find("text payload is not valid UTF-8") !=
        std::string::npos);
  CHECK(decode(encode(SocketMessage{1, true, "\xc3"})).isOk());
  CHECK(errorOf(encode(Send{{1}, std::make_shared<Frame>("\xc3", false)})).find("not valid UTF-8") !=
        std::string::npos);
  CHECK(errorOf(encode(SocketMeta{1, {"a", "a"}, std::nullopt, std::nullopt})).find("tag a is listed twice") !=
        std::string::npos);
  CHECK(errorOf(encode(Hello{"", 1, kLinkProtocolVersion, "t"})).find("hostId is empty") != std::string::npos);
}

TEST_CASE("an HTTP request names a well-formed object and has no header injection") {
  HttpRequest request{1, "Room", kSampleObjectId, "GET", "/", "", {}, "", "", false, 0};
  CHECK(decode(encode(request)).isOk());
  HttpRequest upper = request;
  upper.objectId = std::string(64, 'A');
  CHECK(errorOf(encode(upper)).find("objectId is not 64 lowercase hex characters") != std::string::npos);
  HttpRequest shortId = request;
  shortId.objectId.pop_back();
  CHECK(errorOf(encode(shortId)).find("objectId") != std::string::npos);
  HttpRequest noClass = request;
  noClass.className.clear();
  CHECK(errorOf(encode(noClass)).find("className is empty") != std::string::npos);
  for (std::string bad : {std::string("a\rb"), std::string("a\nb"), std::string("a\0b", 3)}) {
    HttpRequest r = request;
    r.headers = {{"x-test", bad}};
    CHECK(errorOf(encode(r)).find("header x-test holds CR, LF or NUL") != std::string::npos);
    r.headers = {{bad, "v"}};
    CHECK(errorOf(encode(r)).find("holds CR, LF or NUL") != std::string::npos);
  }
  HttpRequest emptyName = request;
  emptyName.headers = {{"", "v"}};
  CHECK(errorOf(encode(emptyName)).find("a header name is empty") != std::string::npos);
  HttpRequest upgradeNoSocket = request;
  upgradeNoSocket.isUpgrade = true;
  CHECK(errorOf(encode(upgradeNoSocket)).find("an upgrade without a socket id") != std::string::npos);
  HttpRequest socketNoUpgrade = request;
  socketNoUpgrade.socket = 5;
  CHECK(errorOf(encode(socketNoUpgrade)).find("no upgrade") != std::string::npos);
}

// One bound: a frame whose measured part is `n` long (bytes or entries) under `limits`.
struct LimitCase {
  const char* limit;
  size_t LinkLimits::*member;
  size_t bound;  // set for the test
  std::function<LinkFrame(size_t)> make;
};

std::vector<std::string> tagsOf(size_t n) {
  std::vector<std::string> tags;
  for (size_t i = 0; i < n; ++i) tags.push_back("t" + std::to_string(i));
  return tags;
}

Headers headersOf(size_t n) {
  Headers headers;
  for (size_t i = 0; i < n; ++i) headers.emplace_back("h" + std::to_string(i), "v");
  return headers;
}

HttpRequest requestWith(std::function<void(HttpRequest&)> edit) {
  HttpRequest r{1, "Room", kSampleObjectId, "GET", "/", "", {}, "", "", false, 0};
  edit(r);
  return r;
}

std::vector<LimitCase> limitCases() {
  const SocketId s = makeSocketId(1, 1);
  auto text = [](size_t n) { return std::string(n, 'x'); };
  return {
      {"maxBodyBytes", &LinkLimits::maxBodyBytes, 100,
       [=](size_t n) { return LinkFrame(requestWith([&](HttpRequest& r) { r.body = text(n); })); }},
      {"maxBodyBytes", &LinkLimits::maxBodyBytes, 1 << 20,
       [=](size_t n) { return LinkFrame(HttpResponse{1, 200, {}, text(n), 0}); }},
      {"maxPayloadBytes", &LinkLimits::maxPayloadBytes, 1 << 20,
       [=](size_t n) { return LinkFrame(SocketMessage{s, false, text(n)}); }},
      {"maxPayloadBytes", &LinkLimits::maxPayloadBytes, 64,
       [=](size_t n) { return LinkFrame(Send{{s}, std::make_shared<Frame>(text(n), true)}); }},
      {"maxHeaders", &LinkLimits::maxHeaders, 100,
       [=](size_t n) { return LinkFrame(requestWith([&](HttpRequest& r) { r.headers = headersOf(n); })); }},
      {"maxHeaders", &LinkLimits::maxHeaders, 5,
       [=](size_t n) { return LinkFrame(HttpResponse{1, 200, headersOf(n), "", 0}); }},
      {"maxHeaderBytes", &LinkLimits::maxHeaderBytes, 32 * 1024,
       [=](size_t n) {
         return LinkFrame(requestWith([&](HttpRequest& r) { r.headers = {{"x", text(n - 1)}}; }));
       }},
      {"maxHeaderBytes", &LinkLimits::maxHeaderBytes, 40,
       [=](size_t n) {
         return LinkFrame(HttpResponse{1, 200, {{"a", text(20)}, {"b", text(n - 22)}}, "", 0});
       }},
      {"maxFieldBytes", &LinkLimits::maxFieldBytes, 8 * 1024,
       [=](size_t n) { return LinkFrame(requestWith([&](HttpRequest& r) { r.path = text(n); })); }},
      {"maxFieldBytes", &LinkLimits::maxFieldBytes, 30,
       [=](size_t n) { return LinkFrame(requestWith([&](HttpRequest& r) { r.query = text(n); })); }},
      {"maxFieldBytes", &LinkLimits::maxFieldBytes, 30,
       [=](size_t n) { return LinkFrame(Hello{text(n), 1, kLinkProtocolVersion, "t"}); }},
      {"maxFieldBytes", &LinkLimits::maxFieldBytes, 30,
       [=](size_t n) { return LinkFrame(Hello{"h", 1, kLinkProtocolVersion, text(n)}); }},
      {"maxFieldBytes", &LinkLimits::maxFieldBytes, 30,
       [=](size_t n) { return LinkFrame(NotOwner{1, text(n)}); }},
      {"maxFieldBytes", &LinkLimits::maxFieldBytes, 30,
       [=](size_t n) { return LinkFrame(Refused{text(n)}); }},
      {"maxFieldBytes", &LinkLimits::maxFieldBytes, 30,
       [=](size_t n) { return LinkFrame(ReattachResult{s, false, text(n)}); }},
      {"maxFieldBytes", &LinkLimits::maxFieldBytes, 30,
       [=](size_t n) { return LinkFrame(Leaving{text(n)}); }},
      {"maxSocketsPerSend", &LinkLimits::maxSocketsPerSend, 32768,
       [=](size_t n) {
         std::vector<SocketId> ids;
         for (size_t i = 0; i < n; ++i) ids.push_back(makeSocketId(2, i + 1));
         return LinkFrame(Send{ids, std::make_shared<Frame>("m", false)});
       }},
      {"maxTags", &LinkLimits::maxTags, 10,
       [=](size_t n) { return LinkFrame(SocketMeta{s, tagsOf(n), std::nullopt, std::nullopt}); }},
      {"maxTags", &LinkLimits::maxTags, 10,
       [=](size_t n) {
         return LinkFrame(Reattach{s, "Room", kSampleObjectId, tagsOf(n), std::nullopt, std::nullopt,
                                   std::nullopt});
       }},
      {"maxTagBytes", &LinkLimits::maxTagBytes, 256,
       [=](size_t n) { return LinkFrame(SocketMeta{s, {"a", text(n)}, std::nullopt, std::nullopt}); }},
      {"maxAttachmentBytes", &LinkLimits::maxAttachmentBytes, 16 * 1024,
       [=](size_t n) { return LinkFrame(SocketMeta{s, {}, text(n), std::nullopt}); }},
      {"maxAttachmentBytes", &LinkLimits::maxAttachmentBytes, 16 * 1024,
       [=](size_t n) {
         return LinkFrame(Reattach{s, "Room", kSampleObjectId, {}, text(n), std::nullopt, std::nullopt});
       }},
      {"maxAutoResponseBytes", &LinkLimits::maxAutoResponseBytes, 2048,
       [=](size_t n) { return LinkFrame(SocketMeta{s, {}, std::nullopt, AutoResponse{text(n), "r"}}); }},
      {"maxAutoResponseBytes", &LinkLimits::maxAutoResponseBytes, 2048,
       [=](size_t n) { return LinkFrame(SocketMeta{s, {}, std::nullopt, AutoResponse{"q", text(n)}}); }},
      {"maxCloseReasonBytes", &LinkLimits::maxCloseReasonBytes, 123,
       [=](size_t n) { return LinkFrame(Close{s, 1000, text(n)}); }},
      {"maxCloseReasonBytes", &LinkLimits::maxCloseReasonBytes, 123,
       [=](size_t n) { return LinkFrame(SocketClosed{s, 1001, text(n), true}); }},
  };
}

TEST_CASE("each limit lets its bound through and refuses one past it, naming the limit") {
  for (const LimitCase& c : limitCases()) {
    std::string limit = c.limit;
    CAPTURE(limit);
    CAPTURE(c.bound);
    LinkLimits limits;
    limits.*c.member = c.bound;
    LinkFrame at = c.make(c.bound);
    std::string kind = kindName(kindOf(at));
    CAPTURE(kind);
    Result<LinkFrame> ok = decode(encode(at), limits);
    CHECK_MESSAGE(ok.isOk(), ok.status().message());
    std::string error = errorOf(encode(c.make(c.bound + 1)), limits);
    CHECK(error.find(c.limit) != std::string::npos);
  }
}

TEST_CASE("the defaults are the host's and Cloudflare's limits") {
  LinkLimits limits;
  CHECK(limits.maxTags == 10);
  CHECK(limits.maxTagBytes == 256);
  CHECK(limits.maxAttachmentBytes == 16384);
  CHECK(limits.maxAutoResponseBytes == 2048);
  CHECK(limits.maxCloseReasonBytes == 123);
  CHECK(limits.maxSocketsPerSend == 32768);
  CHECK(limits.maxPayloadBytes == 1 << 20);
  CHECK(limits.maxBodyBytes == 1 << 20);
}

TEST_CASE("a frame over maxFrameBytes is refused before it is read") {
  std::string bytes = encode(Refused{std::string(100, 'x')});
  LinkLimits limits;
  limits.maxFrameBytes = bytes.size();
  CHECK(decode(bytes, limits).isOk());
  limits.maxFrameBytes = bytes.size() - 1;
  CHECK(errorOf(bytes, limits) == "link frame of " + std::to_string(bytes.size()) +
                                      " bytes is over maxFrameBytes (" +
                                      std::to_string(bytes.size() - 1) + ")");
}

TEST_CASE("a length or count larger than the bytes left is a truncation, not an allocation") {
  // A Send claiming 32768 sockets with 8 bytes behind it.
  std::string bytes("\x08\x80\x80\x02", 4);
  bytes.append(8, '\x01');
  CHECK(errorOf(bytes).find("truncated in sockets") != std::string::npos);
  // A body claiming 1 MiB with nothing behind it.
  std::string request = encode(HttpRequest{1, "Room", kSampleObjectId, "GET", "/", "", {}, "", "", false, 0});
  size_t bodyAt = request.size() - 1 - 8 - 1 - 1;  // body length, clientIp length, flag, socket
  CHECK(request[bodyAt] == 0);
  std::string claimed = request.substr(0, bodyAt) + std::string("\x80\x80\x40", 3);
  CHECK(errorOf(claimed).find("truncated in body") != std::string::npos);
}

TEST_CASE("a Send to 10,000 sockets carries its payload once") {
  std::string payload(64 * 1024, 'p');
  Send send;
  for (uint64_t i = 1; i <= 10000; ++i) send.sockets.push_back(makeSocketId(3, i));
  send.frame = std::make_shared<Frame>(payload, false);
  std::string bytes = encode(send);
  CHECK(bytes.size() >= payload.size() + 8 * 10000);
  CHECK(bytes.size() <= payload.size() + 8 * 10000 + 16);

  Result<LinkFrame> back = decode(bytes);
  REQUIRE(back.isOk());
  const Send& decoded = std::get<Send>(back.value());
  CHECK(decoded.sockets == send.sockets);
  REQUIRE(decoded.frame != nullptr);
  CHECK(!decoded.frame->binary);
  CHECK(decoded.frame->payload() == payload);
  // One Frame, with the headroom the server writes the WebSocket header into, for all of them.
  CHECK(decoded.frame->bytes.size() == kFrameHeadroom + payload.size());
  CHECK(decoded.frame.use_count() == 1);
}

TEST_CASE("a Send without a frame encodes an empty text message") {
  Send send{{1}, nullptr};
  LinkFrame back = roundTrip(send);
  CHECK(std::get<Send>(back).payload().empty());
  CHECK(!std::get<Send>(back).binary());
  CHECK(std::get<Send>(back) == send);
}

TEST_CASE("socket ids carry the edge's tag in their high 24 bits and a counter below") {
  SocketIdAllocator ids((uint64_t{5} << 24) | 0xabcdef);
  CHECK(ids.tag() == 0xabcdef);
  SocketId first = *ids.next();
  SocketId second = *ids.next();
  CHECK(edgeTagOf(first) == 0xabcdef);
  CHECK(socketSerialOf(first) == 1);
  CHECK(socketSerialOf(second) == 2);
  CHECK(first == (uint64_t{0xabcdef} << 40 | 1));
  CHECK(edgeTagOf(makeSocketId(kMaxEdgeTag, kMaxSocketSerial)) == kMaxEdgeTag);
  CHECK(socketSerialOf(makeSocketId(kMaxEdgeTag, kMaxSocketSerial)) == kMaxSocketSerial);
  CHECK(makeSocketId(0, 1) != 0);
}

// Writes the fuzz target's seeds when DOHOST_WRITE_LINK_SEEDS names a folder (tests/fuzz/link);
// otherwise does nothing. Each sample is written twice: after the limits byte 0 (defaults)
// and after 1 (the target's small limits).
TEST_CASE("the sample frames can be written as the link fuzz target's seeds") {
  const char* folder = std::getenv("DOHOST_WRITE_LINK_SEEDS");
  if (folder == nullptr) return;
  std::filesystem::create_directories(folder);
  std::vector<LinkFrame> frames = sampleFrames();
  for (size_t i = 0; i < frames.size(); ++i) {
    for (char selector : {'\0', '\1'}) {
      std::string name = std::string(folder) + "/" + std::to_string(i / 10) + std::to_string(i % 10) +
                         "-" + kindName(kindOf(frames[i])) + (selector ? "-small" : "") + ".bin";
      std::ofstream out(name, std::ios::binary);
      std::string bytes = selector + encode(frames[i]);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      CHECK(out.good());
    }
  }
}

}  // namespace
}  // namespace dohost::cluster
