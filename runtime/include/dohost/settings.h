// Numbers in settings: the host's flags and config keys, and the settings apps read from
// [apps.NAME] and DOHOST_<APP>_<KEY>. Every number has a type (whole or not) and a range; a
// value outside it is a SettingError whose one-line message names the setting. The host turns
// it into "dohost: ..." and exit code 2.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "dohost/registry.h"

namespace dohost {

class SettingError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

struct NumberRange {
  double min = 0;
  double max = 0;
  bool whole = false;          // integers only
  const char* unit = nullptr;  // "seconds", "bytes": shown in the message
};

// `value` if it lies in `range`; otherwise throws SettingError naming `what`.
double checkSetting(std::string_view what, double value, const NumberRange& range);
// `text` (a decimal number, surrounding spaces allowed) as a number in `range`.
double parseSetting(std::string_view what, std::string_view text, const NumberRange& range);
// `text` in double quotes on one line, for an error message that shows what was given: a
// JSON string, with quotes, backslashes and control characters escaped (\n, \t, \u0001).
std::string quoteValue(std::string_view text);
// An app's setting `key` as a number in `range`, or `fallback` when it is not set.
double appSetting(const AppSettings& settings, const std::string& key, const NumberRange& range,
                  double fallback);

}  // namespace dohost
