#include "http_parser.h"

#include <algorithm>
#include <cctype>

namespace dohost::http {
namespace {

// RFC 9110 token characters (method and header names).
bool isTokenChar(unsigned char c) {
  if (std::isalnum(c)) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

bool isToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
           return isTokenChar(static_cast<unsigned char>(c));
         });
}

bool isHex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// True if the comma-separated list `value` holds `token` (case-insensitive).
bool listHas(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    std::string_view item = trim(value.substr(0, comma));
    if (lower(item) == token) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

// Percent-encoding of a request target: every '%' starts two hex digits and none encodes NUL.
std::optional<std::string> checkTarget(std::string_view target) {
  for (size_t i = 0; i < target.size(); ++i) {
    auto c = static_cast<unsigned char>(target[i]);
    if (c <= 0x20 || c == 0x7F) return "the request target has a control character";
    if (c != '%') continue;
    if (i + 2 >= target.size() || !isHex(target[i + 1]) || !isHex(target[i + 2])) {
      return "invalid percent-encoding in the request target";
    }
    if (target[i + 1] == '0' && target[i + 2] == '0') return "the request target encodes a NUL byte";
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string_view> RequestHead::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return std::string_view(v);
  }
  return std::nullopt;
}

Outcome HeadReader::headerSectionTooLarge() const {
  return Outcome::error(431, "the header section is larger than " +
                                 std::to_string(limits_.maxHeaderBytes) + " bytes");
}

Outcome HeadReader::read(std::string_view buffered, RequestHead* head) {
  for (size_t i = scanned_; i < buffered.size(); ++i) {
    if (buffered[i] != '\n') continue;
    std::string_view line = buffered.substr(lineStart_, i - lineStart_);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t next = i + 1;
    if (headersStart_ == std::string_view::npos) {
      if (line.empty()) {
        // Empty lines before a request line are skipped (RFC 9112 2.2), a few of them.
        if (next > limits_.maxRequestLineBytes) return Outcome::error(400, "no request line");
        start_ = lineStart_ = next;
        continue;
      }
      if (line.size() > limits_.maxRequestLineBytes) {
        return Outcome::error(414, "the request line is longer than " +
                                       std::to_string(limits_.maxRequestLineBytes) + " bytes");
      }
      headersStart_ = lineStart_ = next;
      continue;
    }
    if (line.empty()) {
      scanned_ = next;
      Outcome o = parseHead(buffered.substr(start_, next - start_), limits_, head);
      if (o.kind == Outcome::kComplete) o.headBytes = next;  // with the empty lines skipped
      return o;
    }
    if (++lines_ > limits_.maxHeaderLines) {
      return Outcome::error(431, "more than " + std::to_string(limits_.maxHeaderLines) +
                                     " header lines");
    }
    if (next - headersStart_ > limits_.maxHeaderBytes) return headerSectionTooLarge();
    lineStart_ = next;
  }
  scanned_ = buffered.size();
  if (headersStart_ == std::string_view::npos) {
    if (buffered.size() - start_ > limits_.maxRequestLineBytes + 2) {
      return Outcome::error(414, "the request line is longer than " +
                                     std::to_string(limits_.maxRequestLineBytes) + " bytes");
    }
  } else if (buffered.size() - headersStart_ > limits_.maxHeaderBytes + 2) {
    return headerSectionTooLarge();  // +2: the empty line may be on its way
  }
  return Outcome{};
}

Outcome parseHead(std::string_view text, const Limits& limits, RequestHead* head) {
  *head = RequestHead();
  // Lines end with CRLF (a lone LF is accepted too, RFC 9112 2.2); a CR anywhere else is not.
  auto nextLine = [&text](std::string_view* line) -> bool {
    size_t lf = text.find('\n');
    if (lf == std::string_view::npos) return false;
    *line = text.substr(0, lf);
    text.remove_prefix(lf + 1);
    if (!line->empty() && line->back() == '\r') line->remove_suffix(1);
    return true;
  };
  std::string_view requestLine;
  if (!nextLine(&requestLine)) return Outcome::error(400, "incomplete request head");
  if (requestLine.find('\r') != std::string_view::npos || requestLine.find('\0') != std::string_view::npos) {
    return Outcome::error(400, "malformed request line");
  }
  size_t sp1 = requestLine.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : requestLine.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || requestLine.find(' ', sp2 + 1) != std::string_view::npos) {
    return Outcome::error(400, "malformed request line: expected METHOD TARGET HTTP/1.1");
  }
  std::string_view method = requestLine.substr(0, sp1);
  std::string_view target = requestLine.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = requestLine.substr(sp2 + 1);
  if (!isToken(method)) return Outcome::error(400, "malformed request method");
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || !std::isdigit(static_cast<unsigned char>(version[5])) ||
      version[6] != '.' || !std::isdigit(static_cast<unsigned char>(version[7]))) {
    return Outcome::error(400, "malformed HTTP version");
  }
  if (version[5] != '1' || (version[7] != '0' && version[7] != '1')) {
    return Outcome::error(505, "only HTTP/1.0 and HTTP/1.1 are served");
  }
  head->minorVersion = version[7] - '0';
  static const std::string_view kMethods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
  if (std::find(std::begin(kMethods), std::end(kMethods), method) == std::end(kMethods)) {
    return Outcome::error(501, "method " + std::string(method) + " is not implemented");
  }
  head->method = std::string(method);
  if (target.empty()) return Outcome::error(400, "empty request target");
  if (auto bad = checkTarget(target)) return Outcome::error(400, *bad);
  // Absolute form (http://host/path?query) names the same resource as its path and query.
  if (target.front() != '/') {
    size_t scheme = target.find("://");
    std::string s = lower(target.substr(0, scheme == std::string_view::npos ? 0 : scheme));
    if (scheme == std::string_view::npos || (s != "http" && s != "https")) {
      return Outcome::error(400, "the request target must be a path");
    }
    size_t rest = target.find_first_of("/?", scheme + 3);
    target = rest == std::string_view::npos ? std::string_view() : target.substr(rest);
  }
  size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  head->path = path.empty() ? "/" : percentDecode(path, false);
  if (q != std::string_view::npos) head->query = std::string(target.substr(q + 1));

  std::optional<uint64_t> contentLength;
  bool transferEncoding = false;
  bool chunked = false;
  std::string_view line;
  while (nextLine(&line)) {
    if (line.empty()) break;
    if (line.front() == ' ' || line.front() == '\t') {
      return Outcome::error(400, "obsolete line folding in the header section");
    }
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || !isToken(line.substr(0, colon))) {
      return Outcome::error(400, "malformed header line");
    }
    std::string name = lower(line.substr(0, colon));
    std::string_view value = trim(line.substr(colon + 1));
    for (char ch : value) {
      auto c = static_cast<unsigned char>(ch);
      if ((c < 0x20 && c != '\t') || c == 0x7F) {
        return Outcome::error(400, "header " + name + " has a control character");
      }
    }
    if (name == "content-length") {
      if (value.empty() || !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return Outcome::error(400, "Content-Length must be a non-negative decimal number");
      }
      uint64_t n = 0;
      for (char c : value) {
        n = n * 10 + static_cast<uint64_t>(c - '0');
        if (n > (uint64_t(1) << 53)) break;  // far past any limit: stop before overflowing
      }
      if (contentLength && *contentLength != n) {
        return Outcome::error(400, "Content-Length is given twice with different values");
      }
      contentLength = n;
    } else if (name == "transfer-encoding") {
      transferEncoding = true;
      chunked = chunked || listHas(value, "chunked");
    }
    head->headers.emplace_back(std::move(name), std::string(value));
  }
  if (transferEncoding) {
    if (contentLength) return Outcome::error(400, "both Content-Length and Transfer-Encoding");
    if (head->minorVersion == 0) return Outcome::error(400, "Transfer-Encoding in an HTTP/1.0 request");
    if (chunked) return Outcome::error(411, "chunked request bodies are not accepted: send Content-Length");
    return Outcome::error(501, "unsupported Transfer-Encoding");
  }
  head->contentLength = contentLength.value_or(0);
  if (head->contentLength > limits.maxBodyBytes) {
    return Outcome::error(413, "request body too large: the limit is " +
                                   std::to_string(limits.maxBodyBytes) + " bytes");
  }
  auto connection = head->header("connection");
  if (head->minorVersion == 1) {
    head->keepAlive = !(connection && listHas(*connection, "close"));
  } else {
    head->keepAlive = connection && listHas(*connection, "keep-alive");
  }
  if (auto expect = head->header("expect")) {
    if (lower(*expect) != "100-continue") return Outcome::error(417, "only Expect: 100-continue is understood");
    head->expectContinue = head->minorVersion == 1 && head->contentLength > 0;
  }
  auto upgrade = head->header("upgrade");
  head->webSocketUpgrade = upgrade && listHas(*upgrade, "websocket") && connection &&
                           listHas(*connection, "upgrade");
  Outcome ok;
  ok.kind = Outcome::kComplete;
  return ok;
}

const char* reasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
  }
}

}  // namespace dohost::http
