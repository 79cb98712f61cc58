// EtcdClient against a real etcd (tests/runtime/etcd_harness.h).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include "cluster/etcd_client.h"
#include "etcd_harness.h"

namespace dohost::cluster {
namespace {

using namespace std::chrono_literals;
using testing::clientOf;
using testing::EtcdCluster;
using testing::eventually;
using testing::startEtcd;
using Clock = std::chrono::steady_clock;

std::string key64(int i) {
  std::string hex = std::to_string(i);
  return std::string(64 - hex.size(), '0') + hex;
}

}  // namespace

TEST_CASE("a lease is granted, renewed and revoked, and a revoked lease is not found") {
  auto etcd = startEtcd();
  auto client = clientOf(etcd->endpoints());
  Result<LeaseGrant> grant = client->leaseGrant(5);
  REQUIRE(grant.isOk());
  CHECK(grant->id != 0);
  CHECK(grant->ttlSeconds == 5);
  Result<int64_t> ttl = client->leaseKeepAlive(grant->id);
  REQUIRE(ttl.isOk());
  CHECK(*ttl == 5);
  REQUIRE(client->put("/t/leased", "v", grant->id).isOk());
  CHECK(client->leaseRevoke(grant->id).isOk());
  Result<int64_t> gone = client->leaseKeepAlive(grant->id);
  CHECK(gone.status().code() == Status::Code::kNotFound);
  CHECK(gone.status().message() == "lease not found");
  CHECK(client->leaseRevoke(grant->id).code() == Status::Code::kNotFound);
  Result<std::optional<KeyValue>> kv = client->get("/t/leased");
  REQUIRE(kv.isOk());
  CHECK_FALSE(kv->has_value());
  // A put under a lease that does not exist is refused by etcd, with its reason.
  Result<int64_t> orphan = client->put("/t/orphan", "v", grant->id);
  CHECK(orphan.status().code() == Status::Code::kNotFound);
  CHECK(orphan.status().message().find("lease not found") != std::string::npos);
}

TEST_CASE("put, get and range carry values, revisions and leases") {
  auto etcd = startEtcd();
  auto client = clientOf(etcd->endpoints());
  Result<int64_t> first = client->put("/t/a/1", std::string("bin\0ary\xff", 8));
  REQUIRE(first.isOk());
  Result<int64_t> second = client->put("/t/a/2", "two");
  REQUIRE(second.isOk());
  CHECK(*second > *first);
  REQUIRE(client->put("/t/b", "outside").isOk());
  Result<std::optional<KeyValue>> one = client->get("/t/a/1");
  REQUIRE(one.isOk());
  REQUIRE(one->has_value());
  CHECK((*one)->value == std::string("bin\0ary\xff", 8));
  CHECK((*one)->createRevision == *first);
  CHECK((*one)->modRevision == *first);
  CHECK((*one)->lease == 0);
  Result<std::optional<KeyValue>> absent = client->get("/t/none");
  REQUIRE(absent.isOk());
  CHECK_FALSE(absent->has_value());
  Result<RangeAnswer> range = client->range("/t/a/");
  REQUIRE(range.isOk());
  REQUIRE(range->kvs.size() == 2);
  CHECK(range->kvs[0].key == "/t/a/1");
  CHECK(range->kvs[1].value == "two");
  CHECK(range->revision >= *second);
}

TEST_CASE("a lease that is not renewed expires and its keys vanish") {
  auto etcd = startEtcd();
  auto client = clientOf(etcd->endpoints());
  Result<LeaseGrant> grant = client->leaseGrant(2);
  REQUIRE(grant.isOk());
  REQUIRE(client->put("/t/expiring/1", "a", grant->id).isOk());
  REQUIRE(client->put("/t/expiring/2", "b", grant->id).isOk());
  auto granted = Clock::now();
  CHECK(eventually(6s, [&] {
    Result<RangeAnswer> r = client->range("/t/expiring/");
    return r.isOk() && r->kvs.empty();
  }));
  CHECK(Clock::now() - granted >= 1500ms);  // not before the TTL (etcd's check may be early by its 500 ms tick)
  CHECK(client->leaseKeepAlive(grant->id).status().code() == Status::Code::kNotFound);
}

TEST_CASE("two clients racing for 50 keys from 2 threads: exactly one wins each") {
  auto etcd = startEtcd();
  constexpr int kKeys = 50;
  struct Outcome {
    bool claimed = false;
    int64_t token = 0;
    std::string ownerValue;
    int64_t ownerLease = 0;
  };
  std::vector<Outcome> outcomes[2] = {std::vector<Outcome>(kKeys), std::vector<Outcome>(kKeys)};
  int64_t leases[2] = {0, 0};
  std::atomic<int> ready{0};
  std::atomic<int> failures{0};
  auto racer = [&](int who) {
    auto client = EtcdClient::create({.endpoints = etcd->endpoints()});
    if (!client.isOk()) return failures.fetch_add(1), void();
    Result<LeaseGrant> grant = (*client)->leaseGrant(30);
    if (!grant.isOk()) return failures.fetch_add(1), void();
    leases[who] = grant->id;
    ready.fetch_add(1);
    while (ready.load() < 2) std::this_thread::yield();
    for (int i = 0; i < kKeys; ++i) {
      // One goes up the list, the other down, so they meet in the middle.
      int k = who == 0 ? i : kKeys - 1 - i;
      Result<ClaimAnswer> answer =
          (*client)->claim("/t/owners/" + key64(k), "host" + std::to_string(who), grant->id);
      if (!answer.isOk()) {
        failures.fetch_add(1);
        continue;
      }
      Outcome& o = outcomes[who][k];
      o.claimed = answer->claimed;
      o.token = answer->token;
      if (answer->owner) {
        o.ownerValue = answer->owner->value;
        o.ownerLease = answer->owner->lease;
        o.token = answer->owner->modRevision;
      }
    }
  };
  std::thread a(racer, 0), b(racer, 1);
  a.join();
  b.join();
  REQUIRE(failures.load() == 0);
  for (int k = 0; k < kKeys; ++k) {
    const Outcome& o0 = outcomes[0][k];
    const Outcome& o1 = outcomes[1][k];
    CHECK(o0.claimed != o1.claimed);
    const Outcome& winner = o0.claimed ? o0 : o1;
    const Outcome& loser = o0.claimed ? o1 : o0;
    int winnerId = o0.claimed ? 0 : 1;
    CHECK(loser.ownerValue == "host" + std::to_string(winnerId));
    CHECK(loser.ownerLease == leases[winnerId]);
    CHECK(loser.token == winner.token);  // the loser sees the winner's token
  }

  SUBCASE("tokens strictly increase across release and re-claim") {
    auto client = clientOf(etcd->endpoints());
    std::string key = "/t/owners/" + key64(7);
    int winnerId = outcomes[0][7].claimed ? 0 : 1;
    int64_t token = outcomes[winnerId][7].token;
    for (int round = 0; round < 5; ++round) {
      Result<bool> released = client->deleteIf(key, token);
      REQUIRE(released.isOk());
      CHECK(*released);
      Result<ClaimAnswer> again = client->claim(key, "again", leases[round % 2]);
      REQUIRE(again.isOk());
      CHECK(again->claimed);
      CHECK(again->token > token);
      Result<std::optional<KeyValue>> kv = client->get(key);
      REQUIRE(kv.isOk());
      REQUIRE(kv->has_value());
      CHECK((*kv)->modRevision == again->token);
      token = again->token;
    }
  }
}

TEST_CASE("deleteIf with a stale token deletes nothing") {
  auto etcd = startEtcd();
  auto client = clientOf(etcd->endpoints());
  Result<ClaimAnswer> first = client->claim("/t/k", "one", 0);
  REQUIRE(first.isOk());
  REQUIRE(first->claimed);
  REQUIRE(client->deleteIf("/t/k", first->token).isOk());
  Result<ClaimAnswer> second = client->claim("/t/k", "two", 0);
  REQUIRE(second.isOk());
  REQUIRE(second->claimed);
  Result<bool> stale = client->deleteIf("/t/k", first->token);
  REQUIRE(stale.isOk());
  CHECK_FALSE(*stale);
  Result<std::optional<KeyValue>> kv = client->get("/t/k");
  REQUIRE(kv.isOk());
  REQUIRE(kv->has_value());
  CHECK((*kv)->value == "two");
  Result<bool> absent = client->deleteIf("/t/none", 1);
  REQUIRE(absent.isOk());
  CHECK_FALSE(*absent);
}

TEST_CASE("a watch sees puts and the DELETE of a host key when its lease expires") {
  auto etcd = startEtcd();
  auto client = clientOf(etcd->endpoints());
  Result<LeaseGrant> grant = client->leaseGrant(2);
  REQUIRE(grant.isOk());
  Result<int64_t> put = client->put("/dohost/v1/hosts/h1", "{}", grant->id);
  REQUIRE(put.isOk());
  auto putAt = Clock::now();

  std::mutex mutex;
  std::vector<WatchEvent> seen;
  std::atomic<bool> stop{false};
  Status ended;
  std::thread watcher([&] {
    auto own = EtcdClient::create({.endpoints = etcd->endpoints()});
    if (!own.isOk()) return;
    ended = (*own)->watch("/dohost/v1/hosts/", *put,
                          [&](const WatchBatch& batch) {
                            std::lock_guard lock(mutex);
                            seen.insert(seen.end(), batch.events.begin(), batch.events.end());
                          },
                          stop);
  });
  auto hasDelete = [&] {
    std::lock_guard lock(mutex);
    for (const WatchEvent& e : seen) {
      if (e.type == WatchEvent::Type::kDelete && e.kv.key == "/dohost/v1/hosts/h1") return true;
    }
    return false;
  };
  // TTL + 3 s.
  bool deleted = eventually(5s, hasDelete);
  auto stopAsked = Clock::now();
  stop = true;
  watcher.join();
  CHECK(Clock::now() - stopAsked < 1s);
  CHECK(deleted);
  CHECK(ended.isOk());
  std::lock_guard lock(mutex);
  REQUIRE(seen.size() >= 2);
  CHECK(seen[0].type == WatchEvent::Type::kPut);
  CHECK(seen[0].kv.value == "{}");
  CHECK(seen[0].kv.modRevision == *put);
  CHECK(seen[0].kv.lease == grant->id);
  CHECK(seen.back().kv.modRevision > *put);
  MESSAGE("DELETE seen " << std::chrono::duration_cast<std::chrono::milliseconds>(
                               stopAsked - putAt).count() << " ms after the put (TTL 2 s)");
}

TEST_CASE("with the etcd leader killed, the client goes on through the other members and the lease survives") {
  auto etcd = startEtcd(3);
  auto client = clientOf(etcd->endpoints(), 1500ms);
  Result<LeaseGrant> grant = client->leaseGrant(5);
  REQUIRE(grant.isOk());
  REQUIRE(client->put("/t/leased", "kept", grant->id).isOk());
  int leader = etcd->leaderIndex();
  REQUIRE(leader >= 0);
  // Talk to the leader first, so the kill breaks the client's own connection.
  std::vector<std::string> order{etcd->endpoints()[leader]};
  for (int i = 0; i < 3; ++i) {
    if (i != leader) order.push_back(etcd->endpoints()[i]);
  }
  auto viaLeader = clientOf(order, 1500ms);
  REQUIRE(viaLeader->put("/t/before", "1").isOk());
  CHECK(viaLeader->currentEndpoint() == etcd->endpoints()[leader]);
  auto killedAt = Clock::now();
  etcd->kill(leader);

  // Renewals (as the LeaseKeeper sends them, every second) and writes resume once a new
  // leader is elected, well inside the lease's TTL.
  bool renewed = false, wrote = false;
  auto deadline = Clock::now() + 4s;
  while (Clock::now() < deadline && !(renewed && wrote)) {
    if (!renewed) renewed = viaLeader->leaseKeepAlive(grant->id).isOk();
    if (!wrote) wrote = viaLeader->put("/t/after", "2").isOk();
    if (!(renewed && wrote)) std::this_thread::sleep_for(100ms);
  }
  MESSAGE("first renewal and write after the kill: "
          << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killedAt)
                 .count()
          << " ms");
  CHECK(renewed);
  CHECK(wrote);
  CHECK(viaLeader->currentEndpoint() != etcd->endpoints()[leader]);
  Result<std::optional<KeyValue>> kv = viaLeader->get("/t/leased");
  REQUIRE(kv.isOk());
  REQUIRE(kv->has_value());
  CHECK((*kv)->value == "kept");
  CHECK((*kv)->lease == grant->id);
  Result<int64_t> ttl = viaLeader->leaseKeepAlive(grant->id);
  REQUIRE(ttl.isOk());
  CHECK(*ttl == 5);
  CHECK(etcd->leaderIndex() != leader);
}

}  // namespace dohost::cluster
