#include "cluster/cluster_node.h"

#include <algorithm>
#include <variant>

#include <nlohmann/json.hpp>

#include "dohost/json.h"
#include "dohost/log.h"

namespace dohost::cluster {
namespace {

using std::chrono::milliseconds;

constexpr char kPrefix[] = "/dohost/v1/";
constexpr milliseconds kHostListMaxAge{1000};

int64_t unixMillis() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string keyOf(const std::string& className, const std::string& id) {
  return className + "/" + id;
}

std::pair<std::string, std::string> splitKey(const std::string& key) {
  size_t slash = key.find('/');
  return {key.substr(0, slash), slash == std::string::npos ? std::string() : key.substr(slash + 1)};
}

// Each etcd request must fail well inside a TTL, so that a claim stuck on a frozen etcd does
// not hold the queue for long.
milliseconds requestTimeoutFor(std::chrono::seconds ttl) {
  return std::clamp(std::chrono::duration_cast<milliseconds>(ttl) / 2, milliseconds(500),
                    milliseconds(2000));
}

}  // namespace

ClusterNode::ClusterNode(ClusterNodeOptions options, Post post,
                         std::function<void(const std::string&)> onFence)
    : options_(std::move(options)), post_(std::move(post)), onFence_(std::move(onFence)) {}

Result<std::unique_ptr<ClusterNode>> ClusterNode::start(
    ClusterNodeOptions options, Post post, std::function<void(const std::string&)> onFence) {
  if (options.leaseTtl < std::chrono::seconds(2)) {
    return Status::invalidArgument("the lease TTL must be at least 2 s (etcd's minimum)");
  }
  if (options.renewInterval <= milliseconds::zero() || options.renewInterval >= options.leaseTtl) {
    return Status::invalidArgument("the lease renewal interval must be shorter than the TTL");
  }
  EtcdClientOptions etcd{options.endpoints, requestTimeoutFor(options.leaseTtl)};
  Result<std::unique_ptr<EtcdClient>> client = EtcdClient::create(etcd);
  if (!client.isOk()) return client.status();
  std::unique_ptr<ClusterNode> node(new ClusterNode(std::move(options), std::move(post),
                                                    std::move(onFence)));
  ClusterNode* self = node.get();
  node->client_ = std::move(*client);
  const ClusterNodeOptions& o = node->options_;

  // A host restarted under the same id waits for its previous lease to expire; another live
  // host with that id keeps renewing its key, and this one gives up.
  std::string hostKey = std::string(kPrefix) + "hosts/" + o.hostId;
  milliseconds wait = o.previousLeaseWait > milliseconds::zero()
                          ? o.previousLeaseWait
                          : std::chrono::duration_cast<milliseconds>(o.leaseTtl) + milliseconds(2000);
  auto waitUntil = Clock::now() + wait;
  bool logged = false;
  while (true) {
    Result<std::optional<KeyValue>> existing = node->client_->get(hostKey);
    if (!existing.isOk()) {
      return Status::ioError("cannot reach etcd at " + o.endpoints.front() + ": " +
                             existing.status().message());
    }
    if (!*existing) break;
    if (Clock::now() >= waitUntil) {
      return Status::invalidArgument("host id \"" + o.hostId + "\" is in use by a live host (" +
                                     hostKey + " is still held)");
    }
    if (!logged) {
      logLine(LogLevel::kInfo, "cluster: waiting for the previous lease of host " + o.hostId +
                                   " to expire");
      logged = true;
    }
    std::this_thread::sleep_for(milliseconds(100));
  }

  LeaseKeeperOptions keeperOptions;
  keeperOptions.etcd = etcd;
  keeperOptions.hostId = o.hostId;
  keeperOptions.addr = o.addr;
  keeperOptions.link = o.peer;
  keeperOptions.ttl = o.leaseTtl;
  keeperOptions.interval = o.renewInterval;
  // Fence a second before the deadline, or half the slack left by the renewals if less.
  keeperOptions.margin = std::min(milliseconds(1000),
                                  (std::chrono::duration_cast<milliseconds>(o.leaseTtl) -
                                   o.renewInterval) / 2);
  LeaseKeeperCallbacks keeperCallbacks;
  keeperCallbacks.onFence = [self] { self->post_([self] { self->fenceNow(); }); };
  keeperCallbacks.onLost = [self] {
    self->post_([self] {
      self->phase_ = Phase::kLost;
      logLine(LogLevel::kWarn, "cluster: the host lease is gone; registering again");
      self->keeper_->rejoin();
    });
  };
  keeperCallbacks.onRegistered = [self](int64_t lease, uint64_t incarnation) {
    self->placement_->setLease(lease, incarnation);
    self->post_([self, lease, incarnation] {
      self->phase_ = Phase::kServing;
      self->lease_ = lease;
      self->incarnation_ = incarnation;
      logLine(LogLevel::kWarn, "cluster: registered again (lease " + std::to_string(lease) +
                                   ", incarnation " + std::to_string(incarnation) +
                                   "); serving, with fresh claims");
      self->queueHostRefresh();
    });
  };
  Result<std::unique_ptr<LeaseKeeper>> keeper =
      LeaseKeeper::start(keeperOptions, std::move(keeperCallbacks));
  if (!keeper.isOk()) {
    return Status::ioError("cannot join the cluster: " + keeper.status().message());
  }
  node->keeper_ = std::move(*keeper);
  LeaseKeeper::Snapshot snap = node->keeper_->snapshot();
  node->lease_ = snap.lease;
  node->incarnation_ = snap.incarnation;

  PlacementOptions placementOptions;
  placementOptions.etcd = etcd;
  placementOptions.hostId = o.hostId;
  PlacementCallbacks placementCallbacks;
  placementCallbacks.onHostLeft = [self](const std::string& hostId) {
    self->post_([self, hostId] {
      self->hosts_.erase(hostId);
      logLine(LogLevel::kInfo, "cluster: host " + hostId + " left");
      self->queueHostRefresh();
    });
  };
  placementCallbacks.onHostJoined = [self](const std::string& hostId) {
    self->post_([self, hostId] {
      logLine(LogLevel::kInfo, "cluster: host " + hostId + " joined");
      self->queueHostRefresh();
    });
  };
  node->placement_ = std::make_unique<Placement>(*node->client_, placementOptions,
                                                 std::move(placementCallbacks));
  node->placement_->setLease(snap.lease, snap.incarnation);
  if (Status watching = node->placement_->startWatching(); !watching.isOk()) {
    return Status::ioError("cannot watch the cluster: " + watching.message());
  }
  node->worker_ = std::thread([self] { self->workerLoop(); });
  node->queueHostRefresh();
  logLine(LogLevel::kInfo, "cluster: joined as " + o.hostId + " (lease " +
                               std::to_string(snap.lease) + ", TTL " +
                               std::to_string(snap.ttlSeconds) + " s, incarnation " +
                               std::to_string(snap.incarnation) + ")");
  return node;
}

ClusterNode::~ClusterNode() {
  stopThreads();
  keeper_.reset();  // stops renewing; the lease expires
}

void ClusterNode::stopThreads() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    wake_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
  if (placement_) placement_->stopWatching();
}

Status ClusterNode::leave() {
  stopThreads();
  if (!keeper_) return Status::ok();
  Status left = keeper_->leave();
  if (left.isOk()) {
    logLine(LogLevel::kInfo, "cluster: left; the lease is revoked (" +
                                 std::to_string(claims_.size()) +
                                 " ownership keys released with it)");
  }
  claims_.clear();
  return left;
}

void ClusterNode::enqueue(Job job) {
  std::lock_guard lock(mutex_);
  if (stopping_) return;
  jobs_.push_back(std::move(job));
  wake_.notify_one();
}

void ClusterNode::workerLoop() {
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
    if (stopping_) return;
    Job job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    if (Clock::now() > job.deadline) {
      if (job.expired) job.expired();
    } else {
      job.run();
    }
    lock.lock();
  }
}

// --- Ownership ------------------------------------------------------------------------------

std::optional<int64_t> ClusterNode::claimToken(const std::string& className,
                                               const std::string& id) const {
  if (phase_ != Phase::kServing) return std::nullopt;
  auto it = claims_.find(keyOf(className, id));
  if (it == claims_.end()) return std::nullopt;
  return it->second;
}

void ClusterNode::resolve(const std::string& className, const std::string& id,
                          std::function<void(Result<OwnerInfo>)> done) {
  if (phase_ != Phase::kServing) {
    post_([done = std::move(done)] {
      done(Status::ioError("this host stopped serving objects: its etcd lease could not be "
                           "renewed; it registers again once etcd answers"));
    });
    return;
  }
  std::string key = keyOf(className, id);
  auto [it, fresh] = waiting_.try_emplace(key);
  it->second.push_back(std::move(done));
  if (!fresh) return;  // one resolve per object at a time; its answer is everyone's
  if (waiting_.size() > options_.maxResolving) {
    post_([this, key] { answer(key, Status::ioError("too many objects waiting for etcd")); });
    return;
  }
  // A known owner elsewhere needs no round trip: the watcher drops the entry when it goes.
  if (std::optional<OwnedBy> cached = placement_->cached(className, id);
      cached && cached->hostId != options_.hostId) {
    OwnerInfo owner{cached->hostId, peerOf(cached->hostId), cached->token, false};
    post_([this, key, owner] { answer(key, owner); });
    return;
  }
  uint64_t epoch = epoch_;
  Job job;
  job.deadline = Clock::now() + options_.resolveTimeout;
  job.run = [this, className, id, key, epoch] {
    Result<ClaimOutcome> outcome = placement_->claim(className, id);
    post_([this, key, epoch, outcome = std::move(outcome)]() mutable {
      finishResolve(key, epoch, std::move(outcome));
    });
  };
  job.expired = [this, key, epoch] {
    post_([this, key, epoch] {
      finishResolve(key, epoch,
                    Status::ioError("etcd did not answer within " +
                                    std::to_string(options_.resolveTimeout.count()) + " ms"));
    });
  };
  enqueue(std::move(job));
}

void ClusterNode::finishResolve(const std::string& key, uint64_t epoch,
                                Result<ClaimOutcome> outcome) {
  if (epoch != epoch_ || phase_ != Phase::kServing) {
    answer(key, Status::ioError("this host fenced itself while the owner was resolved"));
    return;
  }
  if (!outcome.isOk()) {
    answer(key, outcome.status());
    return;
  }
  auto [className, id] = splitKey(key);
  if (const Claimed* claimed = std::get_if<Claimed>(&*outcome)) {
    claims_[key] = claimed->token;
    ++claimsTotal_;
    logLine(LogLevel::kInfo, "cluster: claimed (token " + std::to_string(claimed->token) + ")",
            className, id);
    answer(key, OwnerInfo{options_.hostId, options_.peer, claimed->token, true});
    return;
  }
  const OwnedBy& owner = std::get<OwnedBy>(*outcome);
  answer(key, OwnerInfo{owner.hostId, peerOf(owner.hostId), owner.token, false});
}

void ClusterNode::answer(const std::string& key, const Result<OwnerInfo>& owner) {
  auto it = waiting_.find(key);
  if (it == waiting_.end()) return;
  std::vector<std::function<void(Result<OwnerInfo>)>> callbacks = std::move(it->second);
  waiting_.erase(it);
  for (auto& callback : callbacks) callback(owner);
}

void ClusterNode::dropCached(const std::string& className, const std::string& id) {
  if (!claims_.contains(keyOf(className, id))) placement_->forget(className, id);
}

void ClusterNode::forget(const std::string& className, const std::string& id, bool release) {
  std::string key = keyOf(className, id);
  auto it = claims_.find(key);
  if (it == claims_.end()) return;
  int64_t token = it->second;
  claims_.erase(it);
  if (!release) {
    placement_->forget(className, id);
    logLine(LogLevel::kWarn, "cluster: claim forgotten (token " + std::to_string(token) + ")",
            className, id);
    return;
  }
  if (phase_ != Phase::kServing) return;  // the lease goes, and the key with it
  Job job;
  job.deadline = Clock::time_point::max();  // in order before any later claim of the object
  job.run = [this, className, id, token] {
    Result<bool> released = placement_->release(className, id, token);
    post_([this, className, id, token, released = std::move(released)]() mutable {
      if (!released.isOk()) {
        logLine(LogLevel::kWarn,
                "cluster: release failed (the key goes with the lease): " +
                    released.status().message(),
                className, id);
        return;
      }
      if (*released) ++releasesTotal_;
      logLine(LogLevel::kInfo,
              std::string("cluster: released (token ") + std::to_string(token) + ")" +
                  (*released ? "" : ": the key was already gone"),
              className, id);
    });
  };
  enqueue(std::move(job));
}

std::optional<std::string> ClusterNode::knownOwner(const std::string& className,
                                                   const std::string& id) const {
  if (claimToken(className, id)) return options_.hostId;
  std::optional<OwnedBy> cached = placement_->cached(className, id);
  if (!cached || cached->hostId == options_.hostId) return std::nullopt;  // stale if ours
  return cached->hostId;
}

// --- fencing --------------------------------------------------------------------------------

void ClusterNode::fenceNow() {
  if (phase_ != Phase::kServing) return;
  phase_ = Phase::kFenced;
  ++epoch_;
  ++selfFences_;
  lastFenceMs_ = unixMillis();
  size_t dropped = claims_.size();
  claims_.clear();
  std::vector<std::string> keys;
  for (const auto& [key, callbacks] : waiting_) keys.push_back(key);
  for (const std::string& key : keys) {
    answer(key, Status::ioError("this host fenced itself: its etcd lease could not be renewed"));
  }
  std::string why = "self-fence: the etcd lease could not be renewed before its deadline (" +
                    std::to_string(dropped) + " claims given up)";
  logLine(LogLevel::kWarn, "cluster: " + why);
  if (onFence_) onFence_(why);
}

// --- hosts ----------------------------------------------------------------------------------

std::string ClusterNode::peerOf(const std::string& hostId) const {
  if (hostId == options_.hostId) return options_.peer;
  auto it = hosts_.find(hostId);
  return it == hosts_.end() ? std::string() : it->second.peer;
}

void ClusterNode::queueHostRefresh() {
  if (hostRefreshQueued_) return;
  hostRefreshQueued_ = true;
  Job job;
  job.deadline = Clock::now() + options_.resolveTimeout;
  job.run = [this] {
    Result<std::vector<HostInfo>> hosts = placement_->hosts();
    std::map<std::string, int64_t> owned;
    bool counted = false;
    if (hosts.isOk()) {
      Result<RangeAnswer> owners = client_->range(std::string(kPrefix) + "owners/");
      if (owners.isOk()) {
        counted = true;
        for (const KeyValue& kv : owners->kvs) {
          std::optional<nlohmann::json> value = parseJson(kv.value);
          if (value && value->is_object() && value->contains("host") &&
              (*value)["host"].is_string()) {
            ++owned[(*value)["host"].get<std::string>()];
          }
        }
      }
    }
    post_([this, hosts = std::move(hosts), owned = std::move(owned), counted]() mutable {
      hostRefreshQueued_ = false;
      if (!hosts.isOk()) return;
      std::map<std::string, ClusterView::Host> table;
      for (const HostInfo& h : *hosts) {
        ClusterView::Host& row = table[h.hostId];
        row.hostId = h.hostId;
        row.addr = h.addr;
        row.peer = h.link;
        row.lease = h.lease;
        row.incarnation = h.incarnation;
        row.startedMs = h.started;
        auto n = owned.find(h.hostId);
        row.objectsOwned = !counted ? -1 : n == owned.end() ? 0 : n->second;
      }
      hosts_ = std::move(table);
      hostsReadAt_ = Clock::now();
    });
  };
  job.expired = [this] { post_([this] { hostRefreshQueued_ = false; }); };
  enqueue(std::move(job));
}

ClusterView ClusterNode::view() {
  if (!hostsReadAt_ || Clock::now() - *hostsReadAt_ > kHostListMaxAge) queueHostRefresh();
  ClusterView v;
  v.selfId = options_.hostId;
  v.incarnation = incarnation_;
  v.lease = lease_;
  v.leaseTtlSeconds = keeper_ ? keeper_->snapshot().ttlSeconds : 0;
  v.phase = phase_ == Phase::kServing ? "serving" : phase_ == Phase::kFenced ? "fenced" : "lost";
  v.selfFences = selfFences_;
  v.lastFenceMs = lastFenceMs_;
  v.claims = claims_.size();
  v.resolving = waiting_.size();
  v.claimsTotal = claimsTotal_;
  v.releasesTotal = releasesTotal_;
  if (hostsReadAt_) {
    v.hostsAgeMs = std::chrono::duration_cast<milliseconds>(Clock::now() - *hostsReadAt_).count();
  }
  for (const auto& [id, host] : hosts_) {
    ClusterView::Host row = host;
    if (id == options_.hostId) row.objectsOwned = static_cast<int64_t>(claims_.size());
    v.hosts.push_back(std::move(row));
  }
  return v;
}

}  // namespace dohost::cluster
