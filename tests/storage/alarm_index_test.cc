// AlarmIndex: the host-wide "who wakes next" table.
#include "dohost/storage/alarm_index.h"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>
#include <string>
#include <vector>

#include "test_support.h"

namespace dohost::storage {
namespace {

using testing::TempDir;
using testing::valueOf;

std::unique_ptr<AlarmIndex> openIndex(const std::string& path) {
  return valueOf(AlarmIndex::open(path));
}

// "class/id@time(name)" for each entry, so a whole listing compares in one CHECK.
std::vector<std::string> describe(const std::vector<AlarmEntry>& entries) {
  std::vector<std::string> out;
  for (const AlarmEntry& e : entries) {
    out.push_back(e.className + "/" + e.id + "@" + std::to_string(e.timeMs) + "(" +
                  e.name.value_or("-") + ")");
  }
  return out;
}

using Lines = std::vector<std::string>;

TEST_CASE("all() lists alarms by time, ties broken by class and id") {
  TempDir dir;
  auto index = openIndex(dir.file("alarms.sqlite"));
  CHECK(valueOf(index->all()).empty());
  REQUIRE_OK(index->upsert({.className = "Room", .id = "b", .name = "lobby", .timeMs = 300}));
  REQUIRE_OK(index->upsert({.className = "Room", .id = "a", .timeMs = 300}));
  REQUIRE_OK(index->upsert({.className = "Chat", .id = "z", .timeMs = 300}));
  REQUIRE_OK(index->upsert({.className = "Room", .id = "c", .timeMs = 100}));
  CHECK(describe(valueOf(index->all())) ==
        Lines{"Room/c@100(-)", "Chat/z@300(-)", "Room/a@300(-)", "Room/b@300(lobby)"});
}

TEST_CASE("upsert replaces the time and name of an existing (class, id)") {
  TempDir dir;
  auto index = openIndex(dir.file("alarms.sqlite"));
  REQUIRE_OK(index->upsert({.className = "Room", .id = "a", .name = "first", .timeMs = 500}));
  REQUIRE_OK(index->upsert({.className = "Room", .id = "b", .timeMs = 200}));
  REQUIRE_OK(index->upsert({.className = "Room", .id = "a", .timeMs = 100}));
  // The same id in another class is a different object.
  REQUIRE_OK(index->upsert({.className = "Other", .id = "a", .timeMs = 150}));
  CHECK(describe(valueOf(index->all())) ==
        Lines{"Room/a@100(-)", "Other/a@150(-)", "Room/b@200(-)"});
}

TEST_CASE("remove deletes exactly one entry and ignores unknown ones") {
  TempDir dir;
  auto index = openIndex(dir.file("alarms.sqlite"));
  REQUIRE_OK(index->upsert({.className = "Room", .id = "a", .timeMs = 1}));
  REQUIRE_OK(index->upsert({.className = "Room", .id = "b", .timeMs = 2}));
  REQUIRE_OK(index->upsert({.className = "Chat", .id = "a", .timeMs = 3}));
  REQUIRE_OK(index->remove("Room", "a"));
  REQUIRE_OK(index->remove("Room", "missing"));
  CHECK(describe(valueOf(index->all())) == Lines{"Room/b@2(-)", "Chat/a@3(-)"});
}

TEST_CASE("the index persists across reopen, in WAL mode, in a folder it creates") {
  TempDir dir;
  const std::string path = dir.file("_dohost/deeper/alarms.sqlite");
  {
    auto index = openIndex(path);
    REQUIRE_OK(index->upsert({.className = "Room", .id = "a", .name = "n", .timeMs = 42}));
    REQUIRE_OK(index->upsert({.className = "Room", .id = "b", .timeMs = 7}));
    REQUIRE_OK(index->remove("Room", "b"));
  }
  auto index = openIndex(path);
  CHECK(describe(valueOf(index->all())) == Lines{"Room/a@42(n)"});

  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &stmt, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))) == "wal");
  sqlite3_finalize(stmt);
  sqlite3_close(raw);
}

TEST_CASE("opening an index where a folder is needed but a file sits fails cleanly") {
  TempDir dir;
  std::FILE* blocker = std::fopen(dir.file("blocker").c_str(), "w");
  REQUIRE(blocker != nullptr);
  std::fclose(blocker);
  Result<std::unique_ptr<AlarmIndex>> index = AlarmIndex::open(dir.file("blocker/alarms.sqlite"));
  CHECK(index.status().code() == Status::Code::kIoError);
}

}  // namespace
TEST_CASE("hosts that open a new shared alarm index at the same moment all get it") {
  // The hosts of a cluster share DATA/_dohost/alarms.sqlite and may start together; on a file
  // being created SQLite may answer "database is locked" at once instead of waiting.
  constexpr int kTrials = 30, kProcesses = 4;
  TempDir dir;
  int failed = 0;
  for (int trial = 0; trial < kTrials; ++trial) {
    std::string path = dir.file("t" + std::to_string(trial) + "/alarms.sqlite");
    auto start = std::chrono::steady_clock::now() + std::chrono::milliseconds(30);
    std::vector<pid_t> children;
    for (int p = 0; p < kProcesses; ++p) {
      pid_t pid = ::fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        std::this_thread::sleep_until(start);
        ::_exit(AlarmIndex::open(path).isOk() ? 0 : 1);
      }
      children.push_back(pid);
    }
    for (pid_t pid : children) {
      int status = 0;
      REQUIRE(::waitpid(pid, &status, 0) == pid);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
    }
  }
  CHECK(failed == 0);
}

}  // namespace dohost::storage
