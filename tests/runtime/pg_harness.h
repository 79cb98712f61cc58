// A real PostgreSQL 15 for the page store tests: initdb in a temporary folder, then postgres
// on a free loopback port with its unix socket in that folder. As root (PostgreSQL refuses to
// run as root) both run as the `postgres` user. Every wait is bounded; the destructor stops
// the server (fast shutdown, then SIGKILL) and removes the folder.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "dohost/status.h"

struct pg_conn;

namespace dohost::testing {

class PostgresServer {
 public:
  // kNotFound when the PostgreSQL 15 binaries are missing (Debian postgresql-15).
  static Result<std::unique_ptr<PostgresServer>> start();
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // A libpq connection string for the server's `postgres` database.
  std::string conninfo() const;
  pid_t pid() const { return pid_; }
  // SIGKILL of the postmaster and of every process of the server; it stays dead.
  void killAll();

 private:
  PostgresServer() = default;

  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;  // the postmaster; -1 once stopped
};

// A blocking libpq session for the tests' own statements.
class PgSession {
 public:
  static Result<std::unique_ptr<PgSession>> open(const std::string& conninfo);
  ~PgSession();
  PgSession(const PgSession&) = delete;
  PgSession& operator=(const PgSession&) = delete;

  // Runs `sql`; the rows as text ("" for NULL), or the error.
  Result<std::vector<std::vector<std::string>>> query(const std::string& sql);

 private:
  explicit PgSession(pg_conn* conn) : conn_(conn) {}
  pg_conn* conn_;
};

}  // namespace dohost::testing
