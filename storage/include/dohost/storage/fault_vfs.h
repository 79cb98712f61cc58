// Storage fault injection for tests: an SQLite VFS that wraps the default one and fails chosen
// calls on chosen files, the way a failing disk would (an I/O error on the Nth write, an fsync
// error, a disk that fills up, a folder that turns read-only, a file that cannot be opened).
//
// install() registers it as SQLite's default VFS, so every database opened afterwards goes
// through it; with no rule armed it passes every call through. The host installs it only
// when DOHOST_TEST_FAULTS is set (see docs/operations.md); tests arm rules directly.
//
// A rule spec is `OP[,KEY=VALUE]...`; several rules are separated by ';'. OP is one of
//   open      opening the file fails (default error: cantopen)
//   read      xRead fails (default: ioerr, i.e. SQLITE_IOERR_READ)
//   write     xWrite fails (default: ioerr, SQLITE_IOERR_WRITE)
//   sync      xSync fails (default: ioerr, SQLITE_IOERR_FSYNC): an fsync error
//   truncate  xTruncate fails (default: ioerr, SQLITE_IOERR_TRUNCATE)
//   readonly  the files became read-only (a read-only remount): opens for writing fall back
//             to read-only as SQLite's own VFS does, creating a file fails, writes and
//             truncates fail with SQLITE_IOERR_WRITE / _TRUNCATE, deletes with _DELETE
// and the keys are
//   path=TEXT   only files whose path contains TEXT (default: every file)
//   file=KIND   only the database (db), its write-ahead log (wal) or its rollback journal
//   skip=N      let the first N matching calls through
//   count=N     fail N calls, then let everything through (default: until cleared)
//   error=E     full (SQLITE_FULL), ioerr (the op's SQLITE_IOERR_* code), cantopen
//   quota=B     write only: the disk has B bytes free; writes that grow matching files
//               beyond that fail with SQLITE_FULL (truncates and deletes free space again)
// Example: "sync,path=/Counter/,count=1;write,quota=65536".
//
// Thread: any; the rules are guarded by a mutex.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dohost/status.h"

namespace dohost::storage::faults {

enum class Op { kOpen, kRead, kWrite, kSync, kTruncate, kReadOnly };
enum class FileKind { kAny, kDatabase, kWal, kJournal };

struct Rule {
  Op op = Op::kWrite;
  std::string path;  // substring of the file's path; empty: every file
  FileKind file = FileKind::kAny;
  int64_t skip = 0;
  int64_t count = -1;  // -1: every matching call after `skip`, until cleared
  int error = 0;       // the SQLite result code returned; 0: the op's default
  int64_t quota = -1;  // write: free bytes left (counts down as files grow); -1: no quota

  // Counters, kept by the VFS: matching calls seen, and those it failed.
  int64_t seen = 0;
  int64_t failed = 0;
};

// Parses a spec (see above). An empty spec is no rules.
Result<std::vector<Rule>> parse(std::string_view spec);
// The rule as a spec, with its counters: "write,path=x,count=1 (seen 3, failed 1)".
std::string describe(const Rule& rule);

// Registers the VFS as SQLite's default. Idempotent.
Status install();
bool installed();

// Replaces the armed rules (the counters start at zero).
void arm(std::vector<Rule> rules);
void clear();
// The armed rules with their counters.
std::vector<Rule> rules();

}  // namespace dohost::storage::faults
