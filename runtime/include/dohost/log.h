// Structured log lines on stderr, one per event. Text (the default):
//   2026-11-22T10:00:00.000Z level=warn class=C id=I msg="..."
// JSON, for log shippers (one object per line, keys in this order, class and id only when set):
//   {"time":"2026-11-22T10:00:00.000Z","level":"warn","class":"C","id":"I","msg":"..."}
#pragma once

#include <string_view>

namespace dohost {

enum class LogLevel { kDebug, kInfo, kWarn, kError, kOff };
enum class LogFormat { kText, kJson };

void setLogLevel(LogLevel level);
bool parseLogLevel(std::string_view text, LogLevel* out);
bool logEnabled(LogLevel level);
// Set before the host starts (not thread-safe against concurrent logLine calls).
void setLogFormat(LogFormat format);
bool parseLogFormat(std::string_view text, LogFormat* out);  // "text" or "json"
void logLine(LogLevel level, std::string_view message, std::string_view className = {},
             std::string_view id = {});

}  // namespace dohost
