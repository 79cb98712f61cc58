// HTTP/1.1 request heads (RFC 9112) as the server reads them: HeadReader finds the end of a
// head in bytes that arrive in pieces and enforces the size limits while it grows (414 for the
// request line, 431 for the header section), so an oversized head is answered as soon as it
// passes a limit; parseHead checks a whole head and says what it asks for, or which status
// answers it. No I/O here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dohost/http.h"

namespace dohost::http {

struct Limits {
  size_t maxRequestLineBytes = 8 * 1024;  // method, target and version, without the CRLF
  size_t maxHeaderBytes = 32 * 1024;      // the header lines with their line ends (not the
                                          // empty line that ends them)
  size_t maxHeaderLines = 100;
  size_t maxBodyBytes = 1 << 20;          // a larger Content-Length is answered 413
};

struct RequestHead {
  std::string method;
  std::string path;   // percent-decoded
  std::string query;  // as sent (its percent-encoding checked), without the '?'
  int minorVersion = 1;
  Request::Headers headers;  // in order; names lowercase, values without surrounding spaces
  uint64_t contentLength = 0;
  bool keepAlive = true;
  bool expectContinue = false;  // "Expect: 100-continue" with a body to come
  bool webSocketUpgrade = false;  // Upgrade: websocket and Connection: upgrade

  std::optional<std::string_view> header(std::string_view lowercaseName) const;
};

struct Outcome {
  enum Kind { kIncomplete, kComplete, kError };
  Kind kind = kIncomplete;
  size_t headBytes = 0;  // kComplete: bytes of the head, through its empty line
  int status = 0;        // kError: the status that answers it
  std::string message;   // kError: why, for the answer's body
  static Outcome error(int status, std::string message) {
    return Outcome{kError, 0, status, std::move(message)};
  }
};

// Reads one request head from a buffer that grows between calls (the same bytes again plus
// what arrived since); looks at each byte once.
class HeadReader {
 public:
  explicit HeadReader(const Limits& limits) : limits_(limits) {}
  Outcome read(std::string_view buffered, RequestHead* head);
  void reset() { *this = HeadReader(limits_); }

 private:
  Outcome headerSectionTooLarge() const;
  Limits limits_;
  size_t scanned_ = 0;
  size_t start_ = 0;             // first byte of the request line (empty lines before it skipped)
  size_t lineStart_ = 0;
  size_t headersStart_ = std::string_view::npos;  // first byte after the request line
  size_t lines_ = 0;
};

// Checks a complete head (request line, header lines, empty line) and fills `head`.
Outcome parseHead(std::string_view text, const Limits& limits, RequestHead* head);

// The reason phrase of a status code.
const char* reasonPhrase(int status);

}  // namespace dohost::http
