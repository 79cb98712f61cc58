// The SQLite authorizer that guards user SQL (ObjectDatabase::exec). Private to storage/.
//
// User SQL must not touch the host's reserved "_do_" tables, control transactions itself (the
// runtime owns the implicit transaction around every event), attach other files, create TEMP
// objects, load unknown virtual table modules, or run pragmas outside a small allow-list.
#pragma once

#include <string>

namespace dohost::storage {

// Passed as the authorizer's user-data pointer. The authorizer only records; the caller turns
// `denial` into a Status, because SQLite itself only reports a generic "not authorized".
struct AuthorizerState {
  std::string denial;      // why the first refused action was refused; empty if none
  bool sawAlter = false;   // an ALTER TABLE was prepared: its rename target is not passed to
                           // the authorizer, so the caller checks the schema afterwards
  bool hostTurn = false;   // the host is running its own statement: allow everything
};

// Matches sqlite3_set_authorizer's callback type; `state` is an AuthorizerState*.
int userSqlAuthorizer(void* state, int action, const char* arg1, const char* arg2,
                      const char* dbName, const char* trigger);

// True if `name` starts with "_do_" in any letter case (SQLite identifiers ignore ASCII case).
bool isReservedName(const char* name);

// The message used whenever user SQL names a reserved object.
std::string reservedNameMessage(const std::string& name);

}  // namespace dohost::storage
