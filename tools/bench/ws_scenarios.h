// The WebSocket scenarios: dohost serving the bundled Broadcaster app on loopback, measured
// with the bench's own clients (ClientFleet), each figure next to the same figure for the
// floor server (floor_server.h) in the same run.
//
//   fanout  one sender and N receivers in one project; the sender's message (no `to`) goes to
//           every other client. Latency from the send to the last (and first) receiver over
//           many rounds; server CPU per delivered frame; frames per second at saturation.
//   memory  N idle sockets on one object, the object evicted: dohost's resident memory per
//           socket (VmRSS with N sockets minus VmRSS with none, over N).
//   wake    one sender, one receiver: the same message to a live object and to an object just
//           evicted through the admin API; the difference is what waking costs.
//   cluster one broadcast to N receivers spread over the hosts of a local cluster (the owner's
//           CPU and every host's, per broadcast), two clients on different hosts (what the
//           relay adds), relayed hibernated sockets (memory of edge and owner), each next to
//           one dohost alone.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "bench_util.h"

namespace dohost::bench {

struct WsBenchOptions {
  std::string selfPath;    // this executable (the floor server runs as `self --floor-server`)
  std::string dohostPath;  // the dohost binary to start
  std::string tempParent;  // where data folders and logs go (system temp when empty)
  std::vector<size_t> sockets{100, 1000, 10000};  // receivers per fan-out
  int rounds = 0;                  // latency rounds per size; 0: chosen per size
  double saturationSeconds = 2.0;  // measured part of each saturation run
  int messageBytes = 128;          // what the sender sends (dohost adds `from` on delivery)
  int wakeSamples = 100;
  size_t memorySockets = 0;        // 0: the largest of `sockets`
  // An already running dohost instead of starting one (ports on 127.0.0.1; pid optional, for
  // CPU and memory figures).
  int externalPort = 0;
  int externalAdminPort = 0;
  pid_t externalPid = 0;
  size_t clusterReceivers = 10000; // the cluster scenario's fan-out receivers
  bool floor = true;               // run the floor next to dohost
  std::string floorLoop = "epoll"; // its event loop: epoll or poll
};

Json runFanoutBench(const WsBenchOptions& options);
Json runMemoryBench(const WsBenchOptions& options);
Json runWakeBench(const WsBenchOptions& options);
// The cluster scenario: etcd and `hosts` dohost hosts on this machine, next to one host alone
// (cluster_scenario.cc).
Json runClusterBench(const WsBenchOptions& options, int hosts);

}  // namespace dohost::bench
