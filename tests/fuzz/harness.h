// The host without the network, for the fuzz targets: a real Runtime on SQLite files in a
// temporary folder, a ManualClock, the bundled apps' routers, and accepted sockets whose
// connection is in memory. Requests and socket events take the steps runtime/src/server.cc
// takes with what libwebsockets parsed, so a target reaches the same code a client does.
//
// Everything the host answers is checked for what a client relies on (status codes, header
// bytes, close codes, UTF-8 text frames); a violation stops the process like a crash, so
// libFuzzer keeps the input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dohost/dohost.h"
#include "dohost/host.h"
#include "internal.h"
#include "runtime.h"

namespace dohost::fuzz {

// The secret every JWT app of the fuzz host checks tokens against, and the admin API's token.
inline constexpr std::string_view kJwtSecret = "fuzz-secret";
inline constexpr std::string_view kAdminToken = "fuzz-admin-token";

// Stops the process with `what` on stderr (libFuzzer then saves the input as a crash).
[[noreturn]] void fail(const std::string& what);

// Logs off, as text (DOHOST_FUZZ_LOG=error shows the objects' handler failures, which the runtime turns
// into 500s and logs). LLVMFuzzerInitialize (harness.cc) calls it for every target.
void initialize();

// An HTTP request as text: "METHOD TARGET [VERSION]" line, "Name: value" header lines, an
// empty line, the body (lines end in \r\n or \n). Built into a Request the way the server
// builds one from what lws parsed: the path percent-decoded, the query re-encoded from its
// decoded fragments, a body only for POST, PUT and PATCH. nullopt for a method lws does not
// hand over.
struct ParsedRequest {
  Request request;
  bool upgrade = false;  // GET with "Upgrade: websocket": the server's upgrade path
};
std::optional<ParsedRequest> parseRequest(std::string_view text);

// A token the JWT apps accept for `userId` (HS256 with kJwtSecret), with the permissions
// read and write (channels).
std::string tokenFor(std::string_view userId);

class Host;

// One accepted socket and the in-memory connection under it (the server's Conn).
class Client final : public detail::Transport {
 public:
  Client(Host& host, std::shared_ptr<detail::SocketRecord> record)
      : host_(host), record_(std::move(record)) {}

  SendResult send(const FramePtr& frame) override;
  void close(int code, const std::string& reason) override;
  size_t queuedBytes() const override { return 0; }

  const std::shared_ptr<detail::SocketRecord>& record() const { return record_; }
  bool gone() const { return gone_; }
  size_t framesReceived() const { return frames_; }
  // The last string value of `key` ("id" or a name ending in "Id": clientId, envelopeId, ...)
  // in a JSON frame this client received, at the top level or in its "payload"; empty if none.
  std::string seen(std::string_view key) const;

 private:
  friend class Host;
  Host& host_;
  std::shared_ptr<detail::SocketRecord> record_;
  bool closing_ = false;  // the host started the closing handshake
  int closeCode_ = 0;
  std::string closeReason_;
  bool gone_ = false;           // the connection ended; the runtime was told
  bool errorReported_ = false;  // the object got webSocketError; no close event follows
  size_t frames_ = 0;
  std::vector<std::pair<std::string, std::string>> seen_;
};

class Host {
 public:
  Host();
  ~Host();  // every client leaves, the runtime shuts down, the data folder is emptied
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  Runtime& runtime() { return *runtime_; }
  const HostOptions& options() const { return options_; }
  // The router of the app `name` (the bundled apps, and "channels-sharded": channels with 3
  // shards); null if there is none.
  App* app(std::string_view name);

  // An HTTP request through the app's router, as Server::handleHttp. A deferred answer is
  // waited for (the clock moves up to the server's 600 s timeout); none arriving is a failure.
  Response http(App& app, Request request);
  // An upgrade through the router, as Server::handleUpgrade: the accepted client, or null with
  // the refusal in `refusal`.
  Client* upgrade(App& app, Request request, Response* refusal = nullptr);
  // The admin API, as the server's admin listener.
  Response admin(Request request);

  // A client's message, as Server::onReceive (too big: 1009, bad UTF-8 in text: 1007).
  void message(Client& client, Message message);
  // The client sent a close frame (any code: the object sees what the client sent).
  void clientClose(Client& client, int code, std::string reason);
  // The connection dropped without a close frame (1006).
  void clientDrop(Client& client);
  // The admin API's eviction of every live object (sockets stay open).
  void evictAll();
  // Moves the clock, running what falls due on the way, like the loop would.
  void advance(Duration d);

  // Accepted clients in accept order (closed ones stay, gone() says so).
  const std::vector<std::unique_ptr<Client>>& clients() const { return clients_; }
  // Answers to deferred HTTP requests that arrived during later steps.
  size_t lateAnswers() const { return lateAnswers_; }

 private:
  friend class Client;
  struct Pending;
  // Runs what is due now, then finishes the closes the host started (the client answers the
  // close frame at once), until nothing is left to do.
  void settle();
  void closed(Client& client, CloseInfo info);
  void failConnection(Client& client, int code, const std::string& reason);
  Response dispatch(App& app, Request& request);

  HostOptions options_;
  ManualClock clock_;
  Registry registry_;
  std::vector<std::pair<std::string, std::unique_ptr<App>>> apps_;
  std::unique_ptr<Runtime> runtime_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::vector<std::shared_ptr<Pending>> pending_;
  size_t lateAnswers_ = 0;
};

// Checks what a client relies on in an HTTP answer: a status code, header names and values
// without CR, LF or NUL, 101 only for an accepted upgrade.
void checkResponse(const Response& response, bool acceptedUpgrade);

// Splits `data` into lines (at \n; a \r before it is kept). The scripts of the WebSocket and
// admin targets are lines.
std::vector<std::string_view> lines(std::string_view data);

// Runs a script of steps (one per line) against `host`, starting with app `appName` (see
// docs/fuzzing.md for the steps). At most `maxSteps` steps run. In a message, `${d.key}` is
// replaced by what client d has seen of `key` (Client::seen), so a script can address another
// client or ack an envelope whose id the host chose.
void runScript(Host& host, std::string_view appName, std::string_view script, size_t maxSteps = 64);

}  // namespace dohost::fuzz
