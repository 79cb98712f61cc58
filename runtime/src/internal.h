// Runtime internals shared by the runtime core and the server: frames, sockets as the host
// keeps them, and the seams between them (Transport for sockets, PendingResponseState for
// answers given later).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dohost/http.h"
#include "dohost/registry.h"
#include "dohost/time.h"
#include "dohost/websocket.h"

namespace dohost {

class ObjectSlot;

// Bytes reserved in front of every frame's payload so the server can write the WebSocket
// header in place (libwebsockets' LWS_PRE; lws_server.cc checks it fits).
inline constexpr size_t kFrameHeadroom = 16;

// Messages a socket may send while it is being handed to another object; more closes it
// (1008). The hand-over normally completes within the loop turn of the message that began it.
inline constexpr size_t kMaxHeldMessages = 1024;

// One outgoing message, built once and shared by every socket it goes to. Immutable after
// construction except for the headroom, which the (single) loop thread rewrites per write with
// identical header bytes.
struct Frame {
  Frame(std::string_view payload, bool isBinary) : binary(isBinary) {
    bytes.resize(kFrameHeadroom + payload.size());
    std::copy(payload.begin(), payload.end(), bytes.begin() + kFrameHeadroom);
  }
  size_t size() const { return bytes.size() - kFrameHeadroom; }
  std::string_view payload() const { return std::string_view(bytes).substr(kFrameHeadroom); }
  bool binary;
  std::string bytes;
};
using FramePtr = std::shared_ptr<Frame>;

// lws hands a request's query over as decoded `key=value` fragments; this appends one to
// `query`, percent-encoded again, so Request::queryParam reads what the client sent.
void appendQueryFragment(std::string& query, std::string_view fragment);
// Appends `s` as a JSON string: quotes, backslashes and control characters escaped; text that
// is not valid UTF-8 gets each byte from 0x80 up as \u00XX (log.cc).
void appendJsonString(std::string& out, std::string_view s);

namespace detail {

// The connection under an accepted socket (implemented by the server). Thread: loop.
class Transport {
 public:
  virtual ~Transport() = default;
  // Queues a frame; the server writes it when the socket is writable. kDropped when the
  // per-socket byte bound is exceeded: the server then closes with 1008.
  virtual SendResult send(const FramePtr& frame) = 0;
  virtual void close(int code, const std::string& reason) = 0;
  virtual size_t queuedBytes() const = 0;
  // The socket's tags, attachment or its object's auto-response changed (a relayed socket's
  // edge keeps a copy of them).
  virtual void metaChanged() {}
};

enum class SocketState { kOpen, kClosing, kClosed };

// An accepted socket as the host keeps it: survives the instance (hibernation). Owned by the
// slot's socket map while open, and by WebSocket handles.
struct SocketRecord {
  uint64_t id = 0;
  ObjectSlot* slot = nullptr;        // null once closed
  Transport* transport = nullptr;    // null until the handshake completes, and once closed
  SocketState state = SocketState::kOpen;
  std::vector<std::string> tags;
  std::string attachment;
  bool hasAttachment = false;
  std::optional<TimePoint> autoResponseAt;
  std::vector<FramePtr> early;       // frames sent before the transport was bound
  // Being handed to another object (ObjectState::transferWebSocket): messages wait in `held`
  // until the target accepted the socket.
  bool transferring = false;
  std::vector<Message> held;
  std::optional<std::pair<int, std::string>> earlyClose;  // a close asked for before it, too
};

// The upgrade being decided in a fetch(): the socket the object accepted, if any. For a
// socket handed over by another object, `adopt` is that socket (already open), and
// acceptWebSocket takes it instead of making a new one.
struct UpgradeContext {
  std::shared_ptr<SocketRecord> accepted;
  std::shared_ptr<SocketRecord> adopt;
};

// A request answered later. The server gives `deliver`; the object answers through a
// PendingResponse; the runtime's output gate calls deliver after the event commits.
struct PendingResponseState : std::enable_shared_from_this<PendingResponseState> {
  std::function<void(Response)> deliver;  // server side: writes the HTTP answer
  ObjectSlot* slot = nullptr;             // set when the object defers
  bool answered = false;
  bool clientGone = false;
  bool isOpen() const { return !answered && !clientGone; }
  void answer(Response response);          // through the slot's output gate
};

// What only the runtime (and its own tests) may do with the author's value types: make a
// WebSocket handle for a record, reach a handle's record, and fill in the parts of a Request
// the server knows. The public headers name this struct as a friend and nothing more, so
// object code cannot reach it (tools/check_layers.py keeps internal.h out of objects/).
struct ApiAccess {
  static WebSocket webSocket(std::shared_ptr<SocketRecord> record) {
    return WebSocket(std::move(record));
  }
  static const std::shared_ptr<SocketRecord>& record(const WebSocket& ws) { return ws.record_; }

  // The clock an app's router reads (App::clock); `c` must outlive the app.
  static void setAppClock(App& a, const Clock& c) { a.clock_ = &c; }

  static void setRemoteAddress(Request& r, std::string address) {
    r.remoteAddress_ = std::move(address);
  }
  // `u` is not owned and must outlive its use in the upgrade's fetch(); null ends it.
  static void setUpgradeContext(Request& r, UpgradeContext* u) { r.upgrade_ = u; }
  static UpgradeContext* upgradeContext(const Request& r) { return r.upgrade_; }
  static void setPendingState(Request& r, std::shared_ptr<PendingResponseState> s) {
    r.pending_ = std::move(s);
  }
  static const std::shared_ptr<PendingResponseState>& pendingState(const Request& r) {
    return r.pending_;
  }
};

}  // namespace detail
}  // namespace dohost
