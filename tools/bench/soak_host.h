// The dohost process of a soak run: started on fixed loopback ports and one data folder,
// killed with SIGKILL, started again on the same folder, stopped with SIGTERM at the end. Each
// start is a lifetime with its own log file. Samples its memory, open files and metrics.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bench_util.h"

namespace dohost::bench {

// The bundled apps the soak drives, in the order of their ports. Every bundled app belongs
// here: the host would start one left out on its default address, outside the soak's ports.
enum class SoakApp { kChannels, kBroadcaster, kBridge, kHopeflow, kGuide };
inline constexpr SoakApp kSoakApps[] = {SoakApp::kChannels, SoakApp::kBroadcaster, SoakApp::kBridge,
                                        SoakApp::kHopeflow, SoakApp::kGuide};
inline constexpr size_t kSoakAppCount = sizeof kSoakApps / sizeof kSoakApps[0];
const char* appName(SoakApp app);

// One look at the host. Open files are sorted by what they are: sockets, SQLite files (an
// object database with its -wal and -shm), anything else.
struct HostSample {
  double at = 0;        // seconds since the soak started
  int lifetime = 0;     // which start of the host (1 = the first)
  double up = 0;        // seconds since this start
  int64_t rssKib = 0;
  int fds = 0;
  int socketFds = 0;
  int dbFds = 0;
  int dbFiles = 0;      // distinct databases among dbFds
  int otherFds = 0;
  // From /metrics, summed over classes (-1 when unreadable).
  double websocketsOpen = -1;
  double objectsLive = -1;
  double evictions = -1;
  double rehydrations = -1;
  double commits = -1;
  // Open files that are neither the host's WebSockets nor its databases: listeners, HTTP
  // connections in flight, the event loop's own, logs.
  int residualFds() const {
    return fds - dbFds - static_cast<int>(websocketsOpen < 0 ? socketFds : websocketsOpen);
  }
};

class SoakHost {
 public:
  // `dir` holds the data folder and the logs; `env` is set for the host (secrets, settings).
  SoakHost(std::string dohostPath, std::string dir, double idleEvict,
           std::vector<std::pair<std::string, std::string>> env);
  ~SoakHost();
  SoakHost(const SoakHost&) = delete;
  SoakHost& operator=(const SoakHost&) = delete;

  // A new lifetime: starts the host and waits for every listener (and the admin API).
  bool start(std::string* error);
  // SIGKILL, at once.
  void kill();
  // SIGTERM and wait; true when the host exited with status 0 within `seconds`.
  bool stop(double seconds, std::string* how);
  // False when the host ended without being told to; `how` says how, with its log's tail.
  bool alive(std::string* how);

  HostSample sample(double at);

  int port(SoakApp app) const { return ports_[static_cast<size_t>(app)]; }
  int adminPort() const { return adminPort_; }
  pid_t pid() const { return child_ ? child_->pid() : -1; }
  int lifetime() const { return lifetime_; }
  double upSeconds() const;
  const std::string& dataDir() const { return dataDir_; }
  // Sanitizer reports (ASan, UBSan, LeakSanitizer) in the logs of every lifetime so far: the
  // first line of each, with the log it is in.
  std::vector<std::string> sanitizerReports() const;
  // Lines at level=error in every log so far.
  size_t errorLines() const;

 private:
  std::string logPath(int lifetime) const;

  std::string dohostPath_;
  std::string dir_;
  std::string dataDir_;
  double idleEvict_;
  std::vector<std::pair<std::string, std::string>> env_;
  int ports_[kSoakAppCount] = {};
  int adminPort_ = 0;
  int lifetime_ = 0;
  SteadyClock::time_point startedAt_;
  std::unique_ptr<ChildProcess> child_;
};

}  // namespace dohost::bench
