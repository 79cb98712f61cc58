// Server: the one libwebsockets context and event loop of the host. The only code that
// includes <libwebsockets.h>. One vhost (listener) per app plus the admin vhost. lws accepts
// connections (and does TLS); their bytes are ours: HTTP/1.1 requests (http_parser.h) go
// through the app's router to objects, upgrades become WebSockets (ws_protocol.h) whose
// connections are Transports under the runtime's SocketRecords. One timer drives the runtime's
// deadlines and a once-a-second sweep (keepalive pings, slow requests).
//
// In a cluster, one more vhost listens on --peer for the inter-host links (lws' own WebSocket
// role, protocol "dohost-link"), and the server dials the links the relay asks for on the same
// loop (PeerLinks, the relay's LinkIo). A request for an object another host owns goes to the
// relay (cluster/relay.h); an upgrade relayed that way leaves a connection whose socket lives
// on the owner (Conn::relayed).
//
// Other threads reach the loop through the runtime's LoopInbox, which the server drains when
// lws_cancel_service wakes it (LWS_CALLBACK_EVENT_WAIT_CANCELLED).
//
// Thread: everything runs on the loop thread; requestStop() may be called from any thread.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "dohost/host.h"
#include "dohost/registry.h"
#include "http_parser.h"
#include "runtime.h"

struct lws;
struct lws_context;
struct lws_vhost;

namespace dohost {
namespace cluster {
class Relay;
}

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
  // Cluster: run by beginShutdown once the relay sent Leaving and before any 1012 close; it
  // commits and releases this host's claims (host_main: Runtime::handOver, then the lease is
  // revoked), so the objects of clients that reconnect elsewhere can be claimed at once.
  void setHandOver(std::function<void()> handOver) { handOver_ = std::move(handOver); }
  // A second SIGTERM or SIGINT while the 1012 closes are spread: the rest go at once. Any
  // thread.
  void hurry();

  // lws entry point (the trampoline calls these).
  int onEvent(lws* wsi, int reason, void* in, size_t len);
  void onTimer() noexcept;
  void armTimer();

  const HostOptions& options() const { return options_; }
  Runtime& runtime() { return runtime_; }
  size_t connections() const { return conns_.size(); }
  // The inter-host links and what crosses them; null without a cluster.
  cluster::Relay* relay() { return relay_.get(); }
  void feedWebSocket(Conn& c, std::string_view data) { onWebSocketBytes(c, data); }

 private:
  Conn* conn(lws* wsi);
  Conn& newConn(lws* wsi);
  void dropConn(lws* wsi);
  void connectionGone(lws* wsi, Conn& c);  // closed, whichever way: tells the socket's object once
  Route routeRequest(Listener& listener, Request& request);
  static Request makeRequest(lws* wsi, http::RequestHead& head, std::string body);
  void processHttp(Conn& c);
  void handleHttp(Conn& c, http::RequestHead& head, std::string body);
  void handleUpgrade(Conn& c, http::RequestHead& head);
  // Cluster: a request for an object this host holds no claim on waits (parked on its
  // connection) until Runtime::acquire answers; then it runs here, or is refused with 503.
  // False when the request need not wait (no cluster, or the claim is held).
  bool parkForOwner(Conn& c, Request& request, const Route& route, bool upgrade,
                    const std::string& accept);
  void resumeParked(lws* wsi, uint64_t serial, Result<OwnerInfo> owner);
  // Cluster: the parked request goes to the object's owner over the link (cluster/relay.h).
  void relayParked(Conn& c, const OwnerInfo& owner);
  void finishRelayedUpgrade(Conn& c, const std::string& accept, uint64_t socket);
  // Writes an HTTP answer the app path produced (or registers a deferred one).
  void answerHttp(Conn& c, Response response);
  void finishUpgrade(Conn& c, Response response, const std::string& accept,
                     detail::UpgradeContext& upgrade);
  void writeHttpResponse(Conn& c, const Response& response);
  void answerAndClose(Conn& c, int status, std::string_view message);
  void onWebSocketBytes(Conn& c, std::string_view data);
  int onWritable(Conn& c);
  int finishTcp(Conn& c);
  void onClosed(lws* wsi, Conn& c);
  void sweep(TimePoint now);
  void beginShutdown();
  bool serviceOnce(bool wait);

  const HostOptions& options_;
  Runtime& runtime_;
  const Registry& registry_;
  http::Limits limits_;
  TimePoint nextSweep_{};
  lws_context* context_ = nullptr;
  void* loop_ = nullptr;  // the libev (epoll) loop lws runs on
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unordered_map<lws*, std::unique_ptr<Conn>> conns_;
  std::atomic<bool> stopRequested_{false};
  std::atomic<bool> hurry_{false};
  std::function<void()> handOver_;
  bool stopping_ = false;
  bool destroying_ = false;  // lws is closing everything: relayed answers find nobody
  uint64_t lastConnSerial_ = 0;
  struct TimerBox;
  std::unique_ptr<TimerBox> timer_;
  // Cluster: app listeners the hosts of one machine share (SO_REUSEPORT), accepted here and
  // adopted into lws, since lws 4.1 sets SO_REUSEPORT only for its own service threads.
  struct SharedAcceptor;
  std::vector<std::unique_ptr<SharedAcceptor>> shared_;
  void closeSharedListeners();
  // Cluster: the --peer listener and the links' WebSocket connections (both directions).
  struct PeerLinks;
  std::unique_ptr<PeerLinks> peerLinks_;
  std::unique_ptr<cluster::Relay> relay_;
  bool startPeerListener(std::string* error);

 public:
  int onLinkEvent(lws* wsi, int reason, void* in, size_t len);
};

}  // namespace dohost
