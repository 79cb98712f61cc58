// WAL page capture on real SQLite files: what each commit wrote, across checkpoints (the log
// starting again), rollbacks, big transactions and reopens; a rebuild from the captured pages
// is the same database. The frame reader on damaged logs, and a failing read of the log.
#include "dohost/storage/wal_capture.h"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>

#include "dohost/storage/fault_vfs.h"
#include "dohost/storage/object_db.h"
#include "test_support.h"

namespace dohost::storage {
namespace {

using testing::checkIntegrity;
using testing::openDb;
using testing::TempDir;
using testing::valueOf;

using Rows = std::map<std::string, std::string>;

OpenOptions captureMode() { return OpenOptions{.captureWal = true}; }

// What a page store would hold: every captured page, applied in order.
struct Replica {
  PageImages pages;
  uint32_t dbPages = 0;
  int64_t commits = 0;

  void apply(const CapturedPages& captured) {
    for (const auto& [pgno, image] : captured.pages) pages[pgno] = image;
    dbPages = captured.dbPages;
    pages.erase(pages.upper_bound(dbPages), pages.end());
    commits += captured.commits;
  }
};

// Captures what the last commits wrote into `replica`; fails the test when nothing was
// committed.
CapturedPages captureInto(ObjectDatabase& db, Replica& replica) {
  std::optional<CapturedPages> captured = valueOf(db.captureCommits());
  REQUIRE(captured.has_value());
  replica.apply(*captured);
  return *captured;
}

void putAll(ObjectDatabase& db, Rows& rows, int first, int count, size_t valueBytes) {
  REQUIRE_OK(db.begin());
  for (int i = first; i < first + count; ++i) {
    std::string key = "key-" + std::to_string(i);
    std::string value(valueBytes, static_cast<char>('a' + i % 26));
    REQUIRE_OK(db.put(key, value));
    rows[key] = value;
  }
  REQUIRE_OK(db.commit());
}

int64_t pageCount(ObjectDatabase& db) {
  SqlResult r = valueOf(db.exec("PRAGMA page_count"));
  return std::get<int64_t>(r.rows.at(0).at(0));
}

Rows rowsOf(ObjectDatabase& db) {
  Rows rows;
  for (auto& [key, value] : valueOf(db.list({}))) rows[key] = value;
  return rows;
}

// Rebuilds `replica` into a file of its own and checks it holds `rows` and is intact.
void checkRebuild(const TempDir& dir, const Replica& replica, const Rows& rows) {
  std::string path = dir.file("rebuilt.sqlite");
  REQUIRE_OK(rebuildDatabase(path, replica.pages, replica.dbPages));
  auto rebuilt = openDb(path);
  checkIntegrity(*rebuilt);
  CHECK(rowsOf(*rebuilt) == rows);
  CHECK(pageCount(*rebuilt) == replica.dbPages);
}

std::string fileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void putBigEndian32(std::string& bytes, size_t offset, uint32_t value) {
  for (int i = 0; i < 4; ++i) bytes[offset + i] = static_cast<char>(value >> (24 - 8 * i));
}

TEST_CASE("each capture holds the pages its commits wrote, and a rebuild is the same database") {
  TempDir dir;
  auto db = openDb(dir.file("a.sqlite"), captureMode());
  Replica replica;
  Rows rows;
  captureInto(*db, replica);  // the schema the open created
  for (int round = 0; round < 5; ++round) {
    putAll(*db, rows, round * 10, 10, 100);
    CapturedPages captured = captureInto(*db, replica);
    CHECK(captured.commits == 1);
    CHECK(captured.pageSize == 4096);
    CHECK(captured.dbPages == pageCount(*db));
    CHECK(!captured.pages.empty());
    // Nothing new was committed since.
    CHECK(!valueOf(db->captureCommits()).has_value());
  }
  checkRebuild(dir, replica, rows);
}

TEST_CASE("captures continue across a checkpoint, after which the log starts again") {
  TempDir dir;
  std::string path = dir.file("a.sqlite");
  auto db = openDb(path, captureMode());
  Replica replica;
  Rows rows;
  captureInto(*db, replica);
  putAll(*db, rows, 0, 50, 200);
  captureInto(*db, replica);
  int64_t walBefore = std::filesystem::file_size(path + "-wal");

  REQUIRE_OK(db->checkpointCaptured());
  putAll(*db, rows, 50, 3, 200);
  CapturedPages afterRestart = captureInto(*db, replica);
  CHECK(afterRestart.commits == 1);
  // The log started again from its first frame: it did not grow past what it held.
  CHECK(static_cast<int64_t>(std::filesystem::file_size(path + "-wal")) <= walBefore);

  // A checkpoint with nothing committed after it, then two commits captured together.
  REQUIRE_OK(db->checkpointCaptured());
  REQUIRE_OK(db->checkpointCaptured());
  putAll(*db, rows, 53, 5, 200);
  REQUIRE(valueOf(db->remove("key-0")));
  rows.erase("key-0");
  CapturedPages two = captureInto(*db, replica);
  CHECK(two.commits == 2);
  checkRebuild(dir, replica, rows);
}

TEST_CASE("a rolled-back transaction captures nothing, even one that spilled pages to the log") {
  TempDir dir;
  auto db = openDb(dir.file("a.sqlite"), captureMode());
  Replica replica;
  Rows rows;
  captureInto(*db, replica);
  putAll(*db, rows, 0, 5, 100);
  captureInto(*db, replica);

  REQUIRE_OK(db->begin());
  REQUIRE_OK(db->put("gone", "x"));
  REQUIRE_OK(db->rollback());
  CHECK(!valueOf(db->captureCommits()).has_value());

  // A small page cache makes SQLite write pages of the open transaction into the log.
  REQUIRE(sqlite3_exec(db->handle(), "PRAGMA cache_size=10", nullptr, nullptr, nullptr) ==
          SQLITE_OK);
  REQUIRE_OK(db->begin());
  for (int i = 0; i < 400; ++i) REQUIRE_OK(db->put("spill-" + std::to_string(i), std::string(1000, 's')));
  REQUIRE_OK(db->rollback());
  CHECK(!valueOf(db->captureCommits()).has_value());

  // The next commit overwrites those frames; its capture holds only its own pages.
  putAll(*db, rows, 5, 2, 100);
  CapturedPages next = captureInto(*db, replica);
  CHECK(next.commits == 1);
  CHECK(next.pages.size() < 20);
  checkRebuild(dir, replica, rows);
}

TEST_CASE("a big transaction is captured whole, and capture mode never checkpoints by itself") {
  TempDir dir;
  std::string path = dir.file("a.sqlite");
  auto db = openDb(path, captureMode());
  Replica replica;
  Rows rows;
  captureInto(*db, replica);
  putAll(*db, rows, 0, 3000, 1000);
  CapturedPages big = captureInto(*db, replica);
  CHECK(big.pages.size() > 500);
  CHECK(big.dbPages == pageCount(*db));
  // More than SQLite's automatic checkpoint threshold (1000 pages), committed uncaptured:
  // every frame is still in the log for the next capture.
  for (int round = 0; round < 3; ++round) putAll(*db, rows, 3000 + round * 1000, 1000, 1000);
  CHECK(std::filesystem::file_size(path + "-wal") > 1000 * 4096);
  CHECK(std::filesystem::file_size(path) < 100 * 1000);  // nothing was copied into the file
  CHECK(captureInto(*db, replica).commits == 3);
  checkRebuild(dir, replica, rows);
}

TEST_CASE("the first capture after a reopen reads what the closed handle left in the log") {
  TempDir dir;
  std::string path = dir.file("a.sqlite");
  Replica replica;
  Rows rows;
  {
    auto db = openDb(path, captureMode());
    putAll(*db, rows, 0, 20, 100);
  }  // closed without a checkpoint: the log stays
  CHECK(std::filesystem::file_size(path + "-wal") > 0);
  auto db = openDb(path, captureMode());
  CapturedPages first = captureInto(*db, replica);
  CHECK(first.commits >= 2);  // the schema and the rows
  checkRebuild(dir, replica, rows);
}

TEST_CASE("capture calls are refused outside capture mode and at the wrong time") {
  TempDir dir;
  auto plain = openDb(dir.file("plain.sqlite"));
  CHECK(plain->captureCommits().status().code() == Status::Code::kNotAllowed);
  CHECK(plain->checkpointCaptured().code() == Status::Code::kNotAllowed);

  auto db = openDb(dir.file("a.sqlite"), captureMode());
  CHECK(db->checkpointCaptured().code() == Status::Code::kNotAllowed);  // open's commit
  REQUIRE(valueOf(db->captureCommits()).has_value());
  REQUIRE_OK(db->put("k", "v"));
  CHECK(db->checkpointCaptured().code() == Status::Code::kNotAllowed);
  REQUIRE_OK(db->begin());
  CHECK(db->captureCommits().status().code() == Status::Code::kNotAllowed);
  REQUIRE_OK(db->rollback());
  REQUIRE(valueOf(db->captureCommits()).has_value());
  REQUIRE_OK(db->checkpointCaptured());
}

TEST_CASE("without capture mode a database still checkpoints after big commits") {
  TempDir dir;
  std::string path = dir.file("a.sqlite");
  auto db = openDb(path);
  Rows rows;
  // Over 1000 pages: the commit is followed by a checkpoint, which copies them into the file.
  putAll(*db, rows, 0, 3000, 1000);
  CHECK(std::filesystem::file_size(path) > 3000 * 1000);
  REQUIRE_OK(db->takeCheckpointError());
}

TEST_CASE("a failing read of the log fails the capture, and the next capture reads it all") {
  REQUIRE_OK(faults::install());
  TempDir dir;
  auto db = openDb(dir.file("a.sqlite"), captureMode());
  Replica replica;
  Rows rows;
  captureInto(*db, replica);
  putAll(*db, rows, 0, 10, 100);
  faults::arm(valueOf(faults::parse("read,file=wal,path=" + dir.path())));
  Result<std::optional<CapturedPages>> failed = db->captureCommits();
  faults::clear();
  REQUIRE(!failed.isOk());
  CHECK(failed.status().sqliteCode() == SQLITE_IOERR_READ);
  CHECK(failed.status().isStorageFault());
  CHECK(captureInto(*db, replica).commits == 1);
  checkRebuild(dir, replica, rows);
}

// A log of two commits, copied from a real file, for the damaged-log cases below.
struct SampleLog {
  std::string bytes;
  int64_t frames = 0;
  uint32_t pageSize = 0;
};

SampleLog sampleLog(const TempDir& dir) {
  std::string path = dir.file("sample.sqlite");
  auto db = openDb(path, captureMode());
  Rows rows;
  putAll(*db, rows, 0, 5, 100);
  SampleLog sample;
  sample.bytes = fileBytes(path + "-wal");
  BytesWalSource source(sample.bytes);
  WalRead read = valueOf(readWalCommits(source, {}, {}));
  sample.frames = read.next.frame;
  sample.pageSize = read.captured.pageSize;
  REQUIRE(read.captured.commits >= 2);
  REQUIRE(static_cast<int64_t>(sample.bytes.size()) == 32 + sample.frames * (24 + sample.pageSize));
  return sample;
}

Status readOf(const std::string& bytes, const WalReadOptions& options = {}) {
  BytesWalSource source(bytes);
  return readWalCommits(source, {}, options).status();
}

TEST_CASE("the frame reader refuses damaged logs with a clear error") {
  TempDir dir;
  SampleLog sample = sampleLog(dir);
  auto refusedWith = [](const Status& s, const std::string& words) {
    CAPTURE(s.toString());
    CHECK(s.sqliteCode() == SQLITE_CORRUPT);
    CHECK(s.message().find(words) != std::string::npos);
  };

  SUBCASE("bad magic") {
    std::string bytes = sample.bytes;
    bytes[0] = 0;
    refusedWith(readOf(bytes), "magic");
  }
  SUBCASE("a page size that is not a power of two") {
    std::string bytes = sample.bytes;
    putBigEndian32(bytes, 8, 1000);
    refusedWith(readOf(bytes), "page size 1000");
    putBigEndian32(bytes, 8, 0);
    refusedWith(readOf(bytes), "page size 0");
    putBigEndian32(bytes, 8, 131072);
    refusedWith(readOf(bytes), "page size 131072");
  }
  SUBCASE("a header whose checksum does not match") {
    std::string bytes = sample.bytes;
    bytes[13] ^= 1;  // the checkpoint sequence
    refusedWith(readOf(bytes), "header checksum");
  }
  SUBCASE("a file shorter than a header") {
    refusedWith(readOf(sample.bytes.substr(0, 20)), "less than a header");
  }
  SUBCASE("a truncated frame") {
    std::string cut = sample.bytes.substr(0, sample.bytes.size() - 100);
    refusedWith(readOf(cut, {.frameCount = sample.frames}), "torn");
    // Without a frame count the reader stops before it, at an earlier commit frame.
    BytesWalSource source(cut);
    WalRead read = valueOf(readWalCommits(source, {}, {}));
    CHECK(read.next.frame < sample.frames);
  }
  SUBCASE("a frame with other salts") {
    std::string bytes = sample.bytes;
    int64_t lastFrame = 32 + (sample.frames - 1) * (24 + sample.pageSize);
    bytes[lastFrame + 8] ^= 1;
    refusedWith(readOf(bytes, {.frameCount = sample.frames}), "torn");
  }
  SUBCASE("a frame count the log does not reach ends in a commit frame") {
    refusedWith(readOf(sample.bytes, {.frameCount = sample.frames + 1}), "torn");
  }
  SUBCASE("new salts when the caller made no checkpoint") {
    BytesWalSource source(sample.bytes);
    WalPosition elsewhere = valueOf(readWalCommits(source, {}, {})).next;
    elsewhere.salt1 ^= 1;
    refusedWith(readWalCommits(source, elsewhere, {}).status(), "started again");
    WalRead restarted = valueOf(readWalCommits(source, elsewhere, {.mayRestart = true}));
    CHECK(restarted.restarted);
    CHECK(restarted.next.frame == sample.frames);
  }
}

TEST_CASE("the frame reader survives random damage without crashing") {
  TempDir dir;
  SampleLog sample = sampleLog(dir);
  std::mt19937 rng(14);
  for (int i = 0; i < 300; ++i) {
    std::string bytes = sample.bytes;
    std::uniform_int_distribution<size_t> at(0, bytes.size() - 1);
    for (int flips = 0; flips < 1 + i % 5; ++flips) bytes[at(rng)] = static_cast<char>(rng());
    if (i % 3 == 0) bytes.resize(at(rng));
    BytesWalSource source(bytes);
    Result<WalRead> read = readWalCommits(source, {}, {});
    if (read.isOk()) CHECK(read->next.frame <= sample.frames);
    (void)readWalCommits(source, {}, {.frameCount = sample.frames});
  }
}

TEST_CASE("a rebuild needs every page, each of the declared size") {
  TempDir dir;
  std::string path = dir.file("a.sqlite");
  auto db = openDb(path, captureMode());
  Replica replica;
  Rows rows;
  captureInto(*db, replica);
  putAll(*db, rows, 0, 200, 100);
  captureInto(*db, replica);
  REQUIRE(replica.dbPages > 2);
  std::string target = dir.file("b.sqlite");

  PageImages missing = replica.pages;
  missing.erase(2);
  CHECK(rebuildDatabase(target, missing, replica.dbPages).code() == Status::Code::kInvalidArgument);
  PageImages shortPage = replica.pages;
  shortPage[2].resize(100);
  CHECK(rebuildDatabase(target, shortPage, replica.dbPages).code() ==
        Status::Code::kInvalidArgument);
  CHECK(rebuildDatabase(target, replica.pages, replica.dbPages - 1).code() ==
        Status::Code::kInvalidArgument);
  PageImages noHeader = replica.pages;
  noHeader[1] = std::string(noHeader[1].size(), '\0');
  CHECK(rebuildDatabase(target, noHeader, replica.dbPages).code() ==
        Status::Code::kInvalidArgument);
  CHECK(!std::filesystem::exists(target));

  // A stale log next to the target is removed, not replayed over the rebuilt file.
  {
    auto other = openDb(target, captureMode());
    REQUIRE_OK(other->put("stale", "yes"));
  }
  REQUIRE(std::filesystem::exists(target + "-wal"));
  REQUIRE_OK(rebuildDatabase(target, replica.pages, replica.dbPages));
  CHECK(!std::filesystem::exists(target + "-wal"));
  auto rebuilt = openDb(target);
  CHECK(rowsOf(*rebuilt) == rows);
  checkIntegrity(*rebuilt);
}

}  // namespace
}  // namespace dohost::storage
