// Structured log lines on stderr: `time level=warn class=C id=I msg="..."`.
#pragma once

#include <string_view>

namespace dohost {

enum class LogLevel { kDebug, kInfo, kWarn, kError, kOff };

void setLogLevel(LogLevel level);
bool parseLogLevel(std::string_view text, LogLevel* out);
bool logEnabled(LogLevel level);
void logLine(LogLevel level, std::string_view message, std::string_view className = {},
             std::string_view id = {});

}  // namespace dohost
