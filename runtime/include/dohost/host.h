// The host process: listeners for apps and the admin API, one event loop, the runtime.
// A user's own main() registers classes and calls hostMain():
//
//   int main(int argc, char** argv) {
//     dohost::Registry registry;
//     dohost::objects::registerAll(registry);   // the bundled apps, if wanted
//     registry.addClass<Counter>("Counter");
//     registry.addApp({"counter", "127.0.0.1:8800", makeCounterApp});
//     return dohost::hostMain(argc, argv, registry);
//   }
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "dohost/registry.h"

namespace dohost {

struct ListenerOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string tlsCert;  // PEM files; both set: the listener speaks TLS (https, wss)
  std::string tlsKey;
};

struct HostOptions {
  std::string dataDir = "./data";
  ListenerOptions admin{"127.0.0.1", 9090};
  std::string adminToken;                            // DOHOST_ADMIN_TOKEN; empty: open
  std::map<std::string, ListenerOptions> apps;       // overrides of the registry's defaults
  std::vector<std::string> appsOff;                  // --app NAME=off
  std::map<std::string, AppSettings> appSettings;    // [apps.NAME] keys and environment
  double idleEvictSeconds = 10;                      // Cloudflare hibernates after ~10 s idle
  bool durabilityFull = true;                        // SQLite synchronous=FULL
  size_t maxMessageBytes = 1 << 20;                  // larger inbound messages: close 1009
  size_t maxQueuedBytesPerSocket = 8 << 20;          // a slower reader is closed with 1008
  size_t maxSocketsPerObject = 32768;                // Cloudflare's limit; more: 503
  size_t maxAttachmentBytes = 16 * 1024;             // Cloudflare's limit
  size_t maxSchedulesPerObject = 1000;               // named schedules per object; more: throws
  size_t maxRequestBodyBytes = 1 << 20;              // larger HTTP bodies: 413
  size_t maxRequestLineBytes = 8 * 1024;             // longer request lines: 414
  size_t maxHeaderBytes = 32 * 1024;                 // larger header sections: 431
  size_t maxHeaderLines = 100;                       // more header lines: 431
  int httpRequestTimeoutSeconds = 30;                // a request not in by then: 408
  int httpIdleTimeoutSeconds = 5;                    // an idle kept-alive connection closes
  int pingIntervalSeconds = 30;                      // ping an idle socket after this long
  int pingTimeoutSeconds = 30;                       // then hang up if nothing came back
  double alarmRetryBaseSeconds = 2;                  // Cloudflare: 2 s doubling, 6 retries
  int alarmMaxRetries = 6;
  size_t maxJsonDepth = 64;                          // deeper JSON from outside is an error
  // An object whose constructor, fetch or alarm fails this many times within the window is put
  // in the failed state: its clients get 503 (or close 1011) until the backoff has passed.
  int objectFailureLimit = 5;
  double objectFailureWindowSeconds = 60;
  double objectFailureBackoffSeconds = 10;      // doubles each time it fails again
  double objectFailureBackoffMaxSeconds = 600;
  std::vector<std::string> plugins;
  // The admin API's read-only inspection (.../kv, .../sql; the dashboard): it runs on the loop
  // thread, so each request is bounded in time, rows and bytes.
  double adminSqlTimeoutSeconds = 0.5;               // then the statement is interrupted
  size_t adminSqlMaxRows = 1000;                     // per statement (key-value entries per page)
  size_t adminSqlMaxBytes = 4 << 20;                 // text and blob bytes per statement
  // A cluster of hosts (docs/cluster.md). No endpoints: one host on its own, as without a
  // cluster. With them, --host-id and --peer are needed too.
  std::vector<std::string> clusterEndpoints;         // etcd, "http://HOST:PORT"
  std::string hostId;                                // unique in the cluster
  std::string peer;                                  // HOST:PORT where other hosts reach it
  std::string clusterToken;                          // the links' shared secret; empty: none
  double clusterLeaseTtlSeconds = 5;                 // the host lease; etcd's minimum is 2 s
  double clusterLeaseRenewSeconds = 1;               // renewed this often
  double clusterResolveTimeoutSeconds = 5;           // an event waits this long for its owner
  size_t clusterMaxResolving = 10000;                // objects waiting for etcd at once
  double clusterLeaveSpreadSeconds = 3;              // SIGTERM: the 1012 closes spread this long
};

// Runs the host until SIGINT/SIGTERM; returns the process exit code (0 after a clean
// shutdown, 2 when a listener cannot be opened or a number is outside its range).
int runHost(const HostOptions& options, const Registry& registry);

// Parses flags and the optional TOML config (see docs/operations.md), loads plugins into
// `registry`, and runs the host. Bad configuration: one line on stderr and exit code 2.
int hostMain(int argc, char** argv, Registry& registry);

}  // namespace dohost
