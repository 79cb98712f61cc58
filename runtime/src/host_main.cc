// runHost (signals, runtime, server) and hostMain (flags, config file, plugins).
#include <dlfcn.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <cstdlib>
#include <thread>
#include <toml++/toml.h>
#include <unistd.h>

#include "config.h"
#include "dohost/host.h"
#include "dohost/json.h"
#include "dohost/log.h"
#include "runtime.h"
#include "server.h"
#include "toml_depth.h"

namespace dohost {
namespace {

// A one-line configuration error: printed by hostMain, exit code 2.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

ListenerOptions parseListen(const std::string& what, const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    throw ConfigError(what + ": expected HOST:PORT, got \"" + text + "\"");
  }
  ListenerOptions l;
  l.host = text.substr(0, colon);
  std::string port = text.substr(colon + 1);
  char* end = nullptr;
  long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || p < 0 || p > 65535) {
    throw ConfigError(what + ": bad port \"" + port + "\"");
  }
  l.port = static_cast<int>(p);
  return l;
}

std::string upper(std::string s) {
  for (char& c : s) c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

void applyToml(const std::string& path, HostOptions& o) {
  std::ifstream file(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (!file) throw ConfigError("config " + path + ": cannot be read");
  // toml++ recurses once per level of tables; bound them before it reads anything.
  if (auto why = tomlNestingError(text)) throw ConfigError("config " + path + ": " + *why);
  toml::table t;
  try {
    t = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    throw ConfigError("config " + path + ": " + std::string(e.description()) + " at line " +
                      std::to_string(e.source().begin.line));
  }
  applyConfig(t, o);
}

}  // namespace

void applyConfig(const toml::table& t, HostOptions& o) {
  auto str = [&](const char* key, std::string& out) {
    if (auto v = t[key]) {
      if (!v.is_string()) throw ConfigError(std::string("config: ") + key + " must be a string");
      out = *v.value<std::string>();
    }
  };
  auto num = [&](const char* key, auto& out) {
    if (auto v = t[key]) {
      if (!v.is_number()) throw ConfigError(std::string("config: ") + key + " must be a number");
      double d = *v.value<double>();
      if (d < 0) throw ConfigError(std::string("config: ") + key + " must not be negative");
      out = static_cast<std::remove_reference_t<decltype(out)>>(d);
    }
  };
  static const std::set<std::string> kKnown = {
      "data", "admin", "admin_token", "idle_evict", "log_level", "durability", "plugins",
      "max_message_bytes", "max_queued_bytes", "max_sockets_per_object", "max_attachment_bytes",
      "max_request_body_bytes", "ping_interval", "ping_timeout", "alarm_retry_base",
      "alarm_max_retries", "max_json_depth", "apps",
      "log_format", "admin_sql_timeout", "admin_sql_max_rows", "admin_sql_max_bytes"};
  for (const auto& [k, v] : t) {
    if (!kKnown.count(std::string(k.str()))) {
      throw ConfigError("config: unknown key \"" + std::string(k.str()) + "\"");
    }
  }
  str("data", o.dataDir);
  if (auto v = t["admin"].value<std::string>()) o.admin = parseListen("config admin", *v);
  str("admin_token", o.adminToken);
  num("idle_evict", o.idleEvictSeconds);
  if (auto v = t["log_level"].value<std::string>()) {
    LogLevel level;
    if (!parseLogLevel(*v, &level)) throw ConfigError("config: log_level must be debug, info, warn, error or off");
    setLogLevel(level);
  }
  if (auto v = t["log_format"]) {
    LogFormat format;
    if (!v.is_string() || !parseLogFormat(*v.value<std::string>(), &format)) {
      throw ConfigError("config: log_format must be \"text\" or \"json\"");
    }
    setLogFormat(format);
  }
  if (auto v = t["durability"].value<std::string>()) {
    if (*v != "full" && *v != "normal") throw ConfigError("config: durability must be \"full\" or \"normal\"");
    o.durabilityFull = *v == "full";
  }
  if (auto arr = t["plugins"].as_array()) {
    for (auto& e : *arr) {
      if (auto s = e.value<std::string>()) o.plugins.push_back(*s);
    }
  }
  num("max_message_bytes", o.maxMessageBytes);
  num("max_queued_bytes", o.maxQueuedBytesPerSocket);
  num("max_sockets_per_object", o.maxSocketsPerObject);
  num("max_attachment_bytes", o.maxAttachmentBytes);
  num("max_request_body_bytes", o.maxRequestBodyBytes);
  num("ping_interval", o.pingIntervalSeconds);
  num("ping_timeout", o.pingTimeoutSeconds);
  num("alarm_retry_base", o.alarmRetryBaseSeconds);
  num("alarm_max_retries", o.alarmMaxRetries);
  if (auto v = t["max_json_depth"]) {
    std::optional<int64_t> depth = v.value_exact<int64_t>();
    if (!depth || *depth < 1 || *depth > static_cast<int64_t>(kMaxJsonDepthSetting)) {
      throw ConfigError("config: max_json_depth must be an integer from 1 to " +
                        std::to_string(kMaxJsonDepthSetting));
    }
    o.maxJsonDepth = static_cast<size_t>(*depth);
  }
  num("admin_sql_timeout", o.adminSqlTimeoutSeconds);
  num("admin_sql_max_rows", o.adminSqlMaxRows);
  num("admin_sql_max_bytes", o.adminSqlMaxBytes);
  if (auto apps = t["apps"].as_table()) {
    for (const auto& [name, value] : *apps) {
      const toml::table* app = value.as_table();
      if (app == nullptr) throw ConfigError("config: [apps." + std::string(name.str()) + "] must be a table");
      std::string appName(name.str());
      for (const auto& [k, v] : *app) {
        std::string key(k.str());
        std::string text;
        if (auto s = v.value<std::string>()) {
          text = *s;
        } else if (auto i = v.value_exact<int64_t>()) {
          text = std::to_string(*i);
        } else if (auto d = v.value_exact<double>()) {
          text = std::to_string(*d);
        } else if (auto b = v.value_exact<bool>()) {
          text = *b ? "true" : "false";
        } else {
          throw ConfigError("config: apps." + appName + "." + key + " must be a string or number");
        }
        if (key == "listen") {
          if (text == "off") {
            o.appsOff.push_back(appName);
          } else {
            o.apps[appName] = parseListen("config apps." + appName + ".listen", text);
          }
        } else if (key == "tls_cert") {
          o.apps[appName].tlsCert = text;
        } else if (key == "tls_key") {
          o.apps[appName].tlsKey = text;
        } else {
          o.appSettings[appName][key] = text;
        }
      }
    }
  }
}

namespace {

// Environment settings: JWT_SECRET for every app, DOHOST_<APP>_ADMIN_TOKEN and any
// DOHOST_<APP>_<KEY>; the config file wins over the environment for the same key.
void applyEnvironment(const Registry& registry, HostOptions& o) {
  if (const char* token = std::getenv("DOHOST_ADMIN_TOKEN"); token && o.adminToken.empty()) {
    o.adminToken = token;
  }
  for (const AppInfo& app : registry.apps()) {
    AppSettings& s = o.appSettings[app.name];
    if (const char* secret = std::getenv("JWT_SECRET")) s.emplace("jwt_secret", secret);
    std::string prefix = "DOHOST_" + upper(app.name) + "_";
    for (char** e = environ; *e; ++e) {
      std::string_view kv(*e);
      if (kv.substr(0, prefix.size()) != prefix) continue;
      size_t eq = kv.find('=');
      std::string key(kv.substr(prefix.size(), eq - prefix.size()));
      for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      s.emplace(key, std::string(kv.substr(eq + 1)));
    }
  }
}

void loadPlugin(const std::string& path, Registry& registry) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (handle == nullptr) throw ConfigError("plugin " + path + ": " + dlerror());
  using RegisterFn = void (*)(Registry&);
  auto fn = reinterpret_cast<RegisterFn>(dlsym(handle, "dohost_register"));
  if (fn == nullptr) throw ConfigError("plugin " + path + ": no dohost_register function");
  fn(registry);
}

}  // namespace

int runHost(const HostOptions& options, const Registry& registry) {
  // Signals are taken by one thread with sigwait; it wakes the loop with lws_cancel_service.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  if (options.maxJsonDepth < 1 || options.maxJsonDepth > kMaxJsonDepthSetting) {
    std::fprintf(stderr, "dohost: max_json_depth must be from 1 to %zu\n", kMaxJsonDepthSetting);
    return 2;
  }
  setJsonLimits(JsonLimits{options.maxJsonDepth});

  RuntimeOptions ro;
  ro.dataDir = options.dataDir;
  ro.idleEvict = Duration(static_cast<int64_t>(options.idleEvictSeconds * 1000));
  ro.durability = options.durabilityFull ? storage::Durability::kFull : storage::Durability::kNormal;
  ro.maxSocketsPerObject = options.maxSocketsPerObject;
  ro.maxAttachmentBytes = options.maxAttachmentBytes;
  ro.alarmRetryBase = Duration(static_cast<int64_t>(options.alarmRetryBaseSeconds * 1000));
  ro.alarmMaxRetries = options.alarmMaxRetries;
  SystemClock clock;
  Runtime runtime(ro, registry, clock);
  if (Status s = runtime.start(); !s.isOk()) {
    std::fprintf(stderr, "dohost: cannot open data folder %s: %s\n", options.dataDir.c_str(),
                 s.toString().c_str());
    return 2;
  }
  Server server(options, runtime, registry);
  std::string error;
  if (!server.start(&error)) {
    std::fprintf(stderr, "dohost: %s\n", error.c_str());
    return 2;
  }
  std::thread signals([&server, set] {
    int sig = 0;
    sigwait(&set, &sig);
    server.requestStop();
  });
  server.run();
  runtime.shutdown();
  pthread_kill(signals.native_handle(), SIGTERM);  // harmless if it already returned
  signals.join();
  logLine(LogLevel::kInfo, "stopped");
  return 0;
}

int hostMain(int argc, char** argv, Registry& registry) {
  CLI::App cli{"dohost: hosts Durable Objects with their SQLite storage and WebSockets"};
  std::string configPath, dataDir, admin, logLevel, logFormat;
  std::vector<std::string> appFlags, plugins;
  std::optional<double> idleEvict;
  cli.add_option("--config", configPath, "TOML config file (dohost.toml)");
  cli.add_option("--data", dataDir, "data folder (default ./data)");
  cli.add_option("--app", appFlags, "NAME=HOST:PORT or NAME=off (repeatable)");
  cli.add_option("--admin", admin, "admin API HOST:PORT (default 127.0.0.1:9090)");
  cli.add_option("--idle-evict", idleEvict, "seconds before an idle object is evicted (default 10)");
  cli.add_option("--log-level", logLevel, "debug, info, warn, error or off");
  cli.add_option("--log-format", logFormat, "text (key=value lines, the default) or json");
  cli.add_option("--plugin", plugins, "shared library exporting dohost_register (repeatable)");
  try {
    cli.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return cli.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "dohost: %s (see --help)\n", e.what());
    return 2;
  }
  HostOptions o;
  try {
    if (!configPath.empty()) applyToml(configPath, o);
    if (!dataDir.empty()) o.dataDir = dataDir;
    if (!admin.empty()) o.admin = parseListen("--admin", admin);
    if (idleEvict) {
      if (*idleEvict < 0) throw ConfigError("--idle-evict must not be negative");
      o.idleEvictSeconds = *idleEvict;
    }
    if (!logLevel.empty()) {
      LogLevel level;
      if (!parseLogLevel(logLevel, &level)) throw ConfigError("--log-level must be debug, info, warn, error or off");
      setLogLevel(level);
    }
    if (!logFormat.empty()) {
      LogFormat format;
      if (!parseLogFormat(logFormat, &format)) throw ConfigError("--log-format must be text or json");
      setLogFormat(format);
    }
    for (const std::string& p : plugins) o.plugins.push_back(p);
    for (const std::string& p : o.plugins) loadPlugin(p, registry);
    for (const std::string& f : appFlags) {
      size_t eq = f.find('=');
      if (eq == std::string::npos) throw ConfigError("--app: expected NAME=HOST:PORT or NAME=off");
      std::string name = f.substr(0, eq), value = f.substr(eq + 1);
      bool known = false;
      for (const AppInfo& a : registry.apps()) known = known || a.name == name;
      if (!known) throw ConfigError("--app: no app named \"" + name + "\"");
      if (value == "off") {
        o.appsOff.push_back(name);
      } else {
        ListenerOptions l = parseListen("--app " + name, value);
        l.tlsCert = o.apps[name].tlsCert;
        l.tlsKey = o.apps[name].tlsKey;
        o.apps[name] = l;
      }
    }
    for (const AppInfo& a : registry.apps()) {
      if (!o.apps.count(a.name) || o.apps[a.name].port == 0) {
        ListenerOptions def = parseListen("default for " + a.name, a.defaultListen);
        def.tlsCert = o.apps[a.name].tlsCert;
        def.tlsKey = o.apps[a.name].tlsKey;
        o.apps[a.name] = def;
      }
      const ListenerOptions& l = o.apps[a.name];
      if (l.tlsCert.empty() != l.tlsKey.empty()) {
        throw ConfigError("apps." + a.name + ": TLS needs both tls_cert and tls_key");
      }
    }
    applyEnvironment(registry, o);
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "dohost: %s\n", e.what());
    return 2;
  }
  return runHost(o, registry);
}

}  // namespace dohost
