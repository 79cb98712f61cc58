// The etcd client's reading of answers: the pure parsers, and a fake TCP server that answers
// with broken, oversized or missing HTTP, so the client's errors are clear and bounded.
#include <doctest/doctest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "cluster/etcd_client.h"
#include "cluster/etcd_wire.h"

namespace dohost::cluster {
namespace {

using namespace std::chrono_literals;

// Accepts connections on a loopback port; to each it reads one request head (and its
// Content-Length body), writes `answer` and closes (unless `hold`: then it keeps the
// connection open without answering until destroyed).
class FakeServer {
 public:
  explicit FakeServer(std::string answer, bool hold = false)
      : answer_(std::move(answer)), hold_(hold) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listener_, 8) == 0);
    REQUIRE(::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeServer() {
    stop_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    thread_.join();
    ::close(listener_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int connections() const { return connections_.load(); }

 private:
  void serve() {
    while (!stop_) {
      int fd = ::accept(listener_, nullptr, nullptr);
      if (fd < 0) return;
      ++connections_;
      std::string request;
      char buf[4096];
      while (request.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        request.append(buf, static_cast<size_t>(n));
      }
      if (hold_) {
        while (!stop_) std::this_thread::sleep_for(10ms);
      } else {
        size_t off = 0;
        while (off < answer_.size()) {
          ssize_t n = ::send(fd, answer_.data() + off, answer_.size() - off, MSG_NOSIGNAL);
          if (n <= 0) break;
          off += static_cast<size_t>(n);
        }
      }
      ::close(fd);
    }
  }

  std::string answer_;
  bool hold_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
};

std::unique_ptr<EtcdClient> clientFor(std::vector<std::string> endpoints,
                                      size_t maxBytes = 4096,
                                      std::chrono::milliseconds timeout = 1000ms) {
  auto client = EtcdClient::create(
      {.endpoints = std::move(endpoints), .requestTimeout = timeout, .maxResponseBytes = maxBytes});
  REQUIRE(client.isOk());
  return std::move(*client);
}

std::string http(std::string_view body, std::string_view status = "200 OK") {
  return "HTTP/1.1 " + std::string(status) + "\r\nContent-Type: application/json\r\n" +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

// The error a lease grant meets when the server answers `answer`.
std::string grantError(const std::string& answer, size_t maxBytes = 4096) {
  FakeServer server(answer);
  auto client = clientFor({server.url()}, maxBytes);
  Result<LeaseGrant> grant = client->leaseGrant(5);
  REQUIRE_FALSE(grant.isOk());
  return grant.status().toString();
}

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("base64 round-trips any bytes and refuses text that is not canonical base64") {
  for (std::string s : {std::string(), std::string("a"), std::string("ab"), std::string("abc"),
                        std::string("\0\xff\x10\x80", 4), std::string("/dohost/v1/hosts/h1")}) {
    std::optional<std::string> back = base64Decode(base64Encode(s));
    REQUIRE(back.has_value());
    CHECK(*back == s);
  }
  CHECK(base64Encode("/a/k") == "L2Evaw==");
  CHECK_FALSE(base64Decode("L2Evaw=").has_value());
  CHECK_FALSE(base64Decode("L2E*aw==").has_value());
  CHECK_FALSE(base64Decode("L2Evax==").has_value());  // bits past the end are not zero
  CHECK_FALSE(base64Decode("=AAA").has_value());
  CHECK(prefixRangeEnd("/a/") == "/a0");
  CHECK(prefixRangeEnd(std::string("a\xff", 2)) == "b");
  CHECK(prefixRangeEnd("") == std::string(1, '\0'));
}

TEST_CASE("the chunked decoder takes bytes in any split and refuses broken framing") {
  std::string body = "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
  for (size_t step : {size_t{1}, size_t{2}, size_t{7}, body.size()}) {
    ChunkedDecoder decoder(100);
    std::string out;
    for (size_t i = 0; i < body.size(); i += step) {
      Result<size_t> used = decoder.feed(std::string_view(body).substr(i, step), out);
      REQUIRE(used.isOk());
    }
    CHECK(decoder.done());
    CHECK(out == "hello, world");
  }
  CHECK(contains(decodeChunked("zz\r\n", 100).status().toString(), "bad chunk size"));
  CHECK(contains(decodeChunked("5\r\nhelloXX", 100).status().toString(), "CRLF"));
  CHECK(contains(decodeChunked("5\r\nhel", 100).status().toString(), "ends early"));
  CHECK(contains(decodeChunked("65\r\n", 100).status().toString(), "limit of 100"));
  CHECK(contains(decodeChunked(std::string(2000, '1'), 100).status().toString(), "too long"));
}

TEST_CASE("answers are read as etcd writes them: strings for int64, omitted zeros and types") {
  Result<LeaseGrant> grant = parseLeaseGrant(
      R"({"header":{"revision":"1"},"ID":"6408237656708283398","TTL":"5"})");
  REQUIRE(grant.isOk());
  CHECK(grant->id == 6408237656708283398);
  CHECK(parseLeaseKeepAlive(R"({"result":{"header":{},"ID":"7","TTL":"4"}})" "\n").value() == 4);
  CHECK(parseLeaseKeepAlive(R"({"result":{"header":{},"ID":"7"}})").status().code() ==
        Status::Code::kNotFound);
  Result<TxnAnswer> txn = parseTxn(
      R"({"header":{"revision":"2"},"responses":[{"response_range":{"header":{"revision":"2"},)"
      R"("kvs":[{"key":"L2Evaw==","create_revision":"2","mod_revision":"2","version":"1",)"
      R"("value":"dmFs","lease":"64"}],"count":"1"}}]})");
  REQUIRE(txn.isOk());
  CHECK_FALSE(txn->succeeded);
  REQUIRE(txn->kvs.size() == 1);
  CHECK(txn->kvs[0].key == "/a/k");
  CHECK(txn->kvs[0].value == "val");
  CHECK(txn->kvs[0].lease == 64);
  Result<WatchMessage> watch = parseWatchMessage(
      R"({"result":{"header":{"revision":"3"},"events":[{"kv":{"key":"L2Evaw==","mod_revision":"2"}},)"
      R"({"type":"DELETE","kv":{"key":"L2Evaw==","mod_revision":"3"}}]}})");
  REQUIRE(watch.isOk());
  REQUIRE(watch->events.size() == 2);
  CHECK(watch->events[0].type == WatchEvent::Type::kPut);
  CHECK(watch->events[1].type == WatchEvent::Type::kDelete);
  CHECK(watch->events[1].kv.modRevision == 3);
  CHECK(contains(parseRange(R"({"header":{"revision":"x"}})").status().toString(),
                 "field revision is not an integer"));
  CHECK(contains(parseRange(R"({"header":{},"kvs":[{"key":"***"}]})").status().toString(),
                 "field key is not base64"));
  CHECK(contains(parseTxn("[1]").status().toString(), "not a JSON object"));
  CHECK(contains(parseTxn(std::string(100, '[')).status().toString(), "deeper than 16"));
  CHECK(statusOfAnswer(404, R"({"error":"etcdserver: requested lease not found","code":5})")
            .code() == Status::Code::kNotFound);
  CHECK(statusOfAnswer(503, "<html>").toString() == "I/O error: etcd answered HTTP 503");
}

TEST_CASE("malformed and oversized HTTP answers give clear errors, not crashes") {
  CHECK(contains(grantError("SSH-2.0-OpenSSH\r\n\r\n"), "not an HTTP/1.x status line"));
  CHECK(contains(grantError("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"), "bad HTTP header line"));
  CHECK(contains(grantError(http("not json")), "malformed etcd answer: invalid JSON"));
  CHECK(contains(grantError(http(R"({"header":{}})")), "lease grant without an ID or TTL"));
  CHECK(contains(grantError(http(std::string(5000, ' ') + "{}")), "larger than the limit of 4096"));
  CHECK(contains(grantError("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                            std::string("1001\r\n") + std::string(4097, 'x') + "\r\n0\r\n\r\n"),
                 "larger than the limit of 4096"));
  CHECK(contains(grantError("HTTP/1.1 200 OK\r\nX: " + std::string(20000, 'x') + "\r\n\r\n",
                            1 << 20),
                 "HTTP head longer than"));
  CHECK(contains(grantError("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"ID\""),
                 "closed in the middle of the answer"));
  CHECK(contains(grantError("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n"), "bad Content-Length"));
  CHECK(contains(grantError("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
                 "unsupported Transfer-Encoding"));
  CHECK(contains(grantError(http(R"({"error":"etcdserver: too many requests","code":8})",
                                 "429 Too Many Requests")),
                 "etcdserver: too many requests (code 8)"));
  CHECK(contains(grantError(""), "connection closed before the answer"));
}

TEST_CASE("a server that never answers times the request out within its deadline") {
  FakeServer silent("", /*hold=*/true);
  auto client = clientFor({silent.url()}, 4096, 300ms);
  auto start = std::chrono::steady_clock::now();
  Result<int64_t> ttl = client->leaseKeepAlive(1);
  auto took = std::chrono::steady_clock::now() - start;
  REQUIRE_FALSE(ttl.isOk());
  CHECK(contains(ttl.status().toString(), "timed out"));
  CHECK(took >= 250ms);
  CHECK(took < 2s);
}

TEST_CASE("a refused connection moves the request to the next endpoint") {
  FakeServer good(http(R"({"header":{"revision":"1"},"ID":"9","TTL":"5"})"));
  // A port nobody listens on: bind one, then close it.
  std::string dead;
  {
    FakeServer gone("");
    dead = gone.url();
  }
  auto client = clientFor({dead, good.url()});
  Result<LeaseGrant> grant = client->leaseGrant(5);
  REQUIRE_MESSAGE(grant.isOk(), grant.status().toString());
  CHECK(grant->id == 9);
  CHECK(client->currentEndpoint() == good.url());
  auto none = clientFor({dead});
  CHECK(contains(none->leaseGrant(5).status().toString(), "Connection refused"));
  CHECK(EtcdClient::create({.endpoints = {"https://x:1"}}).status().code() ==
        Status::Code::kInvalidArgument);
  CHECK(EtcdClient::create({.endpoints = {"http://x"}}).status().code() ==
        Status::Code::kInvalidArgument);
  CHECK(EtcdClient::create({}).status().code() == Status::Code::kInvalidArgument);
}

}  // namespace dohost::cluster
