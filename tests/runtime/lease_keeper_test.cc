// LeaseKeeper and Placement against a real etcd, and the alarm buckets' rendezvous hashing.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "cluster/lease_keeper.h"
#include "cluster/placement.h"
#include "cluster/rendezvous.h"
#include "dohost/json.h"
#include "etcd_harness.h"

namespace dohost::cluster {
namespace {

using namespace std::chrono_literals;
using testing::clientOf;
using testing::EtcdCluster;
using testing::eventually;
using testing::startEtcd;
using Clock = std::chrono::steady_clock;

long long ms(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

// What the callbacks saw, with the time of each.
struct Events {
  std::mutex mutex;
  std::vector<std::pair<std::string, Clock::time_point>> seen;
  void add(std::string what) {
    std::lock_guard lock(mutex);
    seen.emplace_back(std::move(what), Clock::now());
  }
  std::vector<std::string> names() {
    std::lock_guard lock(mutex);
    std::vector<std::string> out;
    for (auto& s : seen) out.push_back(s.first);
    return out;
  }
  size_t count(const std::string& what) {
    std::lock_guard lock(mutex);
    size_t n = 0;
    for (auto& s : seen) n += s.first == what;
    return n;
  }
};

LeaseKeeperCallbacks recordInto(Events& events) {
  return {.onFence = [&events] { events.add("fence"); },
          .onLost = [&events] { events.add("lost"); },
          .onRegistered = [&events](int64_t, uint64_t) { events.add("registered"); }};
}

std::string id64(int i) {
  std::string hex = std::to_string(i);
  return std::string(64 - hex.size(), 'a') + hex;
}

}  // namespace

TEST_CASE("the lease keeper registers the host and renews across many intervals without fencing") {
  auto etcd = startEtcd();
  Events events;
  auto keeper = LeaseKeeper::start({.etcd = {.endpoints = etcd->endpoints()},
                                    .hostId = "h1",
                                    .addr = "127.0.0.1:8787",
                                    .link = "127.0.0.1:8797",
                                    .ttl = 2s,
                                    .interval = 200ms,
                                    .margin = 500ms},
                                   recordInto(events));
  REQUIRE_MESSAGE(keeper.isOk(), keeper.status().toString());
  auto client = clientOf(etcd->endpoints(), 1000ms);
  Result<std::optional<KeyValue>> key = client->get("/dohost/v1/hosts/h1");
  REQUIRE(key.isOk());
  REQUIRE(key->has_value());
  LeaseKeeper::Snapshot first = (*keeper)->snapshot();
  CHECK((*key)->lease == first.lease);
  std::optional<nlohmann::json> value = parseJson((*key)->value);
  REQUIRE(value.has_value());
  CHECK((*value)["addr"] == "127.0.0.1:8787");
  CHECK((*value)["link"] == "127.0.0.1:8797");
  CHECK((*value)["incarnation"] == first.incarnation);
  CHECK((*value)["started"].is_number_integer());

  // 3 s = 1.5 TTLs: the lease would have expired without the renewals.
  std::this_thread::sleep_for(3s);
  LeaseKeeper::Snapshot later = (*keeper)->snapshot();
  CHECK(later.phase == LeaseKeeper::Phase::kServing);
  CHECK(later.renewals >= 8);
  CHECK(later.lease == first.lease);
  CHECK(events.names().empty());
  CHECK(later.deadline - Clock::now() > 1s);
  CHECK(client->get("/dohost/v1/hosts/h1")->has_value());

  auto stopAsked = Clock::now();
  CHECK((*keeper)->leave().isOk());
  CHECK(Clock::now() - stopAsked < 1500ms);
  CHECK_FALSE(client->get("/dohost/v1/hosts/h1")->has_value());
  CHECK(client->leaseKeepAlive(first.lease).status().code() == Status::Code::kNotFound);
}

TEST_CASE("the lease keeper fences before the lease deadline while etcd is frozen, then reports the loss and rejoins") {
  auto etcd = startEtcd();
  Events events;
  constexpr auto kTtl = 2s;
  constexpr auto kMargin = 500ms;
  auto keeper = LeaseKeeper::start({.etcd = {.endpoints = etcd->endpoints()},
                                    .hostId = "zombie",
                                    .ttl = kTtl,
                                    .interval = 200ms,
                                    .margin = kMargin},
                                   recordInto(events));
  REQUIRE_MESSAGE(keeper.isOk(), keeper.status().toString());
  REQUIRE(eventually(3s, [&] { return (*keeper)->snapshot().renewals >= 2; }));
  LeaseKeeper::Snapshot before = (*keeper)->snapshot();

  auto frozenAt = Clock::now();
  etcd->freeze(0);
  REQUIRE(eventually(4s, [&] { return events.count("fence") == 1; }));
  LeaseKeeper::Snapshot fenced = (*keeper)->snapshot();
  REQUIRE(fenced.fencedAt.has_value());
  Clock::time_point fenceAt = *fenced.fencedAt;
  // The last acknowledged renewal was sent before the freeze, so etcd's deadline is at most
  // frozenAt + TTL; the keeper fenced `margin` before its own reckoning of it.
  CHECK(fenced.lastAckSent <= frozenAt);
  CHECK(fenced.lastAckSent >= before.lastAckSent);
  CHECK(fenceAt < fenced.lastAckSent + kTtl);
  CHECK(fenceAt < frozenAt + kTtl);
  CHECK(fenceAt >= fenced.lastAckSent + kTtl - kMargin);
  MESSAGE("fenced " << ms(fenceAt - fenced.lastAckSent) << " ms after the last acknowledged "
                    << "renewal was sent, " << ms(fenceAt - frozenAt) << " ms after the freeze");
  CHECK(fenced.phase == LeaseKeeper::Phase::kFenced);

  // Frozen past the deadline: once thawed, etcd expires the lease (or the keeper revokes it).
  std::this_thread::sleep_until(frozenAt + kTtl + 1s);
  CHECK(events.count("lost") == 0);
  etcd->thaw(0);
  REQUIRE(eventually(5s, [&] { return events.count("lost") == 1; }));
  CHECK(events.names() == std::vector<std::string>{"fence", "lost"});
  auto client = clientOf(etcd->endpoints(), 1000ms);
  CHECK_FALSE(client->get("/dohost/v1/hosts/zombie")->has_value());
  CHECK(client->leaseKeepAlive(before.lease).status().code() == Status::Code::kNotFound);

  (*keeper)->rejoin();
  REQUIRE(eventually(3s, [&] { return events.count("registered") == 1; }));
  LeaseKeeper::Snapshot rejoined = (*keeper)->snapshot();
  CHECK(rejoined.phase == LeaseKeeper::Phase::kServing);
  CHECK(rejoined.lease != before.lease);
  CHECK(rejoined.incarnation > before.incarnation);
  Result<std::optional<KeyValue>> key = client->get("/dohost/v1/hosts/zombie");
  REQUIRE(key.isOk());
  REQUIRE(key->has_value());
  CHECK((*key)->lease == rejoined.lease);
  CHECK(parseJson((*key)->value).value()["incarnation"] == rejoined.incarnation);
  CHECK(eventually(2s, [&] { return (*keeper)->snapshot().renewals >= 2; }));
  CHECK(events.count("fence") == 1);
  (*keeper)->stop();
}

TEST_CASE("the lease keeper reports a lease revoked behind its back as fenced, then lost") {
  auto etcd = startEtcd();
  Events events;
  auto keeper = LeaseKeeper::start({.etcd = {.endpoints = etcd->endpoints()},
                                    .hostId = "h1",
                                    .ttl = 2s,
                                    .interval = 200ms,
                                    .margin = 500ms},
                                   recordInto(events));
  REQUIRE(keeper.isOk());
  auto client = clientOf(etcd->endpoints(), 1000ms);
  REQUIRE(client->leaseRevoke((*keeper)->snapshot().lease).isOk());
  REQUIRE(eventually(2s, [&] { return events.count("lost") == 1; }));
  CHECK(events.names() == std::vector<std::string>{"fence", "lost"});
  CHECK(LeaseKeeper::start({.etcd = {.endpoints = etcd->endpoints()}, .hostId = "a/b"}, {})
            .status()
            .code() == Status::Code::kInvalidArgument);
  CHECK(LeaseKeeper::start({.etcd = {.endpoints = etcd->endpoints()},
                            .hostId = "h2",
                            .ttl = 2s,
                            .interval = 1600ms,
                            .margin = 500ms},
                           {})
            .status()
            .code() == Status::Code::kInvalidArgument);
}

TEST_CASE("placement claims, looks up and releases objects, and the watcher purges a departed host") {
  auto etcd = startEtcd();
  auto keeperA = LeaseKeeper::start({.etcd = {.endpoints = etcd->endpoints()},
                                     .hostId = "a", .addr = "127.0.0.1:1", .link = "127.0.0.1:2",
                                     .ttl = 2s, .interval = 200ms, .margin = 500ms},
                                    {});
  auto keeperB = LeaseKeeper::start({.etcd = {.endpoints = etcd->endpoints()},
                                     .hostId = "b", .ttl = 2s, .interval = 200ms, .margin = 500ms},
                                    {});
  REQUIRE(keeperA.isOk());
  REQUIRE(keeperB.isOk());
  auto clientA = clientOf(etcd->endpoints(), 1000ms);
  auto clientB = clientOf(etcd->endpoints(), 1000ms);
  Events left;
  Placement a(*clientA, {.etcd = {.endpoints = etcd->endpoints()}, .hostId = "a"},
              {.onHostLeft = [&](const std::string& h) { left.add("left " + h); },
               .onHostJoined = [&](const std::string& h) { left.add("joined " + h); }});
  Placement b(*clientB, {.etcd = {.endpoints = etcd->endpoints()}, .hostId = "b"});
  CHECK(a.claim("Room", id64(1)).status().code() == Status::Code::kInvalidArgument);  // no lease
  a.setLease((*keeperA)->snapshot().lease, (*keeperA)->snapshot().incarnation);
  b.setLease((*keeperB)->snapshot().lease, (*keeperB)->snapshot().incarnation);
  REQUIRE(a.startWatching().isOk());
  CHECK(a.ownerKey("Room", id64(1)) == "/dohost/v1/owners/Room/" + id64(1));
  CHECK(a.claim("Ro/om", id64(1)).status().code() == Status::Code::kInvalidArgument);
  CHECK(a.claim("Room", "ABC").status().code() == Status::Code::kInvalidArgument);

  // b claims two objects; a claims one.
  Result<ClaimOutcome> b1 = b.claim("Room", id64(1));
  REQUIRE(b1.isOk());
  REQUIRE(std::holds_alternative<Claimed>(*b1));
  int64_t token = std::get<Claimed>(*b1).token;
  REQUIRE(std::holds_alternative<Claimed>(b.claim("Room", id64(2)).value()));
  Result<ClaimOutcome> a3 = a.claim("Room", id64(3));
  REQUIRE(a3.isOk());
  REQUIRE(std::holds_alternative<Claimed>(*a3));
  // Claiming again what one owns is idempotent: same token.
  CHECK(std::get<Claimed>(a.claim("Room", id64(3)).value()).token ==
        std::get<Claimed>(*a3).token);

  Result<ClaimOutcome> lost = a.claim("Room", id64(1));
  REQUIRE(lost.isOk());
  REQUIRE(std::holds_alternative<OwnedBy>(*lost));
  CHECK(std::get<OwnedBy>(*lost).hostId == "b");
  CHECK(std::get<OwnedBy>(*lost).token == token);
  CHECK(std::get<OwnedBy>(*lost).incarnation == (*keeperB)->snapshot().incarnation);
  Result<std::optional<OwnedBy>> found = a.lookup("Room", id64(2));
  REQUIRE(found.isOk());
  REQUIRE(found->has_value());
  CHECK((*found)->hostId == "b");
  CHECK(a.cached("Room", id64(2)).has_value());
  CHECK(a.lookup("Room", id64(9)).value() == std::nullopt);

  Result<std::vector<HostInfo>> hosts = a.hosts();
  REQUIRE(hosts.isOk());
  REQUIRE(hosts->size() == 2);
  CHECK((*hosts)[0].hostId == "a");
  CHECK((*hosts)[0].addr == "127.0.0.1:1");
  CHECK((*hosts)[0].link == "127.0.0.1:2");
  CHECK((*hosts)[0].lease == (*keeperA)->snapshot().lease);
  CHECK((*hosts)[1].hostId == "b");

  // A stale token releases nothing; the right one does.
  CHECK_FALSE(b.release("Room", id64(1), token - 1).value());
  CHECK(b.release("Room", id64(1), token).value());
  CHECK(eventually(2s, [&] { return !a.cached("Room", id64(1)).has_value(); }));
  Result<ClaimOutcome> retaken = a.claim("Room", id64(1));
  REQUIRE(retaken.isOk());
  REQUIRE(std::holds_alternative<Claimed>(*retaken));
  CHECK(std::get<Claimed>(*retaken).token > token);

  // b dies without a word: its lease expires, its keys go in one revision, a's cache forgets
  // b's objects and a hears that b left.
  (*keeperB)->stop();
  REQUIRE(a.cached("Room", id64(2)).has_value());
  CHECK(eventually(5s, [&] { return left.count("left b") == 1; }));
  CHECK(eventually(1s, [&] { return !a.cached("Room", id64(2)).has_value(); }));
  CHECK(a.cached("Room", id64(3)).has_value());
  CHECK(a.cached("Room", id64(1)).has_value());
  CHECK(a.lookup("Room", id64(2)).value() == std::nullopt);
  CHECK(std::holds_alternative<Claimed>(a.claim("Room", id64(2)).value()));
  CHECK(a.hosts().value().size() == 1);
  auto stopAsked = Clock::now();
  a.stopWatching();
  CHECK(Clock::now() - stopAsked < 1s);
  (*keeperA)->stop();
}

TEST_CASE("alarm buckets spread evenly over hosts, and removing a host moves only its buckets") {
  std::vector<int> perBucket(kAlarmBuckets, 0);
  for (int i = 0; i < 102400; ++i) {
    uint32_t b = bucketOf("Room/" + id64(i));
    REQUIRE(b < kAlarmBuckets);
    ++perBucket[b];
  }
  for (int n : perBucket) CHECK((n > 50 && n < 150));  // 100 expected per bucket
  CHECK(bucketOf("Room/x") == bucketOf("Room/x"));

  std::vector<std::string> hosts;
  for (int i = 0; i < 8; ++i) hosts.push_back("host-" + std::to_string(i));
  std::map<std::string, int> load;
  std::vector<std::string> owner(kAlarmBuckets);
  for (uint32_t b = 0; b < kAlarmBuckets; ++b) {
    owner[b] = ownerOfBucket(b, hosts).value();
    ++load[owner[b]];
  }
  REQUIRE(load.size() == 8);
  for (auto& [host, n] : load) CHECK_MESSAGE((n > 80 && n < 180), host << " has " << n);  // 128

  std::vector<std::string> reversed(hosts.rbegin(), hosts.rend());
  for (uint32_t b = 0; b < kAlarmBuckets; ++b) CHECK(ownerOfBucket(b, reversed) == owner[b]);

  std::vector<std::string> fewer = hosts;
  fewer.erase(fewer.begin() + 3);
  int moved = 0;
  for (uint32_t b = 0; b < kAlarmBuckets; ++b) {
    std::string now = ownerOfBucket(b, fewer).value();
    if (owner[b] == "host-3") {
      CHECK(now != "host-3");
      ++moved;
    } else {
      CHECK(now == owner[b]);
    }
  }
  CHECK(moved == load["host-3"]);
  CHECK_FALSE(ownerOfBucket(0, {}).has_value());
}

}  // namespace dohost::cluster
