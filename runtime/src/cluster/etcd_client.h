// EtcdClient: a small blocking client of etcd's v3 JSON gateway (etcd 3.4) over plain HTTP/1.1
// on POSIX sockets. It keeps one keep-alive connection and reuses it; a request that cannot
// connect (or finds its reused connection closed before any answer) goes to the next
// endpoint. Each request has a deadline (poll), and every answer is bounded in size.
//
// A request that timed out is not retried elsewhere: its outcome is unknown (etcd may have
// applied it). The connection is dropped and the next request starts on the next endpoint.
// A write retried after a dropped connection may have been applied once already; claim()
// callers see that as the key owned under their own lease (Placement treats it as claimed).
//
// Thread: one client per thread. A client is not safe for concurrent use; it may be handed to
// another thread between calls. watch() blocks its caller until stopped, so a watcher thread
// owns a client of its own.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/etcd_wire.h"
#include "dohost/status.h"

namespace dohost::cluster {

struct EtcdClientOptions {
  // "http://host:port", tried in order; at least one.
  std::vector<std::string> endpoints;
  // Connect, send and the whole answer: a lease renewal must fail well inside a TTL.
  std::chrono::milliseconds requestTimeout{2000};
  // The largest answer body read (a range over every owner key of a large cluster fits).
  size_t maxResponseBytes = 4 * 1024 * 1024;
};

// What claim() found: either the key was free and is now ours (token = the revision of the
// transaction, which is the key's mod_revision), or the current owner's key.
struct ClaimAnswer {
  bool claimed = false;
  int64_t token = 0;              // when claimed
  std::optional<KeyValue> owner;  // when not claimed: value, lease and modRevision
};

// One message of a watch with events in it.
struct WatchBatch {
  int64_t revision = 0;  // the header's revision
  std::vector<WatchEvent> events;
};

class EtcdClient {
 public:
  // An error for no endpoint or one that is not "http://host:port".
  static Result<std::unique_ptr<EtcdClient>> create(EtcdClientOptions options);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  // Grants a lease of `ttlSeconds` (etcd raises it to its minimum, 2 s by default).
  Result<LeaseGrant> leaseGrant(int64_t ttlSeconds);
  // Renews lease `id`; the TTL it has again. Status::notFound("lease not found") when etcd
  // says the lease is gone (expired or revoked); any other failure leaves its state unknown.
  Result<int64_t> leaseKeepAlive(int64_t id);
  // Revokes lease `id`, deleting its keys in one revision. notFound when it is already gone.
  Status leaseRevoke(int64_t id);
  // Puts `key` (under `lease` unless 0); the revision of the write.
  Result<int64_t> put(std::string_view key, std::string_view value, int64_t lease = 0);
  // The key, or nullopt when absent.
  Result<std::optional<KeyValue>> get(std::string_view key);
  // Every key that starts with `prefix`, in key order, and the revision read at.
  Result<RangeAnswer> range(std::string_view prefix);
  // One transaction: IF create_revision(key) == 0 THEN put(key, value, lease) ELSE range(key).
  Result<ClaimAnswer> claim(std::string_view key, std::string_view value, int64_t lease);
  // One transaction: IF mod_revision(key) == modRevision THEN delete(key). True when deleted;
  // false when the key is absent or was written since (a stale token deletes nothing).
  Result<bool> deleteIf(std::string_view key, int64_t modRevision);
  // Whether the endpoint answering says it is healthy (GET /health).
  Result<bool> health();
  // The id of the member answering and of the leader it knows (POST /v3/maintenance/status).
  struct MemberStatus {
    uint64_t memberId = 0;
    uint64_t leaderId = 0;
  };
  Result<MemberStatus> memberStatus();

  // Streams the changes of every key under `prefix` from `fromRevision` (0: from now) on a
  // connection of its own, calling `onEvents` (on the caller's thread) for each message that
  // carries events, until `stop` becomes true (checked at least every 50 ms; returns ok) or
  // the stream ends or breaks (returns the error; the caller resumes from the revision after
  // the last one it saw). Errors also for a watch etcd cancels (a compacted fromRevision).
  Status watch(std::string_view prefix, int64_t fromRevision,
               const std::function<void(const WatchBatch&)>& onEvents,
               const std::atomic<bool>& stop);

  // The per-request deadline from now on (the LeaseKeeper shortens it near a fence).
  void setRequestTimeout(std::chrono::milliseconds timeout) { options_.requestTimeout = timeout; }
  std::chrono::milliseconds requestTimeout() const { return options_.requestTimeout; }
  // The endpoint the next request goes to first.
  const std::string& currentEndpoint() const { return options_.endpoints[current_]; }

 private:
  struct Endpoint {
    std::string host;
    std::string port;
  };
  struct Answer {
    int status = 0;
    std::string body;
  };
  using Clock = std::chrono::steady_clock;

  EtcdClient(EtcdClientOptions options, std::vector<Endpoint> endpoints);
  // POST (or GET when `body` is null) to the current endpoint, moving on as described above.
  Result<Answer> request(std::string_view method, std::string_view path, std::string_view body);
  Result<Answer> requestOnce(std::string_view method, std::string_view path,
                             std::string_view body, Clock::time_point deadline, bool& retryable,
                             bool& sameEndpoint);
  Result<Answer> post(std::string_view path, std::string_view body);

  // Set at construction, never changed (but requestTimeout).
  EtcdClientOptions options_;
  std::vector<Endpoint> endpoints_;

  // The keep-alive connection.
  int fd_ = -1;
  size_t current_ = 0;     // the endpoint fd_ is (or the next one will be) connected to
  std::string buffer_;     // bytes read past the last answer
};

}  // namespace dohost::cluster
