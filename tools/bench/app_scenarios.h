// Scenarios on two bundled apps, against a real dohost on loopback with the bench's own
// clients (ClientFleet):
//
//   chat     the `channels` app (issue 6): N members in one channel with HS256 tokens. Latency
//            of one message at a time from the send to the last member (durability FULL), next
//            to the floor server at the same size; then K members sending at once with a
//            window: messages delivered to every member per second, server CPU per delivered
//            frame, and a check that every message is stored exactly once and that every
//            member saw the same order.
//   guide    the `guide` app (issue 10, guide_scenario.cc): a ChatRoom of N members, latency to
//            the last member next to the floor; the cost of the rate-limit check per message.
//   publish  the `hopeflow` app (issue 5): S sockets of one user subscribe and ack every
//            envelope; publishers POST /publish on keep-alive HTTP connections. Publishes per
//            second with every ack in, latency per publish.
#pragma once

#include <cstddef>
#include <string>

#include "bench_util.h"

namespace dohost::bench {

struct AppBenchOptions {
  std::string selfPath;    // this executable (the floor server runs as `self --floor-server`)
  std::string dohostPath;  // the dohost binary to start
  std::string tempParent;  // where data folders go (system temp when empty)
  size_t members = 1000;   // chat, guide: members of the channel (room)
  size_t senders = 10;     // chat: members sending at once in the throughput part
  size_t window = 4;       // chat: messages in flight per sender in the throughput part
  int rounds = 0;          // chat: latency rounds (0: 200,000 / N, between 30 and 2,000)
  double seconds = 3.0;    // measured seconds of each throughput run
  size_t publishSockets = 10;     // publish: sockets of the user
  size_t publishConnections = 4;  // publish: keep-alive HTTP connections in the throughput run
  bool floor = true;
  std::string floorLoop = "epoll";
};

Json runChatBench(const AppBenchOptions& options);
Json runPublishBench(const AppBenchOptions& options);
Json runGuideBench(const AppBenchOptions& options);

// The figures of one scenario as a table on stdout.
void printChatTable(const Json& chat);
void printPublishTable(const Json& publish);
void printGuideTable(const Json& guide);

}  // namespace dohost::bench
