#include "dohost/settings.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "internal.h"

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
  std::string out;
  appendJsonString(out, text);
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
