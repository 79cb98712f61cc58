// Fuzz target wire_ws: the bytes a client sends on an open WebSocket. The input's first byte
// chooses the piece size and the message size limit; FrameReader reads the rest in pieces and
// must find exactly what one read of the whole buffer finds: the same messages, pings, pongs
// and close, and the same failure (1002, 1007 or 1009) with the same reason. Whatever it
// delivers must hold: text is UTF-8, a message is within the limit, a control payload is at
// most 125 bytes, a close code is one a peer may send.
#include <string>
#include <string_view>
#include <vector>

#include "harness.h"
#include "ws_protocol.h"

namespace {

using namespace dohost;

struct Recorder final : ws::FrameSink {
  explicit Recorder(size_t limit) : limit(limit) {}
  size_t limit;
  std::vector<std::string> events;
  void onMessage(bool binary, std::string data) override {
    if (data.size() > limit) fuzz::fail("a message over the limit was delivered");
    if (!binary && !isValidUtf8(data)) fuzz::fail("a text message that is not UTF-8");
    events.push_back((binary ? "B" : "T") + data);
  }
  void onPing(std::string_view p) override {
    if (p.size() > ws::kMaxControlPayload) fuzz::fail("a ping over 125 bytes");
    events.push_back("i" + std::string(p));
  }
  void onPong(std::string_view p) override {
    if (p.size() > ws::kMaxControlPayload) fuzz::fail("a pong over 125 bytes");
    events.push_back("o" + std::string(p));
  }
  void onClose(int code, std::string_view reason) override {
    if (code != ws::kNoStatusCode && !ws::isValidCloseCode(code)) fuzz::fail("a close code no peer may send");
    if (!isValidUtf8(reason)) fuzz::fail("a close reason that is not UTF-8");
    events.push_back("c" + std::to_string(code) + ":" + std::string(reason));
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t step = 1 + data[0] % 23;
  const size_t limit = (data[0] & 0x80) ? 16 + data[0] % 100 : 1 << 20;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);

  Recorder whole(limit);
  ws::FrameReader once(limit);
  bool okWhole = once.feed(input, whole);

  Recorder pieces(limit);
  ws::FrameReader reader(limit);
  bool ok = true;
  for (size_t at = 0; at < input.size() && ok; at += step) ok = reader.feed(input.substr(at, step), pieces);

  if (ok != okWhole) fuzz::fail("pieces and the whole buffer disagree on failing");
  if (!ok) {
    int code = reader.errorCode();
    if (code != 1002 && code != 1007 && code != 1009) fuzz::fail("failed with " + std::to_string(code));
    if (code != once.errorCode() || reader.errorReason() != once.errorReason()) {
      fuzz::fail("pieces failed with " + std::to_string(code) + " (" + reader.errorReason() +
                 "), the whole buffer with " + std::to_string(once.errorCode()));
    }
  }
  if (pieces.events != whole.events) fuzz::fail("pieces and the whole buffer read different frames");
  if (reader.closeReceived() != once.closeReceived()) fuzz::fail("a close seen one way only");

  // The frames the server writes back: a close payload always fits a control frame.
  for (const std::string& e : whole.events) {
    if (e[0] != 'c') continue;
    std::string payload = ws::closePayload(1000, e);
    if (payload.size() > ws::kMaxControlPayload) fuzz::fail("a close payload over 125 bytes");
  }
  return 0;
}
