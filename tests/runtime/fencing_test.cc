// Fencing with a shared data folder: two runtimes on one folder play two hosts, each with its
// own claim table (the tokens etcd would hand out). The cluster's etcd side has its own tests
// (lease_keeper_test, etcd_client_test) and the integration suite test_cluster.
#include "dohost/storage/object_db.h"
#include "ownership.h"
#include "runtime/test_objects.h"

namespace dohost::testing {
namespace {

// A host's claims, set by the test. resolve() answers from them on the next drain().
class ClaimTable final : public Ownership {
 public:
  explicit ClaimTable(std::string self) : self_(std::move(self)) {}
  const std::string& selfId() const override { return self_; }
  uint64_t incarnation() const override { return 1; }
  std::optional<int64_t> claimToken(const std::string& className,
                                    const std::string& id) const override {
    auto it = claims.find(className + "/" + id);
    if (it == claims.end()) return std::nullopt;
    return it->second;
  }
  void resolve(const std::string& className, const std::string& id,
               std::function<void(Result<OwnerInfo>)> done) override {
    pending.push_back([this, className, id, done] {
      if (auto t = claimToken(className, id)) {
        done(OwnerInfo{self_, {}, *t, true});
      } else {
        done(OwnerInfo{"elsewhere", {}, 0, false});
      }
    });
  }
  void forget(const std::string& className, const std::string& id, bool release) override {
    if (claims.erase(className + "/" + id)) forgotten.push_back(release ? "released" : "dropped");
  }
  std::optional<std::string> knownOwner(const std::string& className,
                                        const std::string& id) const override {
    if (claimToken(className, id)) return self_;
    return std::nullopt;
  }
  void drain() {
    auto batch = std::move(pending);
    pending.clear();
    for (auto& f : batch) f();
  }

  std::map<std::string, int64_t> claims;
  std::vector<std::function<void()>> pending;
  std::vector<std::string> forgotten;

 private:
  std::string self_;
};

// Host A is the fixture's runtime; host B a second runtime on the same folder.
class TwoHosts : public RuntimeFixture {
 public:
  TwoHosts() : a("a"), b("b") {
    runtime->setOwnership(&a);
    RuntimeOptions o = options;
    o.dataDir = dir.path();
    other = std::make_unique<Runtime>(o, registry, clock);
    REQUIRE(other->start().isOk());
    other->setOwnership(&b);
  }
  ~TwoHosts() {
    other.reset();
    runtime.reset();
  }
  std::string key(const std::string& name = "alpha") {
    return "Counter/" + idFromName("Counter", name);
  }
  Response fetchOn(Runtime& rt, const std::string& path, const std::string& name = "alpha") {
    Request request("GET", path);
    detail::ApiAccess::setPendingState(request, std::make_shared<detail::PendingResponseState>());
    detail::ApiAccess::pendingState(request)->deliver = [](Response) {};
    return rt.fetch(rt.slot("Counter", idFromName("Counter", name), name), request);
  }
  std::optional<int64_t> tokenInFile(const std::string& name = "alpha") {
    storage::OpenOptions ro;
    ro.readOnly = true;
    auto db = storage::ObjectDatabase::open(
        dir.path() + "/Counter/" + idFromName("Counter", name) + ".sqlite", ro);
    REQUIRE(db.isOk());
    auto token = (*db)->fenceToken();
    REQUIRE(token.isOk());
    return *token;
  }

  ClaimTable a, b;
  std::unique_ptr<Runtime> other;
};

}  // namespace

TEST_CASE_FIXTURE(TwoHosts, "an object runs only under this host's claim") {
  Response refused = fetch("/inc");
  CHECK(refused.status() == 503);
  CHECK(journal.constructed == 0);  // not even built
  a.claims[key()] = 5;
  CHECK(body("/inc") == "1");
  CHECK(tokenInFile() == 5);  // the first event wrote the claim's token
}

TEST_CASE_FIXTURE(TwoHosts, "a commit under a token older than the file's is refused and nothing of it is seen") {
  a.claims[key()] = 5;
  auto socket = accept();
  RecordingTransport& t = bind(socket);
  CHECK(body("/inc") == "1");

  // Host B claimed later (its lease outlived A's, as when A was frozen) and wrote.
  b.claims[key()] = 7;
  CHECK(fetchOn(*other, "/inc").body() == "2");
  CHECK(tokenInFile() == 7);

  // A still believes it owns the object: its next commit is refused.
  Response late = fetch("/inc");
  CHECK(late.status() == 503);
  CHECK(runtime->fencingRefusals() == 1);
  CHECK(fetchOn(*other, "/get").body() == "2");  // A's write is nowhere
  CHECK(tokenInFile() == 7);                     // and the token never goes back
  CHECK_FALSE(live());                           // A dropped its instance
  CHECK(a.claims.empty());                       // and forgot its claim, without releasing it
  REQUIRE(a.forgotten.size() == 1);
  CHECK(a.forgotten[0] == "dropped");
  REQUIRE(t.closed);
  CHECK(t.closed->first == 1012);  // its sockets reconnect, to the owner
}

TEST_CASE_FIXTURE(TwoHosts, "a host whose claim is older than the file's does not build the object") {
  b.claims[key()] = 9;
  CHECK(fetchOn(*other, "/inc").body() == "1");
  int built = journal.constructed;
  a.claims[key()] = 4;  // a claim from before B's, seen late
  CHECK(fetch("/inc").status() == 503);
  CHECK(journal.constructed == built);  // refused before the constructor ran
  CHECK(runtime->fencingRefusals() == 1);
  CHECK(tokenInFile() == 9);
}

TEST_CASE_FIXTURE(TwoHosts, "a newer claim takes over the file and the old owner's data") {
  a.claims[key()] = 3;
  CHECK(body("/inc") == "1");
  CHECK(body("/inc") == "2");
  a.forget("Counter", idFromName("Counter", "alpha"), true);  // A went idle and released
  b.claims[key()] = 8;
  CHECK(fetchOn(*other, "/inc").body() == "3");
  CHECK(tokenInFile() == 8);
}

TEST_CASE_FIXTURE(TwoHosts, "an idle object without sockets releases its claim") {
  a.claims[key()] = 3;
  CHECK(body("/inc") == "1");
  advance(Duration(11'000));
  CHECK_FALSE(live());
  CHECK(a.claims.empty());
  REQUIRE(a.forgotten.size() == 1);
  CHECK(a.forgotten[0] == "released");
}

TEST_CASE_FIXTURE(TwoHosts, "a self-fence drops every instance and closes its sockets with 1012") {
  a.claims[key()] = 3;
  auto socket = accept();
  RecordingTransport& t = bind(socket);
  CHECK(body("/inc") == "1");
  a.claims.clear();
  runtime->dropAllClaims("self-fence (test)");
  CHECK_FALSE(live());
  REQUIRE(t.closed);
  CHECK(t.closed->first == 1012);
  CHECK(fetch("/inc").status() == 503);
}

TEST_CASE_FIXTURE(TwoHosts, "an alarm fires on the host that can claim its object") {
  a.claims[key()] = 3;
  CHECK(body("/alarm?ms=1000") == "set");
  a.claims.clear();  // A lost it (it died, say); B's rescan finds the alarm in the shared index
  b.claims[key()] = 6;
  TimePoint end = clock.now() + Duration(3'000);
  while (clock.now() < end) {
    other->runDue();
    b.drain();
    clock.set(clock.now() + Duration(100));
  }
  REQUIRE(journal.alarms.size() == 1);
  CHECK(tokenInFile() == 6);
}

TEST_CASE_FIXTURE(TwoHosts, "a schedule fires only on the host that can claim its object") {
  a.claims[key()] = 3;
  CHECK(body("/schedule?name=s&ms=1000&payload=once") == "scheduled");
  a.claims.clear();  // A lost it; B holds it now, and B's rescan finds it in the shared index
  b.claims[key()] = 6;
  // Both hosts' timers run: A's finds the object owned elsewhere and leaves it to B.
  TimePoint end = clock.now() + Duration(3'000);
  while (clock.now() < end) {
    runtime->runDue();
    a.drain();
    other->runDue();
    b.drain();
    clock.set(clock.now() + Duration(100));
  }
  REQUIRE(journal.scheduleRuns.size() == 1);
  CHECK(journal.scheduleRuns[0].payload == "once");
  CHECK(tokenInFile() == 6);
  CHECK(a.claims.empty());  // A never claimed it back
}

}  // namespace dohost::testing
