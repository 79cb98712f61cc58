// Durability under a process crash: a child process commits in a loop and is killed with
// SIGKILL; every commit it acknowledged must be in the file afterwards, and the file intact.
#include "dohost/storage/object_db.h"

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "test_support.h"

namespace dohost::storage {
namespace {

using testing::checkIntegrity;
using testing::openDb;
using testing::TempDir;
using testing::valueOf;

constexpr int kAcknowledgements = 300;

std::string keyFor(int64_t n) { return "k" + std::to_string(n); }
// Values of varying size, so commits span one or several pages.
std::string valueFor(int64_t n) {
  return "value-" + std::to_string(n) + std::string(static_cast<size_t>(n % 5000), 'x');
}

// Runs in the forked child: it must never return into doctest, so every path ends in _exit.
[[noreturn]] void commitForever(const std::string& path, int ackFd) {
  OpenOptions options;
  options.durability = Durability::kFull;
  Result<std::unique_ptr<ObjectDatabase>> opened = ObjectDatabase::open(path, options);
  if (!opened.isOk()) _exit(2);
  ObjectDatabase& db = **opened;
  for (int64_t n = 0;; ++n) {
    if (!db.begin().isOk() || !db.put(keyFor(n), valueFor(n)).isOk() || !db.commit().isOk()) {
      _exit(3);
    }
    if (write(ackFd, &n, sizeof n) != static_cast<ssize_t>(sizeof n)) _exit(4);
  }
}

// Opens a transaction, writes, acknowledges, then waits to be killed without committing.
[[noreturn]] void writeWithoutCommitting(const std::string& path, int ackFd) {
  Result<std::unique_ptr<ObjectDatabase>> opened = ObjectDatabase::open(path, OpenOptions{});
  if (!opened.isOk()) _exit(2);
  ObjectDatabase& db = **opened;
  if (!db.begin().isOk()) _exit(3);
  for (int64_t n = 0; n < 1000; ++n) {
    if (!db.put("pending" + std::to_string(n), std::string(1000, 'p')).isOk()) _exit(3);
  }
  int64_t done = 1;
  if (write(ackFd, &done, sizeof done) != static_cast<ssize_t>(sizeof done)) _exit(4);
  for (;;) pause();
}

// Reads one int64 from the pipe; false at end of file (the child died).
bool readAck(int fd, int64_t* value) {
  char* out = reinterpret_cast<char*>(value);
  size_t got = 0;
  while (got < sizeof *value) {
    ssize_t n = read(fd, out + got, sizeof *value - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return true;
}

// Forks a child running `body(path, ackFd)`, waits for `acks` acknowledgements, kills the child
// with SIGKILL and returns the acknowledged numbers.
template <typename Body>
std::vector<int64_t> runAndKill(const std::string& path, int acks, Body body) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    close(fds[0]);
    body(path, fds[1]);
  }
  close(fds[1]);
  std::vector<int64_t> acknowledged;
  int64_t n = 0;
  while (static_cast<int>(acknowledged.size()) < acks && readAck(fds[0], &n)) {
    acknowledged.push_back(n);
  }
  kill(child, SIGKILL);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  close(fds[0]);
  REQUIRE_MESSAGE(WIFSIGNALED(status), "the child exited early with code ", WEXITSTATUS(status));
  CHECK(WTERMSIG(status) == SIGKILL);
  REQUIRE(static_cast<int>(acknowledged.size()) == acks);
  return acknowledged;
}

TEST_CASE("every acknowledged commit survives SIGKILL") {
  TempDir dir;
  const std::string path = dir.file("crash.sqlite");
  std::vector<int64_t> acknowledged = runAndKill(path, kAcknowledgements, commitForever);
  for (size_t i = 0; i < acknowledged.size(); ++i) {
    REQUIRE(acknowledged[i] == static_cast<int64_t>(i));  // acks arrive in commit order
  }

  auto db = openDb(path);
  for (int64_t n : acknowledged) {
    CAPTURE(n);
    std::optional<std::string> value = valueOf(db->get(keyFor(n)));
    REQUIRE(value.has_value());
    CHECK(*value == valueFor(n));
  }
  // The child may have committed a few more before it died, never fewer.
  CHECK(valueOf(db->keyCount()) >= kAcknowledgements);
  checkIntegrity(*db);
}

TEST_CASE("an uncommitted transaction vanishes when the process is killed") {
  TempDir dir;
  const std::string path = dir.file("crash.sqlite");
  {
    auto db = openDb(path);
    REQUIRE_OK(db->put("before", "committed"));
  }
  runAndKill(path, 1, writeWithoutCommitting);

  auto db = openDb(path);
  CHECK(valueOf(db->keyCount()) == 1);
  CHECK(valueOf(db->get("pending0")) == std::nullopt);
  CHECK(valueOf(db->get("before")) == std::optional<std::string>("committed"));
  checkIntegrity(*db);
}

}  // namespace
}  // namespace dohost::storage
