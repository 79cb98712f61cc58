// A small HTTP/1.1 client over a TCP socket, for the admin API (plain http only: the admin API
// listens on loopback by default).
#pragma once

#include <map>
#include <string>

namespace doctl {

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;
};

struct HttpTarget {
  std::string host;      // without brackets for IPv6
  std::string port;      // "80" when the URL gives none
  std::string basePath;  // "" or "/prefix", prepended to every request path
  std::string url;       // as given, for messages
};

// Parses "http://HOST[:PORT][/PATH]" or "HOST:PORT" (the form of dohost's --admin flag).
// Throws CliError (exit 2) for anything else, https included.
HttpTarget parseHttpUrl(const std::string& url);

// Sends one request (Connection: close) and reads the whole answer. `token`, when not empty,
// goes in `Authorization: Bearer`. Throws CliError (exit 3) if the host cannot be reached or
// does not answer within `timeoutMs`.
HttpResponse httpRequest(const HttpTarget& target, const std::string& method,
                         const std::string& path, const std::string& token, int timeoutMs = 10000);

}  // namespace doctl
