// PgConnection: one libpq connection in non-blocking pipeline mode, for the page store's I/O
// thread. run() sends a batch of statements at once (one round trip), followed by a sync, and
// collects one result per statement, waiting with poll() on the socket and on a wake-up file
// descriptor, up to a deadline. It never blocks longer than the deadline, and a wake-up (the
// store stopping) ends the wait at once.
//
// What went wrong is told apart precisely, because the page store must report a commit whose
// outcome is unknown as such: whether every byte of the batch reached the kernel (`sent`), and
// which statements have a result.
//
// Thread: one thread at a time (the store's I/O thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dohost/status.h"

struct pg_conn;
struct pg_result;

namespace dohost::store {

// One parameter: text, or binary bytes (format 1); nullopt is SQL NULL.
struct PgParam {
  std::optional<std::string> value;
  bool binary = false;
  uint32_t type = 0;  // the parameter's type OID; 0: inferred by the server
};

struct PgStatement {
  std::string sql;
  std::vector<PgParam> params;
  bool binaryResult = false;
};

// A result owned by the caller.
struct PgResultDeleter {
  void operator()(pg_result* result) const;
};
using PgResult = std::unique_ptr<pg_result, PgResultDeleter>;

struct PgBatchResult {
  // One per statement, in order, for the statements answered before the batch ended (an
  // error result for the one that failed, "pipeline aborted" for the ones after it).
  std::vector<PgResult> results;
  size_t queued = 0;      // statements handed to libpq (which may send them as it goes)
  bool sent = false;      // the whole batch reached the kernel (the server may have run it all)
  bool complete = false;  // every result and the sync arrived
  std::string error;      // why it is not complete: connection lost, timeout, stopped
};

class PgConnection {
 public:
  // Connects (bounded by `deadline`); `wakeFd` is polled with the socket (readable: stop).
  static Result<std::unique_ptr<PgConnection>> connect(
      const std::string& conninfo, int wakeFd, std::chrono::steady_clock::time_point deadline);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Sends `statements` as one pipeline and waits for their results until `deadline`. After a
  // batch that is not complete the connection is unusable (the caller drops it).
  PgBatchResult run(const std::vector<PgStatement>& statements,
                    std::chrono::steady_clock::time_point deadline);

  bool healthy() const;
  // Connected, and no transaction left open (an explicit one that failed stays open).
  bool idle() const;

 private:
  PgConnection(pg_conn* conn, int wakeFd) : conn_(conn), wakeFd_(wakeFd) {}
  // Waits until the socket is readable (and writable, if `forWrite`), the wake-up fires or the
  // deadline passes; the Status says which of the last two.
  Status waitFor(bool forWrite, std::chrono::steady_clock::time_point deadline);
  Status flushAll(std::chrono::steady_clock::time_point deadline);

  pg_conn* conn_;
  int wakeFd_;
};

// The text of a result's error, with its SQLSTATE: "ERROR: ... (SQLSTATE 40001)".
std::string errorOf(const pg_result* result);
// The SQLSTATE of an error result ("" if none).
std::string sqlStateOf(const pg_result* result);

}  // namespace dohost::store
