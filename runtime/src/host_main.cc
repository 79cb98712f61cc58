// runHost (signals, runtime, server) and hostMain (flags, config file, plugins).
#include <algorithm>
#include <cctype>
#include <dlfcn.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <thread>
#include <variant>
#include <toml++/toml.h>
#include <unistd.h>

#include "admin.h"
#include "cluster/cluster_node.h"
#include "config.h"
#include "dohost/host.h"
#include "dohost/json.h"
#include "dohost/log.h"
#include "dohost/settings.h"
#include "runtime.h"
#include "server.h"
#include "toml_depth.h"

namespace dohost {
namespace {

// A TOML key in an error message: bare when it can be written bare, else quoted, so that the
// message stays on one line whatever the key holds.
std::string keyText(std::string_view key) {
  bool bare = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  return bare ? std::string(key) : quoteValue(key);
}

// A one-line configuration error: printed by hostMain, exit code 2.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

ListenerOptions parseListen(const std::string& what, const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    throw ConfigError(what + ": expected HOST:PORT, got " + quoteValue(text));
  }
  ListenerOptions l;
  l.host = text.substr(0, colon);
  std::string port = text.substr(colon + 1);
  char* end = nullptr;
  long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || p < 0 || p > 65535) {
    throw ConfigError(what + ": bad port " + quoteValue(port));
  }
  l.port = static_cast<int>(p);
  return l;
}

// Every number the host reads: its config key (the flag is the key with '-' for '_'), its type
// and range, and the field it sets. Flags, the config file and runHost() all check against it.
struct NumberSetting {
  const char* key;
  NumberRange range;
  std::variant<double HostOptions::*, int HostOptions::*, size_t HostOptions::*> field;
  const char* help;
};

constexpr double kYear = 365 * 86400.0;
constexpr double kGiB = 1 << 30;

const NumberSetting kNumberSettings[] = {
    {"idle_evict", {0, kYear, false, "seconds"}, &HostOptions::idleEvictSeconds,
     "seconds before an idle object is evicted (default 10)"},
    {"max_message_bytes", {1, kGiB, true, "bytes"}, &HostOptions::maxMessageBytes,
     "larger inbound WebSocket messages close the socket with 1009"},
    {"max_queued_bytes", {1, 16 * kGiB, true, "bytes"}, &HostOptions::maxQueuedBytesPerSocket,
     "outbound bytes queued per socket; a slower reader is closed with 1008"},
    {"max_sockets_per_object", {1, 1'000'000, true}, &HostOptions::maxSocketsPerObject,
     "more upgrades to one object are answered 503"},
    {"max_attachment_bytes", {0, 16 << 20, true, "bytes"}, &HostOptions::maxAttachmentBytes,
     "the largest socket attachment"},
    {"max_schedules_per_object", {0, 1'000'000, true}, &HostOptions::maxSchedulesPerObject,
     "named schedules one object may keep; one more throws"},
    {"max_request_body_bytes", {0, kGiB, true, "bytes"}, &HostOptions::maxRequestBodyBytes,
     "larger HTTP request bodies are answered 413"},
    {"max_request_line_bytes", {64, 16 << 20, true, "bytes"}, &HostOptions::maxRequestLineBytes,
     "longer HTTP request lines are answered 414"},
    {"max_header_bytes", {256, 64 << 20, true, "bytes"}, &HostOptions::maxHeaderBytes,
     "larger HTTP header sections are answered 431"},
    {"max_header_lines", {8, 100'000, true}, &HostOptions::maxHeaderLines,
     "more HTTP header lines are answered 431"},
    {"http_request_timeout", {1, 3600, true, "seconds"}, &HostOptions::httpRequestTimeoutSeconds,
     "an HTTP request not received whole by then is answered 408"},
    {"http_idle_timeout", {1, 3600, true, "seconds"}, &HostOptions::httpIdleTimeoutSeconds,
     "a kept-alive HTTP connection idle this long is closed"},
    // Kept within lws' old 16-bit range, which configs written for earlier versions respect.
    {"ping_interval", {0, 32767, true, "seconds"}, &HostOptions::pingIntervalSeconds,
     "seconds of silence before a socket is pinged (0: never)"},
    {"ping_timeout", {1, 32767, true, "seconds"}, &HostOptions::pingTimeoutSeconds,
     "seconds without an answer to a ping before the socket is dropped"},
    {"alarm_retry_base", {0.001, 86400, false, "seconds"}, &HostOptions::alarmRetryBaseSeconds,
     "first wait before a failed alarm is retried; doubles per retry"},
    {"alarm_max_retries", {0, 30, true}, &HostOptions::alarmMaxRetries,
     "retries of a failing alarm before it is recorded as failed"},
    {"object_failure_limit", {1, 1'000'000, true}, &HostOptions::objectFailureLimit,
     "failures of one object within the window that put it in the failed state"},
    {"object_failure_window", {0.001, 86400, false, "seconds"},
     &HostOptions::objectFailureWindowSeconds, "the window in which failures are counted"},
    {"object_failure_backoff", {0.001, 86400, false, "seconds"},
     &HostOptions::objectFailureBackoffSeconds,
     "first wait before a failed object is tried again; doubles each time it fails again"},
    {"object_failure_backoff_max", {0.001, kYear, false, "seconds"},
     &HostOptions::objectFailureBackoffMaxSeconds, "the longest wait"},
    {"max_json_depth", {1, static_cast<double>(kMaxJsonDepthSetting), true},
     &HostOptions::maxJsonDepth, "JSON from outside nested deeper is an error"},
    {"admin_sql_timeout", {0.001, 3600, false, "seconds"}, &HostOptions::adminSqlTimeoutSeconds,
     "the admin API's read-only SQL is interrupted after this"},
    {"admin_sql_max_rows", {1, 1'000'000, true}, &HostOptions::adminSqlMaxRows,
     "rows per statement (and key-value entries per page) the admin API returns"},
    {"admin_sql_max_bytes", {1, kGiB, true, "bytes"}, &HostOptions::adminSqlMaxBytes,
     "text and blob bytes per statement the admin API returns"},
    {"cluster_lease_ttl", {2, 3600, true, "seconds"}, &HostOptions::clusterLeaseTtlSeconds,
     "cluster: the TTL of the host's etcd lease (default 5)"},
    {"cluster_lease_renew", {0.05, 3600, false, "seconds"},
     &HostOptions::clusterLeaseRenewSeconds,
     "cluster: how often the lease is renewed (default 1; shorter than the TTL)"},
    {"cluster_resolve_timeout", {0.1, 600, false, "seconds"},
     &HostOptions::clusterResolveTimeoutSeconds,
     "cluster: how long a request waits for its object's owner before a 503 (default 5)"},
    {"cluster_max_resolving", {1, 10'000'000, true}, &HostOptions::clusterMaxResolving,
     "cluster: objects whose owner is looked up at once; more are answered 503"},
    {"cluster_leave_spread", {0, 600, false, "seconds"}, &HostOptions::clusterLeaveSpreadSeconds,
     "cluster: on SIGTERM, the 1012 closes of this host's connections are spread this long "
     "(default 3; 0: all at once)"},
};

// --cluster: comma-separated etcd endpoints, each http://HOST:PORT.
std::vector<std::string> parseEndpoints(const std::string& what, const std::string& text) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= text.size()) {
    size_t j = text.find(',', i);
    if (j == std::string::npos) j = text.size();
    std::string url = text.substr(i, j - i);
    while (!url.empty() && url.front() == ' ') url.erase(0, 1);
    while (!url.empty() && url.back() == ' ') url.pop_back();
    if (url.rfind("http://", 0) != 0) {
      throw ConfigError(what + ": expected http://HOST:PORT[,http://HOST:PORT...], got " +
                        quoteValue(url));
    }
    std::string hostPort = url.substr(7);
    if (!hostPort.empty() && hostPort.back() == '/') hostPort.pop_back();
    ListenerOptions l = parseListen(what, hostPort);
    if (l.port == 0) throw ConfigError(what + ": bad port 0 in " + quoteValue(url));
    out.push_back("http://" + l.host + ":" + std::to_string(l.port));
    i = j + 1;
  }
  return out;
}

// The cluster settings as a whole: all three of --cluster, --host-id and --peer, or none.
void checkCluster(const HostOptions& o) {
  if (o.clusterEndpoints.empty()) {
    if (!o.hostId.empty() || !o.peer.empty()) {
      throw ConfigError("--host-id and --peer need --cluster ETCD_URL[,ETCD_URL...]");
    }
    return;
  }
  if (o.hostId.empty()) throw ConfigError("--cluster needs --host-id NAME");
  if (o.hostId.size() > 64 || !std::all_of(o.hostId.begin(), o.hostId.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
      })) {
    throw ConfigError("--host-id: expected 1 to 64 letters, digits, '-', '_' or '.', got " +
                      quoteValue(o.hostId));
  }
  if (o.peer.empty()) throw ConfigError("--cluster needs --peer HOST:PORT");
  if (parseListen("--peer", o.peer).port == 0) throw ConfigError("--peer: bad port 0");
  if (o.clusterLeaseRenewSeconds >= o.clusterLeaseTtlSeconds) {
    throw ConfigError("cluster_lease_renew (" + std::to_string(o.clusterLeaseRenewSeconds) +
                      " s) must be shorter than cluster_lease_ttl (" +
                      std::to_string(static_cast<int>(o.clusterLeaseTtlSeconds)) + " s)");
  }
}

std::string flagOf(const char* key) {
  std::string flag = std::string("--") + key;
  for (char& c : flag) c = c == '_' ? '-' : c;
  return flag;
}

// Sets the field of `s` to `value` (already range-checked).
void assign(HostOptions& o, const NumberSetting& s, double value) {
  std::visit([&](auto member) { o.*member = static_cast<std::remove_reference_t<decltype(o.*member)>>(value); },
             s.field);
}

double valueOf(const HostOptions& o, const NumberSetting& s) {
  return std::visit([&](auto member) { return static_cast<double>(o.*member); }, s.field);
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
  std::set<std::string> known = {"data",       "admin",   "admin_token", "log_level", "log_format",
                                 "durability", "plugins", "apps",        "cluster",   "host_id",
                                 "peer",       "cluster_token"};
  for (const NumberSetting& s : kNumberSettings) known.insert(s.key);
  for (const auto& [k, v] : t) {
    if (!known.count(std::string(k.str()))) {
      throw ConfigError("config: unknown key " + keyText(k.str()));
    }
  }
  for (const NumberSetting& s : kNumberSettings) {
    auto v = t[s.key];
    if (!v) continue;
    std::string what = std::string("config: ") + s.key;
    if (!v.is_number()) throw ConfigError(what + " must be a number");
    // An integer as it is (value<double> refuses one that a double cannot hold exactly).
    auto i = v.value_exact<int64_t>();
    double d = i ? static_cast<double>(*i) : *v.value_exact<double>();
    assign(o, s, checkSetting(what, d, s.range));
  }
  str("data", o.dataDir);
  if (auto v = t["admin"].value<std::string>()) o.admin = parseListen("config admin", *v);
  str("admin_token", o.adminToken);
  if (auto v = t["cluster"]) {
    if (auto text = v.value<std::string>()) {
      o.clusterEndpoints = parseEndpoints("config cluster", *text);
    } else if (auto arr = v.as_array()) {
      o.clusterEndpoints.clear();
      for (auto& e : *arr) {
        auto url = e.value<std::string>();
        if (!url) throw ConfigError("config: cluster must be a string or an array of strings");
        for (std::string& u : parseEndpoints("config cluster", *url)) o.clusterEndpoints.push_back(u);
      }
    } else {
      throw ConfigError("config: cluster must be a string or an array of strings");
    }
  }
  str("host_id", o.hostId);
  str("peer", o.peer);
  str("cluster_token", o.clusterToken);
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
  if (auto apps = t["apps"].as_table()) {
    for (const auto& [name, value] : *apps) {
      const toml::table* app = value.as_table();
      if (app == nullptr) throw ConfigError("config: [apps." + keyText(name.str()) + "] must be a table");
      std::string appName(name.str());
      const std::string appText = keyText(appName);
      for (const auto& [k, v] : *app) {
        std::string key(k.str());
        std::string text;
        if (auto s = v.value<std::string>()) {
          text = *s;
        } else if (auto i = v.value_exact<int64_t>()) {
          text = std::to_string(*i);
        } else if (auto d = v.value_exact<double>()) {
          char buf[32];  // every digit: an app's range check sees the number as written
          std::snprintf(buf, sizeof buf, "%.17g", *d);
          text = buf;
        } else if (auto b = v.value_exact<bool>()) {
          text = *b ? "true" : "false";
        } else {
          throw ConfigError("config: apps." + appText + "." + keyText(key) + " must be a string or number");
        }
        if (key == "listen") {
          if (text == "off") {
            o.appsOff.push_back(appName);
          } else {
            o.apps[appName] = parseListen("config apps." + appText + ".listen", text);
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
  if (const char* token = std::getenv("DOHOST_CLUSTER_TOKEN"); token && o.clusterToken.empty()) {
    o.clusterToken = token;
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
  try {
    fn(registry);
  } catch (const std::exception& e) {
    throw ConfigError("plugin " + path + ": dohost_register failed: " + e.what());
  } catch (...) {
    throw ConfigError("plugin " + path + ": dohost_register failed with an unknown exception");
  }
}

}  // namespace

int runHost(const HostOptions& options, const Registry& registry) {
  // Also for options a user's own main filled in: every number within its range.
  for (const NumberSetting& s : kNumberSettings) {
    try {
      checkSetting(s.key, valueOf(options, s), s.range);
    } catch (const SettingError& e) {
      std::fprintf(stderr, "dohost: %s\n", e.what());
      return 2;
    }
  }
  try {
    checkCluster(options);
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "dohost: %s\n", e.what());
    return 2;
  }
  // Signals are taken by one thread with sigwait; it wakes the loop with lws_cancel_service.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  setJsonLimits(JsonLimits{options.maxJsonDepth});

  auto seconds = [](double s) { return Duration(static_cast<int64_t>(s * 1000)); };
  RuntimeOptions ro;
  ro.dataDir = options.dataDir;
  ro.idleEvict = seconds(options.idleEvictSeconds);
  ro.durability = options.durabilityFull ? storage::Durability::kFull : storage::Durability::kNormal;
  ro.maxSocketsPerObject = options.maxSocketsPerObject;
  ro.maxAttachmentBytes = options.maxAttachmentBytes;
  ro.maxSchedulesPerObject = options.maxSchedulesPerObject;
  ro.alarmRetryBase = seconds(options.alarmRetryBaseSeconds);
  ro.alarmMaxRetries = options.alarmMaxRetries;
  ro.objectFailureLimit = options.objectFailureLimit;
  ro.objectFailureWindow = seconds(options.objectFailureWindowSeconds);
  ro.objectFailureBackoff = seconds(options.objectFailureBackoffSeconds);
  ro.objectFailureBackoffMax = seconds(options.objectFailureBackoffMaxSeconds);
  if (Status s = enableTestFaults(); !s.isOk()) {
    std::fprintf(stderr, "dohost: DOHOST_TEST_FAULTS: %s\n", s.message().c_str());
    return 2;
  }
  SystemClock clock;
  Runtime runtime(ro, registry, clock);
  if (Status s = runtime.start(); !s.isOk()) {
    std::fprintf(stderr, "dohost: cannot open data folder %s: %s\n", options.dataDir.c_str(),
                 s.toString().c_str());
    return 2;
  }
  // A cluster member: claims before it runs an object, fences every commit (docs/cluster.md).
  std::unique_ptr<cluster::ClusterNode> node;
  if (!options.clusterEndpoints.empty()) {
    cluster::ClusterNodeOptions co;
    co.endpoints = options.clusterEndpoints;
    co.hostId = options.hostId;
    co.peer = options.peer;
    co.addr = options.admin.host + ":" + std::to_string(options.admin.port);
    co.leaseTtl = std::chrono::seconds(static_cast<int64_t>(options.clusterLeaseTtlSeconds));
    co.renewInterval = std::chrono::milliseconds(
        static_cast<int64_t>(options.clusterLeaseRenewSeconds * 1000));
    co.resolveTimeout = std::chrono::milliseconds(
        static_cast<int64_t>(options.clusterResolveTimeoutSeconds * 1000));
    co.maxResolving = options.clusterMaxResolving;
    auto started = cluster::ClusterNode::start(
        co, [&runtime](std::function<void()> fn) { runtime.inbox().post(std::move(fn)); },
        [&runtime](const std::string& why) { runtime.dropAllClaims(why); });
    if (!started.isOk()) {
      std::fprintf(stderr, "dohost: --cluster: %s\n", started.status().message().c_str());
      return 2;
    }
    node = std::move(started).value();
    runtime.setOwnership(node.get());
  }
  // After the last commit: the lease goes, and every ownership key of this host with it,
  // so other hosts claim these objects at once instead of after the TTL.
  bool left = false;
  auto leave = [&node, &left] {
    if (!node || left) return;
    left = true;
    if (Status s = node->leave(); !s.isOk()) {
      logLine(LogLevel::kWarn, "cluster: could not revoke the lease (it expires within the "
                               "TTL): " + s.message());
    }
  };
  {
    // The server goes before the objects: a connection still open after the drain (a client
    // that stopped reading) is closed when the server is destroyed, and its close reaches an
    // object that still exists.
    Server server(options, runtime, registry);
    std::string error;
    if (!server.start(&error)) {
      std::fprintf(stderr, "dohost: %s\n", error.c_str());
      return 2;
    }
    if (node) {
      // SIGTERM: Leaving, the last commits and the lease revoked before the 1012 closes.
      server.setHandOver([&runtime, &leave] {
        runtime.handOver();
        leave();
      });
    }
    // The first signal stops the host; a second one while it leaves ends the spread of its
    // 1012 closes at once.
    std::atomic<bool> done{false};
    std::thread signals([&server, &done, set] {
      int sig = 0;
      sigwait(&set, &sig);
      server.requestStop();
      while (!done) {
        sigwait(&set, &sig);
        if (!done) server.hurry();
      }
    });
    server.run();
    done = true;
    pthread_kill(signals.native_handle(), SIGTERM);  // ends the signal thread's sigwait
    signals.join();
  }
  runtime.shutdown();
  if (node) {
    leave();
    runtime.setOwnership(nullptr);
    node.reset();
  }
  logLine(LogLevel::kInfo, "stopped");
  return 0;
}

int hostMain(int argc, char** argv, Registry& registry) {
  CLI::App cli{"dohost: hosts Durable Objects with their SQLite storage and WebSockets"};
  std::string configPath, dataDir, admin, logLevel, logFormat, clusterUrls, hostId, peer,
      clusterToken;
  std::vector<std::string> appFlags, plugins;
  cli.add_option("--config", configPath, "TOML config file (dohost.toml)");
  cli.add_option("--data", dataDir, "data folder (default ./data)");
  cli.add_option("--app", appFlags, "NAME=HOST:PORT or NAME=off (repeatable)");
  cli.add_option("--admin", admin, "admin API HOST:PORT (default 127.0.0.1:9090)");
  cli.add_option("--log-level", logLevel, "debug, info, warn, error or off");
  cli.add_option("--log-format", logFormat, "text (key=value lines, the default) or json");
  cli.add_option("--plugin", plugins, "shared library exporting dohost_register (repeatable)");
  cli.add_option("--cluster", clusterUrls, "etcd endpoints ETCD_URL[,ETCD_URL...]: join a cluster");
  cli.add_option("--host-id", hostId, "cluster: this host's name, unique in the cluster");
  cli.add_option("--peer", peer, "cluster: HOST:PORT where other hosts reach this one");
  cli.add_option("--cluster-token", clusterToken,
                 "cluster: the secret every host's links present (or DOHOST_CLUSTER_TOKEN)");
  std::map<const NumberSetting*, std::string> numberFlags;
  for (const NumberSetting& s : kNumberSettings) {
    cli.add_option_function<std::string>(flagOf(s.key),
                                         [&numberFlags, &s](const std::string& v) { numberFlags[&s] = v; },
                                         s.help);
  }
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
    if (!clusterUrls.empty()) o.clusterEndpoints = parseEndpoints("--cluster", clusterUrls);
    if (!hostId.empty()) o.hostId = hostId;
    if (!peer.empty()) o.peer = peer;
    if (!clusterToken.empty()) o.clusterToken = clusterToken;
    for (const auto& [s, text] : numberFlags) {
      assign(o, *s, parseSetting(flagOf(s->key), text, s->range));
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
      if (!known) throw ConfigError("--app: no app named " + quoteValue(name));
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
  } catch (const SettingError& e) {
    std::fprintf(stderr, "dohost: %s\n", e.what());
    return 2;
  }
  return runHost(o, registry);
}

}  // namespace dohost
