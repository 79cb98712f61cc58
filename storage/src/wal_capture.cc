#include "dohost/storage/wal_capture.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include <sqlite3.h>

namespace dohost::storage {
namespace {

constexpr uint32_t kMagicLittleEndian = 0x377f0682;  // checksums over little-endian words
constexpr uint32_t kMagicBigEndian = 0x377f0683;     // checksums over big-endian words
constexpr uint32_t kWalVersion = 3007000;
constexpr int64_t kHeaderBytes = 32;
constexpr int64_t kFrameHeaderBytes = 24;
constexpr uint32_t kMinPageSize = 512;
constexpr uint32_t kMaxPageSize = 65536;

Status corrupt(const std::string& what) { return Status::sqlError(SQLITE_CORRUPT, "WAL: " + what); }

uint32_t bigEndian32(const char* p) {
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  return uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | uint32_t{b[3]};
}

uint32_t littleEndian32(const char* p) {
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  return uint32_t{b[3]} << 24 | uint32_t{b[2]} << 16 | uint32_t{b[1]} << 8 | uint32_t{b[0]};
}

bool isPageSize(uint32_t size) {
  return size >= kMinPageSize && size <= kMaxPageSize && (size & (size - 1)) == 0;
}

// SQLite's WAL checksum: continues (s1, s2) over `bytes`, taken as pairs of 32-bit words in the
// log's byte order. REQUIRES: bytes.size() is a multiple of 8.
void checksum(bool bigEndianWords, std::span<const char> bytes, uint32_t& s1, uint32_t& s2) {
  for (size_t i = 0; i + 8 <= bytes.size(); i += 8) {
    const char* p = bytes.data() + i;
    uint32_t x0 = bigEndianWords ? bigEndian32(p) : littleEndian32(p);
    uint32_t x1 = bigEndianWords ? bigEndian32(p + 4) : littleEndian32(p + 4);
    s1 += x0 + s2;
    s2 += x1 + s1;
  }
}

struct WalHeader {
  bool bigEndianWords = false;
  uint32_t pageSize = 0;
  uint32_t salt1 = 0;
  uint32_t salt2 = 0;
  uint32_t checksum1 = 0;
  uint32_t checksum2 = 0;
};

Result<WalHeader> parseHeader(const std::array<char, kHeaderBytes>& raw) {
  WalHeader header;
  uint32_t magic = bigEndian32(raw.data());
  if (magic != kMagicLittleEndian && magic != kMagicBigEndian) {
    return corrupt("bad magic number " + std::to_string(magic));
  }
  header.bigEndianWords = magic == kMagicBigEndian;
  if (uint32_t version = bigEndian32(raw.data() + 4); version != kWalVersion) {
    return corrupt("unknown format version " + std::to_string(version));
  }
  header.pageSize = bigEndian32(raw.data() + 8);
  if (!isPageSize(header.pageSize)) {
    return corrupt("page size " + std::to_string(header.pageSize) +
                   " is not a power of two from 512 to 65536");
  }
  header.salt1 = bigEndian32(raw.data() + 16);
  header.salt2 = bigEndian32(raw.data() + 20);
  uint32_t s1 = 0, s2 = 0;
  checksum(header.bigEndianWords, std::span<const char>(raw.data(), 24), s1, s2);
  if (s1 != bigEndian32(raw.data() + 24) || s2 != bigEndian32(raw.data() + 28)) {
    return corrupt("header checksum does not match");
  }
  header.checksum1 = s1;
  header.checksum2 = s2;
  return header;
}

// One frame as read: its page number and commit size, or why it does not belong to the log.
struct Frame {
  uint32_t pgno = 0;
  uint32_t dbPages = 0;  // nonzero on a commit frame
  std::string page;
};

// Reads frame `index` and checks it against the running checksum, which it advances.
// Returns nullopt (with no error) when the frame is not part of the current generation: past
// the end of the file, other salts, or a checksum that does not follow.
Result<std::optional<Frame>> readFrame(WalSource& wal, int64_t fileSize, const WalHeader& header,
                                       int64_t index, uint32_t& s1, uint32_t& s2) {
  int64_t frameBytes = kFrameHeaderBytes + header.pageSize;
  int64_t offset = kHeaderBytes + index * frameBytes;
  if (offset > fileSize || fileSize - offset < frameBytes) return std::optional<Frame>();
  std::array<char, kFrameHeaderBytes> raw{};
  if (Status s = wal.read(offset, raw); !s.isOk()) return s;
  if (bigEndian32(raw.data() + 8) != header.salt1 || bigEndian32(raw.data() + 12) != header.salt2) {
    return std::optional<Frame>();
  }
  Frame frame;
  frame.pgno = bigEndian32(raw.data());
  frame.dbPages = bigEndian32(raw.data() + 4);
  frame.page.resize(header.pageSize);
  if (Status s = wal.read(offset + kFrameHeaderBytes, frame.page); !s.isOk()) return s;
  uint32_t c1 = s1, c2 = s2;
  checksum(header.bigEndianWords, std::span<const char>(raw.data(), 8), c1, c2);
  checksum(header.bigEndianWords, frame.page, c1, c2);
  if (c1 != bigEndian32(raw.data() + 16) || c2 != bigEndian32(raw.data() + 20)) {
    return std::optional<Frame>();
  }
  if (frame.pgno == 0) return corrupt("frame " + std::to_string(index) + " names page 0");
  s1 = c1;
  s2 = c2;
  return std::optional<Frame>(std::move(frame));
}

// The position at the log's first frame, before anything of this generation was read.
WalPosition startOf(const WalHeader& header) {
  return WalPosition{.started = true,
                     .salt1 = header.salt1,
                     .salt2 = header.salt2,
                     .checksum1 = header.checksum1,
                     .checksum2 = header.checksum2,
                     .pageSize = header.pageSize,
                     .frame = 0};
}

Status syncAndClose(int fd, const std::string& path) {
  bool ok = ::fsync(fd) == 0;
  int error = errno;
  ok = ::close(fd) == 0 && ok;
  if (!ok) return Status::ioError("cannot sync " + path + ": " + std::strerror(error));
  return Status::ok();
}

Status writeAll(int fd, const std::string& bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::ioError("cannot write " + path + ": " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  return Status::ok();
}

// Checks that `pages` is a whole database of `dbPages` pages; gives its page size.
Result<uint32_t> checkImages(const PageImages& pages, uint32_t dbPages) {
  if (dbPages == 0) return Status::invalidArgument("a database has at least one page");
  auto first = pages.find(1);
  if (first == pages.end()) return Status::invalidArgument("page 1 is missing");
  const std::string& header = first->second;
  constexpr std::string_view kFileMagic("SQLite format 3\0", 16);
  if (header.size() < 100 || std::string_view(header).substr(0, 16) != kFileMagic) {
    return Status::invalidArgument("page 1 is not an SQLite database header");
  }
  uint32_t declared = uint32_t{static_cast<unsigned char>(header[16])} << 8 |
                      static_cast<unsigned char>(header[17]);
  uint32_t pageSize = declared == 1 ? kMaxPageSize : declared;
  if (!isPageSize(pageSize)) {
    return Status::invalidArgument("page 1 declares page size " + std::to_string(declared));
  }
  if (pages.rbegin()->first > dbPages) {
    return Status::invalidArgument("page " + std::to_string(pages.rbegin()->first) +
                                   " is above the database size " + std::to_string(dbPages));
  }
  if (pages.size() != dbPages) {
    return Status::invalidArgument(std::to_string(dbPages - pages.size()) + " of " +
                                   std::to_string(dbPages) + " pages are missing");
  }
  for (const auto& [pgno, image] : pages) {
    if (image.size() != pageSize) {
      return Status::invalidArgument("page " + std::to_string(pgno) + " has " +
                                     std::to_string(image.size()) + " bytes, not " +
                                     std::to_string(pageSize));
    }
  }
  return pageSize;
}

}  // namespace

Status BytesWalSource::read(int64_t offset, std::span<char> out) {
  if (offset < 0 || offset > static_cast<int64_t>(bytes_.size()) ||
      bytes_.size() - static_cast<size_t>(offset) < out.size()) {
    return Status::sqlError(SQLITE_IOERR_SHORT_READ, "WAL: read past the end of the file");
  }
  std::memcpy(out.data(), bytes_.data() + offset, out.size());
  return Status::ok();
}

Result<WalRead> readWalCommits(WalSource& wal, const WalPosition& from,
                               const WalReadOptions& options) {
  WalRead out;
  out.next = from;
  Result<int64_t> fileSize = wal.size();
  if (!fileSize.isOk()) return fileSize.status();
  bool expectFrames = options.frameCount && *options.frameCount > from.frame;
  if (*fileSize == 0) {
    // No log at all (never written, or truncated by a checkpoint).
    if (expectFrames) return corrupt("the log is empty but should hold frames");
    if (from.started && from.frame > 0) {
      if (!options.mayRestart) return corrupt("the log was truncated before it was read");
      out.next = WalPosition{};
      out.restarted = true;
    }
    return out;
  }
  if (*fileSize < kHeaderBytes) {
    return corrupt("the file has " + std::to_string(*fileSize) + " bytes, less than a header");
  }
  std::array<char, kHeaderBytes> rawHeader{};
  if (Status s = wal.read(0, rawHeader); !s.isOk()) return s;
  Result<WalHeader> header = parseHeader(rawHeader);
  if (!header.isOk()) return header.status();

  WalPosition position = from;
  if (!from.started) {
    position = startOf(*header);
  } else if (from.salt1 != header->salt1 || from.salt2 != header->salt2) {
    if (!options.mayRestart) {
      return corrupt("the log started again (new salts) before its frames were read");
    }
    position = startOf(*header);
    out.restarted = true;
  } else if (from.pageSize != header->pageSize) {
    return corrupt("the page size changed from " + std::to_string(from.pageSize) + " to " +
                   std::to_string(header->pageSize));
  }

  int64_t limit = options.frameCount.value_or(INT64_MAX);
  if (options.frameCount && *options.frameCount < position.frame) {
    return corrupt("the log holds " + std::to_string(*options.frameCount) +
                   " frames, fewer than the " + std::to_string(position.frame) + " already read");
  }
  PageImages pending;  // frames after the last commit frame seen
  uint32_t s1 = position.checksum1, s2 = position.checksum2;
  CapturedPages& captured = out.captured;
  captured.pageSize = header->pageSize;
  for (int64_t index = position.frame; index < limit; ++index) {
    Result<std::optional<Frame>> frame = readFrame(wal, *fileSize, *header, index, s1, s2);
    if (!frame.isOk()) return frame.status();
    if (!frame->has_value()) {
      if (options.frameCount) {
        return corrupt("frame " + std::to_string(index) + " of " +
                       std::to_string(*options.frameCount) +
                       " is torn or of another generation (salts, checksum, or the file ends)");
      }
      break;
    }
    pending[(*frame)->pgno] = std::move((*frame)->page);
    if ((*frame)->dbPages == 0) continue;
    // A commit frame: everything up to here is committed.
    for (auto& [pgno, page] : pending) captured.pages[pgno] = std::move(page);
    pending.clear();
    captured.dbPages = (*frame)->dbPages;
    ++captured.commits;
    captured.frames = index + 1 - position.frame;
    out.next = position;
    out.next.frame = index + 1;
    out.next.checksum1 = s1;
    out.next.checksum2 = s2;
  }
  if (options.frameCount && !pending.empty()) {
    return corrupt("the last of " + std::to_string(*options.frameCount) +
                   " frames is not a commit frame");
  }
  if (!from.started || out.restarted) {
    // Nothing committed yet in this generation still moves the position to its start.
    if (captured.commits == 0) out.next = position;
  }
  // A commit that shrank the database leaves no page above its new size.
  if (captured.commits > 0) {
    captured.pages.erase(captured.pages.upper_bound(captured.dbPages), captured.pages.end());
  }
  return out;
}

Status rebuildDatabase(const std::string& path, const PageImages& pages, uint32_t dbPages) {
  Result<uint32_t> pageSize = checkImages(pages, dbPages);
  if (!pageSize.isOk()) return pageSize.status();
  namespace fs = std::filesystem;
  std::string temporary = path + ".rebuild";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::ioError("cannot create " + temporary + ": " + std::strerror(errno));
  for (const auto& [pgno, image] : pages) {
    if (Status s = writeAll(fd, image, temporary); !s.isOk()) {
      ::close(fd);
      return s;
    }
  }
  if (Status s = syncAndClose(fd, temporary); !s.isOk()) return s;
  std::error_code error;
  for (const char* suffix : {"-wal", "-shm"}) {
    fs::remove(path + suffix, error);
    if (error) return Status::ioError("cannot remove " + path + suffix + ": " + error.message());
  }
  fs::rename(temporary, path, error);
  if (error) return Status::ioError("cannot rename " + temporary + ": " + error.message());
  // The rename is durable once the folder is synced.
  fs::path parent = fs::path(path).parent_path();
  int dir = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return Status::ioError("cannot open " + parent.string() + ": " + std::strerror(errno));
  return syncAndClose(dir, parent.string());
}

}  // namespace dohost::storage
