// The storage scenario: the runtime driven in this process (no network), one object on real
// SQLite files in a temporary folder, every operation one event (implicit transaction and
// commit included), each timed on its own.
#pragma once

#include <string>

#include "bench_util.h"

namespace dohost::bench {

struct StorageBenchOptions {
  std::string tempParent;   // where the temporary data folder goes (system temp when empty)
  double secondsPerFigure = 2.0;  // each figure stops after this long (or its count)
  int keys = 1000;          // keys in the object (the list figure lists all of them)
  int valueBytes = 100;
};

// Returns {"figures": [...]} with one entry per figure: name, unit, summary, ops/s.
Json runStorageBench(const StorageBenchOptions& options);

}  // namespace dohost::bench
