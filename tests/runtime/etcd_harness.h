// Real etcd members for the cluster tests: /usr/bin/etcd (Debian etcd-server) on free
// loopback ports with a temporary data folder, one member or three. Every wait is bounded;
// the destructor kills each member by its PID and removes the folder.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "dohost/status.h"

namespace dohost::testing {

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

}  // namespace dohost::testing
