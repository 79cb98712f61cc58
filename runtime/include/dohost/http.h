// HTTP requests and responses as objects and app routers see them.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dohost/websocket.h"

namespace dohost {

namespace detail {
struct UpgradeContext;
struct PendingResponseState;
struct ApiAccess;  // the runtime's way in (runtime/src/internal.h); not part of the API
}  // namespace detail

class Response;

// An answer an object gives later (HopeFlow's /publish waits for acks). Obtained from
// Request::defer(); the object returns Response::deferred() from fetch and calls send() once,
// from any later event of the same object. Until then the object is not evicted ("pending
// response"). If the client went away, send() does nothing. Copyable handle.
class PendingResponse {
 public:
  PendingResponse() = default;
  void send(Response response);
  bool isOpen() const;  // not yet answered and the client is still there

 private:
  friend struct detail::PendingResponseState;
  explicit PendingResponse(std::shared_ptr<detail::PendingResponseState> s) : state_(std::move(s)) {}
  std::shared_ptr<detail::PendingResponseState> state_;
  friend class Request;
};

class Request {
 public:
  using Headers = std::vector<std::pair<std::string, std::string>>;  // names lowercased

  Request() = default;
  Request(std::string method, std::string path, std::string query = {}, Headers headers = {},
          std::string body = {});

  const std::string& method() const { return method_; }
  const std::string& path() const { return path_; }   // without the query, percent-decoded
  const std::string& query() const { return query_; }  // raw, without '?'
  const Headers& headers() const { return headers_; }
  const std::string& body() const { return body_; }
  std::string url() const { return query_.empty() ? path_ : path_ + "?" + query_; }

  std::optional<std::string> header(std::string_view name) const;  // case-insensitive
  void setHeader(std::string name, std::string value);
  void removeHeader(std::string_view name);
  std::optional<std::string> queryParam(std::string_view name) const;  // decoded, first match
  // The credential of `Authorization: Bearer <token>` (scheme case-insensitive), else the
  // `?token=` query parameter; nullopt when neither is there or it is empty.
  std::optional<std::string> bearerToken() const;

  bool isWebSocketUpgrade() const { return upgrade_ != nullptr; }

  // The client's IP address as the host's listener saw it (text, no port; IPv4 clients of a
  // dual-stack listener may show as ::ffff:a.b.c.d). Empty for requests between objects.
  const std::string& remoteAddress() const { return remoteAddress_; }

  // For fetch() handlers that answer later. REQUIRES: not a WebSocket upgrade.
  PendingResponse defer();

 private:
  // The server sets the remote address, the upgrade and the deferred answer's state.
  friend struct detail::ApiAccess;

  std::string method_ = "GET";
  std::string path_ = "/";
  std::string query_;
  Headers headers_;
  std::string body_;
  std::string remoteAddress_;
  detail::UpgradeContext* upgrade_ = nullptr;  // not owned; valid during the upgrade callback
  std::shared_ptr<detail::PendingResponseState> pending_;
};

class Response {
 public:
  using Headers = std::vector<std::pair<std::string, std::string>>;

  Response() = default;
  Response(int status, std::string body, std::string contentType = "text/plain; charset=utf-8");

  static Response text(int status, std::string body) { return Response(status, std::move(body)); }
  static Response json(int status, std::string body) {
    return Response(status, std::move(body), "application/json");
  }
  // Completes an upgrade whose socket the object accepted with ObjectState::acceptWebSocket
  // (status 101). Any other response refuses the upgrade.
  static Response upgrade(WebSocket ws);
  // The object will answer through the PendingResponse it got from Request::defer().
  static Response deferred();

  int status() const { return status_; }
  const std::string& body() const { return body_; }
  const Headers& headers() const { return headers_; }
  std::optional<std::string> header(std::string_view name) const;
  Response& setHeader(std::string name, std::string value);
  bool isDeferred() const { return deferred_; }
  // The socket an upgrade() response completes; empty for every other response.
  std::optional<WebSocket> acceptedWebSocket() const { return ws_; }

 private:
  int status_ = 200;
  std::string body_;
  Headers headers_;
  bool deferred_ = false;
  std::optional<WebSocket> ws_;
};

// Decodes %XX and '+' (in query strings) into bytes.
std::string percentDecode(std::string_view s, bool plusIsSpace);

// True for well-formed UTF-8 (RFC 3629) with no NUL byte: what an id or name taken from a
// request (query, path, token, JSON body) must be before it names an object.
bool isValidIdText(std::string_view s);

}  // namespace dohost
