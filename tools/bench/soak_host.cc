#include "soak_host.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <unordered_set>

namespace dohost::bench {

const char* appName(SoakApp app) {
  switch (app) {
    case SoakApp::kChannels: return "channels";
    case SoakApp::kBroadcaster: return "broadcaster";
    case SoakApp::kBridge: return "bridge";
    case SoakApp::kHopeflow: return "hopeflow";
    case SoakApp::kGuide: return "guide";
  }
  return "?";
}

namespace {

// How a process ended, from its wait status.
std::string describeStatus(int status) {
  if (status < 0) return "killed after it did not stop in time";
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    return std::string("signal ") + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "wait status " + std::to_string(status);
}

bool isDatabaseFile(const std::string& target, std::string* base) {
  for (const char* suffix : {".sqlite", ".sqlite-wal", ".sqlite-shm", ".sqlite-journal"}) {
    size_t n = std::strlen(suffix);
    if (target.size() > n && target.compare(target.size() - n, n, suffix) == 0) {
      *base = target.substr(0, target.size() - n);
      return true;
    }
  }
  return false;
}

}  // namespace

SoakHost::SoakHost(std::string dohostPath, std::string dir, double idleEvict,
                   std::vector<std::pair<std::string, std::string>> env)
    : dohostPath_(std::move(dohostPath)),
      dir_(std::move(dir)),
      dataDir_(dir_ + "/data"),
      idleEvict_(idleEvict),
      env_(std::move(env)) {
  // The same ports for every lifetime: clients reconnect where they were.
  std::set<int> taken;
  auto fresh = [&] {
    int p;
    do {
      p = freeLoopbackPort();
    } while (p <= 0 || taken.count(p) != 0);
    taken.insert(p);
    return p;
  };
  for (int& p : ports_) p = fresh();
  adminPort_ = fresh();
  // Before any thread of the soak starts: the host inherits them.
  for (const auto& [k, v] : env_) setenv(k.c_str(), v.c_str(), 1);
}

SoakHost::~SoakHost() {
  if (child_) child_->kill();
}

std::string SoakHost::logPath(int lifetime) const {
  return dir_ + "/dohost." + std::to_string(lifetime) + ".log";
}

bool SoakHost::start(std::string* error) {
  ++lifetime_;
  char evict[32];
  std::snprintf(evict, sizeof evict, "%g", idleEvict_);
  std::vector<std::string> argv = {dohostPath_, "--data", dataDir_,
                                   "--admin", "127.0.0.1:" + std::to_string(adminPort_),
                                   "--idle-evict", evict, "--log-level", "warn"};
  for (SoakApp app : kSoakApps) {
    argv.push_back("--app");
    argv.push_back(std::string(appName(app)) + "=127.0.0.1:" + std::to_string(port(app)));
  }
  child_ = std::make_unique<ChildProcess>();
  if (!child_->start(argv, logPath(lifetime_), error)) return false;
  startedAt_ = SteadyClock::now();
  for (int p : ports_) {
    if (!waitListening(p, child_.get(), 60, error)) return false;
  }
  return waitListening(adminPort_, child_.get(), 60, error);
}

void SoakHost::kill() {
  if (child_) child_->kill();
}

bool SoakHost::stop(double seconds, std::string* how) {
  if (!child_ || child_->pid() <= 0) {
    *how = "the host was not running";
    return false;
  }
  int status = child_->terminate(seconds);
  *how = describeStatus(status);
  return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

bool SoakHost::alive(std::string* how) {
  if (child_ && child_->running()) return true;
  *how = "the host ended by itself (" + (child_ ? describeStatus(child_->exitStatus()) : "never started") +
         ") in lifetime " + std::to_string(lifetime_) + "; the end of " + logPath(lifetime_) + ":\n" +
         (child_ ? child_->logTail(3000) : "");
  return false;
}

double SoakHost::upSeconds() const { return microsBetween(startedAt_, SteadyClock::now()) / 1e6; }

HostSample SoakHost::sample(double at) {
  HostSample s;
  s.at = at;
  s.lifetime = lifetime_;
  s.up = upSeconds();
  pid_t p = pid();
  if (p <= 0) return s;
  s.rssKib = readRssKib(p);
  std::error_code ec;
  std::unordered_set<std::string> databases;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(p) + "/fd", ec)) {
    std::error_code lec;
    std::string target = std::filesystem::read_symlink(entry.path(), lec).string();
    if (lec) continue;  // closed meanwhile
    ++s.fds;
    std::string base;
    if (target.rfind("socket:", 0) == 0) {
      ++s.socketFds;
    } else if (isDatabaseFile(target, &base)) {
      ++s.dbFds;
      databases.insert(base);
    } else {
      ++s.otherFds;
    }
  }
  s.dbFiles = static_cast<int>(databases.size());
  HttpResult m = httpRequest(adminPort_, "GET", "/metrics", {}, 20000);
  if (m.status == 200) {
    std::string text = "\n" + m.body;
    s.websocketsOpen = metricSum(text, "dohost_websockets_open");
    s.objectsLive = metricSum(text, "dohost_objects_live");
    s.evictions = metricSum(text, "dohost_object_evictions_total");
    s.rehydrations = metricSum(text, "dohost_object_rehydrations_total");
    s.commits = metricSum(text, "dohost_storage_commits_total");
  }
  return s;
}

std::vector<std::string> SoakHost::sanitizerReports() const {
  std::vector<std::string> out;
  for (int k = 1; k <= lifetime_; ++k) {
    std::ifstream in(logPath(k));
    std::string line;
    while (std::getline(in, line)) {
      if (line.find("ERROR: AddressSanitizer") != std::string::npos ||
          line.find("ERROR: LeakSanitizer") != std::string::npos ||
          line.find("runtime error:") != std::string::npos) {
        out.push_back(logPath(k) + ": " + line);
      }
    }
  }
  return out;
}

size_t SoakHost::errorLines() const {
  size_t n = 0;
  for (int k = 1; k <= lifetime_; ++k) {
    std::ifstream in(logPath(k));
    std::string line;
    while (std::getline(in, line)) {
      if (line.find(" level=error ") != std::string::npos) ++n;
    }
  }
  return n;
}

}  // namespace dohost::bench
