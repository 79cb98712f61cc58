// Fuzz target config: the input is the text of a config file (docs/operations.md). It either
// applies, or is refused with a one-line error (what hostMain prints before exit code 2);
// nothing else may come out of it.
#include <stdexcept>

#include "config.h"
#include "harness.h"

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
    std::string_view message = e.what();
    if (message.empty() || message.find('\n') != std::string_view::npos) {
      dohost::fuzz::fail("a config error that is not one line: " + std::string(message));
    }
  }
  dohost::fuzz::initialize();  // log_level and log_format may have changed the log
  return 0;
}
