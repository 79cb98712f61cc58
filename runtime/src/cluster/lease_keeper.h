// LeaseKeeper: the host's membership in the cluster. It grants the host lease, registers
// /dohost/v1/hosts/<hostId> = {"addr","link","incarnation","started"} under it, and renews it
// every `interval` from a thread of its own, so that no long object handler can starve the
// renewals (scale-out.md 5.1).
//
// Self-fencing (scale-out.md 5.7 B): the keeper tracks
//   deadline = send time of the last acknowledged renewal + TTL
// on the monotonic clock. etcd cannot expire the lease before that deadline, so when
// `deadline - margin` passes without a successful renewal it calls onFence(), once: the host
// must stop serving then (start no event, close its sockets with 1012, drop its objects). A
// fenced keeper renews no more; it revokes the lease as soon as etcd answers again (or learns
// it has expired) and then calls onLost(). When etcd itself says the lease is gone while the
// keeper serves, it calls onFence() and then onLost(). Either way, after onLost() the host owns
// nothing and rejoin() registers it again with a new lease and a new incarnation.
//
// Thread: start(), rejoin(), snapshot(), stop() and leave() may be called from any thread, but
// not from inside a callback except rejoin() and snapshot(). The callbacks run on the keeper's
// own thread, one at a time, and must not block for long (the integrator posts them to its
// loop). start() and leave() block on etcd; stop() blocks at most for one request timeout.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "cluster/etcd_client.h"
#include "dohost/status.h"

namespace dohost::cluster {

struct LeaseKeeperOptions {
  EtcdClientOptions etcd;
  std::string hostId;  // unique in the cluster; no '/'
  std::string addr;    // where clients reach the host (the host key's "addr")
  std::string link;    // where other hosts reach it (the host key's "link")
  // The lease TTL (scale-out.md: 5 s, renewed every second). etcd grants at least 2 s.
  std::chrono::seconds ttl{5};
  std::chrono::milliseconds interval{1000};
  // How long before the deadline the host fences itself: covers clock drift over a TTL and
  // the time the host needs to stop serving.
  std::chrono::milliseconds margin{1000};
  std::string keyPrefix = "/dohost/v1/hosts/";
};

struct LeaseKeeperCallbacks {
  std::function<void()> onFence;  // stop serving now
  std::function<void()> onLost;   // the lease is gone; everything owned under it is lost
  // A registration made by rejoin() (not the first one, which start() returns).
  std::function<void(int64_t lease, uint64_t incarnation)> onRegistered;
};

class LeaseKeeper {
 public:
  using Clock = std::chrono::steady_clock;

  enum class Phase { kServing, kFenced, kLost, kStopped };

  struct Snapshot {
    Phase phase = Phase::kStopped;
    int64_t lease = 0;
    int64_t ttlSeconds = 0;       // as granted
    uint64_t incarnation = 0;
    uint64_t renewals = 0;        // acknowledged renewals of the current lease
    Clock::time_point lastAckSent;  // send time of the last acknowledged renewal (or grant)
    Clock::time_point deadline;     // lastAckSent + TTL
    std::optional<Clock::time_point> fencedAt;
    std::optional<Clock::time_point> lostAt;
  };

  // Grants the lease and registers the host (blocking, on the caller's thread), then starts
  // the renewal thread. REQUIRES: 0 < interval < ttl - margin, margin >= 0.
  static Result<std::unique_ptr<LeaseKeeper>> start(LeaseKeeperOptions options,
                                                    LeaseKeeperCallbacks callbacks);
  // stop().
  ~LeaseKeeper();
  LeaseKeeper(const LeaseKeeper&) = delete;
  LeaseKeeper& operator=(const LeaseKeeper&) = delete;

  // Asks the keeper thread to register again, with a new lease and incarnation, once fenced
  // or lost (a fenced lease is revoked first, if etcd answers). Ignored while serving.
  void rejoin();
  // Stops the thread and leaves the lease to expire (a crash-like stop, for tests and for
  // the integrator's error paths). Idempotent.
  void stop();
  // Graceful stop: stops the thread, then revokes the lease, which deletes the host key and
  // every ownership key under it in one revision. Blocking.
  Status leave();

  Snapshot snapshot() const;
  // The host key, "/dohost/v1/hosts/<hostId>".
  std::string hostKey() const { return options_.keyPrefix + options_.hostId; }

 private:
  LeaseKeeper(LeaseKeeperOptions options, LeaseKeeperCallbacks callbacks,
              std::unique_ptr<EtcdClient> client);
  // Grants a lease and puts the host key under it; fills state_ (with mutex_ held by the
  // caller through `lock`, released around the etcd calls).
  Status registerHost(std::unique_lock<std::mutex>& lock);
  void run();
  void serve(std::unique_lock<std::mutex>& lock);
  void probeAfterFence(std::unique_lock<std::mutex>& lock);
  void fence(std::unique_lock<std::mutex>& lock);
  void lose(std::unique_lock<std::mutex>& lock);
  std::chrono::milliseconds timeoutUntil(Clock::time_point limit) const;

  // Set at construction, never changed.
  const LeaseKeeperOptions options_;
  const LeaseKeeperCallbacks callbacks_;

  // Keeper thread only (start() and leave() use it while the thread is not running).
  std::unique_ptr<EtcdClient> client_;
  Clock::time_point nextRenewal_;

  // Guarded by mutex_.
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  Snapshot state_;
  bool stopping_ = false;
  bool rejoinRequested_ = false;

  std::thread thread_;
};

}  // namespace dohost::cluster
