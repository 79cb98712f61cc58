// Fuzz target wire_http: the bytes a client sends before its request is routed. The input's
// first byte chooses where the rest is cut into pieces; HeadReader reads the pieces as they
// would arrive (the buffer growing between calls) and must come to the same outcome as one
// read of the whole buffer: the same status for an error, the same head length,
// and the same request for a complete head (parseHead then decides it once more). Small limits
// (from the second byte) make the 414 and 431 paths reachable with short inputs.
#include <string>
#include <string_view>

#include "harness.h"
#include "http_parser.h"

namespace {

using namespace dohost;

bool sameHead(const http::RequestHead& a, const http::RequestHead& b) {
  return a.method == b.method && a.path == b.path && a.query == b.query &&
         a.minorVersion == b.minorVersion && a.headers == b.headers &&
         a.contentLength == b.contentLength && a.keepAlive == b.keepAlive &&
         a.expectContinue == b.expectContinue && a.webSocketUpgrade == b.webSocketUpgrade;
}

void checkStatus(const http::Outcome& o) {
  if (o.kind != http::Outcome::kError) return;
  if (o.status < 400 || o.status > 599) fuzz::fail("a refused head answered " + std::to_string(o.status));
  if (o.message.empty()) fuzz::fail("a refused head without a reason");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const unsigned step = 1 + data[0] % 37;  // piece size
  http::Limits limits;
  if (data[1] & 1) {
    limits.maxRequestLineBytes = 16 + data[1] % 64;
    limits.maxHeaderBytes = 32 + data[1] * 2u;
    limits.maxHeaderLines = 1 + data[1] % 7;
  }
  std::string_view input(reinterpret_cast<const char*>(data) + 2, size - 2);

  http::RequestHead whole;
  http::HeadReader once(limits);
  http::Outcome all = once.read(input, &whole);
  checkStatus(all);

  http::RequestHead pieces;
  http::HeadReader reader(limits);
  http::Outcome last;
  for (size_t have = 0; have < input.size();) {
    have = std::min(input.size(), have + step);
    last = reader.read(input.substr(0, have), &pieces);
    if (last.kind != http::Outcome::kIncomplete) break;
  }
  if (input.empty()) last = reader.read(input, &pieces);
  checkStatus(last);
  if (last.kind != all.kind) fuzz::fail("pieces and the whole buffer disagree on the outcome");
  // The same status; the reason may differ: read in pieces, a head is refused as soon as the
  // bytes so far pass a limit, so a 431 can name the byte limit where one read of the whole
  // head first counted one line too many.
  if (all.kind == http::Outcome::kError && last.status != all.status) {
    fuzz::fail("pieces answered " + std::to_string(last.status) + " (" + last.message +
               "), the whole buffer " + std::to_string(all.status) + " (" + all.message + ")");
  }
  if (all.kind == http::Outcome::kComplete) {
    if (last.headBytes != all.headBytes) fuzz::fail("pieces and the whole buffer end the head apart");
    if (all.headBytes > input.size()) fuzz::fail("the head ends past the bytes read");
    if (!sameHead(whole, pieces)) fuzz::fail("pieces and the whole buffer read different requests");
    // What the server then builds from it: a Request whose path and query the router reads.
    Request request(whole.method, whole.path, whole.query, whole.headers, "");
    (void)request.queryParam("token");
    (void)request.bearerToken();
  }
  return 0;
}
