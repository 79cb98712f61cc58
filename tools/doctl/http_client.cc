#include "http_client.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "format.h"

namespace doctl {
namespace {

using Clock = std::chrono::steady_clock;

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t begin = s.find_first_not_of(" \t");
  size_t end = s.find_last_not_of(" \t\r");
  return begin == std::string::npos ? "" : s.substr(begin, end - begin + 1);
}

[[noreturn]] void unreachable(const HttpTarget& target, const std::string& why) {
  throw CliError(kExitUnreachable,
                 fmt::format("cannot reach the admin API at {}: {}", target.url, why));
}

int remainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// Waits until `fd` is ready for `events`; false on timeout.
bool waitFor(int fd, short events, Clock::time_point deadline) {
  while (true) {
    pollfd p{fd, events, 0};
    int rc = poll(&p, 1, remainingMs(deadline));
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) return false;
  }
}

int connectTo(const HttpTarget& target, Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int rc = getaddrinfo(target.host.c_str(), target.port.c_str(), &hints, &found);
  if (rc != 0) unreachable(target, gai_strerror(rc));
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> list(found, &freeaddrinfo);
  std::string lastError = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) {
      lastError = std::strerror(errno);
      continue;
    }
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) return fd;
    if (errno == EINPROGRESS && waitFor(fd, POLLOUT, deadline)) {
      int error = 0;
      socklen_t length = sizeof(error);
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
      if (error == 0) return fd;
      lastError = std::strerror(error);
    } else {
      lastError = errno == EINPROGRESS ? "timed out" : std::strerror(errno);
    }
    close(fd);
  }
  unreachable(target, lastError);
}

// Decodes a chunked body; nullopt while it is incomplete.
std::optional<std::string> dechunk(const std::string& data) {
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t lineEnd = data.find("\r\n", pos);
    if (lineEnd == std::string::npos) return std::nullopt;
    size_t size = 0;
    try {
      size = std::stoul(data.substr(pos, lineEnd - pos), nullptr, 16);
    } catch (const std::exception&) {
      throw CliError(kExitFailed, "the admin API sent a malformed chunked body");
    }
    pos = lineEnd + 2;
    if (size == 0) return out;
    if (data.size() < pos + size + 2) return std::nullopt;
    out.append(data, pos, size);
    pos += size + 2;
  }
}

// Parses `data` as a response; nullopt while more bytes are needed (unless `closed`).
std::optional<HttpResponse> parse(const std::string& data, bool closed) {
  size_t headerEnd = data.find("\r\n\r\n");
  if (headerEnd == std::string::npos) {
    if (closed) throw CliError(kExitFailed, "the admin API closed the connection mid-answer");
    return std::nullopt;
  }
  HttpResponse response;
  size_t lineEnd = data.find("\r\n");
  std::string statusLine = data.substr(0, lineEnd);
  if (statusLine.rfind("HTTP/1.", 0) != 0 || statusLine.size() < 12) {
    throw CliError(kExitFailed, "the admin API did not answer in HTTP/1.x");
  }
  response.status = std::atoi(statusLine.c_str() + 9);
  size_t pos = lineEnd + 2;
  while (pos < headerEnd) {
    size_t end = data.find("\r\n", pos);
    std::string line = data.substr(pos, end - pos);
    size_t colon = line.find(':');
    if (colon != std::string::npos) {
      response.headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
    }
    pos = end + 2;
  }
  std::string rest = data.substr(headerEnd + 4);
  if (lower(response.headers["transfer-encoding"]).find("chunked") != std::string::npos) {
    std::optional<std::string> body = dechunk(rest);
    if (!body) {
      if (closed) throw CliError(kExitFailed, "the admin API closed the connection mid-answer");
      return std::nullopt;
    }
    response.body = std::move(*body);
  } else if (auto it = response.headers.find("content-length"); it != response.headers.end()) {
    size_t length = std::strtoull(it->second.c_str(), nullptr, 10);
    if (rest.size() < length) {
      if (closed) throw CliError(kExitFailed, "the admin API closed the connection mid-answer");
      return std::nullopt;
    }
    response.body = rest.substr(0, length);
  } else {
    if (!closed) return std::nullopt;  // the body ends when the connection does
    response.body = std::move(rest);
  }
  return response;
}

}  // namespace

HttpTarget parseHttpUrl(const std::string& url) {
  HttpTarget target;
  target.url = url;
  std::string rest = url;
  if (rest.rfind("https://", 0) == 0) {
    throw CliError(kExitUsage, "--admin: only http:// is supported (the admin API has no TLS)");
  }
  if (rest.rfind("http://", 0) == 0) rest = rest.substr(7);
  if (rest.find("://") != std::string::npos) {
    throw CliError(kExitUsage, fmt::format("--admin: not an http URL: {}", url));
  }
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) {
    target.basePath = rest.substr(slash);
    while (!target.basePath.empty() && target.basePath.back() == '/') target.basePath.pop_back();
  }
  if (authority.empty()) throw CliError(kExitUsage, fmt::format("--admin: no host in {}", url));
  target.port = "80";
  if (authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) {
      throw CliError(kExitUsage, fmt::format("--admin: bad IPv6 address in {}", url));
    }
    target.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') {
        throw CliError(kExitUsage, fmt::format("--admin: bad address in {}", url));
      }
      target.port = authority.substr(close + 2);
    }
  } else {
    size_t colon = authority.rfind(':');
    target.host = authority.substr(0, colon);
    if (colon != std::string::npos) target.port = authority.substr(colon + 1);
  }
  bool numeric = !target.port.empty() &&
                 target.port.find_first_not_of("0123456789") == std::string::npos;
  if (target.host.empty() || !numeric) {
    throw CliError(kExitUsage, fmt::format("--admin: bad host or port in {}", url));
  }
  return target;
}

HttpResponse httpRequest(const HttpTarget& target, const std::string& method,
                         const std::string& path, const std::string& token, int timeoutMs) {
  Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  Socket socket(connectTo(target, deadline));
  std::string hostHeader =
      target.host.find(':') != std::string::npos ? "[" + target.host + "]" : target.host;
  std::string request = fmt::format(
      "{} {}{} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: doctl\r\nAccept: application/json\r\n"
      "Connection: close\r\nContent-Length: 0\r\n",
      method, target.basePath, path, hostHeader, target.port);
  if (!token.empty()) request += "Authorization: Bearer " + token + "\r\n";
  request += "\r\n";
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = send(socket.fd(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!waitFor(socket.fd(), POLLOUT, deadline)) unreachable(target, "timed out sending");
    } else {
      unreachable(target, std::strerror(errno));
    }
  }
  std::string data;
  char buffer[16384];
  while (true) {
    if (std::optional<HttpResponse> response = parse(data, false)) return *response;
    if (!waitFor(socket.fd(), POLLIN, deadline)) unreachable(target, "no answer (timed out)");
    ssize_t n = recv(socket.fd(), buffer, sizeof(buffer), 0);
    if (n > 0) {
      data.append(buffer, static_cast<size_t>(n));
    } else if (n == 0) {
      if (data.empty()) unreachable(target, "the connection closed without an answer");
      return *parse(data, true);
    } else if (errno != EAGAIN && errno != EINTR) {
      unreachable(target, std::strerror(errno));
    }
  }
}

}  // namespace doctl
