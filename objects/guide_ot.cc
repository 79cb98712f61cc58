#include "objects/guide_ot.h"

namespace dohost::objects::guide::ot {
namespace {

bool isHigh(char16_t c) { return c >= 0xD800 && c <= 0xDBFF; }
bool isLow(char16_t c) { return c >= 0xDC00 && c <= 0xDFFF; }

void appendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace

int64_t transformInsert(int64_t position, const Edit& applied) {
  if (applied.kind == Edit::Kind::kInsert) {
    // Text inserted at the same place earlier stays in front (the server's order decides).
    return applied.position <= position ? position + applied.length : position;
  }
  int64_t start = applied.position;
  int64_t end = applied.position + applied.length;
  if (position <= start) return position;
  if (position >= end) return position - applied.length;
  return start;  // inside the deleted text: where it was
}

void transformDelete(Ranges& ranges, const Edit& applied) {
  Ranges out;
  out.reserve(ranges.size() + 1);
  if (applied.kind == Edit::Kind::kInsert) {
    int64_t at = applied.position;
    int64_t n = applied.length;
    for (auto [a, b] : ranges) {
      if (at <= a) {
        out.emplace_back(a + n, b + n);
      } else if (at >= b) {
        out.emplace_back(a, b);
      } else {
        out.emplace_back(a, at);  // the inserted text survives between the two halves
        out.emplace_back(at + n, b + n);
      }
    }
  } else {
    int64_t start = applied.position;
    int64_t end = applied.position + applied.length;
    auto map = [&](int64_t x) { return x <= start ? x : (x >= end ? x - applied.length : start); };
    for (auto [a, b] : ranges) {
      int64_t na = map(a);
      int64_t nb = map(b);
      if (na >= nb) continue;  // already deleted
      if (!out.empty() && out.back().second == na) {
        out.back().second = nb;
      } else {
        out.emplace_back(na, nb);
      }
    }
  }
  ranges = std::move(out);
}

void apply(std::u16string& text, const Edit& edit) {
  if (edit.kind == Edit::Kind::kInsert) {
    text.insert(static_cast<size_t>(edit.position), edit.text);
  } else {
    text.erase(static_cast<size_t>(edit.position), static_cast<size_t>(edit.length));
  }
}

bool splitsSurrogatePair(const std::u16string& text, int64_t position) {
  if (position <= 0 || position >= static_cast<int64_t>(text.size())) return false;
  return isHigh(text[static_cast<size_t>(position - 1)]) &&
         isLow(text[static_cast<size_t>(position)]);
}

std::optional<std::u16string> toUtf16(std::string_view s) {
  std::u16string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    uint32_t cp;
    size_t n;
    if (c < 0x80) {
      cp = c;
      n = 1;
    } else if ((c & 0xE0) == 0xC0) {
      cp = c & 0x1F;
      n = 2;
    } else if ((c & 0xF0) == 0xE0) {
      cp = c & 0x0F;
      n = 3;
    } else if ((c & 0xF8) == 0xF0) {
      cp = c & 0x07;
      n = 4;
    } else {
      return std::nullopt;
    }
    if (i + n > s.size()) return std::nullopt;
    for (size_t k = 1; k < n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return std::nullopt;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return std::nullopt;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out.push_back(static_cast<char16_t>(0xD800 + (cp >> 10)));
      out.push_back(static_cast<char16_t>(0xDC00 + (cp & 0x3FF)));
    } else {
      out.push_back(static_cast<char16_t>(cp));
    }
    i += n;
  }
  return out;
}

std::string toUtf8(std::u16string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char16_t c = text[i];
    if (isHigh(c) && i + 1 < text.size() && isLow(text[i + 1])) {
      appendUtf8(out, 0x10000 + ((static_cast<uint32_t>(c) - 0xD800) << 10) +
                          (static_cast<uint32_t>(text[i + 1]) - 0xDC00));
      ++i;
    } else if (isHigh(c) || isLow(c)) {
      appendUtf8(out, 0xFFFD);
    } else {
      appendUtf8(out, c);
    }
  }
  return out;
}

}  // namespace dohost::objects::guide::ot
