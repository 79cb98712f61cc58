#include "cluster/placement.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "dohost/json.h"

namespace dohost::cluster {
namespace {

using nlohmann::json;

constexpr JsonLimits kValueJsonLimits{.maxDepth = 4};
// The watcher's pause after a broken stream, doubling up to the maximum.
constexpr std::chrono::milliseconds kFirstRetry{100};
constexpr std::chrono::milliseconds kMaxRetry{2000};

bool isId64Hex(std::string_view id) {
  return id.size() == 64 && std::all_of(id.begin(), id.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::optional<json> parseValue(std::string_view value) {
  std::optional<json> parsed = parseJson(value, kValueJsonLimits);
  if (!parsed || !parsed->is_object()) return std::nullopt;
  return parsed;
}

std::string stringMember(const json& object, const char* name) {
  auto it = object.find(name);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

template <class T>
T numberMember(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_number_integer()) return T{};
  return it->get<T>();
}

Result<OwnedBy> ownerOf(const KeyValue& kv) {
  std::optional<json> value = parseValue(kv.value);
  if (!value || stringMember(*value, "host").empty()) {
    return Status::ioError("malformed ownership key " + kv.key);
  }
  return OwnedBy{stringMember(*value, "host"), numberMember<uint64_t>(*value, "incarnation"),
                 kv.modRevision, kv.lease};
}

}  // namespace

Placement::Placement(EtcdClient& client, PlacementOptions options, PlacementCallbacks callbacks)
    : client_(client), options_(std::move(options)), callbacks_(std::move(callbacks)) {}

Placement::~Placement() { stopWatching(); }

void Placement::setLease(int64_t lease, uint64_t incarnation) {
  std::lock_guard lock(mutex_);
  lease_ = lease;
  incarnation_ = incarnation;
}

std::string Placement::ownerKey(std::string_view className, std::string_view id64hex) const {
  std::string key = options_.prefix + "owners/";
  key.append(className).append("/").append(id64hex);
  return key;
}

std::string Placement::hostKey(std::string_view hostId) const {
  return options_.prefix + "hosts/" + std::string(hostId);
}

Result<std::string> Placement::checkedKey(std::string_view className,
                                          std::string_view id64hex) const {
  if (className.empty() || className.find('/') != std::string_view::npos) {
    return Status::invalidArgument("class name \"" + std::string(className) +
                                   "\" is empty or has a '/'");
  }
  if (!isId64Hex(id64hex)) {
    return Status::invalidArgument("object id is not 64 lowercase hex characters");
  }
  return ownerKey(className, id64hex);
}

Result<ClaimOutcome> Placement::claim(std::string_view className, std::string_view id64hex) {
  Result<std::string> key = checkedKey(className, id64hex);
  if (!key.isOk()) return key.status();
  int64_t lease;
  uint64_t incarnation;
  {
    std::lock_guard lock(mutex_);
    lease = lease_;
    incarnation = incarnation_;
  }
  if (lease == 0) return Status::invalidArgument("no host lease to claim under");
  json value{{"host", options_.hostId}, {"incarnation", incarnation}};
  Result<ClaimAnswer> answer = client_.claim(*key, value.dump(), lease);
  if (!answer.isOk()) return answer.status();
  if (answer->claimed) {
    cachePut(*key, OwnedBy{options_.hostId, incarnation, answer->token, lease});
    return ClaimOutcome(Claimed{answer->token});
  }
  Result<OwnedBy> owner = ownerOf(*answer->owner);
  if (!owner.isOk()) return owner.status();
  cachePut(*key, *owner);
  if (owner->lease == lease && owner->hostId == options_.hostId) {
    return ClaimOutcome(Claimed{owner->token});
  }
  return ClaimOutcome(std::move(*owner));
}

Result<bool> Placement::release(std::string_view className, std::string_view id64hex,
                                int64_t token) {
  Result<std::string> key = checkedKey(className, id64hex);
  if (!key.isOk()) return key.status();
  Result<bool> deleted = client_.deleteIf(*key, token);
  if (!deleted.isOk()) return deleted;
  std::lock_guard lock(mutex_);
  if (auto it = cache_.find(*key); it != cache_.end() && it->second.token <= token) {
    cache_.erase(it);
  }
  return deleted;
}

Result<std::optional<OwnedBy>> Placement::lookup(std::string_view className,
                                                 std::string_view id64hex) {
  Result<std::string> key = checkedKey(className, id64hex);
  if (!key.isOk()) return key.status();
  {
    std::lock_guard lock(mutex_);
    if (auto it = cache_.find(*key); it != cache_.end()) return std::optional(it->second);
  }
  Result<std::optional<KeyValue>> kv = client_.get(*key);
  if (!kv.isOk()) return kv.status();
  if (!*kv) return std::optional<OwnedBy>();
  Result<OwnedBy> owner = ownerOf(**kv);
  if (!owner.isOk()) return owner.status();
  cachePut(*key, *owner);
  return std::optional(std::move(*owner));
}

std::optional<OwnedBy> Placement::cached(std::string_view className,
                                         std::string_view id64hex) const {
  std::lock_guard lock(mutex_);
  auto it = cache_.find(ownerKey(className, id64hex));
  if (it == cache_.end()) return std::nullopt;
  return it->second;
}

void Placement::forget(std::string_view className, std::string_view id64hex) {
  std::lock_guard lock(mutex_);
  cache_.erase(ownerKey(className, id64hex));
}

size_t Placement::cacheSize() const {
  std::lock_guard lock(mutex_);
  return cache_.size();
}

void Placement::cachePut(const std::string& key, OwnedBy owner) {
  std::lock_guard lock(mutex_);
  auto it = cache_.find(key);
  if (it != cache_.end()) {
    if (it->second.token <= owner.token) it->second = std::move(owner);
    return;
  }
  if (cache_.size() >= options_.maxCacheEntries && !cache_.empty()) cache_.erase(cache_.begin());
  cache_.emplace(key, std::move(owner));
}

Result<std::vector<HostInfo>> Placement::hosts() {
  std::string prefix = options_.prefix + "hosts/";
  Result<RangeAnswer> range = client_.range(prefix);
  if (!range.isOk()) return range.status();
  std::vector<HostInfo> out;
  for (const KeyValue& kv : range->kvs) {
    HostInfo host;
    host.hostId = kv.key.substr(prefix.size());
    host.lease = kv.lease;
    if (std::optional<json> value = parseValue(kv.value)) {
      host.addr = stringMember(*value, "addr");
      host.link = stringMember(*value, "link");
      host.incarnation = numberMember<uint64_t>(*value, "incarnation");
      host.started = numberMember<int64_t>(*value, "started");
    }
    out.push_back(std::move(host));
  }
  return out;
}

Status Placement::startWatching() {
  if (watcher_.joinable()) return Status::invalidArgument("the watcher is already running");
  Result<std::unique_ptr<EtcdClient>> client = EtcdClient::create(options_.etcd);
  if (!client.isOk()) return client.status();
  // The revision to watch from: anything after this read is seen by the watcher.
  Result<RangeAnswer> now = (*client)->range(options_.prefix + "hosts/");
  if (!now.isOk()) return now.status();
  watchClient_ = std::move(*client);
  stop_ = false;
  watcher_ = std::thread([this, from = now->revision + 1] { watchLoop(from); });
  return Status::ok();
}

void Placement::stopWatching() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    wake_.notify_all();
  }
  if (watcher_.joinable()) watcher_.join();
}

void Placement::watchLoop(int64_t fromRevision) {
  int64_t next = fromRevision;
  std::chrono::milliseconds retry = kFirstRetry;
  while (!stop_) {
    Status ended = watchClient_->watch(
        options_.prefix, next,
        [&](const WatchBatch& batch) {
          applyEvents(batch);
          for (const WatchEvent& e : batch.events) next = std::max(next, e.kv.modRevision + 1);
          retry = kFirstRetry;
        },
        stop_);
    if (stop_) break;
    if (ended.message().find("canceled") != std::string::npos) {
      // The revision to resume from was compacted: what happened since is unknown, so the
      // whole cache goes and the watch starts from now.
      std::lock_guard lock(mutex_);
      cache_.clear();
      next = 0;
    }
    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, retry, [&] { return stop_.load(); });
    retry = std::min(retry * 2, kMaxRetry);
  }
}

void Placement::applyEvents(const WatchBatch& batch) {
  const std::string hostsPrefix = options_.prefix + "hosts/";
  const std::string ownersPrefix = options_.prefix + "owners/";
  std::vector<std::pair<bool, std::string>> hostChanges;  // (joined, host id)
  {
    std::lock_guard lock(mutex_);
    for (const WatchEvent& event : batch.events) {
      const std::string& key = event.kv.key;
      bool deleted = event.type == WatchEvent::Type::kDelete;
      if (key.starts_with(ownersPrefix)) {
        auto it = cache_.find(key);
        if (it == cache_.end()) continue;
        if (deleted && it->second.token <= event.kv.modRevision) {
          cache_.erase(it);
        } else if (!deleted && it->second.token <= event.kv.modRevision) {
          Result<OwnedBy> owner = ownerOf(event.kv);
          if (owner.isOk()) {
            it->second = std::move(*owner);
          } else {
            cache_.erase(it);
          }
        }
      } else if (key.starts_with(hostsPrefix)) {
        std::string hostId = key.substr(hostsPrefix.size());
        if (deleted) {
          // Entries of that host from before the deletion; a rejoined host's newer claims stay.
          std::erase_if(cache_, [&](const auto& entry) {
            return entry.second.hostId == hostId && entry.second.token < event.kv.modRevision;
          });
        }
        hostChanges.emplace_back(!deleted, std::move(hostId));
      }
    }
  }
  for (const auto& [joined, hostId] : hostChanges) {
    const auto& callback = joined ? callbacks_.onHostJoined : callbacks_.onHostLeft;
    if (callback) callback(hostId);
  }
}

}  // namespace dohost::cluster
