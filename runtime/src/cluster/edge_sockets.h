// EdgeSockets: an edge host's table of the client WebSockets it relays to objects owned by
// other hosts. For each socket it keeps the edge's copy of what the owner keeps (tags,
// attachment, auto-response pair; from SocketMeta frames), so the socket can outlive its
// owner: when the owner dies its sockets become ownerless, what their clients send meanwhile
// is held (bounded per object and in total), and once a new owner claimed the object the
// sockets are re-attached to it (Reattach frames) and the held messages flushed to it.
//
// A pure data structure: no I/O, no timers. The caller (the server's link code) feeds it what
// the links deliver and sends what it returns.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cluster/link_protocol.h"
#include "dohost/status.h"

namespace dohost::cluster {

// An object of the cluster: its class and its id (64 lowercase hex characters).
struct ObjectKey {
  std::string className;
  std::string objectId;
  auto operator<=>(const ObjectKey&) const = default;
  bool operator==(const ObjectKey&) const = default;
};

enum class EdgeSocketState {
  kAttached,     // its owner is known and has it
  kReattaching,  // a Reattach went to `owner`; its ReattachResult has not come back
  kOwnerless,    // its owner is gone; client messages are held
  kClosing,      // a close is under way (either side); client messages are dropped
};

// One relayed socket as the edge keeps it.
struct EdgeSocket {
  SocketId id = 0;
  ObjectKey object;
  std::optional<std::string> owner;  // host id; none while ownerless
  EdgeSocketState state = EdgeSocketState::kAttached;
  std::vector<std::string> tags;
  std::optional<std::string> attachment;
  std::optional<AutoResponse> autoResponse;
  std::optional<int64_t> autoResponseAtMs;  // the last auto-response the edge gave (Unix ms)
  int failedReattaches = 0;                 // refused ReattachResults since the last success
};

// Bounds of what is held for ownerless objects. A message that would pass one is refused.
struct HoldLimits {
  size_t maxMessagesPerObject = 256;
  size_t maxBytesPerObject = 1 << 20;  // payload bytes
  size_t maxBytesTotal = 64 << 20;     // payload bytes over all objects
};

// What hold() did with a client message.
enum class HoldResult {
  kHeld,           // kept; takeHeld() returns it once its socket is attached again
  kOverLimit,      // refused: a bound would be passed. Close the client with
                   // kHoldRefusedCloseCode / kHoldRefusedReason, then call closed()
  kClosing,        // not held: the socket is closing; drop the message
  kUnknownSocket,  // not held: no such socket
};

// The close the caller sends a client whose message could not be held (1013 Try Again Later).
inline constexpr int kHoldRefusedCloseCode = 1013;
inline constexpr std::string_view kHoldRefusedReason = "object unavailable, try again later";

// Thread: loop thread only (not synchronized).
class EdgeSockets {
 public:
  explicit EdgeSockets(HoldLimits limits = {}) : limits_(limits) {}

  // Records a socket `owner` accepted for `object` (an HttpResponse with acceptedSocket).
  // Its tags and the rest come with the SocketMeta that follows. Fails (kInvalidArgument) for
  // id 0 or an id already present.
  Status add(SocketId id, const ObjectKey& object, const std::string& owner);

  // Replaces the edge's copy of the socket's tags, attachment and auto-response pair, as
  // host `from` sent it. kNotFound if the socket is not (or no longer) here: a late frame,
  // harmless. kNotAllowed if `from` is not the socket's owner (a host that lost the object
  // must not overwrite what the new owner was given).
  Status applyMeta(const std::string& from, const SocketMeta& meta);

  // The socket, or null. Valid until the next non-const call.
  const EdgeSocket* find(SocketId id) const;
  size_t size() const { return sockets_.size(); }

  // The socket is going (a Close from the owner, or the edge's own close): later client
  // messages are dropped, it leaves the re-attach set. Its entry stays until closed().
  void markClosing(SocketId id);

  // The client's connection is gone: the socket leaves every index, its held messages are
  // dropped. Unknown ids are ignored.
  void closed(SocketId id);

  // Host `host` is gone (its link dropped, it sent Leaving, or membership removed it): every
  // socket it owned, or was being re-attached to, becomes ownerless. Returns the objects
  // those sockets belong to (each once, in order), for the caller to find new owners.
  std::vector<ObjectKey> ownerLost(const std::string& host);

  // The sockets of `object` in id order; those owned by `host` in id order.
  std::vector<SocketId> socketsOf(const ObjectKey& object) const;
  std::vector<SocketId> socketsOwnedBy(const std::string& host) const;

  // `newOwner` has claimed `object`: each of its ownerless sockets is assigned to it
  // (kReattaching) and gets a Reattach frame with its latest tags, attachment and
  // auto-response, in id order. Sockets that are closing, or already have an owner, are
  // left alone.
  std::vector<Reattach> reattachFramesFor(const ObjectKey& object, const std::string& newOwner);

  // The new owner's answer, from host `from`. ok: the socket is attached. Refused: it is
  // ownerless again and failedReattaches counts up; the caller decides whether to try again
  // or close the client. kNotFound for a socket not here; kNotAllowed for one not being
  // re-attached to `from`.
  Status applyReattachResult(const std::string& from, const ReattachResult& result);

  // A client message on socket `id` that cannot go to an owner now: the socket is ownerless,
  // or being re-attached (a host that refuses the socket would drop what was sent before its
  // answer), or its link is down. It is held (see HoldResult) until takeHeld().
  HoldResult hold(SocketId id, bool binary, std::string payload);

  // The messages held for `object` whose sockets are in state `ready` (attached: the new
  // owner took them), oldest first, as frames for that owner; they leave the hold. Messages of
  // other sockets stay. A host adopting the sockets itself takes them while kReattaching.
  std::vector<SocketMessage> takeHeld(const ObjectKey& object,
                                      EdgeSocketState ready = EdgeSocketState::kAttached);

  size_t heldMessages(const ObjectKey& object) const;
  size_t heldBytes(const ObjectKey& object) const;
  size_t heldBytesTotal() const { return heldBytesTotal_; }

  // If the socket's auto-response request equals this text message, the response to send
  // back (and the time is recorded for Reattach); nullopt otherwise. Works with or without
  // an owner: the edge answers it without a round trip.
  std::optional<std::string> autoRespond(SocketId id, std::string_view text, int64_t nowMs);

 private:
  struct Hold {
    std::deque<SocketMessage> messages;
    size_t bytes = 0;
  };

  void setOwner(EdgeSocket& socket, std::optional<std::string> owner);
  void dropHeldOf(SocketId id, const ObjectKey& object);

  HoldLimits limits_;
  std::unordered_map<SocketId, EdgeSocket> sockets_;
  // Indexes over sockets_: every socket is in byObject_, and in byOwner_ under its owner if
  // it has one. Empty sets are erased.
  std::map<ObjectKey, std::set<SocketId>> byObject_;
  std::unordered_map<std::string, std::set<SocketId>> byOwner_;
  std::map<ObjectKey, Hold> held_;  // only objects with held messages
  size_t heldBytesTotal_ = 0;
};

}  // namespace dohost::cluster
