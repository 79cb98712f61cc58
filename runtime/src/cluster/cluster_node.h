// ClusterNode: this host as a member of a cluster (docs/cluster.md). It owns the LeaseKeeper
// (the host lease and key), the Placement (ownership keys, their cache and its watcher) and one
// cluster worker thread that makes every blocking etcd call (claims, releases, host lists) in
// order, from a queue. Answers come back to the event loop through a post function (the
// runtime's LoopInbox, woken with lws_cancel_service).
//
// On the loop it is the runtime's Ownership: the claims this host holds (object -> token),
// resolve() (claim if unowned, else who owns it), forget(), and the state /cluster shows.
//
// Self-fencing: when the keeper cannot renew the lease it calls onFence before the lease can
// expire; the node then forgets every claim, answers every resolve with an error, and calls
// the loop-side onFence given at start (the runtime drops its instances and closes their
// sockets with 1012). Once the lease is gone the keeper registers again (a new lease and
// incarnation) and the node serves anew, claiming objects afresh.
//
// Thread: start() and leave() on the main thread before and after the loop runs; every other
// public method on the loop thread. Internally: the worker thread owns `client_` and makes
// every Placement call that blocks; the keeper's and the watcher's callbacks only post to the
// loop (or ask the keeper to rejoin, or queue work for the worker).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cluster/etcd_client.h"
#include "cluster/lease_keeper.h"
#include "cluster/placement.h"
#include "ownership.h"

namespace dohost::cluster {

struct ClusterNodeOptions {
  std::vector<std::string> endpoints;  // etcd, "http://host:port"
  std::string hostId;
  std::string peer;  // HOST:PORT of the inter-host link (published in the host key)
  std::string addr;  // where clients reach this host (published in the host key)
  std::chrono::seconds leaseTtl{5};
  std::chrono::milliseconds renewInterval{1000};
  // An event waiting for its object's owner gets an error after this long.
  std::chrono::milliseconds resolveTimeout{5000};
  // Objects whose owner is being resolved at once; more are refused at once.
  size_t maxResolving = 10000;
  // A restarted host waits at most this long for the key of its previous life to expire.
  std::chrono::milliseconds previousLeaseWait{0};  // 0: leaseTtl + 2 s
};

// What the admin API shows (GET /cluster).
struct ClusterView {
  struct Host {
    std::string hostId;
    std::string addr;
    std::string peer;
    int64_t lease = 0;
    uint64_t incarnation = 0;
    int64_t startedMs = 0;
    int64_t objectsOwned = -1;  // -1: not counted yet
  };
  std::string selfId;
  uint64_t incarnation = 0;
  int64_t lease = 0;
  int64_t leaseTtlSeconds = 0;
  std::string phase;  // "serving", "fenced" (stopped serving, lease not yet gone), "lost"
  int64_t selfFences = 0;
  std::optional<int64_t> lastFenceMs;  // unix ms
  size_t claims = 0;
  size_t resolving = 0;
  int64_t claimsTotal = 0;
  int64_t releasesTotal = 0;
  int64_t hostsAgeMs = -1;  // how old `hosts` is; -1: never read
  std::vector<Host> hosts;
};

class ClusterNode final : public Ownership {
 public:
  using Post = std::function<void(std::function<void()>)>;  // thread-safe: runs fn on the loop

  // Joins: waits for a previous life's host key to expire, grants the lease, registers the
  // host, starts the watcher and the worker (blocking, on the caller's thread). `post` hands
  // work to the loop; `onFence` runs on the loop when the host must stop serving.
  static Result<std::unique_ptr<ClusterNode>> start(ClusterNodeOptions options, Post post,
                                                    std::function<void(const std::string&)> onFence);
  // Stops the threads and leaves the lease to expire (as a crash would, but clean).
  ~ClusterNode() override;
  ClusterNode(const ClusterNode&) = delete;
  ClusterNode& operator=(const ClusterNode&) = delete;

  // Graceful leave, after the last commit: stops the worker and the watcher, then revokes the
  // lease, which deletes the host key and every ownership key of this host in one revision.
  Status leave();

  // --- Ownership (loop thread) ---------------------------------------------------------------
  const std::string& selfId() const override { return options_.hostId; }
  uint64_t incarnation() const override { return incarnation_; }
  std::optional<int64_t> claimToken(const std::string& className,
                                    const std::string& id) const override;
  void resolve(const std::string& className, const std::string& id,
               std::function<void(Result<OwnerInfo>)> done) override;
  void forget(const std::string& className, const std::string& id, bool release) override;
  std::optional<std::string> knownOwner(const std::string& className,
                                        const std::string& id) const override;
  void dropCached(const std::string& className, const std::string& id) override;
  // The peer address (--peer) of a host, as the last host list read; empty if unknown.
  std::string peerAddressOf(const std::string& hostId) const { return peerOf(hostId); }

  // --- Admin (loop thread) ---------------------------------------------------------------------
  // The last host list read (a refresh is queued when it is older than a second).
  ClusterView view();
  size_t hostCount() const { return hosts_.size(); }
  int64_t claimsTotal() const { return claimsTotal_; }
  int64_t releasesTotal() const { return releasesTotal_; }
  int64_t selfFences() const { return selfFences_; }
  size_t claims() const { return claims_.size(); }
  bool serving() const { return phase_ == Phase::kServing; }

 private:
  enum class Phase { kServing, kFenced, kLost };
  using Clock = std::chrono::steady_clock;
  struct Job {
    Clock::time_point deadline;     // not started by then: `expired` instead of `run`
    std::function<void()> run;      // on the worker
    std::function<void()> expired;  // on the worker; may be empty
  };

  ClusterNode(ClusterNodeOptions options, Post post,
              std::function<void(const std::string&)> onFence);
  void enqueue(Job job);
  void workerLoop();
  void stopThreads();
  // Loop thread.
  void finishResolve(const std::string& key, uint64_t epoch, Result<ClaimOutcome> outcome);
  void answer(const std::string& key, const Result<OwnerInfo>& owner);
  void fenceNow();
  void queueHostRefresh();
  std::string peerOf(const std::string& hostId) const;

  // Set at construction, never changed.
  const ClusterNodeOptions options_;
  const Post post_;
  const std::function<void(const std::string&)> onFence_;

  // Worker thread (start() and leave() use them while it is not running).
  std::unique_ptr<EtcdClient> client_;
  std::unique_ptr<Placement> placement_;  // cached()/forget()/setLease() from any thread
  std::unique_ptr<LeaseKeeper> keeper_;   // snapshot()/rejoin() from any thread

  // Guarded by mutex_.
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::thread worker_;

  // Loop thread only.
  Phase phase_ = Phase::kServing;
  uint64_t incarnation_ = 0;
  int64_t lease_ = 0;
  uint64_t epoch_ = 0;  // bumped on every fence: answers to older requests are void
  std::unordered_map<std::string, int64_t> claims_;  // "class/id" -> token
  std::unordered_map<std::string, std::vector<std::function<void(Result<OwnerInfo>)>>> waiting_;
  std::map<std::string, ClusterView::Host> hosts_;  // by host id
  std::optional<Clock::time_point> hostsReadAt_;
  bool hostRefreshQueued_ = false;
  int64_t claimsTotal_ = 0;
  int64_t releasesTotal_ = 0;
  int64_t selfFences_ = 0;
  std::optional<int64_t> lastFenceMs_;
};

}  // namespace dohost::cluster
