#include "etcd_harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "cluster/etcd_client.h"

extern char** environ;

namespace dohost::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kEtcdBinary = "/usr/bin/etcd";

pid_t spawn(const std::vector<std::string>& args, const std::string& logPath) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, args[0].c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

bool healthy(const std::string& url) {
  auto client = cluster::EtcdClient::create({.endpoints = {url}, .requestTimeout = 500ms});
  if (!client.isOk()) return false;
  Result<bool> health = (*client)->health();
  return health.isOk() && *health;
}

}  // namespace

Result<std::vector<int>> freePorts(int count) {
  constexpr int kLow = 12000, kHigh = 32000;
  std::mt19937 rng(static_cast<unsigned>(::getpid()) ^
                   static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::uniform_int_distribution<int> pick(kLow, kHigh - 1);
  std::vector<int> fds, ports;
  for (int tries = 0; static_cast<int>(ports.size()) < count && tries < 1000; ++tries) {
    int port = pick(rng);
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) break;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd);
      continue;
    }
    fds.push_back(fd);
    ports.push_back(port);
  }
  for (int fd : fds) ::close(fd);
  if (static_cast<int>(ports.size()) < count) return Status::ioError("no free loopback port");
  return ports;
}


Result<std::unique_ptr<EtcdCluster>> EtcdCluster::start(int members) {
  if (::access(kEtcdBinary, X_OK) != 0) {
    return Status::notFound(std::string(kEtcdBinary) + " is missing (Debian etcd-server)");
  }
  std::unique_ptr<EtcdCluster> cluster(new EtcdCluster());
  char pattern[] = "/tmp/dohost-etcd-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) return Status::ioError("mkdtemp failed");
  cluster->dir_ = pattern;
  Result<std::vector<int>> ports = freePorts(2 * members);
  if (!ports.isOk()) return ports.status();
  std::string initial;
  std::vector<std::string> peerUrls;
  for (int i = 0; i < members; ++i) {
    cluster->clientUrls_.push_back("http://127.0.0.1:" + std::to_string((*ports)[2 * i]));
    peerUrls.push_back("http://127.0.0.1:" + std::to_string((*ports)[2 * i + 1]));
    initial += (i ? "," : "") + ("m" + std::to_string(i)) + "=" + peerUrls.back();
  }
  std::string token = "dohost-test-" + std::to_string(::getpid()) + "-" +
                      std::filesystem::path(cluster->dir_).filename().string();
  for (int i = 0; i < members; ++i) {
    std::string name = "m" + std::to_string(i);
    std::vector<std::string> args = {
        kEtcdBinary,
        "--name", name,
        "--data-dir", cluster->dir_ + "/" + name,
        "--listen-client-urls", cluster->clientUrls_[i],
        "--advertise-client-urls", cluster->clientUrls_[i],
        "--listen-peer-urls", peerUrls[i],
        "--initial-advertise-peer-urls", peerUrls[i],
        "--initial-cluster", initial,
        "--initial-cluster-state", "new",
        "--initial-cluster-token", token,
        "--logger", "zap",
        "--log-level", "error",
    };
    pid_t pid = spawn(args, cluster->dir_ + "/" + name + ".log");
    if (pid < 0) return Status::ioError("cannot start " + std::string(kEtcdBinary));
    cluster->pids_.push_back(pid);
  }
  auto deadline = std::chrono::steady_clock::now() + 20s;
  for (int i = 0; i < members; ++i) {
    while (!healthy(cluster->clientUrls_[i])) {
      int wstatus = 0;
      if (::waitpid(cluster->pids_[i], &wstatus, WNOHANG) == cluster->pids_[i]) {
        cluster->pids_[i] = -1;
        return Status::ioError("etcd member " + std::to_string(i) + " exited; see " +
                               cluster->dir_);
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return Status::ioError("etcd did not become healthy within 20 s");
      }
      std::this_thread::sleep_for(50ms);
    }
  }
  return cluster;
}

EtcdCluster::~EtcdCluster() {
  for (int i = 0; i < size(); ++i) kill(i);
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

void EtcdCluster::freeze(int i) {
  if (pids_[i] > 0) ::kill(pids_[i], SIGSTOP);
}

void EtcdCluster::thaw(int i) {
  if (pids_[i] > 0) ::kill(pids_[i], SIGCONT);
}

void EtcdCluster::kill(int i) {
  if (pids_[i] <= 0) return;
  ::kill(pids_[i], SIGKILL);
  int wstatus = 0;
  ::waitpid(pids_[i], &wstatus, 0);
  pids_[i] = -1;
}

int EtcdCluster::leaderIndex() {
  auto deadline = std::chrono::steady_clock::now() + 8s;
  while (std::chrono::steady_clock::now() < deadline) {
    std::vector<uint64_t> ids(size(), 0);
    uint64_t leader = 0;
    for (int i = 0; i < size(); ++i) {
      if (pids_[i] <= 0) continue;
      auto client =
          cluster::EtcdClient::create({.endpoints = {clientUrls_[i]}, .requestTimeout = 500ms});
      if (!client.isOk()) continue;
      auto status = (*client)->memberStatus();
      if (!status.isOk()) continue;
      ids[i] = status->memberId;
      if (status->leaderId != 0) leader = status->leaderId;
    }
    for (int i = 0; i < size(); ++i) {
      if (leader != 0 && ids[i] == leader) return i;
    }
    std::this_thread::sleep_for(100ms);
  }
  return -1;
}

}  // namespace dohost::testing
