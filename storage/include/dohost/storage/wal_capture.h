// WAL page capture: the page images that committed transactions wrote to an SQLite
// write-ahead log, read from the log's frames, and the rebuild of a database file from a full
// set of page images. The format is SQLite's (https://www.sqlite.org/fileformat2.html#walformat):
//   header (32 bytes, big-endian): magic 0x377f0682/3, version 3007000, page size, checkpoint
//     sequence, salt-1, salt-2, checksum-1, checksum-2 (over the first 24 bytes)
//   frames: a 24-byte header (page number, database size in pages after the commit, nonzero on
//     a commit frame only, salt-1, salt-2, checksum-1, checksum-2) and the page image. The
//     checksums are cumulative from the header through each frame's first 8 bytes and page.
// A frame belongs to the log's current generation only when its salts equal the header's and
// its checksum follows from the frame before it; after a checkpoint SQLite starts the log
// again from its first frame with new salts, so frames of an older generation may follow.
//
// The log is read as untrusted bytes: every size and offset is checked before it is used, and
// a malformed header or frame is an SQLITE_CORRUPT status naming what is wrong.
//
// Used by ObjectDatabase in capture mode (OpenOptions::captureWal, object_db.h); the runtime
// does not use either yet (docs/architecture.md, "Page capture and the page store").
//
// Thread: the functions are reentrant; a WalSource belongs to its caller's thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <utility>

#include "dohost/status.h"

namespace dohost::storage {

// Page number (from 1) -> the page's bytes.
using PageImages = std::map<uint32_t, std::string>;

// What the committed transactions read from a log wrote.
struct CapturedPages {
  PageImages pages;       // the newest image of each page written, none above dbPages
  uint32_t dbPages = 0;   // database size in pages after the last commit read
  uint32_t pageSize = 0;  // bytes per page
  int64_t commits = 0;    // commit frames read
  int64_t frames = 0;     // frames read, up to and including the last commit frame
};

// Where the next read of a log starts: after the last commit frame read so far.
struct WalPosition {
  bool started = false;  // false: nothing read yet; the next read starts at the first frame
  uint32_t salt1 = 0;
  uint32_t salt2 = 0;
  uint32_t checksum1 = 0;  // the cumulative checksum of the last frame read (or the header's)
  uint32_t checksum2 = 0;
  uint32_t pageSize = 0;
  int64_t frame = 0;  // frames of the current generation before the position
};

// Read access to one log file.
class WalSource {
 public:
  virtual ~WalSource() = default;
  // The file's size in bytes.
  virtual Result<int64_t> size() = 0;
  // Exactly out.size() bytes at `offset`; a failed or short read is an error status.
  virtual Status read(int64_t offset, std::span<char> out) = 0;
};

struct WalRead {
  CapturedPages captured;
  WalPosition next;        // where the following read starts
  bool restarted = false;  // the log had started again (new salts) since `from`
};

struct WalReadOptions {
  // The number of frames the log holds in its current generation, when the caller knows it
  // (SQLite's WAL hook reports it after each commit). Frames up to it must all be valid and
  // the last must be a commit frame, or the read fails. nullopt: read up to the first frame
  // that is not valid (torn, of an older generation), as SQLite's recovery does.
  std::optional<int64_t> frameCount;
  // Whether the log may have started again since `from` (the caller checkpointed it). When
  // not, new salts mean frames were checkpointed away before they were read: an error.
  bool mayRestart = false;
};

// Reads the frames of committed transactions after `from`. Frames after the last commit frame
// (a transaction still open, or rolled back) are left for a later read.
Result<WalRead> readWalCommits(WalSource& wal, const WalPosition& from,
                               const WalReadOptions& options);

// A WalSource over bytes in memory (tests, and logs read whole).
class BytesWalSource final : public WalSource {
 public:
  explicit BytesWalSource(std::string bytes) : bytes_(std::move(bytes)) {}
  Result<int64_t> size() override { return static_cast<int64_t>(bytes_.size()); }
  Status read(int64_t offset, std::span<char> out) override;

 private:
  std::string bytes_;
};

// Writes a database file at `path` made of `pages` 1..dbPages, each of the page size that page
// 1's header names, and removes any log and shared-memory file of an older database there
// (`path`-wal, `path`-shm), whose frames would otherwise be read over the new file. The file
// is written next to `path`, synced, then renamed over it.
// REQUIRES: no connection has `path` open.
Status rebuildDatabase(const std::string& path, const PageImages& pages, uint32_t dbPages);

}  // namespace dohost::storage
