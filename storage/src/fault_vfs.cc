#include "dohost/storage/fault_vfs.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <mutex>
#include <new>
#include <optional>
#include <utility>

#include <sqlite3.h>

namespace dohost::storage::faults {
namespace {

constexpr char kVfsName[] = "dohost-faults";

struct State {
  std::mutex mu;
  std::vector<Rule> rules;
  sqlite3_vfs* real = nullptr;
  sqlite3_vfs vfs{};
};

// Never destroyed: SQLite may still call the VFS while static destructors run.
State& state() {
  static State* s = new State;
  return *s;
}

// One open file: ours first, then the real VFS's file in the same block SQLite allocated.
struct FaultFile {
  sqlite3_file base;            // pMethods points at `methods`
  sqlite3_io_methods methods;   // the real file's methods, with ours where we intercept
  sqlite3_file* real;
  std::string path;
  FileKind kind;
};

constexpr size_t kRealOffset = (sizeof(FaultFile) + 15) / 16 * 16;

FaultFile* self(sqlite3_file* f) { return reinterpret_cast<FaultFile*>(f); }

bool matches(const Rule& r, Op op, const std::string& path, FileKind kind) {
  if (r.op != op) return false;
  if (r.file != FileKind::kAny && r.file != kind) return false;
  return r.path.empty() || path.find(r.path) != std::string::npos;
}

int defaultError(Op op) {
  switch (op) {
    case Op::kOpen: return SQLITE_CANTOPEN;
    case Op::kRead: return SQLITE_IOERR_READ;
    case Op::kWrite: return SQLITE_IOERR_WRITE;
    case Op::kSync: return SQLITE_IOERR_FSYNC;
    case Op::kTruncate: return SQLITE_IOERR_TRUNCATE;
    case Op::kReadOnly: return SQLITE_IOERR_WRITE;
  }
  return SQLITE_IOERR;
}

// The error for the next call `op` on (path, kind), or SQLITE_OK; counts it. Quota rules are
// handled by the write path. REQUIRES: s.mu held.
int nextError(State& s, Op op, const std::string& path, FileKind kind) {
  int error = SQLITE_OK;
  for (Rule& r : s.rules) {
    if (r.quota >= 0 || !matches(r, op, path, kind)) continue;
    ++r.seen;
    if (error != SQLITE_OK || r.seen <= r.skip) continue;
    if (r.count >= 0 && r.failed >= r.count) continue;
    ++r.failed;
    error = r.error != 0 ? r.error : defaultError(op);
  }
  return error;
}

// A read-only rule covers writes, truncates and deletes of its files.
int readOnlyError(State& s, const std::string& path, FileKind kind, int code) {
  for (Rule& r : s.rules) {
    if (!matches(r, Op::kReadOnly, path, kind)) continue;
    ++r.seen;
    ++r.failed;
    return code;
  }
  return SQLITE_OK;
}

// Gives `bytes` back to the quotas covering (path, kind).
void freeSpace(State& s, const std::string& path, FileKind kind, int64_t bytes) {
  if (bytes <= 0) return;
  for (Rule& r : s.rules) {
    if (r.quota >= 0 && matches(r, Op::kWrite, path, kind)) r.quota += bytes;
  }
}

FileKind kindOfPath(const std::string& path) {
  if (path.ends_with("-wal")) return FileKind::kWal;
  if (path.ends_with("-journal")) return FileKind::kJournal;
  return FileKind::kDatabase;
}

// --- file methods ---------------------------------------------------------------------------

int fileClose(sqlite3_file* f) {
  FaultFile* ff = self(f);
  int rc = ff->real->pMethods ? ff->real->pMethods->xClose(ff->real) : SQLITE_OK;
  ff->~FaultFile();
  return rc;
}

int fileRead(sqlite3_file* f, void* out, int amount, sqlite3_int64 offset) {
  FaultFile* ff = self(f);
  {
    State& s = state();
    std::lock_guard lock(s.mu);
    if (int rc = nextError(s, Op::kRead, ff->path, ff->kind); rc != SQLITE_OK) return rc;
  }
  return ff->real->pMethods->xRead(ff->real, out, amount, offset);
}

int fileWrite(sqlite3_file* f, const void* data, int amount, sqlite3_int64 offset) {
  FaultFile* ff = self(f);
  {
    State& s = state();
    std::lock_guard lock(s.mu);
    if (int rc = readOnlyError(s, ff->path, ff->kind, SQLITE_IOERR_WRITE); rc != SQLITE_OK) {
      return rc;
    }
    if (int rc = nextError(s, Op::kWrite, ff->path, ff->kind); rc != SQLITE_OK) return rc;
    std::optional<int64_t> growth;
    for (Rule& r : s.rules) {
      if (r.quota < 0 || !matches(r, Op::kWrite, ff->path, ff->kind)) continue;
      if (!growth) {
        sqlite3_int64 size = 0;
        if (ff->real->pMethods->xFileSize(ff->real, &size) != SQLITE_OK) size = 0;
        growth = std::max<int64_t>(0, offset + amount - size);
      }
      ++r.seen;
      if (*growth > r.quota) {
        ++r.failed;
        return r.error != 0 ? r.error : SQLITE_FULL;
      }
    }
    for (Rule& r : s.rules) {
      if (r.quota >= 0 && matches(r, Op::kWrite, ff->path, ff->kind)) r.quota -= *growth;
    }
  }
  return ff->real->pMethods->xWrite(ff->real, data, amount, offset);
}

int fileTruncate(sqlite3_file* f, sqlite3_int64 size) {
  FaultFile* ff = self(f);
  State& s = state();
  std::lock_guard lock(s.mu);
  if (int rc = readOnlyError(s, ff->path, ff->kind, SQLITE_IOERR_TRUNCATE); rc != SQLITE_OK) {
    return rc;
  }
  if (int rc = nextError(s, Op::kTruncate, ff->path, ff->kind); rc != SQLITE_OK) return rc;
  sqlite3_int64 before = 0;
  if (ff->real->pMethods->xFileSize(ff->real, &before) != SQLITE_OK) before = size;
  int rc = ff->real->pMethods->xTruncate(ff->real, size);
  if (rc == SQLITE_OK) freeSpace(s, ff->path, ff->kind, before - size);
  return rc;
}

int fileSync(sqlite3_file* f, int flags) {
  FaultFile* ff = self(f);
  {
    State& s = state();
    std::lock_guard lock(s.mu);
    if (int rc = nextError(s, Op::kSync, ff->path, ff->kind); rc != SQLITE_OK) return rc;
  }
  return ff->real->pMethods->xSync(ff->real, flags);
}

// The rest pass straight through to the real file.
int fileSize(sqlite3_file* f, sqlite3_int64* size) {
  return self(f)->real->pMethods->xFileSize(self(f)->real, size);
}
int fileLock(sqlite3_file* f, int level) {
  return self(f)->real->pMethods->xLock(self(f)->real, level);
}
int fileUnlock(sqlite3_file* f, int level) {
  return self(f)->real->pMethods->xUnlock(self(f)->real, level);
}
int fileCheckReservedLock(sqlite3_file* f, int* out) {
  return self(f)->real->pMethods->xCheckReservedLock(self(f)->real, out);
}
int fileControl(sqlite3_file* f, int op, void* arg) {
  return self(f)->real->pMethods->xFileControl(self(f)->real, op, arg);
}
int fileSectorSize(sqlite3_file* f) {
  return self(f)->real->pMethods->xSectorSize(self(f)->real);
}
int fileDeviceCharacteristics(sqlite3_file* f) {
  return self(f)->real->pMethods->xDeviceCharacteristics(self(f)->real);
}
int fileShmMap(sqlite3_file* f, int page, int pageSize, int extend, void volatile** out) {
  return self(f)->real->pMethods->xShmMap(self(f)->real, page, pageSize, extend, out);
}
int fileShmLock(sqlite3_file* f, int offset, int n, int flags) {
  return self(f)->real->pMethods->xShmLock(self(f)->real, offset, n, flags);
}
void fileShmBarrier(sqlite3_file* f) { self(f)->real->pMethods->xShmBarrier(self(f)->real); }
int fileShmUnmap(sqlite3_file* f, int deleteFlag) {
  return self(f)->real->pMethods->xShmUnmap(self(f)->real, deleteFlag);
}
int fileFetch(sqlite3_file* f, sqlite3_int64 offset, int amount, void** out) {
  return self(f)->real->pMethods->xFetch(self(f)->real, offset, amount, out);
}
int fileUnfetch(sqlite3_file* f, sqlite3_int64 offset, void* p) {
  return self(f)->real->pMethods->xUnfetch(self(f)->real, offset, p);
}

// --- VFS methods ----------------------------------------------------------------------------

int vfsOpen(sqlite3_vfs* vfs, sqlite3_filename name, sqlite3_file* file, int flags,
            int* outFlags) {
  State& s = state();
  auto* ff = new (file) FaultFile{};
  ff->base.pMethods = nullptr;
  ff->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) + kRealOffset);
  ff->path = name ? name : "";
  ff->kind = (flags & SQLITE_OPEN_WAL)            ? FileKind::kWal
             : (flags & SQLITE_OPEN_MAIN_JOURNAL) ? FileKind::kJournal
             : (flags & SQLITE_OPEN_MAIN_DB)      ? FileKind::kDatabase
                                                  : FileKind::kAny;
  int rc = SQLITE_OK;
  {
    std::lock_guard lock(s.mu);
    rc = nextError(s, Op::kOpen, ff->path, ff->kind);
    if (rc == SQLITE_OK && (flags & SQLITE_OPEN_READWRITE) && !ff->path.empty()) {
      for (Rule& r : s.rules) {
        if (!matches(r, Op::kReadOnly, ff->path, ff->kind)) continue;
        ++r.seen;
        // What SQLite's own VFS does when O_RDWR is refused: try read-only, which cannot
        // create the file.
        std::error_code ec;
        if (!std::filesystem::exists(ff->path, ec)) {
          ++r.failed;
          rc = SQLITE_CANTOPEN;
        } else {
          flags = (flags & ~(SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) | SQLITE_OPEN_READONLY;
        }
        break;
      }
    }
  }
  if (rc == SQLITE_OK) rc = s.real->xOpen(s.real, name, ff->real, flags, outFlags);
  if (rc != SQLITE_OK || ff->real->pMethods == nullptr) {
    if (rc == SQLITE_OK) rc = SQLITE_CANTOPEN;
    ff->~FaultFile();
    file->pMethods = nullptr;
    return rc;
  }
  const sqlite3_io_methods* realMethods = ff->real->pMethods;
  ff->methods = sqlite3_io_methods{
      realMethods->iVersion, fileClose,   fileRead,       fileWrite,          fileTruncate,
      fileSync,              fileSize,    fileLock,       fileUnlock,         fileCheckReservedLock,
      fileControl,           fileSectorSize, fileDeviceCharacteristics,
      realMethods->iVersion >= 2 ? fileShmMap : nullptr,
      realMethods->iVersion >= 2 ? fileShmLock : nullptr,
      realMethods->iVersion >= 2 ? fileShmBarrier : nullptr,
      realMethods->iVersion >= 2 ? fileShmUnmap : nullptr,
      realMethods->iVersion >= 3 ? fileFetch : nullptr,
      realMethods->iVersion >= 3 ? fileUnfetch : nullptr};
  ff->base.pMethods = &ff->methods;
  (void)vfs;
  return SQLITE_OK;
}

int vfsDelete(sqlite3_vfs*, const char* name, int syncDir) {
  State& s = state();
  std::string path = name ? name : "";
  FileKind kind = kindOfPath(path);
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  {
    std::lock_guard lock(s.mu);
    if (int rc = readOnlyError(s, path, kind, SQLITE_IOERR_DELETE); rc != SQLITE_OK) return rc;
  }
  int rc = s.real->xDelete(s.real, name, syncDir);
  if (rc == SQLITE_OK && !ec) {
    std::lock_guard lock(s.mu);
    freeSpace(s, path, kind, static_cast<int64_t>(size));
  }
  return rc;
}

int vfsAccess(sqlite3_vfs*, const char* name, int flags, int* out) {
  return state().real->xAccess(state().real, name, flags, out);
}
int vfsFullPathname(sqlite3_vfs*, const char* name, int n, char* out) {
  return state().real->xFullPathname(state().real, name, n, out);
}
void* vfsDlOpen(sqlite3_vfs*, const char* name) {
  return state().real->xDlOpen(state().real, name);
}
void vfsDlError(sqlite3_vfs*, int n, char* out) { state().real->xDlError(state().real, n, out); }
void (*vfsDlSym(sqlite3_vfs*, void* handle, const char* symbol))(void) {
  return state().real->xDlSym(state().real, handle, symbol);
}
void vfsDlClose(sqlite3_vfs*, void* handle) { state().real->xDlClose(state().real, handle); }
int vfsRandomness(sqlite3_vfs*, int n, char* out) {
  return state().real->xRandomness(state().real, n, out);
}
int vfsSleep(sqlite3_vfs*, int micros) { return state().real->xSleep(state().real, micros); }
int vfsCurrentTime(sqlite3_vfs*, double* out) {
  return state().real->xCurrentTime(state().real, out);
}
int vfsGetLastError(sqlite3_vfs*, int n, char* out) {
  return state().real->xGetLastError(state().real, n, out);
}
int vfsCurrentTimeInt64(sqlite3_vfs*, sqlite3_int64* out) {
  return state().real->xCurrentTimeInt64(state().real, out);
}
int vfsSetSystemCall(sqlite3_vfs*, const char* name, sqlite3_syscall_ptr fn) {
  return state().real->xSetSystemCall(state().real, name, fn);
}
sqlite3_syscall_ptr vfsGetSystemCall(sqlite3_vfs*, const char* name) {
  return state().real->xGetSystemCall(state().real, name);
}
const char* vfsNextSystemCall(sqlite3_vfs*, const char* name) {
  return state().real->xNextSystemCall(state().real, name);
}

// --- specs ----------------------------------------------------------------------------------

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

struct Name {
  const char* text;
  int value;
};

constexpr Name kOps[] = {{"open", int(Op::kOpen)},         {"read", int(Op::kRead)},
                         {"write", int(Op::kWrite)},       {"sync", int(Op::kSync)},
                         {"truncate", int(Op::kTruncate)}, {"readonly", int(Op::kReadOnly)}};
constexpr Name kKinds[] = {{"db", int(FileKind::kDatabase)},
                           {"wal", int(FileKind::kWal)},
                           {"journal", int(FileKind::kJournal)}};

template <size_t N>
std::optional<int> lookup(const Name (&names)[N], std::string_view text) {
  for (const Name& n : names) {
    if (text == n.text) return n.value;
  }
  return std::nullopt;
}

template <size_t N>
const char* nameOf(const Name (&names)[N], int value) {
  for (const Name& n : names) {
    if (n.value == value) return n.text;
  }
  return "?";
}

std::optional<int64_t> number(std::string_view text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 0) return std::nullopt;
  return value;
}

Result<Rule> parseRule(std::string_view text) {
  Rule rule;
  bool first = true;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view part = trim(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    if (first) {
      first = false;
      auto op = lookup(kOps, part);
      if (!op) return Status::invalidArgument("fault rule: unknown operation \"" + std::string(part) + "\"");
      rule.op = static_cast<Op>(*op);
      continue;
    }
    size_t eq = part.find('=');
    if (eq == std::string_view::npos) {
      return Status::invalidArgument("fault rule: expected KEY=VALUE, got \"" + std::string(part) + "\"");
    }
    std::string_view key = trim(part.substr(0, eq));
    std::string_view value = trim(part.substr(eq + 1));
    auto bad = [&] {
      return Status::invalidArgument("fault rule: bad " + std::string(key) + " \"" +
                                     std::string(value) + "\"");
    };
    if (key == "path") {
      if (value.empty()) return bad();
      rule.path = value;
    } else if (key == "file") {
      auto kind = lookup(kKinds, value);
      if (!kind) return bad();
      rule.file = static_cast<FileKind>(*kind);
    } else if (key == "skip" || key == "count" || key == "quota") {
      auto n = number(value);
      if (!n || (key == "count" && *n == 0)) return bad();
      (key == "skip" ? rule.skip : key == "count" ? rule.count : rule.quota) = *n;
    } else if (key == "error") {
      if (value == "full") {
        rule.error = SQLITE_FULL;
      } else if (value == "ioerr") {
        rule.error = 0;
      } else if (value == "cantopen") {
        rule.error = SQLITE_CANTOPEN;
      } else {
        return bad();
      }
    } else {
      return Status::invalidArgument("fault rule: unknown key \"" + std::string(key) + "\"");
    }
  }
  if (rule.quota >= 0 && rule.op != Op::kWrite) {
    return Status::invalidArgument("fault rule: quota is for write rules");
  }
  return rule;
}

}  // namespace

Result<std::vector<Rule>> parse(std::string_view spec) {
  std::vector<Rule> rules;
  while (!spec.empty()) {
    size_t semi = spec.find(';');
    std::string_view text = trim(spec.substr(0, semi));
    spec = semi == std::string_view::npos ? std::string_view() : spec.substr(semi + 1);
    if (text.empty()) continue;
    Result<Rule> rule = parseRule(text);
    if (!rule.isOk()) return rule.status();
    rules.push_back(std::move(rule).value());
  }
  return rules;
}

std::string describe(const Rule& r) {
  std::string out = nameOf(kOps, int(r.op));
  if (!r.path.empty()) out += ",path=" + r.path;
  if (r.file != FileKind::kAny) out += std::string(",file=") + nameOf(kKinds, int(r.file));
  if (r.skip > 0) out += ",skip=" + std::to_string(r.skip);
  if (r.count >= 0) out += ",count=" + std::to_string(r.count);
  if (r.error == SQLITE_FULL) out += ",error=full";
  if (r.error == SQLITE_CANTOPEN) out += ",error=cantopen";
  if (r.quota >= 0) out += ",quota=" + std::to_string(r.quota);
  return out + " (seen " + std::to_string(r.seen) + ", failed " + std::to_string(r.failed) + ")";
}

Status install() {
  State& s = state();
  std::lock_guard lock(s.mu);
  if (s.real != nullptr) return Status::ok();
  if (int rc = sqlite3_initialize(); rc != SQLITE_OK) {
    return Status::sqlError(rc, "cannot initialize SQLite");
  }
  sqlite3_vfs* real = sqlite3_vfs_find(nullptr);
  if (real == nullptr) return Status::ioError("SQLite has no default VFS");
  sqlite3_vfs& v = s.vfs;
  v.iVersion = std::min(real->iVersion, 3);
  v.szOsFile = static_cast<int>(kRealOffset) + real->szOsFile;
  v.mxPathname = real->mxPathname;
  v.zName = kVfsName;
  v.xOpen = vfsOpen;
  v.xDelete = vfsDelete;
  v.xAccess = vfsAccess;
  v.xFullPathname = vfsFullPathname;
  v.xDlOpen = vfsDlOpen;
  v.xDlError = vfsDlError;
  v.xDlSym = vfsDlSym;
  v.xDlClose = vfsDlClose;
  v.xRandomness = vfsRandomness;
  v.xSleep = vfsSleep;
  v.xCurrentTime = vfsCurrentTime;
  v.xGetLastError = vfsGetLastError;
  v.xCurrentTimeInt64 = vfsCurrentTimeInt64;
  v.xSetSystemCall = vfsSetSystemCall;
  v.xGetSystemCall = vfsGetSystemCall;
  v.xNextSystemCall = vfsNextSystemCall;
  s.real = real;
  if (int rc = sqlite3_vfs_register(&v, /*makeDflt=*/1); rc != SQLITE_OK) {
    s.real = nullptr;
    return Status::sqlError(rc, "cannot register the fault VFS");
  }
  return Status::ok();
}

bool installed() {
  State& s = state();
  std::lock_guard lock(s.mu);
  return s.real != nullptr;
}

void arm(std::vector<Rule> rules) {
  for (Rule& r : rules) r.seen = r.failed = 0;
  State& s = state();
  std::lock_guard lock(s.mu);
  s.rules = std::move(rules);
}

void clear() { arm({}); }

std::vector<Rule> rules() {
  State& s = state();
  std::lock_guard lock(s.mu);
  return s.rules;
}

}  // namespace dohost::storage::faults
