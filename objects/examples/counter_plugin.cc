// The example classes of counter.h as a plugin: `dohost --plugin ./libcounter_plugin.so`.
// It resolves dohost's symbols from the executable that loads it. docs/api.md shows it.
#include "objects/examples/counter.h"

// [doc:plugin]
extern "C" void dohost_register(dohost::Registry& registry) {
  counter_example::registerCounter(registry);
}
// [/doc:plugin]
