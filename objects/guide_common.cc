#include "objects/guide_common.h"

#include <cctype>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <stdexcept>

namespace dohost::objects::guide {
namespace {

std::optional<int64_t> parseInteger(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front())))
    text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
    text.remove_suffix(1);
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
int64_t daysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool isLeap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

unsigned daysInMonth(int64_t y, unsigned m) {
  static const unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && isLeap(y) ? 29 : kDays[m - 1];
}

// Reads exactly `n` digits at `pos`.
bool digits(std::string_view s, size_t& pos, size_t n, int64_t* out) {
  if (pos + n > s.size()) return false;
  int64_t v = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  pos += n;
  *out = v;
  return true;
}

bool idChar(char c, bool withIdExtras) {
  if (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == ':' || c == '-') {
    return true;
  }
  return withIdExtras && (c == '@' || c == '~');
}

std::string claimText(const json& claims, std::initializer_list<const char*> keys) {
  for (const char* key : keys) {
    auto it = claims.find(key);
    if (it == claims.end()) continue;
    if (it->is_string() && !it->get_ref<const std::string&>().empty())
      return it->get<std::string>();
    if (it->is_number_integer()) return std::to_string(it->get<int64_t>());
  }
  return {};
}

void hex(uint64_t v, int width, char* out) {
  static const char kHex[] = "0123456789abcdef";
  for (int i = width - 1; i >= 0; --i) {
    out[i] = kHex[v & 0xf];
    v >>= 4;
  }
}

std::optional<uint64_t> unhex(std::string_view s) {
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return std::nullopt;
    }
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  return v;
}

}  // namespace

// --- settings --------------------------------------------------------------------------------

Settings Settings::parse(const AppSettings& settings) {
  Settings s;
  struct Number {
    const char* key;
    int64_t* field;
    int64_t min;
    int64_t max;
  };
  const Number numbers[] = {
      {"connections_per_minute", &s.connectionsPerMinute, 1, 1'000'000'000},
      {"messages_per_minute", &s.messagesPerMinute, 1, 1'000'000'000},
      {"broadcasts_per_minute", &s.broadcastsPerMinute, 1, 1'000'000'000},
      {"rate_window_ms", &s.rateWindowMs, 1, 86'400'000},
      {"auth_timeout_ms", &s.authTimeoutMs, 1, 3'600'000},
      {"max_content_bytes", &s.maxContentBytes, 1, 1 << 20},
      {"engagement_window_ms", &s.engagementWindowMs, 1, 86'400'000},
      {"max_metrics_per_socket", &s.maxMetricsPerSocket, 1, 1000},
      {"max_metric_value_bytes", &s.maxMetricValueBytes, 1, 1 << 20},
      {"max_document_length", &s.maxDocumentUnits, 1, 10'000'000},
      {"edit_history", &s.editHistory, 1, 1'000'000},
  };
  for (const auto& [key, value] : settings) {
    if (key == "jwt_secret") {
      s.jwtSecret = value;
      continue;
    }
    if (key == "dev_token") {
      s.devToken = value;
      continue;
    }
    if (key == "default_context_id") {
      if (!value.empty() && !validId(value)) {
        throw std::invalid_argument(
            "guide: default_context_id must be 1-128 characters of "
            "A-Z a-z 0-9 . _ : @ ~ -, got " +
            quoteValue(value));
      }
      s.defaultContextId = value;
      continue;
    }
    const Number* n = nullptr;
    for (const Number& candidate : numbers) {
      if (key == candidate.key) n = &candidate;
    }
    if (n == nullptr) throw std::invalid_argument("guide: unknown setting " + key);
    std::optional<int64_t> v = parseInteger(value);
    if (!v || *v < n->min || *v > n->max) {
      throw std::invalid_argument("guide: " + key + " must be an integer in " +
                                  std::to_string(n->min) + ".." + std::to_string(n->max) +
                                  ", got " + quoteValue(value));
    }
    *n->field = *v;
  }
  return s;
}

// --- JSON ------------------------------------------------------------------------------------

std::optional<json> parseObject(std::string_view text) {
  std::optional<json> value = parseJson<json>(text);
  if (!value || !value->is_object()) return std::nullopt;
  return value;
}

std::string stringField(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::optional<std::string> optionalString(const json& object, const char* key, size_t maxBytes,
                                          const char* fallback) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::string(fallback);
  if (!it->is_string()) return std::nullopt;
  const std::string& v = it->get_ref<const std::string&>();
  if (v.empty() || v.size() > maxBytes) return std::nullopt;
  return v;
}

// --- time ------------------------------------------------------------------------------------

std::string isoTime(TimePoint t) {
  int64_t ms = toUnixMillis(t);
  int64_t seconds = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  int millis = static_cast<int>(ms - seconds * 1000);
  std::time_t tt = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char out[96];
  std::snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
  return out;
}

std::optional<TimePoint> parseIsoTime(std::string_view s) {
  size_t pos = 0;
  int64_t year, month, day, hour = 0, minute = 0, second = 0, millis = 0, offsetMinutes = 0;
  if (!digits(s, pos, 4, &year) || pos >= s.size() || s[pos++] != '-' ||
      !digits(s, pos, 2, &month) || pos >= s.size() || s[pos++] != '-' ||
      !digits(s, pos, 2, &day)) {
    return std::nullopt;
  }
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, static_cast<unsigned>(month))) {
    return std::nullopt;
  }
  if (pos < s.size()) {
    if (s[pos] != 'T' && s[pos] != 't' && s[pos] != ' ') return std::nullopt;
    ++pos;
    if (!digits(s, pos, 2, &hour) || pos >= s.size() || s[pos++] != ':' ||
        !digits(s, pos, 2, &minute)) {
      return std::nullopt;
    }
    if (pos < s.size() && s[pos] == ':') {
      ++pos;
      if (!digits(s, pos, 2, &second)) return std::nullopt;
      if (pos < s.size() && (s[pos] == '.' || s[pos] == ',')) {
        ++pos;
        size_t start = pos;
        int64_t scale = 100;
        while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
          millis += (s[pos] - '0') * scale;  // beyond milliseconds: dropped
          scale /= 10;
          ++pos;
        }
        if (pos == start) return std::nullopt;
      }
    }
    if (hour > 23 || minute > 59 || second > 60) return std::nullopt;
    if (pos < s.size()) {
      char zone = s[pos++];
      if (zone == 'Z' || zone == 'z') {
        // UTC
      } else if (zone == '+' || zone == '-') {
        int64_t oh, om = 0;
        if (!digits(s, pos, 2, &oh)) return std::nullopt;
        if (pos < s.size() && s[pos] == ':') ++pos;
        if (pos < s.size() && !digits(s, pos, 2, &om)) return std::nullopt;
        if (oh > 23 || om > 59) return std::nullopt;
        offsetMinutes = (oh * 60 + om) * (zone == '+' ? 1 : -1);
      } else {
        return std::nullopt;
      }
    }
    if (pos != s.size()) return std::nullopt;
  }
  int64_t days = daysFromCivil(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
  int64_t secondsOfDay = hour * 3600 + minute * 60 + second - offsetMinutes * 60;
  return fromUnixMillis((days * 86400 + secondsOfDay) * 1000 + millis);
}

// --- ids and names ---------------------------------------------------------------------------

std::string newUuid(std::mt19937_64& random) {
  uint64_t hi = random();
  uint64_t lo = random();
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
  char out[37];
  hex(hi >> 32, 8, out);
  out[8] = '-';
  hex((hi >> 16) & 0xffff, 4, out + 9);
  out[13] = '-';
  hex(hi & 0xffff, 4, out + 14);
  out[18] = '-';
  hex(lo >> 48, 4, out + 19);
  out[23] = '-';
  hex(lo & 0xffffffffffffULL, 12, out + 24);
  return std::string(out, 36);
}

bool validId(std::string_view id) {
  if (id.empty() || id.size() > kMaxContextIdBytes) return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return idChar(c, true); });
}

bool validMetricName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return idChar(c, false); });
}

// --- identity --------------------------------------------------------------------------------

std::optional<User> verifyToken(std::string_view token, const Settings& settings, TimePoint now,
                                std::string* error) {
  if (!settings.devToken.empty() && token == settings.devToken) return User{"dev", "dev"};
  if (settings.jwtSecret.empty()) {
    *error = "no JWT secret is configured (JWT_SECRET)";
    return std::nullopt;
  }
  std::optional<std::string> payload = verifyJwtHs256(token, settings.jwtSecret, now, error);
  if (!payload) return std::nullopt;
  std::optional<json> claims = parseObject(*payload);
  if (!claims) {
    *error = "the token payload is not a JSON object";
    return std::nullopt;
  }
  User user{claimText(*claims, {"sub", "userId"}), claimText(*claims, {"name", "username"})};
  if (user.userId.empty() || user.userId.size() > kMaxNameBytes) {
    *error = "the token needs a sub (or userId) claim of 1 to 200 characters";
    return std::nullopt;
  }
  if (user.username.size() > kMaxNameBytes) {
    *error = "name (or username) must be at most 200 characters";
    return std::nullopt;
  }
  if (user.username.empty()) user.username = user.userId;
  return user;
}

std::optional<User> userFromHeader(const Request& request) {
  std::optional<std::string> header = request.header(kUserHeader);
  if (!header) return std::nullopt;
  std::optional<json> j = parseObject(*header);
  if (!j) return std::nullopt;
  User user{stringField(*j, "userId"), stringField(*j, "username")};
  if (user.userId.empty()) return std::nullopt;
  return user;
}

// --- rate windows and attachments ------------------------------------------------------------

void RateWindow::encode(char* out) const {
  hex(static_cast<uint64_t>(startMs), 16, out);
  hex(static_cast<uint64_t>(count) & 0xffffffffULL, 8, out + 16);
}

std::string RateWindow::encode() const {
  std::string out(kEncodedBytes, '0');
  encode(out.data());
  return out;
}

std::optional<RateWindow> RateWindow::decode(std::string_view text) {
  if (text.size() != kEncodedBytes) return std::nullopt;
  auto start = unhex(text.substr(0, 16));
  auto count = unhex(text.substr(16));
  if (!start || !count || *start > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
  return RateWindow{static_cast<int64_t>(*start), static_cast<int64_t>(*count)};
}

std::string SocketAttachment::encode() const {
  std::string out;
  encodeInto(out);
  return out;
}

void SocketAttachment::encodeInto(std::string& out) const {
  out.resize(2 + RateWindow::kEncodedBytes);
  out[0] = 'g';
  rate.encode(out.data() + 1);
  out[1 + RateWindow::kEncodedBytes] = '\n';
  out += state;
}

std::optional<SocketAttachment> SocketAttachment::decode(std::string_view bytes) {
  constexpr size_t kHead = 2 + RateWindow::kEncodedBytes;
  if (bytes.size() < kHead || bytes[0] != 'g' || bytes[kHead - 1] != '\n') return std::nullopt;
  std::optional<RateWindow> rate = RateWindow::decode(bytes.substr(1, RateWindow::kEncodedBytes));
  if (!rate) return std::nullopt;
  return SocketAttachment{*rate, std::string(bytes.substr(kHead))};
}

// --- envelopes -------------------------------------------------------------------------------

std::string envelope(std::string_view type, const json& data, std::string_view id, TimePoint now) {
  return dump(json{{"type", type}, {"id", id}, {"timestamp", isoTime(now)}, {"data", data}});
}

std::string errorEnvelope(std::string_view reason, const json& data, std::string_view id,
                          TimePoint now) {
  return dump(json{{"type", "error"},
                   {"id", id},
                   {"timestamp", isoTime(now)},
                   {"data", data},
                   {"error", reason}});
}

}  // namespace dohost::objects::guide
