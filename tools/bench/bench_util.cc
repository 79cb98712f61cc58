#include "bench_util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace dohost::bench {

Summary summarize(std::vector<double> samples) {
  Summary s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  s.count = samples.size();
  auto rank = [&](double q) {
    size_t i = static_cast<size_t>(std::ceil(q * static_cast<double>(samples.size())));
    return samples[std::min(samples.size() - 1, i == 0 ? 0 : i - 1)];
  };
  s.median = rank(0.5);
  s.p99 = rank(0.99);
  double sum = 0;
  for (double v : samples) sum += v;
  s.mean = sum / static_cast<double>(samples.size());
  s.min = samples.front();
  s.max = samples.back();
  return s;
}

Json toJson(const Summary& s) {
  return Json{{"count", s.count}, {"median", s.median}, {"p99", s.p99},
              {"mean", s.mean},   {"min", s.min},       {"max", s.max}};
}

namespace {

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

ProcCpu readCpu(pid_t pid) {
  ProcCpu cpu;
  std::string base = "/proc/" + std::to_string(pid);
  // Fields 14 and 15 (utime, stime) follow the command name, which is in parentheses and may
  // contain spaces: parse from the last ')'.
  std::string stat = readFile(base + "/stat");
  size_t close = stat.rfind(')');
  if (close != std::string::npos) {
    std::istringstream in(stat.substr(close + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && (in >> field); ++i) {
      if (i == 14) utime = std::stoull(field);
      if (i == 15) stime = std::stoull(field);
    }
    cpu.tickSeconds = static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(base + "/task", ec)) {
    std::string sched = readFile(entry.path().string() + "/schedstat");
    if (sched.empty()) continue;
    cpu.schedSeconds += static_cast<double>(std::stoull(sched)) / 1e9;
  }
  return cpu;
}

double machineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  unsigned long long v[8] = {};
  in >> cpu;
  for (auto& x : v) in >> x;
  unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];  // not idle (3), iowait (4)
  return static_cast<double>(busy) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

int64_t readRssKib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return 0;
}

int64_t raiseFileLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return -1;
  if (r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
    getrlimit(RLIMIT_NOFILE, &r);
  }
  return static_cast<int64_t>(r.rlim_cur);
}

int freeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    socklen_t len = sizeof a;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

ChildProcess::~ChildProcess() { kill(); }

bool ChildProcess::start(const std::vector<std::string>& argv, const std::string& logPath,
                         std::string* error) {
  logPath_ = logPath;
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    *error = std::string("fork failed: ") + std::strerror(errno);
    return false;
  }
  if (pid == 0) {
    int fd = open(logPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      ::close(fd);
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    execv(args[0], args.data());
    std::fprintf(stderr, "cannot run %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  pid_ = pid;
  exitStatus_ = -1;
  return true;
}

bool ChildProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    exitStatus_ = status;
    return false;
  }
  return true;
}

void ChildProcess::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

int ChildProcess::terminate(double seconds) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  auto deadline = SteadyClock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  while (SteadyClock::now() < deadline) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return status;
    }
    sleepMillis(20);
  }
  kill();
  return -1;
}

std::string ChildProcess::logTail(size_t maxBytes) const {
  std::string all = readFile(logPath_);
  if (all.size() > maxBytes) all = all.substr(all.size() - maxBytes);
  return all;
}

HttpResult httpRequest(int port, const std::string& method, const std::string& path,
                       const std::string& body, int timeoutMs) {
  HttpResult result;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return result;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  timeval tv{timeoutMs / 1000, (timeoutMs % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return result;
  }
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                    "\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\n\r\n" + body;
  size_t sent = 0;
  while (sent < req.size()) {
    ssize_t n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      ::close(fd);
      return result;
    }
    sent += static_cast<size_t>(n);
  }
  std::string response;
  char buf[16384];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (response.rfind("HTTP/1.", 0) != 0 || response.size() < 12) return result;
  result.status = std::atoi(response.c_str() + 9);
  size_t headerEnd = response.find("\r\n\r\n");
  if (headerEnd != std::string::npos) result.body = response.substr(headerEnd + 4);
  // Chunked bodies are not expected from the admin API (it sends Content-Length).
  return result;
}

int KeepAliveHttp::roundTrip(const std::string& request, std::string* body) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (fd_ < 0 && !openFd()) return 0;
    bool reused = used_;
    if (sendAll(request)) {
      int status = readResponse(body);
      if (status > 0) {
        used_ = true;
        return status;
      }
    }
    closeFd();
    // A kept-alive connection the server closed meanwhile: try once on a new one.
    if (!reused) return 0;
    ++reconnects_;
  }
  return 0;
}

bool KeepAliveHttp::openFd() {
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return false;
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  timeval tv{30, 0};
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port_));
  if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    closeFd();
    return false;
  }
  ++connections_;
  used_ = false;
  buf_.clear();
  return true;
}

void KeepAliveHttp::closeFd() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool KeepAliveHttp::sendAll(const std::string& s) {
  size_t sent = 0;
  while (sent < s.size()) {
    ssize_t n = ::send(fd_, s.data() + sent, s.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

bool KeepAliveHttp::fill() {
  char tmp[16384];
  ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
  if (n <= 0) return false;
  buf_.append(tmp, static_cast<size_t>(n));
  return true;
}

int KeepAliveHttp::readResponse(std::string* body) {
  size_t headerEnd;
  while ((headerEnd = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (!fill()) return 0;
  }
  std::string head = buf_.substr(0, headerEnd);
  buf_.erase(0, headerEnd + 4);
  if (head.rfind("HTTP/1.", 0) != 0 || head.size() < 12) return 0;
  int status = std::atoi(head.c_str() + 9);
  std::string lower = head;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  bool close = lower.find("\r\nconnection: close") != std::string::npos;
  size_t cl = lower.find("\r\ncontent-length:");
  body->clear();
  if (cl != std::string::npos) {
    size_t len = std::strtoul(lower.c_str() + cl + 17, nullptr, 10);
    while (buf_.size() < len) {
      if (!fill()) return 0;
    }
    body->assign(buf_, 0, len);
    buf_.erase(0, len);
  } else if (lower.find("transfer-encoding: chunked") != std::string::npos) {
    while (true) {
      size_t eol;
      while ((eol = buf_.find("\r\n")) == std::string::npos) {
        if (!fill()) return 0;
      }
      size_t len = std::strtoul(buf_.c_str(), nullptr, 16);
      while (buf_.size() < eol + 2 + len + 2) {
        if (!fill()) return 0;
      }
      body->append(buf_, eol + 2, len);
      buf_.erase(0, eol + 2 + len + 2);
      if (len == 0) break;
    }
  } else {
    while (fill()) {
    }
    *body = buf_;
    buf_.clear();
    close = true;
  }
  if (close) closeFd();
  return status;
}

double metricSum(const std::string& text, const std::string& name) {
  double total = 0;
  bool found = false;
  // Series with labels (`name{...} v`) and the one without (`name v`).
  for (const std::string& start : {"\n" + name + "{", "\n" + name + " "}) {
    for (size_t at = text.find(start); at != std::string::npos; at = text.find(start, at + 1)) {
      size_t eol = text.find('\n', at + 1);
      if (eol == std::string::npos) eol = text.size();
      size_t space = text.rfind(' ', eol);
      total += std::atof(text.substr(space + 1, eol - space - 1).c_str());
      found = true;
    }
  }
  return found ? total : -1;
}

double metricTotal(int adminPort, const std::string& name) {
  HttpResult r = httpRequest(adminPort, "GET", "/metrics");
  return r.status == 200 ? metricSum("\n" + r.body, name) : -1;
}

TempFolder::TempFolder(const std::string& parent) {
  std::string base = parent.empty() ? std::filesystem::temp_directory_path().string() : parent;
  std::string pattern = base + "/dohost-bench-XXXXXX";
  char* made = mkdtemp(pattern.data());
  if (made == nullptr) throw std::runtime_error("cannot create a folder under " + base);
  path_ = made;
}

TempFolder::~TempFolder() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void sleepMillis(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

bool tcpConnects(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

bool waitListening(int port, ChildProcess* child, double seconds, std::string* error) {
  auto deadline = SteadyClock::now() + std::chrono::duration<double>(seconds);
  while (SteadyClock::now() < deadline) {
    if (tcpConnects(port)) return true;
    if (child && !child->running()) {
      *error = "the server exited at start:\n" + child->logTail();
      return false;
    }
    sleepMillis(20);
  }
  *error = "nothing listens on port " + std::to_string(port) + " after " +
           std::to_string(static_cast<int>(seconds)) + " s";
  return false;
}

double num(const nlohmann::json& j, std::initializer_list<const char*> path) {
  const nlohmann::json* p = &j;
  for (const char* k : path) {
    if (!p->is_object() || !p->contains(k)) return -1;
    p = &(*p)[k];
  }
  return p->is_number() ? p->get<double>() : -1;
}

std::string fmtUs(double v) {
  if (v < 0) return "-";
  char buf[32];
  if (v >= 10000) {
    std::snprintf(buf, sizeof buf, "%.1f ms", v / 1000);
  } else if (v >= 100) {
    std::snprintf(buf, sizeof buf, "%.0f us", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f us", v);
  }
  return buf;
}

}  // namespace dohost::bench
