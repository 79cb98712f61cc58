#include "dohost/log.h"

#include <cstdio>
#include <ctime>
#include <string>

#include "dohost/time.h"

namespace dohost {
namespace {

LogLevel gLevel = LogLevel::kInfo;

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

}  // namespace

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
