// doctl: inspects dohost's object state offline, from the data folder (read-only, safe while
// the host runs), and online, through the admin API; replays persisted chat history.
// Usage and examples: docs/doctl.md.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"

namespace {

using doctl::CliError;
using doctl::kExitUsage;

// CLI11 leaves an unset option empty; doctl's commands take optionals.
std::optional<std::string> optional(const std::string& value, const CLI::Option* option) {
  return option->count() > 0 ? std::optional<std::string>(value) : std::nullopt;
}

int run(int argc, char** argv) {
  doctl::GlobalOptions options;
  if (const char* token = std::getenv("DOHOST_ADMIN_TOKEN")) options.token = token;

  CLI::App app{
      "doctl: inspect dohost objects (offline from the data folder, online through the admin "
      "API) and replay persisted chat history.",
      "doctl"};
  app.require_subcommand(1);
  app.fallthrough();  // global options may also follow the command
  app.add_option("--data", options.dataDir, "Data folder of the host (offline commands)")
      ->capture_default_str();
  auto* adminOption =
      app.add_option("--admin", options.adminUrl,
                     "Admin API URL, http://HOST:PORT or HOST:PORT (online commands; with "
                     "show, adds the running host's view of the object)")
          ->capture_default_str();
  app.add_option("--token", options.token,
                 "Admin API bearer token (default: $DOHOST_ADMIN_TOKEN)");
  app.add_flag("--json", options.json, "JSON output (JSON lines for history)");
  app.add_flag("-w,--wide", options.wide, "Full 64-character ids in tables");

  std::function<int()> command;
  std::string className, object, text;

  auto* ls = app.add_subcommand("ls", "Objects on disk: class, name, id, size, alarm");
  auto* lsClass = ls->add_option("class", className, "Only this class");
  ls->callback([&] {
    command = [&] { return doctl::runLs(options, optional(className, lsClass)); };
  });

  auto* show = app.add_subcommand("show", "One object: meta, alarm, tables, key count");
  show->add_option("class", className, "Object class")->required();
  show->add_option("object", object, "Object name or id")->required();
  show->callback([&] { command = [&] { return doctl::runShow(options, className, object); }; });

  auto* kv = app.add_subcommand("kv", "Keys and values of an object's key-value storage");
  kv->add_option("class", className, "Object class")->required();
  kv->add_option("object", object, "Object name or id")->required();
  auto* prefix = kv->add_option("--prefix", text, "Only keys that start with this");
  kv->callback([&] {
    command = [&] { return doctl::runKv(options, className, object, optional(text, prefix)); };
  });

  auto* sql = app.add_subcommand("sql", "Runs SQL on an object's database, read-only");
  sql->add_option("class", className, "Object class")->required();
  sql->add_option("object", object, "Object name or id")->required();
  sql->add_option("statement", text, "SQL, e.g. \"SELECT * FROM t\"")->required();
  sql->callback(
      [&] { command = [&] { return doctl::runSql(options, className, object, text); }; });

  doctl::HistoryOptions history;
  std::string since, after;
  int64_t limit = 0;
  auto* hist = app.add_subcommand("history", "A channel's persisted messages, oldest first");
  hist->add_option("channel", history.channel, "Channel id")->required();
  auto* afterOption = hist->add_option(
      "--after", after, "Only messages after this one: its id (a UUID) or its seq (an integer)");
  auto* sinceOption = hist->add_option(
      "--since", since, "Only messages from this time on: RFC 3339, or a duration ago (10m, 2h)");
  auto* limitOption = hist->add_option("--limit", limit, "At most this many messages");
  hist->add_flag("-f,--follow", history.follow,
                 "Keep printing messages as they are stored, until Ctrl-C");
  hist->callback([&] {
    if (afterOption->count() > 0 && !doctl::parseHistoryAfter(after, history)) {
      throw CLI::ValidationError("--after",
                                 "must be a message id (a UUID) or a seq (an integer >= 0)");
    }
    if (limitOption->count() > 0) {
      if (limit <= 0) throw CLI::ValidationError("--limit", "must be at least 1");
      history.limit = limit;
    }
    if (sinceOption->count() > 0) {
      history.sinceMs = doctl::parseSince(since, doctl::nowMs());
      if (!history.sinceMs) {
        throw CLI::ValidationError(
            "--since", "expected RFC 3339 (2024-05-01T12:00:00Z) or a duration (30s, 10m, 2h)");
      }
    }
    command = [&] { return doctl::runHistory(options, history); };
  });

  auto* objects = app.add_subcommand("objects", "Objects the running host tracks (admin API)");
  auto* objectsClass = objects->add_option("class", className, "Only this class");
  objects->callback([&] {
    command = [&] { return doctl::runObjects(options, optional(className, objectsClass)); };
  });

  auto* sockets =
      app.add_subcommand("sockets", "An object's open sockets: tags, attachment (admin API)");
  sockets->add_option("class", className, "Object class")->required();
  sockets->add_option("object", object, "Object name or id")->required();
  sockets->callback(
      [&] { command = [&] { return doctl::runSockets(options, className, object); }; });

  auto* evict = app.add_subcommand("evict", "Evicts an object from memory now (admin API)");
  evict->add_option("class", className, "Object class")->required();
  evict->add_option("object", object, "Object name or id")->required();
  evict->callback([&] { command = [&] { return doctl::runEvict(options, className, object); }; });

  auto* clusterCmd =
      app.add_subcommand("cluster", "The host's cluster: its hosts, leases, objects (admin API)");
  clusterCmd->callback([&] { command = [&] { return doctl::runCluster(options); }; });

  auto* alarm = app.add_subcommand("alarm", "Runs an object's alarm now (admin API)");
  alarm->add_option("class", className, "Object class")->required();
  alarm->add_option("object", object, "Object name or id")->required();
  alarm->callback([&] { command = [&] { return doctl::runAlarm(options, className, object); }; });

  doctl::TokenOptions token;
  std::string perms, ttl, name;
  auto* tok = app.add_subcommand("token", "Prints an HS256 JWT the bundled apps accept");
  tok->add_option("--secret-env", token.secretEnv,
                  "Environment variable that holds the secret")
      ->capture_default_str();
  tok->add_option("--user", token.user, "User id: the sub and userId claims")->required();
  auto* nameOption =
      tok->add_option("--name", name, "Display name: the name and username claims");
  auto* permOption =
      tok->add_option("--perm", perms, "Permissions, comma-separated (default read,write)");
  auto* ttlOption =
      tok->add_option("--ttl", ttl, "Lifetime: 30s, 10m, 1h, 7d; 0 for no exp (default 1h)");
  tok->add_option("--claim", token.claims, "Another claim KEY=VALUE; VALUE may be JSON (repeatable)");
  tok->callback([&] {
    token.name = optional(name, nameOption);
    if (permOption->count() > 0) {
      token.permissions.clear();
      size_t start = 0;
      while (start <= perms.size()) {
        size_t comma = std::min(perms.find(',', start), perms.size());
        if (comma > start) token.permissions.push_back(perms.substr(start, comma - start));
        start = comma + 1;
      }
    }
    if (ttlOption->count() > 0) {
      std::optional<int64_t> ms = ttl == "0" ? std::optional<int64_t>(0) : doctl::parseDuration(ttl);
      if (!ms) throw CLI::ValidationError("--ttl", "expected a duration (30s, 10m, 1h, 7d) or 0");
      token.ttlMs = *ms;
    }
    command = [&] { return doctl::runToken(options, token); };
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string message = e.what();
    while (!message.empty() && message.back() == '\n') message.pop_back();
    for (char& c : message) {
      if (c == '\n') c = ' ';
    }
    throw CliError(kExitUsage, message + " (see doctl --help)");
  }
  options.adminGiven = adminOption->count() > 0;
  return command ? command() : kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const CliError& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "doctl: %s\n", e.what());
    return e.code();
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "doctl: %s\n", e.what());
    return doctl::kExitFailed;
  }
}
