// ObjectState: everything an instance can reach. It belongs to the runtime and outlives the
// instance (it is the object's slot), so an instance may keep a reference to it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dohost/http.h"
#include "dohost/storage.h"
#include "dohost/time.h"
#include "dohost/websocket.h"

namespace dohost {

using TimerId = uint64_t;

struct BroadcastOptions {
  std::vector<std::string> tags;   // sockets with any of these tags; empty: every socket
  std::vector<WebSocket> except;   // never these
  bool binary = false;
};

// A reference to another object. Calls are asynchronous: the callee runs its own event after
// the caller's event ends, and the reply arrives as an event of the caller (so neither object
// ever runs inside the other, and the loop never blocks).
class Stub {
 public:
  virtual ~Stub() = default;
  // Sends `request` to the object's fetch(); `onResponse` runs as an event of the caller.
  virtual void fetch(Request request, std::function<void(Response)> onResponse) = 0;
};

class ObjectState {
 public:
  virtual ~ObjectState() = default;

  virtual const std::string& className() const = 0;
  virtual const std::string& id() const = 0;
  // The name the object was reached by (idFromName), in every entry point, also after
  // eviction and restart; empty for ids from newUniqueId.
  virtual const std::optional<std::string>& name() const = 0;

  virtual Storage& storage() = 0;
  virtual TimePoint now() const = 0;

  // Accepts the upgrade in `request` for this object, with up to 10 tags of up to 256
  // characters each. Throws UsageError on bad tags or if the request is not an upgrade; a
  // full object (maxSocketsPerObject) makes the upgrade fail with 503.
  virtual WebSocket acceptWebSocket(Request& request, std::vector<std::string> tags = {}) = 0;
  // Open sockets, optionally only those with `tag`, in the order they were accepted.
  virtual std::vector<WebSocket> getWebSockets(std::string_view tag = {}) = 0;
  virtual size_t countWebSockets(std::string_view tag = {}) = 0;
  // Sends one message to many sockets: framed once, the bytes shared. Returns how many
  // sockets it was queued for.
  virtual size_t broadcast(std::string_view message, const BroadcastOptions& options = {}) = 0;

  // Messages equal to `request` are answered with `response` by the host, without waking the
  // object. Empty request clears it. Each at most 2,048 bytes.
  virtual void setWebSocketAutoResponse(std::string request, std::string response) = 0;
  virtual std::optional<TimePoint> getWebSocketAutoResponseTimestamp(const WebSocket& ws) = 0;

  // Runs fn as an event of this object after `delay`. A pending timer keeps the object in
  // memory (it is not evicted while one is pending).
  virtual TimerId setTimeout(Duration delay, std::function<void()> fn) = 0;
  virtual void clearTimeout(TimerId id) = 0;

  // Another object of any registered class, by name or by id.
  virtual std::unique_ptr<Stub> stubByName(std::string_view className, std::string_view name) = 0;
  virtual std::unique_ptr<Stub> stubById(std::string_view className, std::string_view id) = 0;
};

}  // namespace dohost
