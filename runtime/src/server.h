// Server: the one libwebsockets context and event loop of the host. The only code that
// includes <libwebsockets.h>. One vhost (listener) per app plus the admin vhost; HTTP requests
// go through the app's router to objects; accepted WebSockets become Transports under the
// runtime's SocketRecords; the runtime's timers are driven by one lws_sul.
//
// Thread: everything runs on the loop thread; requestStop() may be called from any thread.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "dohost/host.h"
#include "dohost/registry.h"
#include "runtime.h"

struct lws;
struct lws_context;
struct lws_vhost;

namespace dohost {

struct Conn;

struct Listener {
  std::string appName;  // empty: the admin API
  ListenerOptions options;
  std::unique_ptr<App> app;
  lws_vhost* vhost = nullptr;
};

class Server {
 public:
  Server(const HostOptions& options, Runtime& runtime, const Registry& registry);
  ~Server();

  // Creates the context and every listener. A bad port or TLS file: error set, false.
  bool start(std::string* error);
  // Serves until requestStop(); then closes sockets with 1001 and returns.
  void run();
  void requestStop();

  // lws entry point (the trampoline calls these).
  int onEvent(lws* wsi, int reason, void* in, size_t len);
  void onTimer() noexcept;
  void armTimer();

  const HostOptions& options() const { return options_; }
  Runtime& runtime() { return runtime_; }
  size_t connections() const { return conns_.size(); }

 private:
  Conn* conn(lws* wsi);
  Conn& newConn(lws* wsi);
  void dropConn(lws* wsi);
  void connectionGone(lws* wsi);  // closed, whichever way: tells the socket's object once
  Request readRequest(lws* wsi, Conn& c);
  Route routeRequest(Listener& listener, Request& request);
  int handleHttp(lws* wsi, Conn& c);
  int handleUpgrade(lws* wsi, Conn& c);
  int refuseUpgrade(lws* wsi, const Response& response);
  int writeResponse(lws* wsi, const Response& response, bool finishTransaction);
  int onReceive(lws* wsi, Conn& c, const char* data, size_t len);
  int onWritable(lws* wsi, Conn& c);
  void onClosed(lws* wsi, Conn& c);
  void beginShutdown();
  bool serviceOnce(bool wait);

  const HostOptions& options_;
  Runtime& runtime_;
  const Registry& registry_;
  lws_context* context_ = nullptr;
  void* loop_ = nullptr;  // the libev (epoll) loop lws runs on
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unordered_map<lws*, std::unique_ptr<Conn>> conns_;
  std::atomic<bool> stopRequested_{false};
  bool stopping_ = false;
  struct TimerBox;
  std::unique_ptr<TimerBox> timer_;
};

}  // namespace dohost
