// Fuzz target config: the input is the text of a config file (docs/operations.md). It either
// applies, or is refused with a one-line error (what hostMain prints before exit code 2);
// nothing else may come out of it.
#include <stdexcept>

#include "config.h"
#include "dohost/settings.h"
#include "harness.h"

namespace {

void oneLine(std::string_view message) {
  if (message.empty() || message.find('\n') != std::string_view::npos) {
    dohost::fuzz::fail("a config error that is not one line: " + std::string(message));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  toml::table table;
  try {
    table = toml::parse(input, std::string_view("fuzz.toml"));
  } catch (const toml::parse_error&) {
    return 0;  // hostMain reports the parser's description and line
  }
  dohost::HostOptions options;
  try {
    dohost::applyConfig(table, options);
  } catch (const std::runtime_error& e) {
    oneLine(e.what());
  } catch (const dohost::SettingError& e) {  // a number outside its range
    oneLine(e.what());
  }
  dohost::fuzz::initialize();  // log_level and log_format may have changed the log
  return 0;
}
