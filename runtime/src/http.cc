#include "dohost/http.h"

#include <algorithm>
#include <cctype>

#include "dohost/errors.h"
#include "internal.h"
#include "utf8.h"

namespace dohost {
namespace {

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

int hexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percentEncode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

}  // namespace

void appendQueryFragment(std::string& query, std::string_view fragment) {
  size_t eq = fragment.find('=');
  if (!query.empty()) query.push_back('&');
  query += percentEncode(fragment.substr(0, eq));
  if (eq != std::string_view::npos) {
    query.push_back('=');
    query += percentEncode(fragment.substr(eq + 1));
  }
}

std::string percentDecode(std::string_view s, bool plusIsSpace) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hexDigit(s[i + 1]) >= 0 && hexDigit(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hexDigit(s[i + 1]) * 16 + hexDigit(s[i + 2])));
      i += 2;
    } else if (s[i] == '+' && plusIsSpace) {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool isValidIdText(std::string_view s) {
  return s.find('\0') == std::string_view::npos && isValidUtf8(s);
}

Request::Request(std::string method, std::string path, std::string query, Headers headers,
                 std::string body)
    : method_(std::move(method)),
      path_(std::move(path)),
      query_(std::move(query)),
      headers_(std::move(headers)),
      body_(std::move(body)) {
  for (auto& h : headers_) h.first = lower(h.first);
}

std::optional<std::string> Request::header(std::string_view name) const {
  for (const auto& [k, v] : headers_) {
    if (equalsIgnoreCase(k, name)) return v;
  }
  return std::nullopt;
}

void Request::setHeader(std::string name, std::string value) {
  removeHeader(name);
  headers_.emplace_back(lower(std::move(name)), std::move(value));
}

void Request::removeHeader(std::string_view name) {
  std::erase_if(headers_, [&](const auto& h) { return equalsIgnoreCase(h.first, name); });
}

std::optional<std::string> Request::queryParam(std::string_view name) const {
  std::string_view q = query_;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view part = q.substr(0, amp);
    size_t eq = part.find('=');
    std::string key = percentDecode(part.substr(0, eq), true);
    if (key == name) {
      return eq == std::string_view::npos ? std::string() : percentDecode(part.substr(eq + 1), true);
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::optional<std::string> Request::bearerToken() const {
  auto trim = [](std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
  };
  std::optional<std::string> token;
  if (auto h = header("authorization")) {
    std::string_view value = trim(*h);
    if (value.size() > 7 && equalsIgnoreCase(value.substr(0, 7), "bearer ")) {
      token = std::string(trim(value.substr(7)));
    }
  }
  if (!token) token = queryParam("token");
  if (token && token->empty()) return std::nullopt;
  return token;
}

PendingResponse Request::defer() {
  if (!pending_) throw UsageError("this request cannot be answered later (a WebSocket upgrade?)");
  return PendingResponse(pending_);
}

Response::Response(int status, std::string body, std::string contentType)
    : status_(status), body_(std::move(body)) {
  headers_.emplace_back("content-type", std::move(contentType));
}

Response Response::upgrade(WebSocket ws) {
  Response r;
  r.status_ = 101;
  r.ws_ = std::move(ws);
  return r;
}

Response Response::deferred() {
  Response r;
  r.deferred_ = true;
  return r;
}

std::optional<std::string> Response::header(std::string_view name) const {
  for (const auto& [k, v] : headers_) {
    if (equalsIgnoreCase(k, name)) return v;
  }
  return std::nullopt;
}

Response& Response::setHeader(std::string name, std::string value) {
  name = lower(std::move(name));
  std::erase_if(headers_, [&](const auto& h) { return h.first == name; });
  headers_.emplace_back(std::move(name), std::move(value));
  return *this;
}

void PendingResponse::send(Response response) {
  if (state_) state_->answer(std::move(response));
}

bool PendingResponse::isOpen() const { return state_ && state_->isOpen(); }

}  // namespace dohost
