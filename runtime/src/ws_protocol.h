// The WebSocket protocol (RFC 6455) as the server speaks it: FrameReader reads client frames
// from pieces of any size and says what they mean or why the connection must fail; the free
// functions build server frames. No I/O here: the server feeds bytes and writes what comes out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "utf8.h"

namespace dohost::ws {

enum Opcode : uint8_t {
  kContinuation = 0x0,
  kText = 0x1,
  kBinary = 0x2,
  kClose = 0x8,
  kPing = 0x9,
  kPong = 0xA,
};

inline constexpr size_t kMaxControlPayload = 125;
inline constexpr size_t kMaxHeaderBytes = 10;  // server frames: 2 + 8 length bytes, no mask
inline constexpr int kNoStatusCode = 1005;     // a Close without a payload

// What FrameReader found. Called while feed() runs; the reader owns nothing the sink keeps.
class FrameSink {
 public:
  virtual ~FrameSink() = default;
  virtual void onMessage(bool binary, std::string data) = 0;
  virtual void onPing(std::string_view payload) = 0;
  virtual void onPong(std::string_view payload) = 0;
  // A valid Close; `code` is kNoStatusCode when it carried none. Nothing is read after it.
  virtual void onClose(int code, std::string_view reason) = 0;
};

// Reads the frames a client sends. Enforces what RFC 6455 section 5 asks of a server (masked
// frames, no reserved bits or opcodes, control frames short and whole, fragments in order,
// UTF-8 text and close reasons, valid close codes) and the message size limit, each as soon as
// the offending byte arrives: an oversized message fails at its frame header, before its
// payload, and bad UTF-8 fails in the fragment that holds it.
class FrameReader {
 public:
  explicit FrameReader(size_t maxMessageBytes) : maxMessageBytes_(maxMessageBytes) {}

  // Consumes `data`. False when the connection must fail: errorCode() (1002, 1007 or 1009)
  // and errorReason() say how. After an error or a Close the rest is ignored.
  bool feed(std::string_view data, FrameSink& sink);

  int errorCode() const { return errorCode_; }
  const std::string& errorReason() const { return errorReason_; }
  bool failed() const { return errorCode_ != 0; }
  bool closeReceived() const { return closeReceived_; }

 private:
  bool fail(int code, std::string reason);
  bool headerComplete();
  bool frameDone(FrameSink& sink);
  void unmaskInto(std::string& out, std::string_view in);

  size_t maxMessageBytes_;
  // The frame being read.
  unsigned char header_[14] = {};
  size_t headerLen_ = 0;
  size_t headerNeed_ = 2;
  bool inPayload_ = false;
  bool fin_ = false;
  uint8_t opcode_ = 0;
  uint64_t payloadLeft_ = 0;
  unsigned char mask_[4] = {};
  size_t maskIndex_ = 0;
  std::string control_;  // a control frame's payload (at most 125 bytes)
  // The message being assembled from data frames.
  bool inMessage_ = false;
  bool messageBinary_ = false;
  std::string message_;
  Utf8Validator utf8_;
  // Outcome.
  bool closeReceived_ = false;
  int errorCode_ = 0;
  std::string errorReason_;
};

// Writes a server frame header (FIN set, unmasked) for `size` payload bytes into `out`, which
// has room for kMaxHeaderBytes; returns its length.
size_t writeHeader(unsigned char* out, Opcode opcode, size_t size);

// A whole control frame (Ping, Pong, Close); `payload` is at most 125 bytes.
std::string controlFrame(Opcode opcode, std::string_view payload);

// A Close payload: the code, then `reason` cut at a character boundary to fit 125 bytes.
// kNoStatusCode gives an empty payload.
std::string closePayload(int code, std::string_view reason);

// Codes an endpoint may put in a Close frame (RFC 6455 7.4 and the IANA registry).
bool isValidCloseCode(int code);

// Sec-WebSocket-Accept for a Sec-WebSocket-Key; empty when the key is not the base64 of 16
// bytes (RFC 6455 4.2.1).
std::string acceptKey(std::string_view secWebSocketKey);

}  // namespace dohost::ws
