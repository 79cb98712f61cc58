// Storage under injected faults (the fault VFS): a write or fsync that fails, a disk that
// fills up, a checkpoint that fails, a file that cannot be opened or read, a folder that turns
// read-only, and files that are corrupt or truncated on disk. Each must be reported as a
// storage fault, keep everything committed before it, and work again once the fault is gone.
#include "dohost/storage/fault_vfs.h"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>

#include "dohost/storage/alarm_index.h"
#include "dohost/storage/object_db.h"
#include "test_support.h"

namespace dohost::storage {
namespace {

using testing::checkIntegrity;
using testing::openDb;
using testing::TempDir;
using testing::valueOf;

// Arms `spec` for one test; the rules are cleared when it ends.
class ArmedFaults {
 public:
  explicit ArmedFaults(std::string_view spec = {}) {
    REQUIRE_OK(faults::install());
    arm(spec);
  }
  ~ArmedFaults() { faults::clear(); }
  ArmedFaults(const ArmedFaults&) = delete;
  ArmedFaults& operator=(const ArmedFaults&) = delete;

  void arm(std::string_view spec) {
    Result<std::vector<faults::Rule>> rules = faults::parse(spec);
    REQUIRE_MESSAGE(rules.isOk(), rules.status().toString());
    faults::arm(std::move(rules).value());
  }
  int64_t failed() const {
    int64_t n = 0;
    for (const faults::Rule& r : faults::rules()) n += r.failed;
    return n;
  }
};

// One committed transaction writing key = value.
Status commitPut(ObjectDatabase& db, const std::string& key, const std::string& value) {
  if (Status s = db.begin(); !s.isOk()) return s;
  Status s = db.put(key, value);
  if (s.isOk()) s = db.commit();
  if (!s.isOk() && db.inTransaction()) (void)db.rollback();
  return s;
}

int primaryCode(const Status& s) { return s.sqliteCode() & 0xFF; }

std::optional<std::string> valueAt(ObjectDatabase& db, const std::string& key) {
  return valueOf(db.get(key));
}

// Closes `db`, opens its file again and checks that it holds `expected` (nullopt: absent) and
// is intact.
void reopenAndCheck(std::unique_ptr<ObjectDatabase>& db,
                    const std::vector<std::pair<std::string, std::optional<std::string>>>& expected) {
  std::string path = db->path();
  db.reset();
  db = openDb(path);
  for (const auto& [key, value] : expected) {
    CAPTURE(key);
    CHECK(valueAt(*db, key) == value);
  }
  checkIntegrity(*db);
}

// A database at `path` holding key = value, closed.
void commitAndClose(const std::string& path, const std::string& key, const std::string& value) {
  auto db = openDb(path);
  REQUIRE_OK(commitPut(*db, key, value));
}

TEST_CASE("fault specs parse, and bad ones are refused with the reason") {
  auto rules = valueOf(faults::parse(
      " write,path=/Counter/,skip=2,count=1 ; sync,file=wal,error=full;write,quota=4096;readonly"));
  REQUIRE(rules.size() == 4);
  CHECK(rules[0].op == faults::Op::kWrite);
  CHECK(rules[0].path == "/Counter/");
  CHECK(rules[0].skip == 2);
  CHECK(rules[0].count == 1);
  CHECK(rules[1].op == faults::Op::kSync);
  CHECK(rules[1].file == faults::FileKind::kWal);
  CHECK(rules[1].error == SQLITE_FULL);
  CHECK(rules[2].quota == 4096);
  CHECK(rules[3].op == faults::Op::kReadOnly);
  CHECK(faults::describe(rules[0]) == "write,path=/Counter/,skip=2,count=1 (seen 0, failed 0)");
  CHECK(valueOf(faults::parse("")).empty());
  CHECK(valueOf(faults::parse(" ; ")).empty());

  for (const char* bad : {"scribble", "write,path", "write,count=0", "write,skip=-1",
                          "write,skip=1x", "sync,quota=10", "write,error=lost", "write,file=shm",
                          "write,colour=red", "write,path="}) {
    CAPTURE(bad);
    Result<std::vector<faults::Rule>> parsed = faults::parse(bad);
    CHECK(parsed.status().code() == Status::Code::kInvalidArgument);
    CHECK(parsed.status().message().find("fault rule") == 0);
  }
}

TEST_CASE("with no rule armed the fault VFS changes nothing") {
  TempDir dir;
  ArmedFaults faults;
  auto db = openDb(dir.file("a.sqlite"));
  REQUIRE_OK(commitPut(*db, "k", "v"));
  CHECK(valueAt(*db, "k") == "v");
  CHECK(std::string(sqlite3_vfs_find(nullptr)->zName) == "dohost-faults");
  checkIntegrity(*db);
}

TEST_CASE("a write that fails fails the commit; what was committed before stays, and then it works again") {
  TempDir dir;
  ArmedFaults faults;
  auto db = openDb(dir.file("a.sqlite"));
  REQUIRE_OK(commitPut(*db, "before", "committed"));

  faults.arm("write,path=a.sqlite");
  Status failed = commitPut(*db, "during", "lost");
  CHECK(faults.failed() >= 1);
  CHECK(failed.isStorageFault());
  CHECK(primaryCode(failed) == SQLITE_IOERR);
  CHECK_FALSE(db->inTransaction());
  CHECK(valueAt(*db, "during") == std::nullopt);
  CHECK(valueAt(*db, "before") == "committed");

  faults.arm("");
  REQUIRE_OK(commitPut(*db, "after", "works"));
  reopenAndCheck(db, {{"before", "committed"}, {"during", std::nullopt}, {"after", "works"}});
}

TEST_CASE("the Nth write fails: skip and count choose which") {
  TempDir dir;
  ArmedFaults faults;
  auto db = openDb(dir.file("a.sqlite"));
  faults.arm("write,path=a.sqlite-wal,skip=2,count=1");
  int committed = 0;
  int failures = 0;
  for (int i = 0; i < 6; ++i) {
    if (commitPut(*db, "k" + std::to_string(i), "v").isOk()) {
      ++committed;
    } else {
      ++failures;
    }
  }
  CHECK(failures == 1);
  CHECK(committed == 5);
  CHECK(faults::rules()[0].failed == 1);
  CHECK(faults::rules()[0].seen > 3);
  CHECK(valueOf(db->keyCount()) == 5);
}

TEST_CASE("an fsync error fails the commit and loses nothing committed") {
  TempDir dir;
  ArmedFaults faults;
  auto db = openDb(dir.file("a.sqlite"));
  REQUIRE_OK(commitPut(*db, "before", "committed"));

  faults.arm("sync,path=a.sqlite,count=1");
  Status failed = commitPut(*db, "during", "not acknowledged");
  CHECK(faults.failed() == 1);
  CHECK(failed.isStorageFault());
  CHECK(failed.sqliteCode() == SQLITE_IOERR_FSYNC);
  CHECK(valueAt(*db, "during") == std::nullopt);

  REQUIRE_OK(commitPut(*db, "after", "works"));  // count=1: the fault is gone
  reopenAndCheck(db, {{"before", "committed"}, {"after", "works"}});
}

TEST_CASE("a disk that fills up: commits fail with SQLITE_FULL, the acknowledged ones stay") {
  TempDir dir;
  ArmedFaults faults;
  auto db = openDb(dir.file("a.sqlite"));
  faults.arm("write,path=" + dir.path() + ",quota=65536");
  std::vector<int> acknowledged;
  Status full;
  for (int i = 0; i < 100 && full.isOk(); ++i) {
    full = commitPut(*db, "k" + std::to_string(i), std::string(5000, 'a' + i % 26));
    if (full.isOk()) acknowledged.push_back(i);
  }
  REQUIRE_FALSE(full.isOk());
  CHECK(primaryCode(full) == SQLITE_FULL);
  CHECK(full.isStorageFault());
  CHECK(acknowledged.size() >= 3);  // 64 KiB holds a few 5 KB commits (with their pages)
  CHECK(acknowledged.size() < 13);
  // Still full: the next commit of the same size fails too, and reads keep working.
  CHECK(primaryCode(commitPut(*db, "more", std::string(5000, 'm'))) == SQLITE_FULL);
  for (int i : acknowledged) {
    CAPTURE(i);
    CHECK(valueAt(*db, "k" + std::to_string(i)) == std::string(5000, 'a' + i % 26));
  }

  faults.arm("");  // space freed
  REQUIRE_OK(commitPut(*db, "more", "x"));
  reopenAndCheck(db, {{"more", "x"}});
  CHECK(valueOf(db->keyCount()) == static_cast<int64_t>(acknowledged.size()) + 1);
}

TEST_CASE("a checkpoint that fails after a commit does not make the commit a failure") {
  TempDir dir;
  ArmedFaults faults;
  auto db = openDb(dir.file("a.sqlite"));
  // In WAL mode only checkpoints write the database file itself; SQLite checkpoints after a
  // commit that takes the log past 1000 pages.
  faults.arm("write,path=a.sqlite,file=db");
  const std::string big(2'000'000, 'b');
  for (const char* key : {"one", "two", "three"}) {
    CAPTURE(key);
    Status s = commitPut(*db, key, big);
    CHECK_MESSAGE(s.isOk(), s.toString());
  }
  CHECK(faults.failed() >= 1);  // the checkpoint did run, and failed
  CHECK(valueAt(*db, "three") == big);
  CHECK_FALSE(db->takeCheckpointError().isOk());
  CHECK(db->takeCheckpointError().isOk());  // taken once

  faults.arm("");
  reopenAndCheck(db, {{"one", big}, {"two", big}, {"three", big}});  // the close checkpoints
}

TEST_CASE("a file that cannot be opened is a storage fault, and opens once the fault is gone") {
  TempDir dir;
  ArmedFaults faults;
  commitAndClose(dir.file("a.sqlite"), "k", "v");
  faults.arm("open,path=a.sqlite,file=db");
  Result<std::unique_ptr<ObjectDatabase>> opened = ObjectDatabase::open(dir.file("a.sqlite"), {});
  REQUIRE_FALSE(opened.isOk());
  CHECK(opened.status().isStorageFault());
  faults.arm("");
  auto db = openDb(dir.file("a.sqlite"));
  CHECK(valueAt(*db, "k") == "v");
}

TEST_CASE("a read that fails is a storage fault") {
  TempDir dir;
  ArmedFaults faults;
  commitAndClose(dir.file("a.sqlite"), "k", "v");
  auto db = openDb(dir.file("a.sqlite"));
  faults.arm("read,path=a.sqlite");
  Result<std::optional<std::string>> got = db->get("k");
  REQUIRE_FALSE(got.isOk());
  CHECK(got.status().isStorageFault());
  faults.arm("");
  CHECK(valueAt(*db, "k") == "v");
}

TEST_CASE("a folder that turns read-only: reads work, writes and new files fail, then it recovers") {
  TempDir dir;
  ArmedFaults faults;
  auto open = openDb(dir.file("a.sqlite"));
  REQUIRE_OK(commitPut(*open, "before", "committed"));

  faults.arm("readonly,path=" + dir.path());
  // A handle that was already open: its writes fail (as after a read-only remount).
  Status write = commitPut(*open, "during", "x");
  CHECK(write.isStorageFault());
  CHECK(valueAt(*open, "before") == "committed");
  open.reset();
  // Opened now: read-only, so reads work and writes are refused.
  auto reader = openDb(dir.file("a.sqlite"));
  CHECK(valueAt(*reader, "before") == "committed");
  Status refused = commitPut(*reader, "during", "x");
  CHECK(refused.isStorageFault());
  CHECK(primaryCode(refused) == SQLITE_READONLY);
  // A new database cannot be created.
  Result<std::unique_ptr<ObjectDatabase>> created = ObjectDatabase::open(dir.file("new.sqlite"), {});
  REQUIRE_FALSE(created.isOk());
  CHECK(created.status().isStorageFault());
  reader.reset();

  faults.arm("");
  auto db = openDb(dir.file("a.sqlite"));
  REQUIRE_OK(commitPut(*db, "after", "works"));
  CHECK(valueAt(*db, "before") == "committed");
  CHECK(valueAt(*db, "during") == std::nullopt);
  checkIntegrity(*db);
}

// Overwrites `bytes` at `offset` of `path`.
void scribble(const std::string& path, std::streamoff offset, const std::string& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  REQUIRE(f.good());
  f.seekp(offset);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

// A database with enough rows to span many pages, closed (so the log is checkpointed away).
void fillAndClose(const std::string& path) {
  auto db = openDb(path);
  for (int i = 0; i < 200; ++i) REQUIRE_OK(commitPut(*db, "k" + std::to_string(i), std::string(1000, 'x')));
}

TEST_CASE("a database file that is not a database is refused at open, and left as it was") {
  TempDir dir;
  const std::string path = dir.file("a.sqlite");
  fillAndClose(path);
  scribble(path, 0, "this is not an SQLite file at all");
  auto size = std::filesystem::file_size(path);
  Result<std::unique_ptr<ObjectDatabase>> opened = ObjectDatabase::open(path, {});
  REQUIRE_FALSE(opened.isOk());
  CHECK(opened.status().isStorageFault());
  CHECK(primaryCode(opened.status()) == SQLITE_NOTADB);
  CHECK(std::filesystem::file_size(path) == size);  // not "repaired" into an empty database
}

TEST_CASE("a truncated database file is reported corrupt, not read as fewer rows") {
  TempDir dir;
  const std::string path = dir.file("a.sqlite");
  fillAndClose(path);
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  Result<std::unique_ptr<ObjectDatabase>> opened = ObjectDatabase::open(path, {});
  Status status = opened.isOk() ? (*opened)->keyCount().status() : opened.status();
  REQUIRE_FALSE(status.isOk());
  CHECK(status.isStorageFault());
  CHECK(primaryCode(status) == SQLITE_CORRUPT);
}

TEST_CASE("pages that are garbage are reported corrupt when they are read") {
  TempDir dir;
  const std::string path = dir.file("a.sqlite");
  fillAndClose(path);
  scribble(path, 4096, std::string(4096 * 40, '\xA5'));  // pages 2-41: the tables' b-trees
  auto db = openDb(path);
  Result<std::vector<KvEntry>> all = db->list({});
  REQUIRE_FALSE(all.isOk());
  CHECK(all.status().isStorageFault());
  CHECK(primaryCode(all.status()) == SQLITE_CORRUPT);
}

TEST_CASE("the alarm index reports a failed write, and keeps what it had") {
  TempDir dir;
  ArmedFaults faults;
  auto index = valueOf(AlarmIndex::open(dir.file("alarms.sqlite")));
  REQUIRE_OK(index->upsert({"C", "a", std::nullopt, 1000}));
  faults.arm("write,path=alarms.sqlite");
  Status failed = index->upsert({"C", "b", std::nullopt, 2000});
  CHECK(failed.isStorageFault());
  faults.arm("");
  auto entries = valueOf(index->all());
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].id == "a");
  REQUIRE_OK(index->upsert({"C", "b", std::nullopt, 2000}));
  CHECK(valueOf(index->all()).size() == 2);
}

}  // namespace
}  // namespace dohost::storage
