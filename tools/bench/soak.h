// dohost-soak: a long run of the real dohost under churn, to find what only time finds (leaks,
// crashes, lost writes). Thousands of client sockets of every bundled app connect, chat, fall
// quiet until their objects are evicted, wake them again, leave and come back, while the host
// is killed with SIGKILL at random moments and restarted on the same data folder. Every write
// an app acknowledged is looked up again after each restart; the host's memory and open files
// are sampled at comparable points. See docs/operations.md ("Soak").
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace dohost::bench {

struct SoakOptions {
  std::string dohostPath;  // the host binary to run
  std::string doctlPath;   // doctl, for the final offline check (skipped when empty)
  std::string tempParent;  // where the data folder goes (system temp when empty)
  double seconds = 1800;       // load phase; the final drain and checks come after it
  size_t sockets = 5000;       // client sockets, over all apps (at most 10,000)
  double killEvery = 120;      // mean seconds between SIGKILLs (uniform in 0.5x..1.5x); 0: never
  uint64_t seed = 1;
  double idleEvict = 2;        // the host's --idle-evict
  double rate = 0.2;           // messages per second of each socket while its object is active
  double reportEvery = 60;     // seconds between the printed figures
  double warmup = 20;          // seconds after a restart's reconnects before the first sample
  double rssTolerance = 0.25;  // growth allowed over a comparable sample, as a fraction...
  double rssSlackMib = 24;     // ...or this many MiB, whichever is larger
  int64_t fdTolerance = 64;    // open files beyond sockets and databases allowed to grow by
  size_t publishers = 2;       // threads posting hopeflow's POST /publish
  std::string jsonOut;         // the figures as JSON in this file
  bool keepData = false;       // keep the data folder (it is kept anyway when the run fails)
  bool summaryLine = false;    // end with the test summary line tools/test sums
};

// Runs the soak; returns the process exit code (0: no loss, no growth, no crash).
int runSoak(const SoakOptions& options);

}  // namespace dohost::bench
