// The link frames' encoding (link_protocol.h has the format). The reader checks each length
// and count against the limits and against the bytes left before it uses it, so no claimed
// length ever sizes an allocation or a read.
#include "cluster/link_protocol.h"

#include <algorithm>
#include <memory>
#include <type_traits>

#include "utf8.h"
#include "ws_protocol.h"

namespace dohost::cluster {
namespace {

constexpr size_t kObjectIdChars = 64;
constexpr size_t kMaxVarintBytes = 10;

// ---- Encoding ----

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void flag(bool v) { u8(v ? 1 : 0); }
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  void fixed64(uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void bytes(std::string_view s) {
    varint(s.size());
    out_.append(s);
  }
  void headers(const Headers& headers) {
    varint(headers.size());
    for (const auto& [name, value] : headers) {
      bytes(name);
      bytes(value);
    }
  }
  void tags(const std::vector<std::string>& tags) {
    varint(tags.size());
    for (const std::string& t : tags) bytes(t);
  }
  void optionalBytes(const std::optional<std::string>& s) {
    flag(s.has_value());
    if (s) bytes(*s);
  }
  void autoResponse(const std::optional<AutoResponse>& pair) {
    flag(pair.has_value());
    if (pair) {
      bytes(pair->request);
      bytes(pair->response);
    }
  }

 private:
  std::string& out_;
};

size_t varintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

void put(Writer& w, const Hello& f) {
  w.u8(f.protocolVersion);
  w.bytes(f.hostId);
  w.varint(f.incarnation);
  w.bytes(f.clusterToken);
}
void put(Writer& w, const HelloOk& f) {
  w.bytes(f.hostId);
  w.varint(f.incarnation);
}
void put(Writer& w, const Refused& f) { w.bytes(f.reason); }
void put(Writer& w, const HttpRequest& f) {
  w.varint(f.stream);
  w.bytes(f.className);
  w.bytes(f.objectId);
  w.bytes(f.method);
  w.bytes(f.path);
  w.bytes(f.query);
  w.headers(f.headers);
  w.bytes(f.body);
  w.bytes(f.clientIp);
  w.flag(f.isUpgrade);
  w.fixed64(f.socket);
}
void put(Writer& w, const HttpResponse& f) {
  w.varint(f.stream);
  w.varint(static_cast<uint64_t>(std::max(f.status, 0)));
  w.headers(f.headers);
  w.bytes(f.body);
  w.fixed64(f.acceptedSocket);
}
void put(Writer& w, const NotOwner& f) {
  w.varint(f.stream);
  w.bytes(f.ownerHint);
}
void put(Writer& w, const SocketMessage& f) {
  w.fixed64(f.socket);
  w.flag(f.binary);
  w.bytes(f.payload);
}
void put(Writer& w, const Send& f) {
  w.varint(f.sockets.size());
  for (SocketId id : f.sockets) w.fixed64(id);
  w.flag(f.binary());
  w.bytes(f.payload());
}
void put(Writer& w, const Close& f) {
  w.fixed64(f.socket);
  w.varint(static_cast<uint64_t>(std::max(f.code, 0)));
  w.bytes(f.reason);
}
void put(Writer& w, const SocketClosed& f) {
  w.fixed64(f.socket);
  w.varint(static_cast<uint64_t>(std::max(f.code, 0)));
  w.bytes(f.reason);
  w.flag(f.wasClean);
}
void put(Writer& w, const SocketMeta& f) {
  w.fixed64(f.socket);
  w.tags(f.tags);
  w.optionalBytes(f.attachment);
  w.autoResponse(f.autoResponse);
}
void put(Writer& w, const Reattach& f) {
  w.fixed64(f.socket);
  w.bytes(f.className);
  w.bytes(f.objectId);
  w.tags(f.tags);
  w.optionalBytes(f.attachment);
  w.autoResponse(f.autoResponse);
  w.flag(f.autoResponseAtMs.has_value());
  if (f.autoResponseAtMs) w.fixed64(static_cast<uint64_t>(*f.autoResponseAtMs));
}
void put(Writer& w, const ReattachResult& f) {
  w.fixed64(f.socket);
  w.flag(f.ok);
  w.bytes(f.reason);
}
void put(Writer& w, const Ping& f) { w.fixed64(f.nonce); }
void put(Writer& w, const Pong& f) { w.fixed64(f.nonce); }
void put(Writer& w, const Leaving& f) { w.bytes(f.hostId); }

// ---- Decoding ----

bool hasHeaderBreak(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

bool isObjectId(std::string_view s) {
  return s.size() == kObjectIdChars && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// Reads fields of one frame. Each read returns false after the first failure, which it
// records with the frame's name; later reads do nothing.
class Reader {
 public:
  Reader(std::string_view in, const LinkLimits& limits, const char* frame)
      : in_(in), limits_(limits), frame_(frame) {}

  const LinkLimits& limits() const { return limits_; }
  size_t left() const { return in_.size() - pos_; }

  bool fail(const std::string& what) {
    if (error_.empty()) error_ = std::string("link frame ") + frame_ + ": " + what;
    return false;
  }
  bool truncated(const char* field) {
    return fail(std::string("truncated in ") + field + " (frame is " + std::to_string(in_.size()) +
                " bytes)");
  }
  bool over(const char* field, size_t n, const char* unit, const char* limitName, size_t limit) {
    return fail(std::string(field) + " of " + std::to_string(n) + " " + unit + " is over " +
                limitName + " (" + std::to_string(limit) + ")");
  }

  bool u8(uint8_t& v, const char* field) {
    if (left() < 1) return truncated(field);
    v = static_cast<uint8_t>(in_[pos_++]);
    return true;
  }
  bool flag(bool& v, const char* field) {
    uint8_t b = 0;
    if (!u8(b, field)) return false;
    if (b > 1) return fail(std::string(field) + " is " + std::to_string(b) + ", not 0 or 1");
    v = b == 1;
    return true;
  }
  bool varint(uint64_t& v, const char* field) {
    uint64_t value = 0;
    for (size_t i = 0; i < kMaxVarintBytes; ++i) {
      if (left() < 1) return truncated(field);
      uint8_t b = static_cast<uint8_t>(in_[pos_++]);
      if (i == kMaxVarintBytes - 1 && b > 1) return fail(std::string(field) + " is over 64 bits");
      value |= uint64_t{b & 0x7fu} << (7 * i);
      if ((b & 0x80) == 0) {
        if (b == 0 && i > 0) return fail(std::string(field) + " is not in its shortest form");
        v = value;
        return true;
      }
    }
    return fail(std::string(field) + " is over 64 bits");  // not reached: the 10th byte stops
  }
  bool fixed64(uint64_t& v, const char* field) {
    if (left() < 8) return truncated(field);
    uint64_t value = 0;
    for (int i = 0; i < 8; ++i) value |= uint64_t{static_cast<uint8_t>(in_[pos_ + i])} << (8 * i);
    pos_ += 8;
    v = value;
    return true;
  }
  bool socket(SocketId& id, const char* field, bool zeroAllowed = false) {
    if (!fixed64(id, field)) return false;
    if (id == 0 && !zeroAllowed) return fail(std::string(field) + " is 0 (no socket)");
    return true;
  }
  // A length-prefixed string: the length is checked against `limit`, then against what is
  // left, before any byte is taken.
  bool view(std::string_view& out, const char* field, size_t limit, const char* limitName) {
    uint64_t n = 0;
    if (!varint(n, field)) return false;
    if (n > limit) return over(field, n, "bytes", limitName, limit);
    if (n > left()) return truncated(field);
    out = in_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool bytes(std::string& out, const char* field, size_t limit, const char* limitName) {
    std::string_view v;
    if (!view(v, field, limit, limitName)) return false;
    out.assign(v);
    return true;
  }
  bool field(std::string& out, const char* name) {
    return bytes(out, name, limits_.maxFieldBytes, "maxFieldBytes");
  }
  bool nonEmptyField(std::string& out, const char* name) {
    if (!field(out, name)) return false;
    if (out.empty()) return fail(std::string(name) + " is empty");
    return true;
  }
  bool utf8(std::string_view s, const char* field) {
    if (!isValidUtf8(s)) return fail(std::string(field) + " is not valid UTF-8");
    return true;
  }
  // A list count: within `limit`, and each element takes at least `minBytes`.
  bool count(uint64_t& n, const char* field, size_t limit, const char* limitName, size_t minBytes) {
    if (!varint(n, field)) return false;
    if (n > limit) return over(field, n, "entries", limitName, limit);
    if (n > left() / minBytes) return truncated(field);
    return true;
  }

  bool headers(Headers& out) {
    uint64_t n = 0;
    if (!count(n, "headers", limits_.maxHeaders, "maxHeaders", 2)) return false;
    out.reserve(n);
    size_t total = 0;
    for (uint64_t i = 0; i < n; ++i) {
      std::string_view name, value;
      if (!view(name, "header name", limits_.maxHeaderBytes, "maxHeaderBytes") ||
          !view(value, "header value", limits_.maxHeaderBytes, "maxHeaderBytes")) {
        return false;
      }
      total += name.size() + value.size();
      if (total > limits_.maxHeaderBytes) {
        return fail("headers of at least " + std::to_string(total) + " bytes are over maxHeaderBytes (" +
                    std::to_string(limits_.maxHeaderBytes) + ")");
      }
      if (name.empty()) return fail("a header name is empty");
      if (hasHeaderBreak(name) || hasHeaderBreak(value)) {
        return fail("header " + std::string(name.substr(0, 64)) + " holds CR, LF or NUL");
      }
      out.emplace_back(name, value);
    }
    return true;
  }
  bool tags(std::vector<std::string>& out) {
    uint64_t n = 0;
    if (!count(n, "tags", limits_.maxTags, "maxTags", 1)) return false;
    out.reserve(n);
    for (uint64_t i = 0; i < n; ++i) {
      std::string tag;
      if (!bytes(tag, "tag", limits_.maxTagBytes, "maxTagBytes")) return false;
      if (std::find(out.begin(), out.end(), tag) != out.end()) {
        return fail("tag " + tag + " is listed twice");
      }
      out.push_back(std::move(tag));
    }
    return true;
  }
  bool attachment(std::optional<std::string>& out) {
    bool present = false;
    if (!flag(present, "attachment flag")) return false;
    if (!present) return true;
    out.emplace();
    return bytes(*out, "attachment", limits_.maxAttachmentBytes, "maxAttachmentBytes");
  }
  bool autoResponse(std::optional<AutoResponse>& out) {
    bool present = false;
    if (!flag(present, "auto-response flag")) return false;
    if (!present) return true;
    out.emplace();
    return bytes(out->request, "auto-response request", limits_.maxAutoResponseBytes,
                 "maxAutoResponseBytes") &&
           utf8(out->request, "auto-response request") &&
           bytes(out->response, "auto-response response", limits_.maxAutoResponseBytes,
                 "maxAutoResponseBytes") &&
           utf8(out->response, "auto-response response");
  }
  // A close code a peer may put in a close frame; a SocketClosed may also report 1005 (the
  // client's close frame had no code) and 1006 (the connection dropped).
  bool closeCode(int& out, bool reported) {
    uint64_t v = 0;
    if (!varint(v, "code")) return false;
    int code = v <= 9999 ? static_cast<int>(v) : 0;
    bool ok = ws::isValidCloseCode(code) || (reported && (code == 1005 || code == 1006));
    if (!ok) return fail("close code " + std::to_string(v) + " is not one a close may carry");
    out = code;
    return true;
  }
  bool closeReason(std::string& out) {
    return bytes(out, "reason", limits_.maxCloseReasonBytes, "maxCloseReasonBytes") &&
           utf8(out, "reason");
  }

  Status finish() {
    if (error_.empty() && left() != 0) {
      fail(std::to_string(left()) + " bytes after the frame's end");
    }
    return error_.empty() ? Status::ok() : Status::invalidArgument(error_);
  }

 private:
  std::string_view in_;
  size_t pos_ = 1;  // after the kind byte
  const LinkLimits& limits_;
  const char* frame_;
  std::string error_;
};

bool get(Reader& r, Hello& f) {
  if (!r.u8(f.protocolVersion, "protocol version")) return false;
  if (f.protocolVersion != kLinkProtocolVersion) {
    return r.fail("unsupported protocol version " + std::to_string(f.protocolVersion) +
                  " (this host speaks " + std::to_string(kLinkProtocolVersion) + ")");
  }
  return r.nonEmptyField(f.hostId, "hostId") && r.varint(f.incarnation, "incarnation") &&
         r.field(f.clusterToken, "clusterToken");
}
bool get(Reader& r, HelloOk& f) {
  return r.nonEmptyField(f.hostId, "hostId") && r.varint(f.incarnation, "incarnation");
}
bool get(Reader& r, Refused& f) { return r.field(f.reason, "reason"); }
bool get(Reader& r, HttpRequest& f) {
  if (!r.varint(f.stream, "stream") || !r.nonEmptyField(f.className, "className") ||
      !r.bytes(f.objectId, "objectId", kObjectIdChars, "the length of an object id")) {
    return false;
  }
  if (!isObjectId(f.objectId)) return r.fail("objectId is not 64 lowercase hex characters");
  if (!r.nonEmptyField(f.method, "method") || !r.field(f.path, "path") ||
      !r.field(f.query, "query") || !r.headers(f.headers) ||
      !r.bytes(f.body, "body", r.limits().maxBodyBytes, "maxBodyBytes") ||
      !r.field(f.clientIp, "clientIp") || !r.flag(f.isUpgrade, "isUpgrade") ||
      !r.socket(f.socket, "socket", /*zeroAllowed=*/true)) {
    return false;
  }
  if (f.isUpgrade && f.socket == 0) return r.fail("an upgrade without a socket id");
  if (!f.isUpgrade && f.socket != 0) return r.fail("a socket id on a request that is no upgrade");
  return true;
}
bool get(Reader& r, HttpResponse& f) {
  uint64_t status = 0;
  if (!r.varint(f.stream, "stream") || !r.varint(status, "status")) return false;
  if (status < 100 || status > 599) return r.fail("status " + std::to_string(status) + " is not 100-599");
  f.status = static_cast<int>(status);
  if (!r.headers(f.headers) || !r.bytes(f.body, "body", r.limits().maxBodyBytes, "maxBodyBytes") ||
      !r.socket(f.acceptedSocket, "acceptedSocket", /*zeroAllowed=*/true)) {
    return false;
  }
  if ((f.status == 101) != (f.acceptedSocket != 0)) {
    return r.fail("status 101 goes with an accepted socket, and only it");
  }
  return true;
}
bool get(Reader& r, NotOwner& f) {
  return r.varint(f.stream, "stream") && r.field(f.ownerHint, "ownerHint");
}
bool get(Reader& r, SocketMessage& f) {
  if (!r.socket(f.socket, "socket") || !r.flag(f.binary, "binary") ||
      !r.bytes(f.payload, "payload", r.limits().maxPayloadBytes, "maxPayloadBytes")) {
    return false;
  }
  return f.binary || r.utf8(f.payload, "text payload");
}
bool get(Reader& r, Send& f) {
  uint64_t n = 0;
  if (!r.count(n, "sockets", r.limits().maxSocketsPerSend, "maxSocketsPerSend", 8)) return false;
  if (n == 0) return r.fail("sockets is empty");
  f.sockets.resize(n);
  for (SocketId& id : f.sockets) {
    if (!r.socket(id, "socket")) return false;
  }
  bool binary = false;
  std::string_view payload;
  if (!r.flag(binary, "binary") ||
      !r.view(payload, "payload", r.limits().maxPayloadBytes, "maxPayloadBytes")) {
    return false;
  }
  if (!binary && !r.utf8(payload, "text payload")) return false;
  f.frame = std::make_shared<Frame>(payload, binary);  // the one copy of the payload
  return true;
}
bool get(Reader& r, Close& f) {
  return r.socket(f.socket, "socket") && r.closeCode(f.code, false) && r.closeReason(f.reason);
}
bool get(Reader& r, SocketClosed& f) {
  return r.socket(f.socket, "socket") && r.closeCode(f.code, true) && r.closeReason(f.reason) &&
         r.flag(f.wasClean, "wasClean");
}
bool get(Reader& r, SocketMeta& f) {
  return r.socket(f.socket, "socket") && r.tags(f.tags) && r.attachment(f.attachment) &&
         r.autoResponse(f.autoResponse);
}
bool get(Reader& r, Reattach& f) {
  if (!r.socket(f.socket, "socket") || !r.nonEmptyField(f.className, "className") ||
      !r.bytes(f.objectId, "objectId", kObjectIdChars, "the length of an object id")) {
    return false;
  }
  if (!isObjectId(f.objectId)) return r.fail("objectId is not 64 lowercase hex characters");
  bool hasTime = false;
  if (!r.tags(f.tags) || !r.attachment(f.attachment) || !r.autoResponse(f.autoResponse) ||
      !r.flag(hasTime, "autoResponseAtMs flag")) {
    return false;
  }
  if (hasTime) {
    uint64_t ms = 0;
    if (!r.fixed64(ms, "autoResponseAtMs")) return false;
    f.autoResponseAtMs = static_cast<int64_t>(ms);
  }
  return true;
}
bool get(Reader& r, ReattachResult& f) {
  return r.socket(f.socket, "socket") && r.flag(f.ok, "ok") && r.field(f.reason, "reason");
}
bool get(Reader& r, Ping& f) { return r.fixed64(f.nonce, "nonce"); }
bool get(Reader& r, Pong& f) { return r.fixed64(f.nonce, "nonce"); }
bool get(Reader& r, Leaving& f) { return r.nonEmptyField(f.hostId, "hostId"); }

template <size_t I>
Result<LinkFrame> decodeAs(std::string_view bytes, const LinkLimits& limits) {
  using T = std::variant_alternative_t<I, LinkFrame>;
  Reader reader(bytes, limits, kindName(static_cast<LinkKind>(I + 1)));
  T frame;
  get(reader, frame);
  if (Status s = reader.finish(); !s.isOk()) return s;
  return LinkFrame(std::in_place_index<I>, std::move(frame));
}

template <size_t... I>
Result<LinkFrame> decodeKind(size_t index, std::string_view bytes, const LinkLimits& limits,
                             std::index_sequence<I...>) {
  using Decoder = Result<LinkFrame> (*)(std::string_view, const LinkLimits&);
  static constexpr Decoder kDecoders[] = {&decodeAs<I>...};
  return kDecoders[index](bytes, limits);
}

static_assert(std::variant_size_v<LinkFrame> == kLinkKindCount);

}  // namespace

LinkKind kindOf(const LinkFrame& frame) { return static_cast<LinkKind>(frame.index() + 1); }

const char* kindName(LinkKind kind) {
  static constexpr const char* kNames[] = {
      "Hello",        "HelloOk",    "Refused",        "HttpRequest", "HttpResponse", "NotOwner",
      "SocketMessage", "Send",      "Close",          "SocketClosed", "SocketMeta",  "Reattach",
      "ReattachResult", "Ping",     "Pong",           "Leaving"};
  size_t k = static_cast<size_t>(kind);
  return k >= 1 && k <= kLinkKindCount ? kNames[k - 1] : "unknown";
}

std::string encode(const LinkFrame& frame) {
  std::string out;
  if (const Send* send = std::get_if<Send>(&frame)) {
    // The one frame that can be large because of its lists: size it exactly, once.
    size_t payload = send->payload().size();
    out.reserve(1 + varintSize(send->sockets.size()) + 8 * send->sockets.size() + 1 +
                varintSize(payload) + payload);
  }
  Writer w(out);
  w.u8(static_cast<uint8_t>(kindOf(frame)));
  std::visit([&w](const auto& f) { put(w, f); }, frame);
  return out;
}

Result<LinkFrame> decode(std::string_view bytes, const LinkLimits& limits) {
  if (bytes.empty()) return Status::invalidArgument("link frame is empty");
  if (bytes.size() > limits.maxFrameBytes) {
    return Status::invalidArgument("link frame of " + std::to_string(bytes.size()) +
                                   " bytes is over maxFrameBytes (" +
                                   std::to_string(limits.maxFrameBytes) + ")");
  }
  uint8_t kind = static_cast<uint8_t>(bytes[0]);
  if (kind < 1 || kind > kLinkKindCount) {
    return Status::invalidArgument("link frame of unknown kind " + std::to_string(kind));
  }
  return decodeKind(kind - 1, bytes, limits, std::make_index_sequence<kLinkKindCount>());
}

}  // namespace dohost::cluster
