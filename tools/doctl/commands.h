// doctl's commands. Each returns the exit code or throws CliError; main.cc parses the command
// line and calls one of them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "format.h"

namespace doctl {

// --- offline: on the data folder (offline.cc) ------------------------------------------
int runLs(const GlobalOptions& options, const std::optional<std::string>& className);
int runShow(const GlobalOptions& options, const std::string& className,
            const std::string& object);
int runKv(const GlobalOptions& options, const std::string& className, const std::string& object,
          const std::optional<std::string>& prefix);
int runSql(const GlobalOptions& options, const std::string& className, const std::string& object,
           const std::string& sql);

// --- history of a channel (history.cc) -------------------------------------------------
struct HistoryOptions {
  std::string channel;
  std::optional<int64_t> afterSeq;     // messages with a greater seq
  std::optional<std::string> afterId;  // messages after the one with this id (a UUID)
  std::optional<int64_t> sinceMs;      // messages with timestamp >= this
  std::optional<int64_t> limit;        // at most this many messages in all (with follow, too)
  bool follow = false;
  int pollMs = 200;
};
int runHistory(const GlobalOptions& options, const HistoryOptions& history);
// --after: a message id (a UUID, stored lowercase) or a seq (a non-negative integer). False
// if `text` is neither.
bool parseHistoryAfter(const std::string& text, HistoryOptions& history);

// --- online: through the admin API (admin.cc) ------------------------------------------
int runObjects(const GlobalOptions& options, const std::optional<std::string>& className);
int runSockets(const GlobalOptions& options, const std::string& className,
               const std::string& object);
int runEvict(const GlobalOptions& options, const std::string& className,
             const std::string& object);
int runAlarm(const GlobalOptions& options, const std::string& className,
             const std::string& object);
// GET /cluster: this host's membership and the hosts of its cluster.
int runCluster(const GlobalOptions& options);
// The running host's view of one object for `show`: its state and, after failures, the failed
// state's record. The admin API's JSON; throws CliError like the online commands.
json hostView(const GlobalOptions& options, const std::string& className, const std::string& id);
// After recent failures of its constructor, fetch or alarm: how many, the last error, and the
// end of the failed state (docs/operations.md, "Crash loops").
void addFailureFields(Fields& fields, const json& detail, int64_t now);

// --- a token for the bundled apps (token.cc) ------------------------------------------
struct TokenOptions {
  std::string secretEnv = "JWT_SECRET";  // the environment variable holding the HS256 secret
  std::string user;                      // sub and userId
  std::optional<std::string> name;       // name and username; the user when unset
  std::vector<std::string> permissions{"read", "write"};
  int64_t ttlMs = 3600 * 1000;           // exp = iat + ttl; 0: no exp
  std::vector<std::string> claims;       // KEY=VALUE, set last (they may replace the above)
};
int runToken(const GlobalOptions& options, const TokenOptions& token);

}  // namespace doctl
