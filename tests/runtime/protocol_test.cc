// The HTTP head reader and the WebSocket frame reader, byte by byte and at their limits.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "http_parser.h"
#include "utf8.h"
#include "ws_protocol.h"

namespace dohost {
namespace {

// A masked client frame (mask key 1 2 3 4).
std::string clientFrame(uint8_t first, std::string_view payload, bool masked = true) {
  std::string f(1, static_cast<char>(first));
  size_t n = payload.size();
  uint8_t m = masked ? 0x80 : 0;
  if (n < 126) {
    f.push_back(static_cast<char>(m | n));
  } else if (n < 65536) {
    f.push_back(static_cast<char>(m | 126));
    f.push_back(static_cast<char>(n >> 8));
    f.push_back(static_cast<char>(n));
  } else {
    f.push_back(static_cast<char>(m | 127));
    for (int i = 7; i >= 0; --i) f.push_back(static_cast<char>(uint64_t(n) >> (8 * i)));
  }
  const char key[4] = {1, 2, 3, 4};
  if (masked) f.append(key, 4);
  for (size_t i = 0; i < n; ++i) f.push_back(masked ? static_cast<char>(payload[i] ^ key[i % 4]) : payload[i]);
  return f;
}

struct Recorder : ws::FrameSink {
  std::vector<std::string> events;
  void onMessage(bool binary, std::string data) override {
    events.push_back((binary ? "binary:" : "text:") + data);
  }
  void onPing(std::string_view p) override { events.push_back("ping:" + std::string(p)); }
  void onPong(std::string_view p) override { events.push_back("pong:" + std::string(p)); }
  void onClose(int code, std::string_view reason) override {
    events.push_back("close:" + std::to_string(code) + ":" + std::string(reason));
  }
};

// Feeds `bytes` one byte at a time; returns the error code (0: none).
int feedBytewise(ws::FrameReader& r, std::string_view bytes, Recorder& sink) {
  for (char c : bytes) {
    if (!r.feed(std::string_view(&c, 1), sink)) return r.errorCode();
  }
  return r.errorCode();
}

http::Outcome readBytewise(std::string_view text, const http::Limits& limits, http::RequestHead* head) {
  http::HeadReader reader(limits);
  std::string buffered;
  http::Outcome o;
  for (char c : text) {
    buffered.push_back(c);
    o = reader.read(buffered, head);
    if (o.kind != http::Outcome::kIncomplete) return o;
  }
  return o;
}

}  // namespace

TEST_CASE("UTF-8 in pieces: valid text split anywhere, invalid bytes found where they are") {
  std::string euro = "a\xE2\x82\xAC" "b";
  for (size_t cut = 0; cut <= euro.size(); ++cut) {
    Utf8Validator v;
    CHECK(v.feed(euro.substr(0, cut)));
    CHECK(v.feed(euro.substr(cut)));
    CHECK(v.complete());
  }
  Utf8Validator partial;
  CHECK(partial.feed("\xE2\x82"));
  CHECK_FALSE(partial.complete());
  for (const char* bad : {"\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xF8", "\x80", "\xE0\x80\xAF"}) {
    CHECK_FALSE(isValidUtf8(bad));
  }
  CHECK(isValidUtf8("\xF0\x9F\x98\x80 \xED\x9F\xBF \xEF\xBF\xBF"));
}

TEST_CASE("frames read byte by byte: fragments, control frames between them, close") {
  ws::FrameReader r(1024);
  Recorder sink;
  std::string wire = clientFrame(0x01, "frag") + clientFrame(0x89, "p") + clientFrame(0x80, "ment") +
                     clientFrame(0x82, std::string(300, 'b')) + clientFrame(0x8A, "") +
                     clientFrame(0x88, std::string("\x03\xE8" "bye", 5)) + clientFrame(0x81, "after");
  CHECK(feedBytewise(r, wire, sink) == 0);
  REQUIRE(sink.events.size() == 5);
  CHECK(sink.events[0] == "ping:p");
  CHECK(sink.events[1] == "text:fragment");
  CHECK(sink.events[2] == "binary:" + std::string(300, 'b'));
  CHECK(sink.events[3] == "pong:");
  CHECK(sink.events[4] == "close:1000:bye");  // nothing after the Close counts
  CHECK(r.closeReceived());
}

TEST_CASE("each protocol violation fails with its code, also byte by byte") {
  struct Case {
    std::string wire;
    int code;
  };
  std::string big(130, 'c');
  std::vector<Case> cases = {
      {clientFrame(0x81, "x", false), 1002},                       // unmasked
      {clientFrame(0xC1, "x"), 1002},                              // RSV1
      {clientFrame(0x83, "x"), 1002},                              // reserved opcode
      {clientFrame(0x8B, "x"), 1002},                              // reserved control opcode
      {clientFrame(0x09, "x"), 1002},                              // fragmented ping
      {clientFrame(0x89, big), 1002},                              // control over 125 bytes
      {clientFrame(0x80, "x"), 1002},                              // continuation alone
      {clientFrame(0x01, "a") + clientFrame(0x81, "b"), 1002},     // new message inside one
      {clientFrame(0x88, "\x03"), 1002},                           // one-byte close
      {clientFrame(0x88, std::string("\x03\xED", 2)), 1002},       // close code 1005
      {clientFrame(0x88, std::string("\x0B\xB8\xFF", 3)), 1007},   // close reason not UTF-8
      {clientFrame(0x81, "\xFF"), 1007},                           // text not UTF-8
      {clientFrame(0x01, "ok") + clientFrame(0x00, "\xC0"), 1007}, // bad byte in a later fragment
      {clientFrame(0x01, "\xE2\x82") + clientFrame(0x80, ""), 1007},  // ends inside a character
      {clientFrame(0x81, std::string(65, 'x')), 1009},             // over the limit in one frame
      {clientFrame(0x01, std::string(40, 'x')) + clientFrame(0x80, std::string(40, 'x')), 1009},
  };
  for (const Case& c : cases) {
    CAPTURE(c.code);
    ws::FrameReader whole(64), bytewise(64);
    Recorder a, b;
    CHECK_FALSE(whole.feed(c.wire, a));
    CHECK(whole.errorCode() == c.code);
    CHECK(feedBytewise(bytewise, c.wire, b) == c.code);
    CHECK(a.events.empty());
  }
}

TEST_CASE("an oversized message fails at its header, before its payload arrives") {
  ws::FrameReader r(1000);
  Recorder sink;
  std::string header = clientFrame(0x82, std::string(70000, 'x')).substr(0, 14);
  CHECK_FALSE(r.feed(header, sink));
  CHECK(r.errorCode() == 1009);
  std::string huge("\x82\xFF\x80\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04", 14);  // 2^63: invalid
  ws::FrameReader r2(1000);
  CHECK_FALSE(r2.feed(huge, sink));
  CHECK(r2.errorCode() == 1002);
}

TEST_CASE("server frames, close payloads and the handshake key") {
  unsigned char h[ws::kMaxHeaderBytes];
  CHECK(ws::writeHeader(h, ws::kText, 125) == 2);
  CHECK(ws::writeHeader(h, ws::kText, 126) == 4);
  CHECK(ws::writeHeader(h, ws::kBinary, 70000) == 10);
  CHECK(h[0] == 0x82);
  CHECK(ws::closePayload(ws::kNoStatusCode, "x").empty());
  // A long reason is cut to 123 bytes at a character boundary.
  std::string reason;
  for (int i = 0; i < 100; ++i) reason += "\xC3\xA9";
  std::string p = ws::closePayload(1000, reason);
  CHECK(p.size() <= 125);
  CHECK(isValidUtf8(p.substr(2)));
  for (int code : {1000, 1003, 1007, 1011, 1014, 3000, 4999}) CHECK(ws::isValidCloseCode(code));
  for (int code : {0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000}) CHECK_FALSE(ws::isValidCloseCode(code));
  // RFC 6455 1.3's example.
  CHECK(ws::acceptKey("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  CHECK(ws::acceptKey("short").empty());
  CHECK(ws::acceptKey("dGhlIHNhbXBsZSBub25jZQ!=").empty());
}

TEST_CASE("a request head read byte by byte") {
  http::Limits limits;
  http::RequestHead head;
  std::string text = "\r\nPOST /o/a%20b/x?k=v%26w&z HTTP/1.1\r\nHost: h\r\nX-A:  1 \r\n"
                     "Content-Length: 5\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\nbody!";
  http::Outcome o = readBytewise(text, limits, &head);
  REQUIRE(o.kind == http::Outcome::kComplete);
  CHECK(o.headBytes == text.size() - 5);
  CHECK(head.method == "POST");
  CHECK(head.path == "/o/a b/x");
  CHECK(head.query == "k=v%26w&z");
  CHECK(head.header("x-a") == std::optional<std::string_view>("1"));
  CHECK(head.contentLength == 5);
  CHECK(head.keepAlive);
  CHECK(head.webSocketUpgrade);
  http::Outcome abs = http::parseHead("GET http://h:1/p?q HTTP/1.0\r\n\r\n", limits, &head);
  CHECK(abs.kind == http::Outcome::kComplete);
  CHECK(head.path == "/p");
  CHECK(head.query == "q");
  CHECK_FALSE(head.keepAlive);
}

TEST_CASE("request heads at and past each limit, whole and byte by byte") {
  http::Limits limits;
  limits.maxRequestLineBytes = 40;
  limits.maxHeaderBytes = 60;
  limits.maxHeaderLines = 3;
  limits.maxBodyBytes = 10;
  auto line = [](size_t n) { return "GET /" + std::string(n - 14, 'a') + " HTTP/1.1\r\n"; };
  auto header = [](size_t n) { return "X: " + std::string(n - 5, 'h') + "\r\n"; };
  struct Case {
    std::string text;
    int status;  // 0: complete
  };
  std::vector<Case> cases = {
      {line(40) + "\r\n", 0},
      {line(41) + "\r\n", 414},
      {line(20) + header(60) + "\r\n", 0},
      {line(20) + header(61) + "\r\n", 431},
      {line(20) + "A: 1\r\nB: 2\r\nC: 3\r\n\r\n", 0},
      {line(20) + "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 431},
      {line(20) + "Content-Length: 10\r\n\r\n", 0},
      {line(20) + "Content-Length: 11\r\n\r\n", 413},
      {line(20) + "Content-Length: -1\r\n\r\n", 400},
      {"GET /a%0 HTTP/1.1\r\n\r\n", 400},
      {"GET /a%00 HTTP/1.1\r\n\r\n", 400},
      {"GET /a?b=%00 HTTP/1.1\r\n\r\n", 400},
      {std::string("GET /a\0b HTTP/1.1\r\n\r\n", 21), 400},
      {"GET /a HTTP/1.1\r\nX: a\0b\r\n\r\n", 400},
      {"BREW /a HTTP/1.1\r\n\r\n", 501},
      {"GET /a HTTP/3.0\r\n\r\n", 505},
      {"GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411},
  };
  cases[13].text = std::string("GET /a HTTP/1.1\r\nX: a\0b\r\n\r\n", 27);
  for (const Case& c : cases) {
    CAPTURE(c.text);
    http::RequestHead head;
    http::HeadReader whole(limits);
    http::Outcome a = whole.read(c.text, &head);
    http::Outcome b = readBytewise(c.text, limits, &head);
    if (c.status == 0) {
      CHECK(a.kind == http::Outcome::kComplete);
      CHECK(b.kind == http::Outcome::kComplete);
    } else {
      CHECK(a.status == c.status);
      CHECK(b.status == c.status);
    }
  }
  // A request line that never ends is refused once it passes the limit, not at its end.
  http::RequestHead head;
  http::HeadReader reader(limits);
  CHECK(reader.read("GET /" + std::string(100, 'a'), &head).status == 414);
}

}  // namespace dohost
