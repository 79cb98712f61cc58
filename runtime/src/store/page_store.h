// PageStore: objects' SQLite pages in PostgreSQL, the replicated page store of scale-out.md
// (sections 5.2-5.4). PostgreSQL is not the objects' SQL engine; it keeps, per object, the
// page images of its file, the database size, a commit sequence, the owner's fencing epoch and
// the alarm time:
//   do_object(object_key text PK, epoch, commit_epoch, commit_seq, page_size, db_pages,
//             alarm_at timestamptz NULL, bucket smallint)
//   do_page(object_key, pgno, data bytea, PRIMARY KEY(object_key, pgno))
// Operations:
//   claim   a new owner raises the row's epoch to its token (or creates the row); a row whose
//           epoch is already greater means a newer owner exists
//   commit  for each object of a group, in one PostgreSQL transaction: the head row advances
//           only where epoch = the committer's token (otherwise that object is fenced and
//           nothing of it changes), its changed pages are upserted and pages above its new
//           size deleted
//   load    the head row and every page, for a rebuild (storage::rebuildDatabase)
//
// Nothing here blocks the caller: each call queues a request for the store's I/O thread,
// which owns one PostgreSQL connection (libpq, non-blocking, pipeline mode: a request is one
// round trip) and runs the requests in order. Each answer is handed to `post` (from the I/O
// thread), which must run it on the caller's thread, e.g. the runtime's LoopInbox::post.
//
// Outcomes: kOk; kFenced (commit: this object's epoch is not the caller's; claim: a newer
// owner exists); kFailed (definitely not done: nothing was sent, or PostgreSQL refused it);
// kUnknown (a write whose COMMIT may have reached PostgreSQL when the connection was lost or
// the deadline passed: it may or may not be durable, and the caller must reload from the
// store). A lost connection is made again for the next request.
//
// The runtime does not use the store yet (docs/architecture.md).
//
// Thread: every public method on one thread (the caller's loop); answers arrive through
// `post`. The I/O thread owns the connection.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "dohost/status.h"
#include "dohost/storage/wal_capture.h"

namespace dohost::store {

enum class Outcome { kOk, kFenced, kFailed, kUnknown };
const char* outcomeName(Outcome outcome);

struct PageStoreOptions {
  std::string conninfo;  // a libpq connection string or URI
  // A request not answered by then ends: a write's outcome is then unknown.
  std::chrono::milliseconds requestTimeout{10'000};
  // Runs an answer on the caller's thread. Called from the I/O thread.
  std::function<void(std::function<void()>)> post;
};

struct ClaimAnswer {
  Outcome outcome = Outcome::kFailed;  // kOk, kFenced (a newer owner), kFailed, kUnknown
  std::string error;
  int64_t commitEpoch = 0;  // the epoch under which the last commit was written (0: none)
  int64_t commitSeq = 0;
  uint32_t dbPages = 0;
};

// One object's part of a grouped commit.
struct ObjectCommit {
  std::string objectKey;
  int64_t epoch = 0;               // the committer's fencing token
  storage::PageImages pages;       // the pages changed since the last commit (none above dbPages)
  uint32_t dbPages = 0;
  uint32_t pageSize = 0;
  std::optional<int64_t> alarmAtMs;  // the object's alarm, milliseconds since the Unix epoch
};

struct CommitAnswer {
  // Of the whole transaction: kOk (it committed; each object's own result below), kFailed
  // or kUnknown (then for every object).
  Outcome outcome = Outcome::kFailed;
  std::string error;
  struct Object {
    std::string objectKey;
    Outcome outcome = Outcome::kFailed;  // kOk or kFenced once the transaction committed
    int64_t commitSeq = 0;               // the new sequence when kOk
  };
  std::vector<Object> objects;  // in the order of the request
};

struct LoadAnswer {
  Outcome outcome = Outcome::kFailed;  // kOk or kFailed
  std::string error;
  bool found = false;  // the object has a row
  int64_t epoch = 0;
  int64_t commitEpoch = 0;
  int64_t commitSeq = 0;
  uint32_t pageSize = 0;
  uint32_t dbPages = 0;
  std::optional<int64_t> alarmAtMs;
  storage::PageImages pages;
};

struct SchemaAnswer {
  Outcome outcome = Outcome::kFailed;  // kOk or kFailed
  std::string error;
};

class PgConnection;

class PageStore {
 public:
  // Starts the I/O thread; it connects at the first request.
  static Result<std::unique_ptr<PageStore>> start(PageStoreOptions options);
  // Stops the I/O thread: a request in flight ends at once (a commit's answer: kUnknown), and
  // the answers of those queued behind it are kFailed; they are still posted.
  ~PageStore();
  PageStore(const PageStore&) = delete;
  PageStore& operator=(const PageStore&) = delete;

  // Creates the tables and the alarm index if they do not exist.
  void ensureSchema(std::function<void(SchemaAnswer)> done);
  // Scale-out.md 5.4 step 2: makes `epoch` the object's epoch unless a greater one is there.
  // Claiming again with the same epoch succeeds (a retry after kUnknown).
  void claim(std::string objectKey, int64_t epoch, int bucket,
             std::function<void(ClaimAnswer)> done);
  // Scale-out.md 5.3 step 3 for each object, all in one transaction.
  void commit(std::vector<ObjectCommit> objects, std::function<void(CommitAnswer)> done);
  // The object's row and all of its pages (one consistent snapshot).
  void load(std::string objectKey, std::function<void(LoadAnswer)> done);

 private:
  struct Request {
    // Runs on the I/O thread with the connection (null when none could be made, with the
    // reason), and posts its answer. Returns whether the connection may serve the next one.
    std::function<bool(PgConnection*, const std::string& connectError)> run;
    // Posts the answer for a request that never ran (the store stopped).
    std::function<void()> abandon;
  };

  explicit PageStore(PageStoreOptions options);
  void enqueue(Request request);
  void ioLoop();
  std::chrono::steady_clock::time_point deadline() const;

  // Set at construction, never changed.
  const PageStoreOptions options_;
  int wakeRead_ = -1;  // readable once the store stops: ends any wait of the I/O thread
  int wakeWrite_ = -1;

  // Guarded by mutex_.
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Request> queue_;
  bool stopping_ = false;

  // I/O thread only.
  std::unique_ptr<PgConnection> connection_;
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace dohost::store
