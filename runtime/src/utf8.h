// UTF-8 validation for inbound text (RFC 3629: no overlongs, no surrogates, <= U+10FFFF).
// Utf8Validator checks a text that arrives in pieces (WebSocket fragments) and fails at the
// first byte that cannot be part of valid UTF-8, so a bad message is refused as soon as it is
// known to be bad, not when its last fragment arrives.
#pragma once

#include <cstddef>
#include <string_view>

namespace dohost {

class Utf8Validator {
 public:
  // False at the first invalid byte (and from then on).
  bool feed(std::string_view bytes) {
    if (failed_) return false;
    for (unsigned char c : bytes) {
      if (need_ == 0) {
        if (c < 0x80) continue;
        if (c >= 0xC2 && c <= 0xDF) {
          start(1, 0x80, 0xBF);
        } else if (c == 0xE0) {
          start(2, 0xA0, 0xBF);  // no overlong three-byte forms
        } else if (c == 0xED) {
          start(2, 0x80, 0x9F);  // no surrogates (U+D800..U+DFFF)
        } else if (c >= 0xE1 && c <= 0xEF) {
          start(2, 0x80, 0xBF);
        } else if (c == 0xF0) {
          start(3, 0x90, 0xBF);  // no overlong four-byte forms
        } else if (c >= 0xF1 && c <= 0xF3) {
          start(3, 0x80, 0xBF);
        } else if (c == 0xF4) {
          start(3, 0x80, 0x8F);  // nothing above U+10FFFF
        } else {
          return fail();
        }
        continue;
      }
      if (c < lo_ || c > hi_) return fail();
      lo_ = 0x80;
      hi_ = 0xBF;
      --need_;
    }
    return true;
  }
  // True when everything fed so far is valid and ends on a whole character.
  bool complete() const { return !failed_ && need_ == 0; }
  void reset() { *this = Utf8Validator(); }

 private:
  void start(int need, unsigned char lo, unsigned char hi) {
    need_ = need;
    lo_ = lo;
    hi_ = hi;
  }
  bool fail() {
    failed_ = true;
    return false;
  }
  int need_ = 0;  // continuation bytes still expected
  unsigned char lo_ = 0x80, hi_ = 0xBF;  // the range allowed for the next one
  bool failed_ = false;
};

inline bool isValidUtf8(std::string_view s) {
  Utf8Validator v;
  return v.feed(s) && v.complete();
}

}  // namespace dohost
