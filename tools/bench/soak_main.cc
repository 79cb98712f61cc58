// dohost-soak: the real dohost under hours-like churn in minutes (see soak.h and
// docs/operations.md, "Soak"). `tools/soak` builds it and runs it against a build folder.
#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>

#include "soak.h"

int main(int argc, char** argv) {
  dohost::bench::SoakOptions o;
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  std::filesystem::path tools = ec ? std::filesystem::path(".") : self.parent_path().parent_path();
  o.dohostPath = (tools / "dohost" / "dohost").string();
  o.doctlPath = (tools / "doctl" / "doctl").string();

  CLI::App app{"dohost-soak: thousands of sockets of every bundled app against a real dohost, with "
               "SIGKILL restarts; fails on a lost acknowledged write, a crash or growth"};
  app.add_option("--seconds,--duration", o.seconds, "seconds of load (the final drain and checks follow)")
      ->check(CLI::Range(10.0, 86400.0));
  app.add_option("--sockets", o.sockets, "client sockets over all apps (20 to 10,000)")
      ->check(CLI::Range(20, 10000));
  app.add_option("--kill-every", o.killEvery, "mean seconds between SIGKILLs of the host (0: never)")
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--seed", o.seed, "seed of every random choice");
  app.add_option("--idle-evict", o.idleEvict, "the host's --idle-evict, seconds")->check(CLI::Range(0.2, 60.0));
  app.add_option("--rate", o.rate, "messages per second of each socket while its object is active")
      ->check(CLI::Range(0.001, 10.0));
  app.add_option("--report-every", o.reportEvery, "seconds between the printed figures")
      ->check(CLI::Range(1.0, 3600.0));
  app.add_option("--warmup", o.warmup, "seconds after a restart's reconnects before the comparable sample")
      ->check(CLI::Range(0.0, 600.0));
  app.add_option("--rss-tolerance", o.rssTolerance, "RSS growth allowed over a comparable sample, a fraction")
      ->check(CLI::Range(0.0, 100.0));
  app.add_option("--rss-slack-mib", o.rssSlackMib, "RSS growth always allowed, MiB")->check(CLI::Range(0.0, 1e6));
  app.add_option("--fd-tolerance", o.fdTolerance,
                 "growth allowed of the open files that are neither sockets nor databases")
      ->check(CLI::Range(0, 100000));
  app.add_option("--publishers", o.publishers, "threads posting hopeflow publishes")->check(CLI::Range(1, 64));
  app.add_option("--dohost", o.dohostPath, "the dohost binary")->check(CLI::ExistingFile);
  app.add_option("--doctl", o.doctlPath, "doctl, for the final offline check ('' skips it)");
  app.add_option("--tmp", o.tempParent, "where the data folder goes (default: the system temp folder)");
  app.add_option("--json-out", o.jsonOut, "write the figures as JSON to this file");
  app.add_flag("--keep-data", o.keepData, "keep the data folder and logs after a run that passed");
  app.add_flag("--summary-line", o.summaryLine, "end with a test summary line (for tools/test)");
  CLI11_PARSE(app, argc, argv);
  if (!o.doctlPath.empty() && !std::filesystem::exists(o.doctlPath)) {
    std::fprintf(stderr, "dohost-soak: no doctl at %s (pass --doctl '' to skip the offline check)\n",
                 o.doctlPath.c_str());
    return 2;
  }
  return dohost::bench::runSoak(o);
}
