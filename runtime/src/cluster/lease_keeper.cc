#include "cluster/lease_keeper.h"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace dohost::cluster {
namespace {

using std::chrono::milliseconds;

// The shortest wait for an etcd answer: below it a request cannot succeed on a loaded box.
constexpr milliseconds kMinRequestTimeout{20};

uint64_t wallMicros() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

Result<std::unique_ptr<LeaseKeeper>> LeaseKeeper::start(LeaseKeeperOptions options,
                                                        LeaseKeeperCallbacks callbacks) {
  if (options.hostId.empty() || options.hostId.find('/') != std::string::npos) {
    return Status::invalidArgument("host id \"" + options.hostId + "\" is empty or has a '/'");
  }
  if (options.interval <= milliseconds::zero() || options.margin < milliseconds::zero() ||
      options.interval >= options.ttl - options.margin) {
    return Status::invalidArgument("lease keeper needs 0 < interval < ttl - margin");
  }
  Result<std::unique_ptr<EtcdClient>> client = EtcdClient::create(options.etcd);
  if (!client.isOk()) return client.status();
  std::unique_ptr<LeaseKeeper> keeper(
      new LeaseKeeper(std::move(options), std::move(callbacks), std::move(*client)));
  {
    std::unique_lock lock(keeper->mutex_);
    if (Status registered = keeper->registerHost(lock); !registered.isOk()) return registered;
  }
  keeper->thread_ = std::thread([k = keeper.get()] { k->run(); });
  return keeper;
}

LeaseKeeper::LeaseKeeper(LeaseKeeperOptions options, LeaseKeeperCallbacks callbacks,
                         std::unique_ptr<EtcdClient> client)
    : options_(std::move(options)), callbacks_(std::move(callbacks)), client_(std::move(client)) {}

LeaseKeeper::~LeaseKeeper() { stop(); }

void LeaseKeeper::rejoin() {
  std::lock_guard lock(mutex_);
  rejoinRequested_ = true;
  wake_.notify_all();
}

void LeaseKeeper::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    wake_.notify_all();
  }
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
  std::lock_guard lock(mutex_);
  state_.phase = Phase::kStopped;
}

Status LeaseKeeper::leave() {
  int64_t lease;
  {
    std::lock_guard lock(mutex_);
    lease = state_.lease;
  }
  stop();
  if (lease == 0) return Status::ok();
  client_->setRequestTimeout(options_.etcd.requestTimeout);
  Status revoked = client_->leaseRevoke(lease);
  if (revoked.code() == Status::Code::kNotFound) return Status::ok();  // already gone
  return revoked;
}

LeaseKeeper::Snapshot LeaseKeeper::snapshot() const {
  std::lock_guard lock(mutex_);
  return state_;
}

std::chrono::milliseconds LeaseKeeper::timeoutUntil(Clock::time_point limit) const {
  auto left = std::chrono::duration_cast<milliseconds>(limit - Clock::now());
  return std::clamp(left, kMinRequestTimeout, std::max(kMinRequestTimeout,
                                                       options_.etcd.requestTimeout));
}

Status LeaseKeeper::registerHost(std::unique_lock<std::mutex>& lock) {
  uint64_t incarnation = std::max(state_.incarnation + 1, wallMicros());
  lock.unlock();
  client_->setRequestTimeout(options_.etcd.requestTimeout);
  Clock::time_point sent = Clock::now();
  Result<LeaseGrant> grant = client_->leaseGrant(options_.ttl.count());
  if (!grant.isOk()) {
    lock.lock();
    return grant.status();
  }
  nlohmann::json value{{"addr", options_.addr},
                       {"link", options_.link},
                       {"incarnation", incarnation},
                       {"started", wallMicros() / 1000}};
  Result<int64_t> put = client_->put(hostKey(), value.dump(), grant->id);
  if (!put.isOk()) {
    (void)client_->leaseRevoke(grant->id);  // best effort; it expires anyway
    lock.lock();
    return put.status();
  }
  lock.lock();
  state_.phase = Phase::kServing;
  state_.lease = grant->id;
  state_.ttlSeconds = grant->ttlSeconds;
  state_.incarnation = incarnation;
  state_.renewals = 0;
  state_.lastAckSent = sent;
  state_.deadline = sent + std::chrono::seconds(grant->ttlSeconds);
  state_.fencedAt.reset();
  state_.lostAt.reset();
  nextRenewal_ = sent + options_.interval;
  rejoinRequested_ = false;
  return Status::ok();
}

void LeaseKeeper::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    switch (state_.phase) {
      case Phase::kServing:
        serve(lock);
        break;
      case Phase::kFenced:
        probeAfterFence(lock);
        break;
      case Phase::kLost:
        if (rejoinRequested_) {
          if (registerHost(lock).isOk()) {
            int64_t lease = state_.lease;
            uint64_t incarnation = state_.incarnation;
            if (callbacks_.onRegistered) {
              lock.unlock();
              callbacks_.onRegistered(lease, incarnation);
              lock.lock();
            }
          } else {
            wake_.wait_for(lock, options_.interval, [&] { return stopping_; });
          }
        } else {
          wake_.wait(lock, [&] { return stopping_ || rejoinRequested_; });
        }
        break;
      case Phase::kStopped:
        return;
    }
  }
}

void LeaseKeeper::serve(std::unique_lock<std::mutex>& lock) {
  Clock::time_point fenceAt = state_.deadline - options_.margin;
  Clock::time_point now = Clock::now();
  if (now >= fenceAt) {
    fence(lock);
    return;
  }
  if (now < nextRenewal_) {
    wake_.wait_until(lock, std::min(nextRenewal_, fenceAt), [&] { return stopping_; });
    return;
  }
  int64_t lease = state_.lease;
  lock.unlock();
  // The renewal must come back before the fence point, or it is of no use. One try waits at
  // most one interval: an endpoint that hangs (a member in an election, or cut off) would
  // otherwise take the whole margin, while the next try goes to the next endpoint.
  client_->setRequestTimeout(
      std::min(timeoutUntil(fenceAt), std::max(options_.interval, kMinRequestTimeout)));
  Clock::time_point sent = Clock::now();
  Result<int64_t> ttl = client_->leaseKeepAlive(lease);
  lock.lock();
  if (ttl.isOk()) {
    state_.lastAckSent = sent;
    state_.deadline = sent + std::chrono::seconds(*ttl);
    ++state_.renewals;
    nextRenewal_ = sent + options_.interval;
  } else if (ttl.status().code() == Status::Code::kNotFound) {
    fence(lock);
    if (state_.phase == Phase::kFenced) lose(lock);
  } else {
    // Try again soon: a quarter interval, so a short outage costs little of the margin.
    nextRenewal_ = Clock::now() + std::max(options_.interval / 4, kMinRequestTimeout);
  }
}

void LeaseKeeper::probeAfterFence(std::unique_lock<std::mutex>& lock) {
  if (rejoinRequested_) {
    // Give up the old lease (best effort: it expires anyway) and register anew.
    int64_t old = state_.lease;
    lock.unlock();
    client_->setRequestTimeout(std::min(options_.interval, options_.etcd.requestTimeout));
    (void)client_->leaseRevoke(old);
    lock.lock();
    lose(lock);
    return;  // run() registers from kLost
  }
  int64_t lease = state_.lease;
  lock.unlock();
  client_->setRequestTimeout(std::min(options_.interval, options_.etcd.requestTimeout));
  Status revoked = client_->leaseRevoke(lease);
  lock.lock();
  if (revoked.isOk() || revoked.code() == Status::Code::kNotFound) {
    lose(lock);
    return;
  }
  wake_.wait_for(lock, options_.interval, [&] { return stopping_ || rejoinRequested_; });
}

void LeaseKeeper::fence(std::unique_lock<std::mutex>& lock) {
  if (state_.phase != Phase::kServing) return;
  state_.phase = Phase::kFenced;
  state_.fencedAt = Clock::now();
  if (callbacks_.onFence) {
    lock.unlock();
    callbacks_.onFence();
    lock.lock();
  }
}

void LeaseKeeper::lose(std::unique_lock<std::mutex>& lock) {
  state_.phase = Phase::kLost;
  state_.lostAt = Clock::now();
  if (callbacks_.onLost) {
    lock.unlock();
    callbacks_.onLost();
    lock.lock();
  }
}

}  // namespace dohost::cluster
