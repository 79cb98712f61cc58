// Small pieces every scenario of dohost-bench uses: sample statistics, reading another
// process's CPU time and resident memory from /proc, starting and stopping child processes,
// free loopback ports, a blocking HTTP/1.1 client for the admin API, and temporary folders.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <initializer_list>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace dohost::bench {

using Json = nlohmann::ordered_json;
using SteadyClock = std::chrono::steady_clock;

// Microseconds between two steady-clock readings.
inline double microsBetween(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

// Median and tail of a set of samples (nearest-rank percentiles).
struct Summary {
  size_t count = 0;
  double median = 0;
  double p99 = 0;
  double mean = 0;
  double min = 0;
  double max = 0;
};
Summary summarize(std::vector<double> samples);
Json toJson(const Summary& s);

// CPU time a process has used so far, in seconds. `schedSeconds` sums the nanosecond
// counters of every thread (/proc/PID/task/*/schedstat); `tickSeconds` is utime+stime from
// /proc/PID/stat (clock ticks, usually 10 ms resolution). Both cover user and kernel time.
struct ProcCpu {
  double schedSeconds = 0;
  double tickSeconds = 0;
};
ProcCpu readCpu(pid_t pid);
// CPU time every core of the machine spent busy so far (not idle, not waiting for I/O), in
// seconds, from /proc/stat. Busy time of the machine minus the server's and the bench's own
// over an interval is what other processes took: the noise of that measurement.
double machineBusySeconds();
// VmRSS of a process in KiB (0 when it cannot be read).
int64_t readRssKib(pid_t pid);

// Raises the open-file limit to the hard limit; returns the new soft limit.
int64_t raiseFileLimit();

// A port on 127.0.0.1 that was free a moment ago.
int freeLoopbackPort();

// A process started by the bench. Its stderr and stdout go to `logPath`.
class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool start(const std::vector<std::string>& argv, const std::string& logPath, std::string* error);
  pid_t pid() const { return pid_; }
  bool running();
  // The wait status of a process that running() found exited (-1 until then).
  int exitStatus() const { return exitStatus_; }
  // SIGKILL and reap. The bench never needs a graceful stop: data folders are thrown away.
  void kill();
  // SIGTERM, then waits up to `seconds` for the exit (SIGKILL after that). Returns the wait
  // status (as waitpid gives it), or -1 when the process had to be killed.
  int terminate(double seconds);
  // The last lines of the log, for error messages.
  std::string logTail(size_t maxBytes = 2000) const;

 private:
  pid_t pid_ = -1;
  int exitStatus_ = -1;
  std::string logPath_;
};

struct HttpResult {
  int status = 0;  // 0: no answer (connection failed or timed out)
  std::string body;
};
// One blocking request on a new connection to 127.0.0.1:port, `Connection: close`.
HttpResult httpRequest(int port, const std::string& method, const std::string& path,
                       const std::string& body = {}, int timeoutMs = 5000);

// A keep-alive HTTP/1.1 connection to 127.0.0.1 with blocking sockets, for a publisher
// thread: one request at a time, the answer read by Content-Length (or chunked).
class KeepAliveHttp {
 public:
  explicit KeepAliveHttp(int port) : port_(port) {}
  ~KeepAliveHttp() { closeFd(); }
  KeepAliveHttp(const KeepAliveHttp&) = delete;
  KeepAliveHttp& operator=(const KeepAliveHttp&) = delete;

  // Sends `request` (complete, with headers); returns the status (0 on failure) and the body.
  // A kept-alive connection the server closed meanwhile is retried once on a new one.
  int roundTrip(const std::string& request, std::string* body);
  uint64_t connections() const { return connections_; }
  uint64_t reconnects() const { return reconnects_; }

 private:
  bool openFd();
  void closeFd();
  bool sendAll(const std::string& s);
  bool fill();
  int readResponse(std::string* body);

  int port_;
  int fd_ = -1;
  bool used_ = false;
  std::string buf_;
  uint64_t connections_ = 0, reconnects_ = 0;
};

// The sum of a metric over its series (every label set) in Prometheus text, such as the
// admin API's /metrics; -1 when the metric is absent.
double metricSum(const std::string& text, const std::string& name);
// The same, read from the host's admin API on `adminPort`; -1 if unreadable.
double metricTotal(int adminPort, const std::string& name);

// A fresh folder under `parent` (the system temp folder when empty), removed on destruction.
class TempFolder {
 public:
  explicit TempFolder(const std::string& parent = {});
  ~TempFolder();
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Sleeps the calling thread.
void sleepMillis(int ms);

// True when something accepts a TCP connection on 127.0.0.1:port.
bool tcpConnects(int port);
// Waits up to `seconds` for a listener on `port`; fails early if `child` (nullable) exited.
bool waitListening(int port, ChildProcess* child, double seconds, std::string* error);

// The number at `path` in a JSON result, or -1 when absent; and microseconds for a table.
double num(const nlohmann::json& j, std::initializer_list<const char*> path);
std::string fmtUs(double v);

}  // namespace dohost::bench
