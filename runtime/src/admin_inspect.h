// The admin API's read-only look into one object's database, for the dashboard:
//   GET  /objects/{class}/{name-or-id}/kv[?prefix=P&after=K&limit=N]   key-value entries
//   GET  /objects/{class}/{name-or-id}/tables                          tables and row counts
//   POST /objects/{class}/{name-or-id}/sql   (body: SQL text)          read-only SQL
// Each opens the object's file read-only, as doctl does (dohost/storage/inspect.h), so no
// request can change it; each is bounded by the admin_sql_* settings.
#pragma once

#include <string>

#include "dohost/host.h"
#include "dohost/http.h"

namespace dohost {

// True if `action` (the fourth path part) is one of the above.
bool isInspectAction(const std::string& action);
// Answers the request for the object whose database is at `path` (which exists).
Response handleInspect(const HostOptions& options, const std::string& path,
                       const std::string& action, const Request& request);

}  // namespace dohost
