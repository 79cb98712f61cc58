// A user's own host: the example classes of counter.h and their app next to the bundled apps,
// linked against libdohost (meson dependency dohost_dep). docs/api.md shows it.
#include "objects/examples/counter.h"
#include "objects/register_all.h"

// [doc:main]
#include "dohost/host.h"

int main(int argc, char** argv) {
  dohost::Registry registry;
  dohost::objects::registerAll(registry);       // optional: the bundled apps
  counter_example::registerCounter(registry);  // Counter, Room and the "counter" app
  return dohost::hostMain(argc, argv, registry);  // same flags and config as dohost
}
// [/doc:main]
