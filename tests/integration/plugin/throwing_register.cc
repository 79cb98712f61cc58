// A plugin whose dohost_register throws: the host must refuse to start with exit code 2 and
// the plugin's message, not terminate.
#include <stdexcept>

#include "dohost/registry.h"

extern "C" void dohost_register(dohost::Registry&) {
  throw std::runtime_error("this plugin refuses to register");
}
