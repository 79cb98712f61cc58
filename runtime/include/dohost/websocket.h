// Accepted WebSockets as objects see them: a cheap handle, the messages, the close info.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dohost {

namespace detail {
struct SocketRecord;
struct ApiAccess;  // the runtime's way in (runtime/src/internal.h); not part of the API
}  // namespace detail

enum class SendResult {
  kQueued,   // will be written when the socket is writable (after the event commits)
  kClosed,   // the socket is closed or closing; nothing was queued
  kDropped,  // the peer does not keep up; the runtime closes it with 1008
};

struct Message {
  bool binary = false;
  std::string data;
  bool isText() const { return !binary; }
  std::string_view text() const { return data; }
};

struct CloseInfo {
  int code = 1005;
  std::string reason;
  bool wasClean = true;
};

// A handle to one accepted socket. It is held by the host, not the instance, so it stays valid
// across hibernation: a handle kept after the socket closed is harmless (isOpen() is false,
// send() answers kClosed). Copies refer to the same socket. Only the runtime makes them:
// ObjectState::acceptWebSocket, getWebSockets and the handlers' arguments.
//
// Thread: the loop thread.
class WebSocket {
 public:
  SendResult send(std::string_view text);
  SendResult sendBinary(std::string_view bytes);
  // Starts the closing handshake. Codes 1000-1003, 1007-1014 (1008: policy violation, e.g. a
  // rate limit) and 3000-4999; reason at most 123 bytes.
  void close(int code = 1000, std::string_view reason = {});

  // Up to the host's attachment limit (default 16 KiB); larger throws UsageError. Kept by the
  // host, so it survives the object's eviction. Any bytes; bundled objects keep JSON.
  void serializeAttachment(std::string_view bytes);
  std::optional<std::string> deserializeAttachment() const;

  // The tags given to acceptWebSocket. A copy when called on a temporary handle, which may be
  // the last owner of a closed socket's record.
  const std::vector<std::string>& tags() const&;
  std::vector<std::string> tags() const&&;
  bool isOpen() const;
  uint64_t id() const;  // unique within the host process
  bool operator==(const WebSocket& other) const { return record_ == other.record_; }

 private:
  friend struct detail::ApiAccess;
  explicit WebSocket(std::shared_ptr<detail::SocketRecord> record) : record_(std::move(record)) {}

  std::shared_ptr<detail::SocketRecord> record_;
};

}  // namespace dohost
