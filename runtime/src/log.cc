#include "dohost/log.h"

#include <cstdio>
#include <ctime>
#include <string>

#include "dohost/time.h"
#include "internal.h"
#include "utf8.h"

namespace dohost {
namespace {

LogLevel gLevel = LogLevel::kInfo;
LogFormat gFormat = LogFormat::kText;

const char* name(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
    case LogLevel::kOff: return "off";
  }
  return "?";
}

void appendQuoted(std::string& out, std::string_view s) {
  out.push_back('"');
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  out.push_back('"');
}

std::string jsonLine(const char* stamp, LogLevel level, std::string_view message,
                     std::string_view className, std::string_view id) {
  std::string line = "{\"time\":\"";
  line += stamp;
  line += "\",\"level\":\"";
  line += name(level);
  line += '"';
  if (!className.empty()) {
    line += ",\"class\":";
    appendJsonString(line, className);
  }
  if (!id.empty()) {
    line += ",\"id\":";
    appendJsonString(line, id);
  }
  line += ",\"msg\":";
  appendJsonString(line, message);
  line += "}\n";
  return line;
}

}  // namespace

// A JSON string: quotes, backslashes and control characters escaped. Text that is not valid
// UTF-8 gets each byte from 0x80 up as \u00XX, so every line stays valid JSON.
void appendJsonString(std::string& out, std::string_view s) {
  bool utf8 = isValidUtf8(s);
  out.push_back('"');
  for (char c : s) {
    auto b = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (b < 0x20 || b == 0x7f || (b >= 0x80 && !utf8)) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", b);
      out += esc;
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

void setLogFormat(LogFormat format) { gFormat = format; }

bool parseLogFormat(std::string_view text, LogFormat* out) {
  if (text == "text" || text == "json") {
    *out = text == "json" ? LogFormat::kJson : LogFormat::kText;
    return true;
  }
  return false;
}

void setLogLevel(LogLevel level) { gLevel = level; }

bool parseLogLevel(std::string_view text, LogLevel* out) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError,
                     LogLevel::kOff}) {
    if (text == name(l)) {
      *out = l;
      return true;
    }
  }
  return false;
}

bool logEnabled(LogLevel level) { return level >= gLevel && gLevel != LogLevel::kOff; }

void logLine(LogLevel level, std::string_view message, std::string_view className,
             std::string_view id) {
  if (!logEnabled(level)) return;
  int64_t ms = toUnixMillis(SystemClock().now());
  std::time_t secs = ms / 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char stamp[96];
  std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  if (gFormat == LogFormat::kJson) {
    std::string line = jsonLine(stamp, level, message, className, id);
    std::fwrite(line.data(), 1, line.size(), stderr);
    return;
  }
  std::string line = stamp;
  line += " level=";
  line += name(level);
  if (!className.empty()) {
    line += " class=";
    line.append(className);
  }
  if (!id.empty()) {
    line += " id=";
    line.append(id);
  }
  line += " msg=";
  appendQuoted(line, message);
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace dohost
