#include "authorizer.h"

#include <strings.h>

#include <array>
#include <string_view>

#include <sqlite3.h>

namespace dohost::storage {
namespace {

constexpr std::string_view kTransactionMessage =
    "use the storage transaction API instead of BEGIN/COMMIT/SAVEPOINT";

// Pragmas that only inspect the schema or tune the current connection harmlessly. Everything
// else (journal_mode, synchronous, writable_schema, ...) could undo the host's guarantees.
constexpr std::array<const char*, 18> kAllowedPragmas = {
    "table_info",      "table_xinfo",         "table_list",       "index_list",
    "index_info",      "index_xinfo",         "foreign_key_list", "foreign_key_check",
    "quick_check",     "integrity_check",     "data_version",     "page_size",
    "page_count",      "foreign_keys",        "defer_foreign_keys", "case_sensitive_like",
    "recursive_triggers", "optimize",
};

// The virtual table modules Cloudflare allows; others may expose the file system or memory.
constexpr std::array<const char*, 4> kAllowedModules = {"fts5", "fts5vocab", "rtree",
                                                        "rtree_i32"};

template <size_t N>
bool containsIgnoringCase(const std::array<const char*, N>& names, const char* name) {
  if (name == nullptr) return false;
  for (const char* allowed : names) {
    if (strcasecmp(allowed, name) == 0) return true;
  }
  return false;
}

int deny(AuthorizerState& state, std::string message) {
  if (state.denial.empty()) state.denial = std::move(message);
  return SQLITE_DENY;
}

// Denies if either object name is reserved. Pass nullptr for an argument that is not a name
// (a column, a module), so user columns called "_do_x" stay legal.
int checkNames(AuthorizerState& state, const char* first, const char* second) {
  if (isReservedName(first)) return deny(state, reservedNameMessage(first));
  if (isReservedName(second)) return deny(state, reservedNameMessage(second));
  return SQLITE_OK;
}

int checkPragma(AuthorizerState& state, const char* pragma, const char* argument) {
  if (!containsIgnoringCase(kAllowedPragmas, pragma)) {
    return deny(state, "PRAGMA " + std::string(pragma ? pragma : "") + " is not allowed");
  }
  // "PRAGMA table_info(_do_kv)" names the table in the argument.
  return checkNames(state, argument, nullptr);
}

int checkVirtualTable(AuthorizerState& state, const char* table, const char* module) {
  if (!containsIgnoringCase(kAllowedModules, module)) {
    return deny(state, "virtual table module " + std::string(module ? module : "") +
                           " is not allowed");
  }
  return checkNames(state, table, nullptr);
}

}  // namespace

bool isReservedName(const char* name) {
  return name != nullptr && strncasecmp(name, "_do_", 4) == 0;
}

std::string reservedNameMessage(const std::string& name) {
  return "access to " + name +
         " is not allowed: tables starting with _do_ belong to the host";
}

// Argument meanings per action are listed in sqlite3.h next to SQLITE_CREATE_INDEX.
int userSqlAuthorizer(void* statePtr, int action, const char* arg1, const char* arg2,
                      const char* dbName, const char* trigger) {
  AuthorizerState& state = *static_cast<AuthorizerState*>(statePtr);
  if (state.hostTurn) return SQLITE_OK;
  switch (action) {
    case SQLITE_CREATE_INDEX:    // index, table
    case SQLITE_CREATE_TRIGGER:  // trigger, table
    case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TRIGGER:
      return checkNames(state, arg1, arg2);
    case SQLITE_CREATE_TABLE:  // table
    case SQLITE_CREATE_VIEW:   // view
    case SQLITE_DROP_TABLE:
    case SQLITE_DROP_VIEW:
    case SQLITE_READ:    // table, column
    case SQLITE_INSERT:  // table
    case SQLITE_UPDATE:  // table, column
    case SQLITE_DELETE:  // table
    case SQLITE_REINDEX:  // index
      return checkNames(state, arg1, nullptr);
    case SQLITE_ALTER_TABLE:  // database, table; the new name is checked by the caller
      state.sawAlter = true;
      return checkNames(state, arg2, nullptr);
    case SQLITE_CREATE_VTABLE:  // table, module
      return checkVirtualTable(state, arg1, arg2);
    case SQLITE_DROP_VTABLE:
      return checkNames(state, arg1, nullptr);
    case SQLITE_PRAGMA:  // pragma name, argument
      return checkPragma(state, arg1, arg2);
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
      return deny(state, std::string(kTransactionMessage));
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
      return deny(state, "ATTACH and DETACH are not allowed: an object has exactly one database");
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_CREATE_TEMP_VIEW:
    case SQLITE_DROP_TEMP_INDEX:
    case SQLITE_DROP_TEMP_TABLE:
    case SQLITE_DROP_TEMP_TRIGGER:
    case SQLITE_DROP_TEMP_VIEW:
      return deny(state, "temporary tables, views, indexes and triggers are not allowed");
    default:  // SELECT, FUNCTION, RECURSIVE, and ANALYZE, which PRAGMA optimize may run on
              // any table and which only writes statistics
      return SQLITE_OK;
  }
}

}  // namespace dohost::storage
