// Real etcd members for the cluster tests: /usr/bin/etcd (Debian etcd-server) on free
// loopback ports with a temporary data folder, one member or three. Every wait is bounded;
// the destructor kills each member by its PID and removes the folder.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <thread>

#include <doctest/doctest.h>

#include "cluster/etcd_client.h"
#include "dohost/status.h"

namespace dohost::testing {

// `count` distinct free loopback ports below the kernel's ephemeral range (32768-60999 by
// default): a port from bind(0) may be handed to any outgoing connection once it is closed,
// before a server binds it. Each chosen port is held bound until all are chosen.
Result<std::vector<int>> freePorts(int count);

class EtcdCluster {
 public:
  // Starts `members` members and waits (up to 20 s) until each answers /health with true.
  static Result<std::unique_ptr<EtcdCluster>> start(int members = 1);
  ~EtcdCluster();
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  // "http://127.0.0.1:port" of each member, in member order.
  const std::vector<std::string>& endpoints() const { return clientUrls_; }
  int size() const { return static_cast<int>(pids_.size()); }

  // SIGSTOP / SIGCONT / SIGKILL of member i (a killed member stays dead).
  void freeze(int i);
  void thaw(int i);
  void kill(int i);
  // The member that is leader, as the members still alive see it; -1 when unknown (8 s).
  int leaderIndex();

 private:
  EtcdCluster() = default;

  std::string dir_;
  std::vector<std::string> clientUrls_;
  std::vector<pid_t> pids_;  // -1 once killed
};

// Starts `members` members; fails the test if they do not come up.
inline std::unique_ptr<EtcdCluster> startEtcd(int members = 1) {
  Result<std::unique_ptr<EtcdCluster>> etcd = EtcdCluster::start(members);
  REQUIRE_MESSAGE(etcd.isOk(), etcd.status().toString());
  return std::move(*etcd);
}

// A client of `endpoints`; fails the test if it cannot be made.
inline std::unique_ptr<cluster::EtcdClient> clientOf(
    const std::vector<std::string>& endpoints,
    std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) {
  Result<std::unique_ptr<cluster::EtcdClient>> client =
      cluster::EtcdClient::create({.endpoints = endpoints, .requestTimeout = timeout});
  REQUIRE_MESSAGE(client.isOk(), client.status().toString());
  return std::move(*client);
}

// Polls `done` every 20 ms until it holds or `limit` passes.
template <class F>
bool eventually(std::chrono::milliseconds limit, F done) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

}  // namespace dohost::testing
