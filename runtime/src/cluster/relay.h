// Relay: the inter-host links of a cluster host and what crosses them (docs/cluster.md,
// "The relay"). One link per pair of hosts, a binary WebSocket the server keeps (LinkIo);
// every message is one frame of link_protocol.h. Both roles share a link:
//
// - Edge (the host holding a client's connection): an HTTP request or upgrade for an object
//   another host owns goes out as HttpRequest and its HttpResponse is written to the client.
//   An accepted upgrade becomes an EdgeSockets entry; the client's messages go out as
//   SocketMessage (auto-responses are answered here), Send frames are fanned out to the
//   clients sharing one Frame. When the owner is lost (link down, Leaving) the sockets stay
//   open: client messages are held, the object is resolved again, and the sockets are
//   re-attached to the new owner (Reattach), or adopted here when this host claimed it.
// - Owner: a relayed request runs through the runtime like a local one (Runtime::fetch, output
//   gate and commit unchanged); an accepted socket is a SocketRecord whose Transport sends
//   over the link. Sends of one Frame to several sockets of one edge in a row become one Send
//   (SendCoalescer), flushed at the end of the loop turn or before any other frame.
//
// Link life: the dialing side queues Hello first; the accepting side answers HelloOk or
// Refused (bad token, protocol version, host id) and closes. Ping every second; three
// unanswered (no frame at all from the peer for three pings) or a queue over
// RelayOptions::maxLinkQueueBytes closes the link, which is then down for both roles: the
// edge's sockets of the peer's objects become ownerless, the owner delivers webSocketClose
// (1006) for every socket the peer held.
//
// Thread: the loop thread, every method.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cluster/edge_sockets.h"
#include "cluster/link_protocol.h"
#include "dohost/http.h"
#include "dohost/log.h"
#include "dohost/time.h"
#include "dohost/websocket.h"
#include "internal.h"
#include "ownership.h"

namespace dohost {
class Runtime;
struct ObjectRef;
}  // namespace dohost

namespace dohost::cluster {

using LinkId = uint64_t;

// The connections under the links (implemented by the server). Thread: loop.
class LinkIo {
 public:
  virtual ~LinkIo() = default;
  // Starts a WebSocket connection to `peer` (HOST:PORT) for `link`. False when it cannot even
  // start; otherwise Relay::connected or Relay::linkGone follows.
  virtual bool dial(LinkId link, const std::string& peer) = 0;
  // Relay::nextOutgoing has frames for the link.
  virtual void wantWrite(LinkId link) = 0;
  // Drops the connection; Relay::linkGone follows (later, from the loop).
  virtual void close(LinkId link) = 0;
};

// The client connection under a relayed socket (the server's connection). Its Transport side
// writes to the client.
class EdgeClient : public detail::Transport {
 public:
  // The object is now served by this host: the connection becomes an ordinary local socket
  // of `record` (already in the object's socket list).
  virtual void adoptLocal(std::shared_ptr<detail::SocketRecord> record) = 0;
  // The relay has registered the socket: messages the client sent already may be read now.
  virtual void relayReady() {}
};

// Consecutive sends of one Frame to sockets of one edge, gathered into one Send.
// Thread: loop.
class SendCoalescer {
 public:
  explicit SendCoalescer(size_t maxSockets = LinkLimits{}.maxSocketsPerSend) : max_(maxSockets) {}
  // Adds a send. When it cannot join the Send being gathered (another frame, or the Send is
  // full), that Send is returned, to go out before anything else; the new send starts the next.
  std::optional<Send> add(SocketId socket, const FramePtr& frame);
  // The Send being gathered, if any; it leaves the coalescer.
  std::optional<Send> take();
  bool empty() const { return !current_; }

 private:
  size_t max_;
  std::optional<Send> current_;
};

struct RelayOptions {
  std::string clusterToken;               // empty: any peer that speaks the protocol is let in
  size_t maxLinkQueueBytes = 64 << 20;    // a link with more queued is closed (down)
  Duration pingInterval = Duration(1000);
  int missedPingsForDown = 3;
  Duration handshakeTimeout = Duration(3000);  // as long as three missed pings
  Duration recoveryTimeout = Duration(30000);  // an ownerless object's sockets wait this long
  Duration recoveryRetry = Duration(250);      // between resolves of an ownerless object
  int maxReattachRefusals = 3;                 // then the client is closed with 1011
  LinkLimits limits;
  HoldLimits holdLimits;
};

// What became of a relayed request, for the server.
struct RelayOutcome {
  enum class Kind { kAnswered, kNotOwner, kUnavailable };
  Kind kind = Kind::kUnavailable;
  Response response;     // kAnswered (101 for an accepted upgrade), kUnavailable (503)
  SocketId socket = 0;   // an accepted upgrade's socket
  std::string ownerHint; // kNotOwner
};

// The header that carries the object's name (when routed by name) from edge to owner; the
// edge drops any a client sent.
inline constexpr std::string_view kObjectNameHeader = "x-dohost-object-name";

class Relay {
 public:
  // The answer to a relayed request. For an accepted upgrade it returns the client connection
  // that now holds the socket, or null if the client went away meanwhile.
  using Done = std::function<EdgeClient*(RelayOutcome)>;

  Relay(Runtime& runtime, Ownership& ownership, RelayOptions options);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  void setIo(LinkIo* io) { io_ = io; }
  const RelayOptions& options() const { return options_; }

  // --- Server: the links' connections ------------------------------------------------------
  LinkId accepted();                               // a peer connected to --peer
  void connected(LinkId link);                     // our dial is open
  void received(LinkId link, std::string_view bytes);  // one whole WebSocket message
  bool nextOutgoing(LinkId link, std::string* out);    // the next message to write, if any
  void linkGone(LinkId link, const std::string& why);  // the connection closed or failed
  void tick(TimePoint now);                        // once a second: pings, timeouts, recovery
  // SIGTERM: tells every peer (Leaving) and lets go of the relayed sockets without a close.
  void leaving();
  // The host stopped serving every object (self-fence): the relayed sockets leave their
  // objects without a close and every peer hears Leaving, so the edges keep them open and
  // re-attach them to the objects' next owners. The links stay up.
  void letGo(const std::string& why);

  // --- Edge --------------------------------------------------------------------------------
  // Relays `request` for `object` to `owner`. An upgrade names the socket id it will get.
  void forward(const OwnerInfo& owner, const ObjectRef& object, const Request& request,
               bool upgrade, Done done);
  void clientMessage(SocketId socket, Message message);
  void clientClosed(SocketId socket, const CloseInfo& info);

  // --- Owner (the relayed sockets' Transports call these) ----------------------------------
  void queueSend(LinkId link, SocketId socket, const FramePtr& frame);
  void ownerClose(LinkId link, SocketId socket, int code, const std::string& reason);
  void metaChanged(SocketId socket);
  size_t linkQueuedBytes(LinkId link) const;

  // --- Seeing it ---------------------------------------------------------------------------
  // Frames by direction (0 out, 1 in) and kind byte.
  const std::array<std::array<int64_t, kLinkKindCount + 1>, 2>& frameCounts() const {
    return frames_;
  }
  // Relayed sockets per peer host: held here for its objects, and held there for ours.
  std::map<std::string, size_t> edgeSocketsByOwner() const;
  std::map<std::string, size_t> ownedSocketsByEdge() const;
  size_t linksUp() const;
  const EdgeSockets& edgeSockets() const { return edge_; }

 private:
  struct OwnedSocket;
  class RelayTransport;
  enum class LinkState { kDialing, kAwaitHello, kUp, kClosed };
  struct PendingRequest {
    Done done;
    ObjectKey object;
    SocketId socket = 0;  // an upgrade's
  };
  struct Link {
    LinkId id = 0;
    bool dialed = false;
    bool refused = false;  // we refused its Hello: what follows is ignored until it closes
    LinkState state = LinkState::kDialing;
    std::string peerId;  // known after Hello / HelloOk
    uint64_t peerIncarnation = 0;
    std::string peerAddr;
    std::deque<std::string> out;
    size_t outBytes = 0;
    SendCoalescer coalescer;
    bool flushScheduled = false;
    TimePoint since{};
    TimePoint lastRx{};
    int missedPings = 0;
    uint64_t nextStream = 1;
    std::map<uint64_t, PendingRequest> requests;  // this host's requests in flight on it
  };
  struct Recovery {
    TimePoint since;
    std::string lostHost;
    bool scheduled = false;
    // The claim the lost host held, as the first resolve after its Leaving saw it: the same
    // host with another token has claimed the object afresh (it registered again).
    std::optional<int64_t> leftToken;
  };

  Link* link(LinkId id);
  Link* linkTo(const std::string& hostId, const std::string& peerAddr);  // dials if needed
  void send(Link& l, const LinkFrame& frame);
  void flushSends(Link& l);
  void scheduleFlush(Link& l);
  void closeLink(Link& l, const std::string& why, LogLevel level);
  void onFrame(Link& l, LinkFrame frame);
  void onHello(Link& l, const Hello& hello);
  void supersede(Link& l);
  void onHttpRequest(Link& l, HttpRequest request);
  void onAnswer(Link& l, uint64_t stream, RelayOutcome outcome, SocketId accepted);
  void onSocketMessage(Link& l, SocketMessage message);
  void onSocketClosed(Link& l, const SocketClosed& closed);
  void onOwnerClose(Link& l, const Close& close);
  void onSend(Link& l, const Send& send);
  void onMeta(Link& l, const SocketMeta& meta);
  void onReattach(Link& l, const Reattach& reattach);
  void onReattachResult(Link& l, const ReattachResult& result);
  // The held messages of `object`'s sockets that are attached now, to their owners.
  void sendHeld(const ObjectKey& object);
  void ownerGone(const std::string& host, const std::string& why, bool quiet);
  void startRecovery(const ObjectKey& object, const std::string& lostHost);
  void recover(const ObjectKey& object);
  void adoptHere(const ObjectKey& object);
  void closeEdgeSocket(SocketId socket, int code, const std::string& reason);
  OwnedSocket* ownedFor(Link& l, SocketId socket);
  void dropOwned(SocketId socket);
  std::optional<SocketId> nextSocketId();

  Runtime& runtime_;
  Ownership& ownership_;
  RelayOptions options_;
  LinkIo* io_ = nullptr;
  LinkId lastLink_ = 0;
  std::map<LinkId, Link> links_;
  std::unordered_map<std::string, LinkId> byHost_;  // the link used to reach a host
  std::set<std::string> leftHosts_;                // sent Leaving
  bool leaving_ = false;
  // Edge.
  EdgeSockets edge_;
  std::unordered_map<SocketId, EdgeClient*> clients_;
  std::unordered_map<SocketId, LinkId> edgeLink_;  // the link each relayed socket uses
  std::map<ObjectKey, Recovery> recovering_;
  uint64_t allocatorIncarnation_ = 0;
  std::optional<SocketIdAllocator> allocator_;
  // Owner.
  std::unordered_map<SocketId, std::unique_ptr<OwnedSocket>> owned_;
  std::set<SocketId> metaDirty_;
  bool metaFlushScheduled_ = false;
  std::array<std::array<int64_t, kLinkKindCount + 1>, 2> frames_{};
  uint64_t nextNonce_ = 1;
};

}  // namespace dohost::cluster
