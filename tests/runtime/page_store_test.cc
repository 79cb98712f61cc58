// The PostgreSQL page store against a real PostgreSQL 15 started by each test
// (pg_harness.h): claims, commits of pages captured from real SQLite files, fencing, grouped
// commits, loads rebuilt into files, and a commit in flight when PostgreSQL is killed.
// Skipped, with a message, where the PostgreSQL binaries are missing.
#include "store/page_store.h"

#include <signal.h>

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "dohost/storage/object_db.h"
#include "dohost/storage/wal_capture.h"
#include "loop_inbox.h"
#include "pg_harness.h"
#include "support/temp_dir.h"

namespace dohost::store {

namespace {

using namespace std::chrono_literals;
using testing::PgSession;
using testing::PostgresServer;

// A running PostgreSQL and a store on it whose answers come back through a LoopInbox, as
// they would to the runtime's loop. REQUIRE fails the test if either cannot start.
class StoreFixture {
 public:
  explicit StoreFixture(std::chrono::milliseconds requestTimeout = 30s) {
    Result<std::unique_ptr<PostgresServer>> server = PostgresServer::start();
    if (!server.isOk() && server.status().code() == Status::Code::kNotFound) {
      skipped = server.status().message();
      return;
    }
    REQUIRE_MESSAGE(server.isOk(), server.status().toString());
    pg = std::move(server).value();
    inbox_.setWake([this] {
      std::lock_guard lock(mutex_);
      ++posts_;
      posted_.notify_all();
    });
    Result<std::unique_ptr<PageStore>> made = PageStore::start(
        {.conninfo = pg->conninfo(),
         .requestTimeout = requestTimeout,
         .post = [this](std::function<void()> fn) { inbox_.post(std::move(fn)); }});
    REQUIRE_MESSAGE(made.isOk(), made.status().toString());
    store = std::move(made).value();
    SchemaAnswer schema = await<SchemaAnswer>([&](auto done) { store->ensureSchema(done); });
    REQUIRE_MESSAGE(schema.outcome == Outcome::kOk, schema.error);
  }
  ~StoreFixture() {
    store.reset();  // answers still queued are dropped with the inbox, not run
    inbox_.setWake(nullptr);
  }

  // Calls `call` with a callback and drains the inbox until that callback ran (the bound is
  // far above any answer's time: a hang fails the test instead of blocking it).
  template <class Answer, class Call>
  Answer await(Call call) {
    std::optional<Answer> answer;
    call([&answer](Answer a) { answer = std::move(a); });
    drainUntil([&] { return answer.has_value(); });
    return std::move(*answer);
  }

  // Runs what the store posts until `done` holds.
  template <class Done>
  void drainUntil(Done done) {
    auto limit = std::chrono::steady_clock::now() + 60s;
    while (!done()) {
      {
        std::unique_lock lock(mutex_);
        posted_.wait_until(lock, limit, [&] { return posts_ > 0; });
        posts_ = 0;
      }
      inbox_.drain();
      REQUIRE_MESSAGE((done() || std::chrono::steady_clock::now() < limit), "no answer in 60 s");
    }
  }

  ClaimAnswer claim(const std::string& key, int64_t epoch) {
    return await<ClaimAnswer>([&](auto done) { store->claim(key, epoch, 0, done); });
  }
  CommitAnswer commit(std::vector<ObjectCommit> objects) {
    return await<CommitAnswer>([&](auto done) { store->commit(std::move(objects), done); });
  }
  LoadAnswer load(const std::string& key) {
    return await<LoadAnswer>([&](auto done) { store->load(key, done); });
  }

  std::string skipped;  // why the tests do not run here; empty when they do
  std::unique_ptr<PostgresServer> pg;
  std::unique_ptr<PageStore> store;

 private:
  LoopInbox inbox_;
  std::mutex mutex_;
  std::condition_variable posted_;
  int posts_ = 0;  // guarded by mutex_
};

#define SKIP_WITHOUT_POSTGRES(fixture)                                   \
  if (!(fixture).skipped.empty()) {                                      \
    MESSAGE("skipped: " << (fixture).skipped);                           \
    return;                                                              \
  }

// A real object file in capture mode; each write is one commit whose pages it captures.
class CapturedObject {
 public:
  CapturedObject(const testing::TempDir& dir, const std::string& key)
      : key_(key) {
    auto db = storage::ObjectDatabase::open(dir.path() + "/" + key + ".sqlite",
                                            {.captureWal = true});
    REQUIRE_MESSAGE(db.isOk(), db.status().toString());
    db_ = std::move(db).value();
  }

  // The pages the open and the writes since the last call committed, as a commit under `epoch`.
  ObjectCommit take(int64_t epoch, std::optional<int64_t> alarmAtMs = std::nullopt) {
    auto captured = db_->captureCommits();
    REQUIRE_MESSAGE(captured.isOk(), captured.status().toString());
    REQUIRE(captured->has_value());
    storage::CapturedPages& pages = **captured;
    return ObjectCommit{.objectKey = key_,
                        .epoch = epoch,
                        .pages = pages.pages,
                        .dbPages = pages.dbPages,
                        .pageSize = pages.pageSize,
                        .alarmAtMs = alarmAtMs};
  }
  void put(const std::string& key, const std::string& value) {
    REQUIRE(db_->put(key, value).isOk());
    rows_[key] = value;
  }
  void shipped() { REQUIRE(db_->checkpointCaptured().isOk()); }
  const std::map<std::string, std::string>& rows() const { return rows_; }

 private:
  std::string key_;
  std::unique_ptr<storage::ObjectDatabase> db_;
  std::map<std::string, std::string> rows_;
};

// Rebuilds `loaded` into a file and checks it holds `rows` and passes integrity_check.
void checkRebuilt(const testing::TempDir& dir, const LoadAnswer& loaded,
                  const std::map<std::string, std::string>& rows) {
  REQUIRE(loaded.outcome == Outcome::kOk);
  REQUIRE(loaded.found);
  std::string path = dir.path() + "/rebuilt.sqlite";
  Status rebuilt = storage::rebuildDatabase(path, loaded.pages, loaded.dbPages);
  REQUIRE_MESSAGE(rebuilt.isOk(), rebuilt.toString());
  auto db = storage::ObjectDatabase::open(path, {});
  REQUIRE(db.isOk());
  auto check = (*db)->exec("PRAGMA integrity_check");
  REQUIRE(check.isOk());
  CHECK(check->rows.at(0).at(0) == SqlValue(std::string("ok")));
  std::map<std::string, std::string> found;
  auto listed = (*db)->list({});
  REQUIRE(listed.isOk());
  for (auto& [key, value] : *listed) found[key] = value;
  CHECK(found == rows);
}

TEST_CASE("page store: claim, commits and a load that rebuilds the object's file") {
  StoreFixture f;
  SKIP_WITHOUT_POSTGRES(f);
  testing::TempDir dir;
  CapturedObject object(dir, "room-1");

  ClaimAnswer claimed = f.claim("room-1", 5);
  REQUIRE_MESSAGE(claimed.outcome == Outcome::kOk, claimed.error);
  CHECK(claimed.commitEpoch == 0);
  CHECK(claimed.commitSeq == 0);
  CHECK(claimed.dbPages == 0);

  object.put("a", "1");
  CommitAnswer first = f.commit({object.take(5, 1'700'000'000'123)});
  REQUIRE_MESSAGE(first.outcome == Outcome::kOk, first.error);
  REQUIRE(first.objects.size() == 1);
  CHECK(first.objects[0].outcome == Outcome::kOk);
  CHECK(first.objects[0].commitSeq == 1);
  object.shipped();

  for (int i = 0; i < 300; ++i) object.put("k" + std::to_string(i), std::string(500, 'x'));
  CommitAnswer second = f.commit({object.take(5)});
  REQUIRE_MESSAGE(second.outcome == Outcome::kOk, second.error);
  CHECK(second.objects[0].commitSeq == 2);

  LoadAnswer loaded = f.load("room-1");
  CHECK(loaded.epoch == 5);
  CHECK(loaded.commitEpoch == 5);
  CHECK(loaded.commitSeq == 2);
  CHECK(loaded.pageSize == 4096);
  CHECK(!loaded.alarmAtMs.has_value());
  checkRebuilt(dir, loaded, object.rows());

  // A later claim by the same host sees what it committed.
  ClaimAnswer again = f.claim("room-1", 9);
  CHECK(again.outcome == Outcome::kOk);
  CHECK(again.commitEpoch == 5);
  CHECK(again.commitSeq == 2);
  CHECK(again.dbPages == loaded.dbPages);

  LoadAnswer missing = f.load("nobody");
  CHECK(missing.outcome == Outcome::kOk);
  CHECK(!missing.found);
}

TEST_CASE("page store: the alarm time is stored with the pages") {
  StoreFixture f;
  SKIP_WITHOUT_POSTGRES(f);
  testing::TempDir dir;
  CapturedObject object(dir, "alarmed");
  REQUIRE(f.claim("alarmed", 3).outcome == Outcome::kOk);
  REQUIRE(f.commit({object.take(3, 1'700'000'000'123)}).outcome == Outcome::kOk);
  CHECK(f.load("alarmed").alarmAtMs == std::optional<int64_t>(1'700'000'000'123));
}

TEST_CASE("page store: a fenced commit is refused and changes nothing") {
  StoreFixture f;
  SKIP_WITHOUT_POSTGRES(f);
  testing::TempDir dir;
  CapturedObject object(dir, "obj");
  REQUIRE(f.claim("obj", 5).outcome == Outcome::kOk);
  object.put("a", "1");
  REQUIRE(f.commit({object.take(5)}).outcome == Outcome::kOk);
  LoadAnswer before = f.load("obj");

  // A new owner claims with a greater token; the old owner's next commit is fenced.
  ClaimAnswer newOwner = f.claim("obj", 7);
  REQUIRE(newOwner.outcome == Outcome::kOk);
  CHECK(newOwner.commitEpoch == 5);
  CHECK(newOwner.commitSeq == 1);
  object.put("b", "2");
  CommitAnswer fenced = f.commit({object.take(5)});
  CHECK(fenced.outcome == Outcome::kOk);  // the transaction itself committed
  REQUIRE(fenced.objects.size() == 1);
  CHECK(fenced.objects[0].outcome == Outcome::kFenced);
  LoadAnswer after = f.load("obj");
  CHECK(after.epoch == 7);
  CHECK(after.commitEpoch == 5);
  CHECK(after.commitSeq == 1);
  CHECK(after.dbPages == before.dbPages);
  CHECK(after.pages == before.pages);

  // An older claim finds the newer owner; the same token claims again (a retry).
  CHECK(f.claim("obj", 6).outcome == Outcome::kFenced);
  CHECK(f.claim("obj", 7).outcome == Outcome::kOk);
  // A commit for an object nobody claimed is fenced too.
  CapturedObject stray(dir, "stray");
  CommitAnswer unclaimed = f.commit({stray.take(1)});
  CHECK(unclaimed.objects.at(0).outcome == Outcome::kFenced);
  CHECK(!f.load("stray").found);
}

TEST_CASE("page store: a grouped commit writes several objects in one transaction") {
  StoreFixture f;
  SKIP_WITHOUT_POSTGRES(f);
  testing::TempDir dir;
  CapturedObject a(dir, "a"), b(dir, "b"), c(dir, "c");
  for (const char* key : {"a", "b", "c"}) REQUIRE(f.claim(key, 10).outcome == Outcome::kOk);
  REQUIRE(f.claim("c", 11).outcome == Outcome::kOk);  // c moved to another owner
  a.put("x", "1");
  b.put("y", "2");
  c.put("z", "3");
  CommitAnswer group = f.commit({a.take(10), b.take(10), c.take(10)});
  REQUIRE_MESSAGE(group.outcome == Outcome::kOk, group.error);
  REQUIRE(group.objects.size() == 3);
  CHECK(group.objects[0].objectKey == "a");
  CHECK(group.objects[0].outcome == Outcome::kOk);
  CHECK(group.objects[1].outcome == Outcome::kOk);
  CHECK(group.objects[2].outcome == Outcome::kFenced);
  checkRebuilt(dir, f.load("a"), a.rows());
  checkRebuilt(dir, f.load("b"), b.rows());
  CHECK(f.load("c").commitSeq == 0);
  CHECK(f.load("c").pages.empty());

  // Pages above a commit's database size are deleted.
  ObjectCommit shrink{.objectKey = "a", .epoch = 10, .dbPages = 1, .pageSize = 4096};
  shrink.pages[1] = f.load("a").pages.at(1);
  REQUIRE(f.commit({shrink}).outcome == Outcome::kOk);
  LoadAnswer shrunk = f.load("a");
  CHECK(shrunk.dbPages == 1);
  CHECK(shrunk.pages.size() == 1);
}

// The pid of the backend waiting for a lock while running the page store's commit; 0 if none
// appears in 20 s.
int waitingCommitBackend(PgSession& session) {
  auto limit = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < limit) {
    auto rows = session.query(
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE '%WITH head AS%'");
    REQUIRE_MESSAGE(rows.isOk(), rows.status().toString());
    if (!rows->empty()) return std::stoi(rows->at(0).at(0));
    std::this_thread::sleep_for(20ms);
  }
  return 0;
}

TEST_CASE("page store: a commit in flight when PostgreSQL is killed has an unknown outcome") {
  StoreFixture f;
  SKIP_WITHOUT_POSTGRES(f);
  testing::TempDir dir;
  CapturedObject object(dir, "obj");
  REQUIRE(f.claim("obj", 5).outcome == Outcome::kOk);

  // Another session holds the object's row, so the commit waits inside PostgreSQL.
  auto holder = PgSession::open(f.pg->conninfo());
  REQUIRE(holder.isOk());
  REQUIRE((*holder)->query("BEGIN").isOk());
  REQUIRE((*holder)->query("SELECT 1 FROM do_object WHERE object_key = 'obj' FOR UPDATE").isOk());
  auto watcher = PgSession::open(f.pg->conninfo());
  REQUIRE(watcher.isOk());

  std::optional<CommitAnswer> answer;
  object.put("a", "1");
  f.store->commit({object.take(5)}, [&answer](CommitAnswer a) { answer = std::move(a); });

  SUBCASE("the backend running the commit is killed") {
    int backend = waitingCommitBackend(**watcher);
    REQUIRE(backend > 0);
    REQUIRE(::kill(backend, SIGKILL) == 0);
    f.drainUntil([&] { return answer.has_value(); });
    CAPTURE(answer->error);
    CHECK(answer->outcome == Outcome::kUnknown);
    CHECK(answer->objects.at(0).outcome == Outcome::kUnknown);

    // PostgreSQL restarts its sessions; the store connects again, and here the commit did not
    // happen (the backend died waiting for the lock).
    LoadAnswer loaded;
    for (int tries = 0; tries < 100; ++tries) {
      loaded = f.load("obj");
      if (loaded.outcome == Outcome::kOk) break;
      std::this_thread::sleep_for(100ms);
    }
    REQUIRE_MESSAGE(loaded.outcome == Outcome::kOk, loaded.error);
    CHECK(loaded.commitSeq == 0);
    object.put("b", "2");
    CommitAnswer next = f.commit({object.take(5)});
    CHECK(next.outcome == Outcome::kOk);
    CHECK(next.objects.at(0).commitSeq == 1);
  }

  SUBCASE("the whole server is killed") {
    REQUIRE(waitingCommitBackend(**watcher) > 0);
    f.pg->killAll();
    f.drainUntil([&] { return answer.has_value(); });
    CAPTURE(answer->error);
    CHECK(answer->outcome == Outcome::kUnknown);
    // With no server, a request fails definitely: nothing could be sent.
    ClaimAnswer refused = f.claim("obj", 6);
    CHECK(refused.outcome == Outcome::kFailed);
    CHECK(!refused.error.empty());
  }
}

// Another session takes the object's row lock, so that a commit of it waits inside PostgreSQL
// until that session ends.
std::unique_ptr<PgSession> holdRow(const PostgresServer& pg, const std::string& key) {
  auto holder = PgSession::open(pg.conninfo());
  REQUIRE(holder.isOk());
  REQUIRE((*holder)->query("BEGIN").isOk());
  REQUIRE((*holder)->query("SELECT 1 FROM do_object WHERE object_key = '" + key + "' FOR UPDATE")
              .isOk());
  return std::move(holder).value();
}

TEST_CASE("page store: a commit past its deadline is unknown, and it may land after all") {
  StoreFixture f(3s);
  SKIP_WITHOUT_POSTGRES(f);
  testing::TempDir dir;
  CapturedObject object(dir, "slow");
  REQUIRE(f.claim("slow", 5).outcome == Outcome::kOk);
  std::unique_ptr<PgSession> holder = holdRow(*f.pg, "slow");

  object.put("a", "1");
  CommitAnswer late = f.commit({object.take(5)});
  CAPTURE(late.error);
  CHECK(late.outcome == Outcome::kUnknown);

  // PostgreSQL had the whole transaction, COMMIT included: once the row is free it commits,
  // though nobody waits for it any more. That is why the answer could not be "failed".
  REQUIRE(holder->query("ROLLBACK").isOk());
  LoadAnswer loaded;
  for (int tries = 0; tries < 200; ++tries) {
    loaded = f.load("slow");
    if (loaded.outcome == Outcome::kOk && loaded.commitSeq == 1) break;
    std::this_thread::sleep_for(50ms);
  }
  CHECK(loaded.commitSeq == 1);
  checkRebuilt(dir, loaded, object.rows());
}

TEST_CASE("page store: stopping it ends the request in flight as unknown and fails the queued") {
  StoreFixture f;
  SKIP_WITHOUT_POSTGRES(f);
  testing::TempDir dir;
  CapturedObject object(dir, "obj");
  REQUIRE(f.claim("obj", 5).outcome == Outcome::kOk);
  std::unique_ptr<PgSession> holder = holdRow(*f.pg, "obj");
  auto watcher = PgSession::open(f.pg->conninfo());
  REQUIRE(watcher.isOk());

  std::optional<CommitAnswer> inFlight;
  std::optional<ClaimAnswer> queued;
  object.put("a", "1");
  f.store->commit({object.take(5)}, [&](CommitAnswer a) { inFlight = std::move(a); });
  f.store->claim("other", 1, 0, [&](ClaimAnswer a) { queued = std::move(a); });
  REQUIRE(waitingCommitBackend(**watcher) > 0);
  f.store.reset();
  f.drainUntil([&] { return inFlight && queued; });
  CHECK(inFlight->outcome == Outcome::kUnknown);
  CHECK(queued->outcome == Outcome::kFailed);
  CHECK(queued->error == "the page store stopped");
}

}  // namespace
}  // namespace dohost::store
