// Ownership: which host may run an object, as the runtime sees it. Without a cluster the
// runtime has none and runs every object here. With one (cluster::ClusterNode) an object runs
// only while this host holds a claim on it, and every commit of the object is fenced by the
// claim's token (ObjectSlot; docs/cluster.md).
//
// Thread: the loop thread, every method. resolve() answers later, on the loop thread, never
// from inside the call.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "dohost/status.h"

namespace dohost {

struct OwnerInfo {
  std::string hostId;
  std::string peer;    // where the owner's inter-host link listens (its --peer)
  int64_t token = 0;   // the revision of the ownership key: the fencing token
  bool local = false;  // this host is the owner; `token` is its claim
};

class Ownership {
 public:
  virtual ~Ownership() = default;

  virtual const std::string& selfId() const = 0;
  // Changes each time the host registers anew (after a lost lease).
  virtual uint64_t incarnation() const = 0;
  // The token of this host's claim on the object, if it holds one now. Cheap (no etcd).
  virtual std::optional<int64_t> claimToken(const std::string& className,
                                            const std::string& id) const = 0;
  // Who owns the object, claiming it for this host when nobody does (prefer-local). An error
  // when etcd cannot be reached in time, the host is fenced, or too many events already wait.
  virtual void resolve(const std::string& className, const std::string& id,
                       std::function<void(Result<OwnerInfo>)> done) = 0;
  // This host stops serving the object. `release`: the object went idle, so its ownership key
  // is deleted too (if it still carries this host's token); false after a fencing refusal,
  // when the key already belongs to someone else.
  virtual void forget(const std::string& className, const std::string& id, bool release) = 0;
  // The owner's host id as last seen (this host's claims, then the placement cache), no etcd.
  virtual std::optional<std::string> knownOwner(const std::string& className,
                                                const std::string& id) const = 0;
  // Drops what this host remembers of another host's ownership of the object (the owner said
  // it is not the owner): the next resolve asks etcd.
  virtual void dropCached(const std::string& className, const std::string& id) {
    (void)className;
    (void)id;
  }
};

}  // namespace dohost
