// Fuzz target etcd_answer: what the etcd client reads from the network (runtime/src/cluster/
// etcd_wire.h). The input is an HTTP answer, head and body, after one byte that chooses where
// a chunked body is cut into pieces. The head is read; a chunked body is decoded once whole
// and once piece by piece, which must agree; the body then goes to every answer parser (each
// line of it to the watch-message parser). Every refusal must say why, and every key or value
// a parser returns must be the base64 decoding the gateway sent, so re-encoding it and
// decoding again gives the same bytes. base64Decode of the input itself must accept only
// canonical text (decode then encode gives the input back).
#include <string>
#include <string_view>

#include "cluster/etcd_wire.h"
#include "harness.h"

namespace {

using namespace dohost;
using namespace dohost::cluster;

constexpr size_t kMaxBody = 64 * 1024;

template <class T>
void checkRefusal(const Result<T>& r, const char* what) {
  if (!r.isOk() && r.status().message().empty()) fuzz::fail(std::string(what) + " refused without a reason");
}

void checkKv(const KeyValue& kv) {
  for (const std::string* bytes : {&kv.key, &kv.value}) {
    std::optional<std::string> back = base64Decode(base64Encode(*bytes));
    if (!back || *back != *bytes) fuzz::fail("base64 did not round-trip");
  }
}

void parseAll(std::string_view body) {
  Result<LeaseGrant> grant = parseLeaseGrant(body);
  checkRefusal(grant, "parseLeaseGrant");
  if (grant.isOk() && (grant->id == 0 || grant->ttlSeconds <= 0)) fuzz::fail("a grant without a lease");
  Result<int64_t> ttl = parseLeaseKeepAlive(body);
  checkRefusal(ttl, "parseLeaseKeepAlive");
  if (ttl.isOk() && *ttl <= 0) fuzz::fail("a keepalive TTL <= 0 taken as alive");
  checkRefusal(parseHeaderRevision(body), "parseHeaderRevision");
  Result<RangeAnswer> range = parseRange(body);
  checkRefusal(range, "parseRange");
  if (range.isOk()) {
    for (const KeyValue& kv : range->kvs) checkKv(kv);
  }
  Result<TxnAnswer> txn = parseTxn(body);
  checkRefusal(txn, "parseTxn");
  if (txn.isOk()) {
    for (const KeyValue& kv : txn->kvs) checkKv(kv);
  }
  size_t start = 0;
  while (start < body.size()) {
    size_t eol = body.find('\n', start);
    std::string_view line = body.substr(start, eol == std::string_view::npos ? eol : eol - start);
    Result<WatchMessage> message = parseWatchMessage(line);
    checkRefusal(message, "parseWatchMessage");
    if (message.isOk()) {
      for (const WatchEvent& e : message->events) checkKv(e.kv);
    }
    if (eol == std::string_view::npos) break;
    start = eol + 1;
  }
  for (int status : {200, 404, 503}) {
    Status s = statusOfAnswer(status, body);
    if (status == 200 && !s.isOk()) fuzz::fail("a 200 answer taken as an error");
    if (status != 200 && (s.isOk() || s.message().empty())) fuzz::fail("an error answer without a reason");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t cut = data[0];
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);

  if (std::optional<std::string> decoded = base64Decode(input)) {
    if (base64Encode(*decoded) != input) fuzz::fail("base64Decode took non-canonical text");
  }

  Result<std::optional<HttpHead>> head = parseHttpHead(input);
  checkRefusal(head, "parseHttpHead");
  std::string_view body = input;
  if (head.isOk() && *head) {
    const HttpHead& h = **head;
    if (h.headBytes > input.size() || h.headBytes > kMaxHttpHeadBytes) fuzz::fail("a head past its bytes");
    if (h.status < 100 || h.status > 999) fuzz::fail("a status out of range");
    if (h.chunked && h.contentLength) fuzz::fail("both chunked and a Content-Length");
    body = input.substr(h.headBytes);
    if (h.chunked) {
      Result<std::string> whole = decodeChunked(body, kMaxBody);
      checkRefusal(whole, "decodeChunked");
      ChunkedDecoder decoder(kMaxBody);
      std::string pieces;
      size_t used = 0;
      bool failed = false;
      size_t step = cut + 1;
      for (size_t i = 0; i < body.size() && !decoder.done(); i += step) {
        Result<size_t> n = decoder.feed(body.substr(i, step), pieces);
        checkRefusal(n, "ChunkedDecoder::feed");
        if (!n.isOk()) {
          failed = true;
          break;
        }
        used += *n;
      }
      bool wholeOk = whole.isOk();
      bool piecesOk = !failed && decoder.done() && used == body.size();
      if (wholeOk != piecesOk) fuzz::fail("chunked decoding depends on how the bytes arrive");
      if (wholeOk && *whole != pieces) fuzz::fail("chunked pieces decoded to other bytes");
      if (wholeOk) {
        parseAll(*whole);
        return 0;
      }
    }
  }
  parseAll(body);
  return 0;
}
