// dohost: the host with the four bundled apps. Flags and config: docs/operations.md.
#include "dohost/host.h"
#include "objects/register_all.h"

int main(int argc, char** argv) {
  dohost::Registry registry;
  dohost::objects::registerAll(registry);
  return dohost::hostMain(argc, argv, registry);
}
