// The bytes of the etcd v3 JSON gateway (etcd 3.4): base64 for keys and values, the HTTP/1.1
// answer framing (a head, then a Content-Length body, a chunked body or a body that ends with
// the connection), and the JSON answers of each call. Pure functions over bytes, no sockets,
// so the fuzz target and the tests reach exactly what EtcdClient reads from the network.
//
// Every parser bounds what it accepts and explains a refusal in its Status: a malformed
// answer is Status::ioError("malformed etcd answer: ..."), an error etcd reports is mapped by
// its gRPC code (5 → notFound, 3 → invalidArgument, anything else → ioError with etcd's text).
//
// Thread: any; nothing here has shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dohost/status.h"

namespace dohost::cluster {

// One key as etcd reports it. Revisions and lease ids are int64 in etcd; the gateway sends
// them as JSON strings. A key with no lease has lease 0.
struct KeyValue {
  std::string key;
  std::string value;
  int64_t createRevision = 0;
  int64_t modRevision = 0;
  int64_t version = 0;
  int64_t lease = 0;
};

// Standard base64 (RFC 4648, with padding), as the gateway writes keys and values.
std::string base64Encode(std::string_view bytes);
// nullopt for anything but canonical padded base64.
std::optional<std::string> base64Decode(std::string_view text);
// The range_end that selects every key starting with `prefix`: the prefix with its last byte
// below 0xff incremented (and what follows dropped); "\0" (every key) when there is none.
std::string prefixRangeEnd(std::string_view prefix);

// ---- HTTP/1.1 framing ----

// The most bytes a status line plus headers may take.
inline constexpr size_t kMaxHttpHeadBytes = 16 * 1024;

struct HttpHead {
  int status = 0;
  size_t headBytes = 0;  // up to and including the empty line
  std::optional<size_t> contentLength;
  bool chunked = false;
  bool connectionClose = false;  // "Connection: close", or HTTP/1.0 without keep-alive
};

// Reads the head at the start of `bytes`: nullopt while the empty line that ends it has not
// arrived, an error for a malformed head or one past kMaxHttpHeadBytes.
Result<std::optional<HttpHead>> parseHttpHead(std::string_view bytes);

// Decodes a chunked body incrementally; trailers are read and dropped.
class ChunkedDecoder {
 public:
  // REQUIRES: maxBytes > 0. Decoded bytes past maxBytes are an error.
  explicit ChunkedDecoder(size_t maxBytes) : maxBytes_(maxBytes) {}

  // Consumes what it can of `in`, appending decoded bytes to `out`. Returns how many bytes of
  // `in` it consumed (all of them unless done() became true part-way), or the framing error.
  Result<size_t> feed(std::string_view in, std::string& out);
  bool done() const { return state_ == State::kDone; }
  // Decoded bytes so far.
  size_t decoded() const { return decoded_; }

 private:
  enum class State { kSize, kData, kDataEnd, kTrailer, kDone };

  size_t maxBytes_;
  State state_ = State::kSize;
  std::string line_;       // the size or trailer line being read
  size_t remaining_ = 0;   // bytes left in the current chunk
  size_t decoded_ = 0;
  size_t trailerBytes_ = 0;
};

// Decodes a whole chunked body (tests and the fuzz target): an error unless the
// body ends exactly with its last chunk and trailers.
Result<std::string> decodeChunked(std::string_view body, size_t maxBytes);

// ---- JSON answers ----

struct LeaseGrant {
  int64_t id = 0;
  int64_t ttlSeconds = 0;  // what etcd granted; it raises TTLs under its minimum (2 s)
};

struct RangeAnswer {
  std::vector<KeyValue> kvs;
  int64_t revision = 0;  // the store's revision when etcd read it (the header's)
};

struct TxnAnswer {
  bool succeeded = false;
  int64_t revision = 0;        // the header's: after a successful write, the write's revision
  std::vector<KeyValue> kvs;   // from the first range response of the branch taken
  int64_t deleted = 0;         // from the first delete-range response of the branch taken
};

struct WatchEvent {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  KeyValue kv;  // a DELETE carries the key and the deletion's revision as modRevision
};

struct WatchMessage {
  bool created = false;
  bool canceled = false;
  std::string cancelReason;
  int64_t compactRevision = 0;
  int64_t revision = 0;  // the header's
  std::vector<WatchEvent> events;
};

// The Status an answer with HTTP status `httpStatus` stands for: ok for 200 (callers then
// parse the body), else etcd's error from the body, or a generic one naming the status.
Status statusOfAnswer(int httpStatus, std::string_view body);

Result<LeaseGrant> parseLeaseGrant(std::string_view body);
// The lease's remaining TTL in seconds; notFound("lease not found") when the answer has no
// TTL or a TTL of 0 or less (etcd's way of saying the lease is gone). `body` is the stream of
// one-line messages the keepalive call answers with; the first message counts.
Result<int64_t> parseLeaseKeepAlive(std::string_view body);
// The header's revision of any answer (put, revoke, deleterange).
Result<int64_t> parseHeaderRevision(std::string_view body);
Result<RangeAnswer> parseRange(std::string_view body);
Result<TxnAnswer> parseTxn(std::string_view body);
// One message (one line) of a watch stream.
Result<WatchMessage> parseWatchMessage(std::string_view line);

}  // namespace dohost::cluster
