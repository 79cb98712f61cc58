#include "store/pg_pipeline.h"

#include <poll.h>

#include <cerrno>

#include <libpq-fe.h>

namespace dohost::store {
namespace {

using Clock = std::chrono::steady_clock;

int millisecondsUntil(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  return left.count() > 60'000 ? 60'000 : static_cast<int>(left.count());
}

// libpq's messages end with a newline; the store's do not.
std::string trimmed(const char* message) {
  std::string text = message != nullptr ? message : "";
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// An error result that means the connection is gone, not that the statement failed: libpq's
// own "server closed the connection", or the server's connection and shutdown errors.
bool connectionLost(pg_conn* conn, const pg_result* result) {
  if (PQstatus(conn) == CONNECTION_BAD) return true;
  std::string state = sqlStateOf(result);
  return state.starts_with("08") || state.starts_with("57P");
}

}  // namespace

void PgResultDeleter::operator()(pg_result* result) const { PQclear(result); }

std::string sqlStateOf(const pg_result* result) {
  const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
  return state != nullptr ? state : "";
}

std::string errorOf(const pg_result* result) {
  std::string text = trimmed(PQresultErrorMessage(result));
  if (text.empty()) text = PQresStatus(PQresultStatus(result));
  std::string state = sqlStateOf(result);
  return state.empty() ? text : text + " (SQLSTATE " + state + ")";
}

Result<std::unique_ptr<PgConnection>> PgConnection::connect(const std::string& conninfo,
                                                            int wakeFd,
                                                            Clock::time_point deadline) {
  pg_conn* conn = PQconnectStart(conninfo.c_str());
  if (conn == nullptr) return Status::ioError("PostgreSQL: out of memory");
  std::unique_ptr<PgConnection> connection(new PgConnection(conn, wakeFd));
  if (PQstatus(conn) == CONNECTION_BAD) {
    return Status::ioError("PostgreSQL: " + trimmed(PQerrorMessage(conn)));
  }
  PostgresPollingStatusType polling = PGRES_POLLING_WRITING;
  while (polling != PGRES_POLLING_OK) {
    if (polling == PGRES_POLLING_FAILED) {
      return Status::ioError("PostgreSQL: cannot connect: " + trimmed(PQerrorMessage(conn)));
    }
    if (Status s = connection->waitFor(polling == PGRES_POLLING_WRITING, deadline); !s.isOk()) {
      return s;
    }
    polling = PQconnectPoll(conn);
  }
  if (PQsetnonblocking(conn, 1) != 0 || PQenterPipelineMode(conn) != 1) {
    return Status::ioError("PostgreSQL: cannot enter pipeline mode: " +
                           trimmed(PQerrorMessage(conn)));
  }
  return connection;
}

PgConnection::~PgConnection() { PQfinish(conn_); }

bool PgConnection::healthy() const { return PQstatus(conn_) == CONNECTION_OK; }

bool PgConnection::idle() const {
  return healthy() && PQtransactionStatus(conn_) == PQTRANS_IDLE;
}

Status PgConnection::waitFor(bool forWrite, Clock::time_point deadline) {
  while (true) {
    pollfd fds[2] = {
        {.fd = PQsocket(conn_), .events = static_cast<short>(POLLIN | (forWrite ? POLLOUT : 0)),
         .revents = 0},
        {.fd = wakeFd_, .events = POLLIN, .revents = 0},
    };
    if (fds[0].fd < 0) return Status::ioError("PostgreSQL: the connection has no socket");
    int ready = ::poll(fds, 2, millisecondsUntil(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return Status::ioError("PostgreSQL: poll failed");
    if (fds[1].revents != 0) return Status::ioError("PostgreSQL: the store is stopping");
    if (ready == 0) {
      if (Clock::now() < deadline) continue;
      return Status::ioError("PostgreSQL: no answer before the deadline");
    }
    return Status::ok();
  }
}

Status PgConnection::flushAll(Clock::time_point deadline) {
  while (true) {
    int rc = PQflush(conn_);
    if (rc == 0) return Status::ok();
    if (rc < 0) return Status::ioError("PostgreSQL: " + trimmed(PQerrorMessage(conn_)));
    if (Status s = waitFor(/*forWrite=*/true, deadline); !s.isOk()) return s;
    // Input is read while sending, or a server blocked on writing its answers would never
    // read the rest of the batch.
    if (PQconsumeInput(conn_) == 0) {
      return Status::ioError("PostgreSQL: " + trimmed(PQerrorMessage(conn_)));
    }
  }
}

PgBatchResult PgConnection::run(const std::vector<PgStatement>& statements,
                                Clock::time_point deadline) {
  PgBatchResult out;
  for (const PgStatement& statement : statements) {
    std::vector<const char*> values;
    std::vector<int> lengths, formats;
    std::vector<Oid> types;
    for (const PgParam& p : statement.params) {
      values.push_back(p.value ? p.value->data() : nullptr);
      lengths.push_back(p.value ? static_cast<int>(p.value->size()) : 0);
      formats.push_back(p.binary ? 1 : 0);
      types.push_back(p.type);
    }
    if (PQsendQueryParams(conn_, statement.sql.c_str(), static_cast<int>(values.size()),
                          types.data(), values.data(), lengths.data(), formats.data(),
                          statement.binaryResult ? 1 : 0) != 1) {
      out.error = "PostgreSQL: cannot queue a statement: " + trimmed(PQerrorMessage(conn_));
      return out;
    }
    ++out.queued;
  }
  if (PQpipelineSync(conn_) != 1) {
    out.error = "PostgreSQL: cannot queue the sync: " + trimmed(PQerrorMessage(conn_));
    return out;
  }
  if (Status s = flushAll(deadline); !s.isOk()) {
    out.error = s.message();
    return out;
  }
  out.sent = true;
  bool inStatement = false;  // a result of the current statement arrived; its end (null) not yet
  while (true) {
    while (PQisBusy(conn_) == 0) {
      pg_result* raw = PQgetResult(conn_);
      if (raw == nullptr) {
        if (!inStatement) break;  // nothing more until more input arrives
        inStatement = false;
        continue;
      }
      PgResult result(raw);
      ExecStatusType status = PQresultStatus(raw);
      if (status == PGRES_PIPELINE_SYNC) {
        out.complete = out.results.size() == statements.size();
        if (!out.complete) out.error = "PostgreSQL: the sync arrived before every result";
        return out;
      }
      if (status == PGRES_FATAL_ERROR && connectionLost(conn_, raw)) {
        out.error = "PostgreSQL: connection lost: " + errorOf(raw);
        return out;
      }
      if (!inStatement) {
        out.results.push_back(std::move(result));
        inStatement = true;
      }
    }
    if (!healthy()) {
      out.error = "PostgreSQL: connection lost: " + trimmed(PQerrorMessage(conn_));
      return out;
    }
    if (Status s = waitFor(/*forWrite=*/false, deadline); !s.isOk()) {
      out.error = s.message();
      return out;
    }
    if (PQconsumeInput(conn_) == 0) {
      out.error = "PostgreSQL: connection lost: " + trimmed(PQerrorMessage(conn_));
      return out;
    }
  }
}

}  // namespace dohost::store
