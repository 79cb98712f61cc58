#include "format.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <ctime>

#include <fmt/format.h>

namespace doctl {
namespace {

constexpr int64_t kMsPerSecond = 1000;
constexpr int64_t kMsPerMinute = 60 * kMsPerSecond;
constexpr int64_t kMsPerHour = 60 * kMsPerMinute;
constexpr int64_t kMsPerDay = 24 * kMsPerHour;
// A table's last column is cut to the terminal only if at least this much of it still shows.
constexpr size_t kMinCutWidth = 16;

// The first `width` code points of `s`, with "…" as the last one when `s` was longer.
std::string cut(const std::string& s, size_t width) {
  if (displayWidth(s) <= width) return s;
  if (width == 0) return "";
  size_t keep = width - 1;
  size_t i = 0;
  for (size_t points = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (points == keep) break;
      ++points;
    }
  }
  return s.substr(0, i) + "…";
}

void printPadded(std::FILE* out, const std::string& s, size_t width) {
  std::fputs(s.c_str(), out);
  for (size_t w = displayWidth(s); w < width; ++w) std::fputc(' ', out);
}

// Reads digits from `text` at `pos`; false if there are none.
bool readNumber(std::string_view text, size_t& pos, size_t digits, int& value) {
  if (pos + digits > text.size()) return false;
  value = 0;
  for (size_t i = 0; i < digits; ++i) {
    char c = text[pos + i];
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    value = value * 10 + (c - '0');
  }
  pos += digits;
  return true;
}

std::optional<int64_t> parseRfc3339(std::string_view text) {
  size_t pos = 0;
  int year, month, day, hour = 0, minute = 0, second = 0;
  if (!readNumber(text, pos, 4, year) || pos >= text.size() || text[pos++] != '-' ||
      !readNumber(text, pos, 2, month) || pos >= text.size() || text[pos++] != '-' ||
      !readNumber(text, pos, 2, day)) {
    return std::nullopt;
  }
  int64_t fractionMs = 0;
  int64_t offsetMs = 0;
  if (pos < text.size()) {
    char sep = text[pos++];
    if (sep != 'T' && sep != 't' && sep != ' ') return std::nullopt;
    if (!readNumber(text, pos, 2, hour) || pos >= text.size() || text[pos++] != ':' ||
        !readNumber(text, pos, 2, minute) || pos >= text.size() || text[pos++] != ':' ||
        !readNumber(text, pos, 2, second)) {
      return std::nullopt;
    }
    if (pos < text.size() && text[pos] == '.') {
      ++pos;
      size_t start = pos;
      int64_t scale = 100;
      while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
        fractionMs += (text[pos] - '0') * scale;
        scale /= 10;
        ++pos;
      }
      if (pos == start) return std::nullopt;
    }
    if (pos >= text.size()) return std::nullopt;  // RFC 3339 needs a zone
    char zone = text[pos++];
    if (zone == 'Z' || zone == 'z') {
      if (pos != text.size()) return std::nullopt;
    } else if (zone == '+' || zone == '-') {
      int oh, om;
      if (!readNumber(text, pos, 2, oh) || pos >= text.size() || text[pos++] != ':' ||
          !readNumber(text, pos, 2, om) || pos != text.size() || oh > 23 || om > 59) {
        return std::nullopt;
      }
      offsetMs = (oh * kMsPerHour + om * kMsPerMinute) * (zone == '+' ? 1 : -1);
    } else {
      return std::nullopt;
    }
  }
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 ||
      second > 60) {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  time_t seconds = timegm(&tm);
  return static_cast<int64_t>(seconds) * kMsPerSecond + fractionMs - offsetMs;
}

}  // namespace

void Table::print(std::FILE* out) const {
  std::vector<size_t> widths(headers_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], displayWidth(row[i]));
    }
  };
  measure(headers_);
  for (const auto& row : rows_) measure(row);
  // 0: not a terminal, nothing is cut.
  size_t terminal = out == stdout ? terminalWidth().value_or(0) : 0;
  auto printRow = [&](const std::vector<std::string>& row) {
    size_t used = 0;
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      bool last = i + 1 == row.size() || i + 1 == widths.size();
      if (last) {
        std::string cell = row[i];
        // Cut only when a useful part of the cell still fits; otherwise let the line wrap.
        if (terminal > used + kMinCutWidth) cell = cut(cell, terminal - used);
        std::fputs(cell.c_str(), out);
      } else {
        printPadded(out, row[i], widths[i]);
        std::fputs("  ", out);
        used += widths[i] + 2;
      }
    }
    std::fputc('\n', out);
  };
  printRow(headers_);
  for (const auto& row : rows_) printRow(row);
}

void Fields::print(std::FILE* out) const {
  size_t width = 0;
  for (const auto& [label, value] : rows_) width = std::max(width, displayWidth(label));
  for (const auto& [label, value] : rows_) {
    printPadded(out, label, width);
    std::fputs("  ", out);
    std::fputs(value.c_str(), out);
    std::fputc('\n', out);
  }
}

std::optional<size_t> terminalWidth() {
  if (!isatty(STDOUT_FILENO)) return std::nullopt;
  struct winsize size {};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) != 0 || size.ws_col == 0) return 80;
  return size.ws_col;
}

size_t displayWidth(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

bool isValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t length;
    uint32_t point;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      length = 2;
      point = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      length = 3;
      point = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      length = 4;
      point = c & 0x07;
    } else {
      return false;
    }
    if (i + length > s.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      unsigned char next = static_cast<unsigned char>(s[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      point = (point << 6) | (next & 0x3F);
    }
    static constexpr uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (point < kSmallest[length] || point > 0x10FFFF || (point >= 0xD800 && point <= 0xDFFF)) {
      return false;
    }
    i += length;
  }
  return true;
}

std::string hexBytes(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) {
    unsigned char b = static_cast<unsigned char>(c);
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

std::string displayBytes(std::string_view bytes) {
  if (!isValidUtf8(bytes)) return "0x" + hexBytes(bytes);
  std::string out;
  out.reserve(bytes.size());
  for (char c : bytes) {
    unsigned char b = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (b < 0x20 || b == 0x7F) {
      out += fmt::format("\\x{:02x}", b);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t n = (static_cast<unsigned char>(bytes[i]) << 16) |
                 (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                 static_cast<unsigned char>(bytes[i + 2]);
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(kAlphabet[(n >> 6) & 63]);
    out.push_back(kAlphabet[n & 63]);
  }
  if (i < bytes.size()) {
    uint32_t n = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) n |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? kAlphabet[(n >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

void putBytes(json& object, const std::string& field, std::string_view bytes) {
  if (isValidUtf8(bytes)) {
    object[field] = std::string(bytes);
  } else {
    object[field] = base64(bytes);
    object[field + "Encoding"] = "base64";
  }
}

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string formatTime(int64_t ms) {
  int64_t seconds = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  int64_t millis = ms - seconds * 1000;
  time_t t = static_cast<time_t>(seconds);
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr) return std::to_string(ms);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
}

std::string formatTimeShort(int64_t ms) {
  std::string full = formatTime(ms);
  return full.size() == 24 ? full.substr(0, 19) + "Z" : full;
}

std::string formatRelative(int64_t ms, int64_t now) {
  int64_t delta = ms - now;
  int64_t magnitude = delta < 0 ? -delta : delta;
  if (magnitude < kMsPerSecond) return "now";
  std::string text;
  if (magnitude >= kMsPerDay) {
    text = fmt::format("{}d{}h", magnitude / kMsPerDay, magnitude % kMsPerDay / kMsPerHour);
  } else if (magnitude >= kMsPerHour) {
    text = fmt::format("{}h{}m", magnitude / kMsPerHour, magnitude % kMsPerHour / kMsPerMinute);
  } else if (magnitude >= kMsPerMinute) {
    text = fmt::format("{}m{}s", magnitude / kMsPerMinute,
                       magnitude % kMsPerMinute / kMsPerSecond);
  } else {
    text = fmt::format("{}s", magnitude / kMsPerSecond);
  }
  return delta > 0 ? "in " + text : text + " ago";
}

std::string formatSize(int64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  return fmt::format("{:.1f} {}", value, kUnits[unit]);
}

std::string shortId(const std::string& id, bool wide) {
  return wide || id.size() <= 16 ? id : id.substr(0, 16);
}

std::optional<int64_t> parseDuration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  double total = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t start = pos;
    while (pos < text.size() && (std::isdigit(static_cast<unsigned char>(text[pos])) ||
                                 text[pos] == '.')) {
      ++pos;
    }
    if (pos == start) return std::nullopt;
    double number = 0;
    try {
      size_t used = 0;
      std::string digits(text.substr(start, pos - start));
      number = std::stod(digits, &used);
      if (used != digits.size()) return std::nullopt;
    } catch (const std::exception&) {
      return std::nullopt;
    }
    size_t unitStart = pos;
    while (pos < text.size() && std::isalpha(static_cast<unsigned char>(text[pos]))) ++pos;
    std::string_view unit = text.substr(unitStart, pos - unitStart);
    int64_t scale;
    if (unit == "ms") {
      scale = 1;
    } else if (unit == "s") {
      scale = kMsPerSecond;
    } else if (unit == "m") {
      scale = kMsPerMinute;
    } else if (unit == "h") {
      scale = kMsPerHour;
    } else if (unit == "d") {
      scale = kMsPerDay;
    } else if (unit == "w") {
      scale = 7 * kMsPerDay;
    } else {
      return std::nullopt;
    }
    total += number * static_cast<double>(scale);
  }
  if (!std::isfinite(total) || total > 1e15) return std::nullopt;
  return static_cast<int64_t>(std::llround(total));
}

std::optional<int64_t> parseSince(std::string_view text, int64_t now) {
  if (std::optional<int64_t> ago = parseDuration(text)) return now - *ago;
  return parseRfc3339(text);
}

std::string encodePathSegment(std::string_view s) {
  std::string out;
  for (char c : s) {
    unsigned char b = static_cast<unsigned char>(c);
    if (std::isalnum(b) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(c);
    } else {
      out += fmt::format("%{:02X}", b);
    }
  }
  return out;
}

}  // namespace doctl
