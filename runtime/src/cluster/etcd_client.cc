#include "cluster/etcd_client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include <nlohmann/json.hpp>

#include "dohost/json.h"

namespace dohost::cluster {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// How often a watch looks at its stop flag while the stream is quiet.
constexpr int kWatchPollMs = 50;

int remainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left.count(), 1 << 30));
}

std::string errnoText(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

void closeFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// Waits for `events` on fd until the deadline: 1 ready, 0 timed out, -1 error (errno).
int waitFor(int fd, short events, int timeoutMs) {
  pollfd p{fd, events, 0};
  for (;;) {
    int n = ::poll(&p, 1, timeoutMs);
    if (n < 0 && errno == EINTR) continue;
    return n;
  }
}

Result<int> connectTo(const std::string& host, const std::string& port,
                      Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return Status::ioError("cannot resolve " + host + ": " + ::gai_strerror(rc));
  }
  std::string lastError = "no address for " + host;
  int fd = -1;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      lastError = errnoText("socket");
      continue;
    }
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc < 0 && errno == EINPROGRESS) {
      int ready = waitFor(fd, POLLOUT, remainingMs(deadline));
      int soError = 0;
      socklen_t len = sizeof soError;
      if (ready == 0) {
        lastError = "connect to " + host + ":" + port + " timed out";
      } else if (ready < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &len) < 0) {
        lastError = errnoText("connect");
      } else if (soError != 0) {
        lastError = "connect to " + host + ":" + port + ": " + std::strerror(soError);
      } else {
        rc = 0;
      }
    } else if (rc < 0) {
      lastError = "connect to " + host + ":" + port + ": " + std::strerror(errno);
    }
    if (rc == 0) break;
    closeFd(fd);
  }
  ::freeaddrinfo(found);
  if (fd < 0) return Status::ioError(lastError);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

Status sendAll(int fd, std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int ready = waitFor(fd, POLLOUT, remainingMs(deadline));
      if (ready == 0) return Status::ioError("etcd request timed out while sending");
      if (ready < 0) return Status::ioError(errnoText("poll"));
      continue;
    }
    return Status::ioError(errnoText("send"));
  }
  return Status::ok();
}

// Reads what is there into `buffer` (waiting up to timeoutMs): the byte count, 0 at the end
// of the stream, or an error; `timedOut` says the wait ran out.
Result<size_t> readSome(int fd, std::string& buffer, int timeoutMs, bool& timedOut) {
  timedOut = false;
  char chunk[16 * 1024];
  for (;;) {
    int ready = waitFor(fd, POLLIN, timeoutMs);
    if (ready == 0) {
      timedOut = true;
      return Status::ioError("etcd request timed out");
    }
    if (ready < 0) return Status::ioError(errnoText("poll"));
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n >= 0) {
      buffer.append(chunk, static_cast<size_t>(n));
      return static_cast<size_t>(n);
    }
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
    return Status::ioError(errnoText("recv"));
  }
}

Result<std::pair<std::string, std::string>> splitEndpoint(const std::string& url) {
  constexpr std::string_view kScheme = "http://";
  std::string_view rest(url);
  if (!rest.starts_with(kScheme)) {
    return Status::invalidArgument("etcd endpoint \"" + url + "\" is not http://host:port");
  }
  rest.remove_prefix(kScheme.size());
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == rest.size() ||
      rest.find('/') != std::string_view::npos) {
    return Status::invalidArgument("etcd endpoint \"" + url + "\" is not http://host:port");
  }
  std::string host(rest.substr(0, colon));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::string port(rest.substr(colon + 1));
  for (char c : port) {
    if (c < '0' || c > '9') {
      return Status::invalidArgument("etcd endpoint \"" + url + "\" has a bad port");
    }
  }
  return std::pair{host, port};
}

std::string buildRequest(std::string_view method, std::string_view path, std::string_view host,
                         std::string_view body, bool hasBody) {
  std::string out;
  out.reserve(160 + body.size());
  out.append(method).append(" ").append(path).append(" HTTP/1.1\r\nHost: ").append(host);
  out.append("\r\nAccept: application/json\r\n");
  if (hasBody) {
    out.append("Content-Type: application/json\r\nContent-Length: ");
    out.append(std::to_string(body.size())).append("\r\n");
  }
  out.append("\r\n").append(body);
  return out;
}

std::string rangeBody(std::string_view key, std::optional<std::string_view> rangeEnd) {
  json request{{"key", base64Encode(key)}};
  if (rangeEnd) request["range_end"] = base64Encode(*rangeEnd);
  return request.dump();
}

}  // namespace

Result<std::unique_ptr<EtcdClient>> EtcdClient::create(EtcdClientOptions options) {
  if (options.endpoints.empty()) return Status::invalidArgument("no etcd endpoint");
  if (options.maxResponseBytes == 0) return Status::invalidArgument("maxResponseBytes is 0");
  std::vector<Endpoint> endpoints;
  for (const std::string& url : options.endpoints) {
    Result<std::pair<std::string, std::string>> split = splitEndpoint(url);
    if (!split.isOk()) return split.status();
    endpoints.push_back({split->first, split->second});
  }
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(options), std::move(endpoints)));
}

EtcdClient::EtcdClient(EtcdClientOptions options, std::vector<Endpoint> endpoints)
    : options_(std::move(options)), endpoints_(std::move(endpoints)) {}

EtcdClient::~EtcdClient() { closeFd(fd_); }

Result<EtcdClient::Answer> EtcdClient::request(std::string_view method, std::string_view path,
                                               std::string_view body) {
  Clock::time_point deadline = Clock::now() + options_.requestTimeout;
  // Every endpoint once, plus one more try where a reused connection had gone stale.
  size_t attempts = endpoints_.size() + 1;
  Status last = Status::ioError("no etcd endpoint answered");
  for (size_t attempt = 0; attempt < attempts; ++attempt) {
    bool retryable = false, sameEndpoint = false;
    Result<Answer> answer = requestOnce(method, path, body, deadline, retryable, sameEndpoint);
    if (answer.isOk()) return answer;
    closeFd(fd_);
    buffer_.clear();
    last = Status::ioError(endpoints_[current_].host + ":" + endpoints_[current_].port + ": " +
                           answer.status().message());
    if (!sameEndpoint) current_ = (current_ + 1) % endpoints_.size();
    if (!retryable || remainingMs(deadline) == 0) break;
  }
  return last;
}

Result<EtcdClient::Answer> EtcdClient::requestOnce(std::string_view method, std::string_view path,
                                                   std::string_view body,
                                                   Clock::time_point deadline, bool& retryable,
                                                   bool& sameEndpoint) {
  const Endpoint& endpoint = endpoints_[current_];
  bool reused = fd_ >= 0;
  if (!reused) {
    buffer_.clear();
    Result<int> fd = connectTo(endpoint.host, endpoint.port, deadline);
    if (!fd.isOk()) {
      retryable = true;  // nothing was sent
      return fd.status();
    }
    fd_ = *fd;
  }
  std::string wire = buildRequest(method, path, endpoint.host + ":" + endpoint.port, body,
                                  method != "GET");
  if (Status sent = sendAll(fd_, wire, deadline); !sent.isOk()) {
    // A reused connection the server had closed: try it fresh, on the same endpoint.
    retryable = reused && remainingMs(deadline) > 0;
    sameEndpoint = reused;
    return sent;
  }
  std::optional<HttpHead> head;
  size_t received = 0;
  while (!head) {
    Result<std::optional<HttpHead>> parsed = parseHttpHead(buffer_);
    if (!parsed.isOk()) return parsed.status();
    if (*parsed) {
      head = *parsed;
      break;
    }
    bool timedOut = false;
    Result<size_t> n = readSome(fd_, buffer_, remainingMs(deadline), timedOut);
    if (!n.isOk() || *n == 0) {
      if (received == 0 && reused && !timedOut) {
        retryable = true;
        sameEndpoint = true;
      } else if (received == 0 && !timedOut && !n.isOk()) {
        retryable = true;  // reset before any answer: the member went away
      }
      return n.isOk() ? Status::ioError("connection closed before the answer") : n.status();
    }
    received += *n;
  }
  buffer_.erase(0, head->headBytes);
  Answer answer;
  answer.status = head->status;
  const size_t cap = options_.maxResponseBytes;
  auto readMore = [&]() -> Status {
    bool timedOut = false;
    Result<size_t> n = readSome(fd_, buffer_, remainingMs(deadline), timedOut);
    if (!n.isOk()) return n.status();
    if (*n == 0) return Status::ioError("connection closed in the middle of the answer");
    return Status::ok();
  };
  if (head->chunked) {
    ChunkedDecoder decoder(cap);
    for (;;) {
      Result<size_t> used = decoder.feed(buffer_, answer.body);
      if (!used.isOk()) return used.status();
      buffer_.erase(0, *used);
      if (decoder.done()) break;
      if (Status more = readMore(); !more.isOk()) return more;
    }
  } else if (head->contentLength) {
    if (*head->contentLength > cap) {
      return Status::ioError("malformed etcd answer: answer of " +
                             std::to_string(*head->contentLength) +
                             " bytes is larger than the limit of " + std::to_string(cap));
    }
    while (buffer_.size() < *head->contentLength) {
      if (Status more = readMore(); !more.isOk()) return more;
    }
    answer.body = buffer_.substr(0, *head->contentLength);
    buffer_.erase(0, *head->contentLength);
  } else {
    // The body ends with the connection.
    for (;;) {
      if (buffer_.size() > cap) {
        return Status::ioError("malformed etcd answer: answer larger than the limit of " +
                               std::to_string(cap) + " bytes");
      }
      bool timedOut = false;
      Result<size_t> n = readSome(fd_, buffer_, remainingMs(deadline), timedOut);
      if (!n.isOk()) return n.status();
      if (*n == 0) break;
    }
    answer.body = std::move(buffer_);
    buffer_.clear();
    head->connectionClose = true;
  }
  if (head->connectionClose) {
    closeFd(fd_);
    buffer_.clear();
  }
  return answer;
}

Result<EtcdClient::Answer> EtcdClient::post(std::string_view path, std::string_view body) {
  Result<Answer> answer = request("POST", path, body);
  if (!answer.isOk()) return answer.status();
  if (Status status = statusOfAnswer(answer->status, answer->body); !status.isOk()) {
    return status;
  }
  return answer;
}

Result<LeaseGrant> EtcdClient::leaseGrant(int64_t ttlSeconds) {
  Result<Answer> answer =
      post("/v3/lease/grant", json{{"TTL", std::to_string(ttlSeconds)}}.dump());
  if (!answer.isOk()) return answer.status();
  return parseLeaseGrant(answer->body);
}

Result<int64_t> EtcdClient::leaseKeepAlive(int64_t id) {
  Result<Answer> answer = post("/v3/lease/keepalive", json{{"ID", std::to_string(id)}}.dump());
  if (!answer.isOk()) return answer.status();
  return parseLeaseKeepAlive(answer->body);
}

Status EtcdClient::leaseRevoke(int64_t id) {
  Result<Answer> answer = post("/v3/lease/revoke", json{{"ID", std::to_string(id)}}.dump());
  if (!answer.isOk()) return answer.status();
  Result<int64_t> revision = parseHeaderRevision(answer->body);
  return revision.status();
}

Result<int64_t> EtcdClient::put(std::string_view key, std::string_view value, int64_t lease) {
  json request{{"key", base64Encode(key)}, {"value", base64Encode(value)}};
  if (lease != 0) request["lease"] = std::to_string(lease);
  Result<Answer> answer = post("/v3/kv/put", request.dump());
  if (!answer.isOk()) return answer.status();
  return parseHeaderRevision(answer->body);
}

Result<std::optional<KeyValue>> EtcdClient::get(std::string_view key) {
  Result<Answer> answer = post("/v3/kv/range", rangeBody(key, std::nullopt));
  if (!answer.isOk()) return answer.status();
  Result<RangeAnswer> range = parseRange(answer->body);
  if (!range.isOk()) return range.status();
  for (KeyValue& kv : range->kvs) {
    if (kv.key == key) return std::optional<KeyValue>(std::move(kv));
  }
  return std::optional<KeyValue>();
}

Result<RangeAnswer> EtcdClient::range(std::string_view prefix) {
  Result<Answer> answer = post("/v3/kv/range", rangeBody(prefix, prefixRangeEnd(prefix)));
  if (!answer.isOk()) return answer.status();
  return parseRange(answer->body);
}

Result<ClaimAnswer> EtcdClient::claim(std::string_view key, std::string_view value,
                                      int64_t lease) {
  std::string k = base64Encode(key);
  json put{{"key", k}, {"value", base64Encode(value)}};
  if (lease != 0) put["lease"] = std::to_string(lease);
  json txn{
      {"compare", json::array({{{"key", k}, {"target", "CREATE"}, {"createRevision", "0"}}})},
      {"success", json::array({{{"requestPut", put}}})},
      {"failure", json::array({{{"requestRange", {{"key", k}}}}})},
  };
  Result<Answer> answer = post("/v3/kv/txn", txn.dump());
  if (!answer.isOk()) return answer.status();
  Result<TxnAnswer> parsed = parseTxn(answer->body);
  if (!parsed.isOk()) return parsed.status();
  ClaimAnswer out;
  if (parsed->succeeded) {
    out.claimed = true;
    out.token = parsed->revision;
    return out;
  }
  for (KeyValue& kv : parsed->kvs) {
    if (kv.key == key) out.owner = std::move(kv);
  }
  if (!out.owner) return Status::ioError("malformed etcd answer: a failed claim without the key");
  return out;
}

Result<bool> EtcdClient::deleteIf(std::string_view key, int64_t modRevision) {
  std::string k = base64Encode(key);
  json txn{
      {"compare", json::array({{{"key", k},
                                {"target", "MOD"},
                                {"modRevision", std::to_string(modRevision)}}})},
      {"success", json::array({{{"requestDeleteRange", {{"key", k}}}}})},
  };
  Result<Answer> answer = post("/v3/kv/txn", txn.dump());
  if (!answer.isOk()) return answer.status();
  Result<TxnAnswer> parsed = parseTxn(answer->body);
  if (!parsed.isOk()) return parsed.status();
  return parsed->succeeded && parsed->deleted > 0;
}

Result<bool> EtcdClient::health() {
  Result<Answer> answer = request("GET", "/health", {});
  if (!answer.isOk()) return answer.status();
  if (answer->status != 200) return false;
  JsonError error;
  std::optional<json> parsed = parseJson(answer->body, JsonLimits{.maxDepth = 4}, &error);
  if (!parsed || !parsed->is_object()) {
    return Status::ioError("malformed etcd answer: " +
                           (error.message.empty() ? "not an object" : error.message));
  }
  auto it = parsed->find("health");
  return it != parsed->end() && (*it == "true" || *it == true);
}

Result<EtcdClient::MemberStatus> EtcdClient::memberStatus() {
  Result<Answer> answer = post("/v3/maintenance/status", "{}");
  if (!answer.isOk()) return answer.status();
  JsonError error;
  std::optional<json> parsed = parseJson(answer->body, JsonLimits{.maxDepth = 8}, &error);
  if (!parsed || !parsed->is_object()) {
    return Status::ioError("malformed etcd answer: " +
                           (error.message.empty() ? "not an object" : error.message));
  }
  auto number = [](const json& object, const char* name) -> uint64_t {
    auto it = object.find(name);
    if (it == object.end() || !it->is_string()) return 0;
    const std::string& s = it->get_ref<const std::string&>();
    uint64_t v = 0;
    std::from_chars(s.data(), s.data() + s.size(), v);
    return v;
  };
  MemberStatus status;
  status.leaderId = number(*parsed, "leader");
  if (auto header = parsed->find("header"); header != parsed->end() && header->is_object()) {
    status.memberId = number(*header, "member_id");
  }
  if (status.memberId == 0) return Status::ioError("malformed etcd answer: no member_id");
  return status;
}

Status EtcdClient::watch(std::string_view prefix, int64_t fromRevision,
                         const std::function<void(const WatchBatch&)>& onEvents,
                         const std::atomic<bool>& stop) {
  json create{{"key", base64Encode(prefix)}, {"range_end", base64Encode(prefixRangeEnd(prefix))}};
  if (fromRevision > 0) create["start_revision"] = std::to_string(fromRevision);
  std::string body = json{{"create_request", create}}.dump();

  // Connect to the first endpoint that takes the connection, from the current one on.
  Clock::time_point deadline = Clock::now() + options_.requestTimeout;
  int fd = -1;
  Status last = Status::ioError("no etcd endpoint answered");
  size_t which = current_;
  for (size_t i = 0; i < endpoints_.size() && fd < 0; ++i) {
    which = (current_ + i) % endpoints_.size();
    Result<int> connected = connectTo(endpoints_[which].host, endpoints_[which].port, deadline);
    if (connected.isOk()) {
      fd = *connected;
    } else {
      last = connected.status();
    }
  }
  if (fd < 0) return last;
  struct Closer {
    int& fd;
    ~Closer() { closeFd(fd); }
  } closer{fd};
  const Endpoint& endpoint = endpoints_[which];
  std::string wire =
      buildRequest("POST", "/v3/watch", endpoint.host + ":" + endpoint.port, body, true);
  if (Status sent = sendAll(fd, wire, deadline); !sent.isOk()) return sent;

  std::string buffer;
  std::optional<HttpHead> head;
  while (!head) {
    Result<std::optional<HttpHead>> parsed = parseHttpHead(buffer);
    if (!parsed.isOk()) return parsed.status();
    if (*parsed) {
      head = *parsed;
      break;
    }
    if (stop.load()) return Status::ok();
    bool timedOut = false;
    Result<size_t> n = readSome(fd, buffer, std::min(kWatchPollMs, remainingMs(deadline)),
                                timedOut);
    if (timedOut && remainingMs(deadline) > 0) continue;
    if (!n.isOk()) return n.status();
    if (*n == 0) return Status::ioError("connection closed before the watch began");
  }
  buffer.erase(0, head->headBytes);
  if (head->status != 200 || !head->chunked) {
    return head->status != 200
               ? Status::ioError("etcd answered the watch with HTTP " +
                                 std::to_string(head->status))
               : Status::ioError("malformed etcd answer: the watch answer is not a stream");
  }
  // The stream: chunks of one-line JSON messages; a message may span chunks. No size bound
  // on the whole stream, only on one message.
  ChunkedDecoder decoder(SIZE_MAX);
  std::string lines;
  for (;;) {
    Result<size_t> used = decoder.feed(buffer, lines);
    if (!used.isOk()) return used.status();
    buffer.erase(0, *used);
    size_t start = 0;
    for (size_t eol; (eol = lines.find('\n', start)) != std::string::npos; start = eol + 1) {
      std::string_view line = std::string_view(lines).substr(start, eol - start);
      if (line.find_first_not_of("\r \t") == std::string_view::npos) continue;
      Result<WatchMessage> message = parseWatchMessage(line);
      if (!message.isOk()) return message.status();
      if (message->canceled) {
        return Status::ioError("etcd canceled the watch" +
                               (message->compactRevision > 0
                                    ? " (compacted at revision " +
                                          std::to_string(message->compactRevision) + ")"
                                    : std::string()) +
                               (message->cancelReason.empty() ? "" : ": " + message->cancelReason));
      }
      if (!message->events.empty()) {
        onEvents(WatchBatch{message->revision, std::move(message->events)});
      }
    }
    lines.erase(0, start);
    if (lines.size() > options_.maxResponseBytes) {
      return Status::ioError("malformed etcd answer: a watch message larger than the limit of " +
                             std::to_string(options_.maxResponseBytes) + " bytes");
    }
    if (decoder.done()) return Status::ioError("the watch stream ended");
    for (;;) {
      if (stop.load()) return Status::ok();
      bool timedOut = false;
      Result<size_t> n = readSome(fd, buffer, kWatchPollMs, timedOut);
      if (timedOut) continue;
      if (!n.isOk()) return n.status();
      if (*n == 0) return Status::ioError("the watch stream was closed");
      break;
    }
  }
}

}  // namespace dohost::cluster
