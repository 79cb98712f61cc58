// Placement: who owns which object, in etcd (scale-out.md 5.2, 5.5).
//
//   /dohost/v1/owners/<class>/<id64hex> -> {"host","incarnation"}   under the owner's host lease
//
// claim() is one transaction (IF create_revision == 0 THEN put ELSE range); its revision is
// the object's fencing token. release() deletes the key only while it still carries that
// token. lookup() answers from a cache first; a watcher thread on /dohost/v1/ (hosts and
// owners) drops cache entries when their key is deleted or a host departs, and reports hosts
// joining and leaving through callbacks.
//
// Thread: every method that talks to etcd (claim, release, lookup on a miss, hosts, and
// startWatching) blocks for up to the client's request timeout and must run on the thread
// that owns the EtcdClient given at construction (a cluster worker thread, never the event
// loop). cached(), forget(), setLease() and stopWatching() may be called from any thread.
// The callbacks run on the watcher thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <variant>
#include <vector>

#include "cluster/etcd_client.h"
#include "dohost/status.h"

namespace dohost::cluster {

struct PlacementOptions {
  // For the watcher's own connection (the same cluster as the client's).
  EtcdClientOptions etcd;
  std::string hostId;
  std::string prefix = "/dohost/v1/";
  // Cache entries kept at most; past it an arbitrary entry makes room.
  size_t maxCacheEntries = 100000;
};

struct PlacementCallbacks {
  std::function<void(const std::string& hostId)> onHostLeft;    // its host key was deleted
  std::function<void(const std::string& hostId)> onHostJoined;  // its host key was put
};

// This host now owns the object; `token` fences every write it makes for it.
struct Claimed {
  int64_t token = 0;
};

// Another host (or this host under an older lease) owns the object.
struct OwnedBy {
  std::string hostId;
  uint64_t incarnation = 0;
  int64_t token = 0;  // the ownership key's mod_revision
  int64_t lease = 0;
};

using ClaimOutcome = std::variant<Claimed, OwnedBy>;

// A host key's value.
struct HostInfo {
  std::string hostId;
  std::string addr;
  std::string link;
  uint64_t incarnation = 0;
  int64_t started = 0;  // unix milliseconds
  int64_t lease = 0;
};

class Placement {
 public:
  // `client` outlives the Placement and is used only from the thread that calls the blocking
  // methods.
  Placement(EtcdClient& client, PlacementOptions options, PlacementCallbacks callbacks = {});
  // stopWatching().
  ~Placement();
  Placement(const Placement&) = delete;
  Placement& operator=(const Placement&) = delete;

  // The lease ownership keys are put under, and the incarnation written in them; set after
  // each (re)registration of the LeaseKeeper. Until then claim() fails.
  void setLease(int64_t lease, uint64_t incarnation);

  // "<prefix>owners/<class>/<id64hex>".
  std::string ownerKey(std::string_view className, std::string_view id64hex) const;
  std::string hostKey(std::string_view hostId) const;

  // Claims the object for this host, or says who owns it. invalidArgument for a class with a
  // '/' or an id that is not 64 lowercase hex. A key found under this host's current lease
  // (a retried claim whose first answer was lost) counts as Claimed with its mod_revision.
  Result<ClaimOutcome> claim(std::string_view className, std::string_view id64hex);
  // Deletes the ownership key if it still carries `token`. False when it did not (already
  // gone, or claimed again since): nothing was deleted.
  Result<bool> release(std::string_view className, std::string_view id64hex, int64_t token);
  // The owner, from the cache or else from etcd (then cached); nullopt when unowned.
  Result<std::optional<OwnedBy>> lookup(std::string_view className, std::string_view id64hex);
  // The cached owner only; never blocks on etcd.
  std::optional<OwnedBy> cached(std::string_view className, std::string_view id64hex) const;
  // Drops a cache entry (the owner answered "not owner").
  void forget(std::string_view className, std::string_view id64hex);
  size_t cacheSize() const;
  // Every registered host.
  Result<std::vector<HostInfo>> hosts();

  // Starts the watcher thread from the current revision (read now, blocking, on the caller's
  // thread, so no change made after this returns is missed). Once at most.
  Status startWatching();
  // Stops and joins the watcher (within about 50 ms). Idempotent.
  void stopWatching();

 private:
  void watchLoop(int64_t fromRevision);
  void applyEvents(const WatchBatch& batch);
  void cachePut(const std::string& key, OwnedBy owner);
  Result<std::string> checkedKey(std::string_view className, std::string_view id64hex) const;

  // Set at construction, never changed.
  EtcdClient& client_;
  const PlacementOptions options_;
  const PlacementCallbacks callbacks_;
  std::unique_ptr<EtcdClient> watchClient_;  // watcher thread only

  // Guarded by mutex_.
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  int64_t lease_ = 0;
  uint64_t incarnation_ = 0;
  std::unordered_map<std::string, OwnedBy> cache_;  // ownership key -> owner

  std::atomic<bool> stop_{false};
  std::thread watcher_;
};

}  // namespace dohost::cluster
