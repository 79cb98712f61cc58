#include "dohost/settings.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "utf8.h"

namespace dohost {
namespace {

std::string numberText(double v) {
  char buf[32];
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%g", v);
  }
  return buf;
}

bool fits(double v, const NumberRange& r) {
  return v >= r.min && v <= r.max && (!r.whole || v == std::floor(v));  // NaN fits nothing
}

[[noreturn]] void refuse(std::string_view what, const NumberRange& range, std::string_view got) {
  std::string message(what);
  message += range.whole ? " must be a whole number from " : " must be a number from ";
  message += numberText(range.min) + " to " + numberText(range.max);
  if (range.unit) message += std::string(" (") + range.unit + ")";
  message += ", got ";
  message += got;
  throw SettingError(message);
}

}  // namespace

std::string quoteValue(std::string_view text) {
  static const char* hex = "0123456789abcdef";
  std::string out = "\"";
  for (size_t i = 0; i < text.size();) {
    auto c = static_cast<unsigned char>(text[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool valid = n > 0 && i + n <= text.size();
    for (size_t k = 1; valid && k < n; ++k) valid = (static_cast<unsigned char>(text[i + k]) >> 6) == 2;
    if (valid && n > 1 && isValidUtf8(text.substr(i, n))) {
      out.append(text.substr(i, n));
      i += n;
      continue;
    }
    if (!valid || n > 1) {
      out += "\\x";
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    } else if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\u00";
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    } else {
      out.push_back(static_cast<char>(c));
    }
    ++i;
  }
  out += "\"";
  return out;
}

double checkSetting(std::string_view what, double value, const NumberRange& range) {
  if (!fits(value, range)) refuse(what, range, numberText(value));
  return value;
}

double parseSetting(std::string_view what, std::string_view text, const NumberRange& range) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  std::string s(text);
  char* end = nullptr;
  double value = s.empty() ? NAN : std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0') refuse(what, range, quoteValue(s));
  if (!fits(value, range)) refuse(what, range, s);
  return value;
}

double appSetting(const AppSettings& settings, const std::string& key, const NumberRange& range,
                  double fallback) {
  auto it = settings.find(key);
  if (it == settings.end()) return fallback;
  return parseSetting(key, it->second, range);
}

}  // namespace dohost
