#include "pg_harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <thread>

#include <libpq-fe.h>

#include "etcd_harness.h"

extern char** environ;

namespace dohost::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kBinDir = "/usr/lib/postgresql/15/bin";

// Who the server runs as: the `postgres` user when we are root, else ourselves.
struct RunAs {
  bool change = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

Result<RunAs> runAs() {
  if (::geteuid() != 0) return RunAs{};
  passwd* user = ::getpwnam("postgres");
  if (user == nullptr) return Status::notFound("running as root and there is no postgres user");
  return RunAs{.change = true, .uid = user->pw_uid, .gid = user->pw_gid};
}

// Starts `args` as `who`, output appended to `logPath`. Everything the child needs is made
// before fork, since only async-signal-safe calls are allowed between fork and exec.
pid_t spawnAs(const RunAs& who, const std::vector<std::string>& args, const std::string& logPath) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  int devNull = ::open("/dev/null", O_RDONLY);
  int log = ::open(logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (devNull < 0 || log < 0) ::_exit(126);
  ::dup2(devNull, 0);
  ::dup2(log, 1);
  ::dup2(log, 2);
  if (who.change && (::setgid(who.gid) != 0 || ::setuid(who.uid) != 0)) ::_exit(126);
  ::execve(argv[0], argv.data(), environ);
  ::_exit(127);
}

// Waits (bounded) for `pid` to exit; its exit status, or -1 if it did not.
int waitExit(pid_t pid, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    int wstatus = 0;
    if (::waitpid(pid, &wstatus, WNOHANG) == pid) return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128;
    std::this_thread::sleep_for(20ms);
  }
  return -1;
}

std::string tail(const std::string& path) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > 600 ? text.substr(text.size() - 600) : text;
}

// The processes whose parent is `parent` (the server's backends and helpers).
std::vector<pid_t> childrenOf(pid_t parent) {
  std::vector<pid_t> children;
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ignored)) {
    std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    std::getline(stat, line);
    size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    // After "pid (comm)": the state, then the parent's pid.
    char state = 0;
    long ppid = 0;
    if (std::sscanf(line.c_str() + close + 1, " %c %ld", &state, &ppid) == 2 && ppid == parent) {
      children.push_back(static_cast<pid_t>(std::stol(name)));
    }
  }
  return children;
}

}  // namespace

Result<std::unique_ptr<PostgresServer>> PostgresServer::start() {
  std::string initdb = std::string(kBinDir) + "/initdb", postgres = std::string(kBinDir) + "/postgres";
  if (::access(initdb.c_str(), X_OK) != 0 || ::access(postgres.c_str(), X_OK) != 0) {
    return Status::notFound(std::string(kBinDir) + " has no initdb/postgres (Debian postgresql-15)");
  }
  Result<RunAs> who = runAs();
  if (!who.isOk()) return who.status();
  std::unique_ptr<PostgresServer> server(new PostgresServer());
  char pattern[] = "/tmp/dohost-pg-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) return Status::ioError("mkdtemp failed");
  server->dir_ = pattern;
  if (who->change && ::chown(pattern, who->uid, who->gid) != 0) {
    return Status::ioError("cannot give " + server->dir_ + " to the postgres user");
  }
  std::string data = server->dir_ + "/data", log = server->dir_ + "/log";
  pid_t init = spawnAs(*who, {initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                              "--no-sync"}, log);
  if (init < 0) return Status::ioError("cannot start initdb");
  if (int rc = waitExit(init, 120s); rc != 0) {
    if (rc < 0) {
      ::kill(init, SIGKILL);
      waitExit(init, 5s);
    }
    return Status::ioError("initdb failed (" + std::to_string(rc) + "): " + tail(log));
  }
  Result<std::vector<int>> ports = freePorts(1);
  if (!ports.isOk()) return ports.status();
  server->port_ = ports->front();
  server->pid_ = spawnAs(*who, {postgres, "-D", data, "-p", std::to_string(server->port_), "-k",
                                server->dir_, "-h", "127.0.0.1", "-c", "fsync=off"},
                         log);
  if (server->pid_ < 0) return Status::ioError("cannot start postgres");
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (PQping(server->conninfo().c_str()) != PQPING_OK) {
    int wstatus = 0;
    if (::waitpid(server->pid_, &wstatus, WNOHANG) == server->pid_) {
      server->pid_ = -1;
      return Status::ioError("postgres exited: " + tail(log));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::ioError("postgres did not accept connections within 60 s: " + tail(log));
    }
    std::this_thread::sleep_for(50ms);
  }
  return server;
}

PostgresServer::~PostgresServer() {
  if (pid_ > 0) {
    ::kill(pid_, SIGINT);  // fast shutdown: active sessions are ended
    if (waitExit(pid_, 20s) < 0) killAll();
    pid_ = -1;
  }
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

std::string PostgresServer::conninfo() const {
  return "host=127.0.0.1 port=" + std::to_string(port_) +
         " dbname=postgres user=postgres connect_timeout=5";
}

void PostgresServer::killAll() {
  if (pid_ <= 0) return;
  // Listed first: once the postmaster is gone its children belong to init.
  std::vector<pid_t> children = childrenOf(pid_);
  ::kill(pid_, SIGKILL);
  for (pid_t child : children) ::kill(child, SIGKILL);
  waitExit(pid_, 10s);
  pid_ = -1;
}

Result<std::unique_ptr<PgSession>> PgSession::open(const std::string& conninfo) {
  pg_conn* conn = PQconnectdb(conninfo.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    Status status = Status::ioError(std::string("cannot connect: ") + PQerrorMessage(conn));
    PQfinish(conn);
    return status;
  }
  return std::unique_ptr<PgSession>(new PgSession(conn));
}

PgSession::~PgSession() { PQfinish(conn_); }

Result<std::vector<std::vector<std::string>>> PgSession::query(const std::string& sql) {
  PGresult* result = PQexec(conn_, sql.c_str());
  ExecStatusType status = PQresultStatus(result);
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    Status error = Status::ioError(PQresultErrorMessage(result));
    PQclear(result);
    return error;
  }
  std::vector<std::vector<std::string>> rows;
  for (int r = 0; r < PQntuples(result); ++r) {
    std::vector<std::string> row;
    for (int c = 0; c < PQnfields(result); ++c) row.push_back(PQgetvalue(result, r, c));
    rows.push_back(std::move(row));
  }
  PQclear(result);
  return rows;
}

}  // namespace dohost::testing
