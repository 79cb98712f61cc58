// The inter-host link: the frames hosts of a cluster exchange over the one binary WebSocket
// they keep per pair of hosts (each WebSocket message is one frame), and their encoding.
// An edge (the host that holds a client's connection) relays HTTP requests and WebSockets to
// the owner of the object over it; the owner answers and sends to the edge's sockets.
//
// Encoding: a frame is one kind byte, then its fields in declaration order. Unsigned integers
// are LEB128 varints (at most 10 bytes, shortest form only); socket ids and nonces are fixed
// 8-byte little-endian; strings and byte strings are a varint length then the bytes; a bool
// or an "is present" flag is one byte, 0 or 1; a list is a varint count then its elements.
// Only Hello carries the protocol version, right after its kind byte. Every valid frame has
// exactly one encoding, so encode(decode(bytes)) == bytes whenever decode succeeds.
//
// No I/O here. docs/architecture.md ("Inter-host link") has the table of frames.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "dohost/errors.h"
#include "dohost/status.h"
#include "internal.h"

namespace dohost::cluster {

inline constexpr uint8_t kLinkProtocolVersion = 1;

// A relayed WebSocket's id, unique across the cluster. The edge that holds the client's
// connection makes it: the high 24 bits are the edge's tag (the low 24 bits of the edge's
// incarnation, which membership hands out so that no two live hosts share a tag), the low
// 40 bits a counter the edge starts at 1 for each incarnation. An owner finds the edge of a
// socket from the tag (each link's Hello names the peer's incarnation). 0 is "no socket".
using SocketId = uint64_t;
inline constexpr int kSocketSerialBits = 40;
inline constexpr uint64_t kMaxSocketSerial = (uint64_t{1} << kSocketSerialBits) - 1;
inline constexpr uint32_t kMaxEdgeTag = (uint32_t{1} << 24) - 1;

constexpr uint32_t edgeTagFor(uint64_t incarnation) {
  return static_cast<uint32_t>(incarnation & kMaxEdgeTag);
}
constexpr SocketId makeSocketId(uint32_t edgeTag, uint64_t serial) {
  return (uint64_t{edgeTag & kMaxEdgeTag} << kSocketSerialBits) | (serial & kMaxSocketSerial);
}
constexpr uint32_t edgeTagOf(SocketId id) { return static_cast<uint32_t>(id >> kSocketSerialBits); }
constexpr uint64_t socketSerialOf(SocketId id) { return id & kMaxSocketSerial; }

// Hands out an edge's socket ids: 1, 2, 3... under its tag. After 2^40 - 1 ids, nullopt (the
// host must re-register with a new incarnation).
// Thread: loop thread only.
class SocketIdAllocator {
 public:
  explicit SocketIdAllocator(uint64_t incarnation) : tag_(edgeTagFor(incarnation)) {}
  std::optional<SocketId> next() {
    if (next_ > kMaxSocketSerial) return std::nullopt;
    return makeSocketId(tag_, next_++);
  }
  uint32_t tag() const { return tag_; }

 private:
  uint32_t tag_;
  uint64_t next_ = 1;
};

// Bounds decode() enforces; each error names the field it breaks. The defaults follow the
// host's (HostOptions) and Cloudflare's hibernation limits; a cluster sets them from its
// HostOptions, the same on every host.
struct LinkLimits {
  size_t maxFrameBytes = 4 << 20;         // a whole encoded frame
  size_t maxBodyBytes = 1 << 20;          // an HTTP request or response body
  size_t maxPayloadBytes = 1 << 20;       // a WebSocket message (SocketMessage, Send)
  size_t maxHeaders = 100;                // header lines of a request or response
  size_t maxHeaderBytes = 32 * 1024;      // names plus values of all of them
  size_t maxFieldBytes = 8 * 1024;        // any other string: path, query, host id, class...
  size_t maxSocketsPerSend = 32768;       // socket ids in one Send (sockets per object)
  size_t maxTags = kMaxTagsPerSocket;     // 10
  size_t maxTagBytes = kMaxTagLength;     // 256
  size_t maxAttachmentBytes = 16 * 1024;  // HostOptions::maxAttachmentBytes
  size_t maxAutoResponseBytes = kMaxAutoResponseBytes;  // 2048, request and response each
  size_t maxCloseReasonBytes = kMaxCloseReasonBytes;    // 123
};

using Headers = std::vector<std::pair<std::string, std::string>>;

// An object's auto-response pair: a client text message equal to `request` is answered with
// `response` by the host holding the socket, without waking (or reaching) the object.
struct AutoResponse {
  std::string request;
  std::string response;
  bool operator==(const AutoResponse&) const = default;
};

// The dialing host's first frame. The answer is HelloOk or Refused, then the link closes.
struct Hello {
  std::string hostId;
  uint64_t incarnation = 0;
  uint8_t protocolVersion = kLinkProtocolVersion;
  std::string clusterToken;  // shared secret of the cluster; compared in constant time
  bool operator==(const Hello&) const = default;
};

// The accepting host's answer to a good Hello: its own identity.
struct HelloOk {
  std::string hostId;
  uint64_t incarnation = 0;
  bool operator==(const HelloOk&) const = default;
};

// The accepting host refuses the link (bad token, unknown host...); why, for the log.
struct Refused {
  std::string reason;
  bool operator==(const Refused&) const = default;
};

// Edge to owner: one HTTP request or WebSocket upgrade for an object. `stream` is chosen by
// the sender and unique among its requests in flight on this link (each side has its own
// stream numbers: an answer always refers to the receiver's own request). For an upgrade,
// `socket` is the id the edge gives the socket if the object accepts it (0 otherwise).
struct HttpRequest {
  uint64_t stream = 0;
  std::string className;
  std::string objectId;  // 64 lowercase hex characters
  std::string method;
  std::string path;   // percent-decoded, as Request::path
  std::string query;  // as sent, without '?'
  Headers headers;    // names lowercase
  std::string body;
  std::string clientIp;
  bool isUpgrade = false;
  SocketId socket = 0;
  bool operator==(const HttpRequest&) const = default;
};

// Owner to edge: the answer to `stream`. An accepted upgrade has status 101 and
// acceptedSocket set to the request's socket; any other answer has acceptedSocket 0.
struct HttpResponse {
  uint64_t stream = 0;
  int status = 200;
  Headers headers;
  std::string body;
  SocketId acceptedSocket = 0;
  bool operator==(const HttpResponse&) const = default;
};

// Owner to edge, instead of an HttpResponse: this host does not own the object (any more).
// The edge drops its cache entry and retries once; ownerHint is the owner if known, or empty.
struct NotOwner {
  uint64_t stream = 0;
  std::string ownerHint;
  bool operator==(const NotOwner&) const = default;
};

// Edge to owner: a client's message on a relayed socket.
struct SocketMessage {
  SocketId socket = 0;
  bool binary = false;
  std::string payload;  // text is UTF-8
  bool operator==(const SocketMessage&) const = default;
};

// Owner to edge: one message for several sockets held by that edge (a broadcast crosses each
// link once and the edge fans it out). The message is a Frame, built once with its headroom,
// so every socket's Transport::send shares it: decode() copies the payload once, into it;
// encode() reads it without copying. Its `binary` says text or binary.
struct Send {
  std::vector<SocketId> sockets;  // at least one; an id listed twice gets the message twice
  FramePtr frame;                 // never null in a decoded Send; encode() takes null as ""
  bool binary() const { return frame != nullptr && frame->binary; }
  std::string_view payload() const { return frame ? frame->payload() : std::string_view(); }
  bool operator==(const Send& other) const {
    return sockets == other.sockets && binary() == other.binary() && payload() == other.payload();
  }
};

// Either direction: close this socket. Owner to edge: the object closed it (ws.close), the edge
// starts the closing handshake with the client. Edge to owner: the edge closed it on its own
// (1013 while held messages overflowed, 1012 on leaving). `code` may appear in a close frame.
struct Close {
  SocketId socket = 0;
  int code = 1000;
  std::string reason;  // UTF-8, at most maxCloseReasonBytes
  bool operator==(const Close&) const = default;
};

// Edge to owner: the client's connection is gone (its close frame, or a drop: 1006).
// The object's webSocketClose gets these values.
struct SocketClosed {
  SocketId socket = 0;
  int code = 1005;
  std::string reason;
  bool wasClean = true;
  bool operator==(const SocketClosed&) const = default;
};

// Owner to edge: the edge's copy of what the owner keeps for a socket, whole (it replaces
// the last one). Sent after the HttpResponse that accepted the socket and whenever a value
// changes, so the edge can re-attach the socket to a new owner if this one dies.
struct SocketMeta {
  SocketId socket = 0;
  std::vector<std::string> tags;           // distinct, at most maxTags of maxTagBytes
  std::optional<std::string> attachment;   // none: deserializeAttachment() gives null
  std::optional<AutoResponse> autoResponse;
  bool operator==(const SocketMeta&) const = default;
};

// Edge to a new owner after failover: take this socket as one of the object's hibernated
// sockets. autoResponseAtMs is when the edge last auto-responded on it (Unix ms), if ever.
struct Reattach {
  SocketId socket = 0;
  std::string className;
  std::string objectId;
  std::vector<std::string> tags;
  std::optional<std::string> attachment;
  std::optional<AutoResponse> autoResponse;
  std::optional<int64_t> autoResponseAtMs;
  bool operator==(const Reattach&) const = default;
};

// New owner to edge: whether it took the socket; why not, if it did not.
struct ReattachResult {
  SocketId socket = 0;
  bool ok = true;
  std::string reason;
  bool operator==(const ReattachResult&) const = default;
};

// Either direction: liveness. The receiver answers Pong with the same nonce.
struct Ping {
  uint64_t nonce = 0;
  bool operator==(const Ping&) const = default;
};
struct Pong {
  uint64_t nonce = 0;
  bool operator==(const Pong&) const = default;
};

// Either direction: the sender is leaving the cluster (SIGTERM). Its objects will be owned
// elsewhere; an edge treats it like the owner's loss (EdgeSockets::ownerLost) without waiting
// for the link to drop.
struct Leaving {
  std::string hostId;
  bool operator==(const Leaving&) const = default;
};

// One frame of any kind. Plain values: copy, move and compare them on any thread (a Send's
// Frame is shared, and immutable once built).
using LinkFrame = std::variant<Hello, HelloOk, Refused, HttpRequest, HttpResponse, NotOwner,
                               SocketMessage, Send, Close, SocketClosed, SocketMeta, Reattach,
                               ReattachResult, Ping, Pong, Leaving>;

// The kind byte of each frame (the variant's index plus one; 0 is never a frame).
enum class LinkKind : uint8_t {
  kHello = 1,
  kHelloOk,
  kRefused,
  kHttpRequest,
  kHttpResponse,
  kNotOwner,
  kSocketMessage,
  kSend,
  kClose,
  kSocketClosed,
  kSocketMeta,
  kReattach,
  kReattachResult,
  kPing,
  kPong,
  kLeaving,
};
inline constexpr uint8_t kLinkKindCount = 16;

LinkKind kindOf(const LinkFrame& frame);
// "Hello", "Send"... ("unknown" for a value outside the enum).
const char* kindName(LinkKind kind);

// The frame's bytes. Does not check limits (decode does, on the receiving side): a sender
// builds frames from values its own host already bounded.
// Thread: any.
std::string encode(const LinkFrame& frame);

// Reads exactly one frame from `bytes` (one link message). Fails with kInvalidArgument and a
// message naming the frame, the field and, for a bound, the LinkLimits member it breaks:
// truncated input, an unknown kind, an unsupported protocol version, a varint not in its
// shortest form, a flag other than 0 or 1, a value out of range (status, close code, socket
// id 0), text that is not UTF-8, CR/LF/NUL in a header, bytes after the frame.
// Thread: any.
Result<LinkFrame> decode(std::string_view bytes, const LinkLimits& limits = {});

}  // namespace dohost::cluster
