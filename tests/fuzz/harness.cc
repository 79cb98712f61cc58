#include "harness.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "admin.h"
#include "object_slot.h"
#include "objects/register_all.h"
#include "support/temp_dir.h"
#include "utf8.h"

namespace dohost::fuzz {
namespace {

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// The first word of `s` (up to a space), and `s` after it.
std::string_view word(std::string_view& s) {
  size_t sp = s.find(' ');
  std::string_view w = s.substr(0, sp);
  s = sp == std::string_view::npos ? std::string_view() : s.substr(sp + 1);
  return w;
}

bool isMethodLwsKnows(std::string_view m) {
  for (std::string_view known : {"GET", "POST", "OPTIONS", "PUT", "PATCH", "DELETE", "HEAD"}) {
    if (m == known) return true;
  }
  return false;
}

// What the server makes of a request target: the path percent-decoded (lws decodes it), the
// query from lws' decoded `&` fragments re-encoded by the server.
Request requestFor(std::string method, std::string_view target, Request::Headers headers,
                   std::string body) {
  size_t q = target.find('?');
  std::string path = percentDecode(target.substr(0, q), false);
  std::string query;
  if (q != std::string_view::npos) {
    std::string_view rest = target.substr(q + 1);
    while (!rest.empty()) {
      size_t amp = rest.find('&');
      std::string_view fragment = rest.substr(0, amp);
      if (!fragment.empty()) appendQueryFragment(query, percentDecode(fragment, true));
      if (amp == std::string_view::npos) break;
      rest.remove_prefix(amp + 1);
    }
  }
  if (method != "POST" && method != "PUT" && method != "PATCH") body.clear();
  return Request(std::move(method), std::move(path), std::move(query), std::move(headers),
                 std::move(body));
}

bool hasControlByte(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

// The data folder of every Host of this process: one temporary folder, emptied between inputs.
// In memory (/dev/shm) when the machine has it and TMPDIR does not say otherwise: the files
// are real SQLite files, and an input costs no disk flush.
const std::string& dataFolder() {
  static testing::TempDir dir([] {
    std::error_code ec;
    bool shm = std::getenv("TMPDIR") == nullptr && std::filesystem::is_directory("/dev/shm", ec);
    return shm ? std::string("/dev/shm") : std::string();
  }());
  return dir.path();
}

// Close codes a server may put in a close frame (RFC 6455 7.4): never 1004-1006 or 1015.
bool validCloseCode(int code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
         (code >= 3000 && code <= 4999);
}

}  // namespace

void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz check failed: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

void initialize() {
  LogLevel level = LogLevel::kOff;
  if (const char* env = std::getenv("DOHOST_FUZZ_LOG")) parseLogLevel(env, &level);
  setLogLevel(level);
  setLogFormat(LogFormat::kText);
  dataFolder();
}

std::optional<ParsedRequest> parseRequest(std::string_view text) {
  std::vector<std::string_view> all = lines(text);
  if (all.empty()) return std::nullopt;
  std::string_view requestLine = trim(all[0]);
  std::string_view method = word(requestLine);
  std::string_view target = word(requestLine);
  if (!isMethodLwsKnows(method) || target.empty()) return std::nullopt;
  Request::Headers headers;
  size_t i = 1;
  size_t consumed = all[0].size() + 1;
  for (; i < all.size(); ++i) {
    consumed += all[i].size() + 1;
    std::string_view line = trim(all[i]);
    if (line.empty()) break;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) continue;  // lws refuses the request
    headers.emplace_back(std::string(line.substr(0, colon)),
                         std::string(trim(line.substr(colon + 1))));
  }
  std::string body(consumed < text.size() ? text.substr(consumed) : std::string_view());
  ParsedRequest parsed;
  for (const auto& [name, value] : headers) {
    if (method == "GET" && equalsIgnoreCase(name, "upgrade") &&
        equalsIgnoreCase(value, "websocket")) {
      parsed.upgrade = true;
    }
  }
  parsed.request = requestFor(std::string(method), target, std::move(headers), std::move(body));
  return parsed;
}

std::string tokenFor(std::string_view userId) {
  nlohmann::json claims{
      {"userId", userId}, {"username", userId}, {"permissions", {"read", "write"}}};
  return signJwtHs256(claims.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                      kJwtSecret);
}

std::vector<std::string_view> lines(std::string_view data) {
  std::vector<std::string_view> out;
  while (!data.empty()) {
    size_t nl = data.find('\n');
    out.push_back(data.substr(0, nl));
    if (nl == std::string_view::npos) break;
    data.remove_prefix(nl + 1);
  }
  return out;
}

void checkResponse(const Response& response, bool acceptedUpgrade) {
  int status = response.status();
  if (status < 100 || status > 599) fail("status code " + std::to_string(status));
  if (status == 101 && !acceptedUpgrade) fail("101 without an accepted upgrade");
  for (const auto& [name, value] : response.headers()) {
    if (name.empty() || hasControlByte(name) || name.find_first_of(" :") != std::string::npos) {
      fail("bad response header name \"" + name + "\"");
    }
    if (hasControlByte(value)) fail("response header " + name + " has CR, LF or NUL in its value");
  }
  std::string type = response.header("content-type").value_or("");
  if (type.starts_with("application/json") && !response.body().empty() &&
      !nlohmann::json::accept(response.body())) {
    fail("an application/json answer that is not JSON: " + response.body().substr(0, 200));
  }
}

// --- Client -----------------------------------------------------------------------------------

SendResult Client::send(const FramePtr& frame) {
  if (closing_ || gone_) return SendResult::kClosed;
  ++frames_;
  if (frame->binary) return SendResult::kQueued;
  if (!isValidUtf8(frame->payload())) fail("a text frame that is not UTF-8");
  nlohmann::json j = nlohmann::json::parse(frame->payload(), nullptr, false);
  if (!j.is_object()) return SendResult::kQueued;
  auto remember = [this](const nlohmann::json& object) {
    for (auto it = object.begin(); it != object.end(); ++it) {
      const std::string& key = it.key();
      if (!it->is_string() || !(key == "id" || key.ends_with("Id"))) continue;
      std::erase_if(seen_, [&key](const auto& kv) { return kv.first == key; });
      seen_.emplace_back(key, it->get<std::string>());
    }
  };
  remember(j);
  if (auto payload = j.find("payload"); payload != j.end() && payload->is_object()) {
    remember(*payload);
  }
  return SendResult::kQueued;
}

std::string Client::seen(std::string_view key) const {
  for (const auto& [k, v] : seen_) {
    if (k == key) return v;
  }
  return {};
}

void Client::close(int code, const std::string& reason) {
  if (closing_ || gone_) return;
  if (!validCloseCode(code)) fail("close code " + std::to_string(code) + " in a close frame");
  if (reason.size() > kMaxCloseReasonBytes) fail("close reason longer than 123 bytes");
  if (!isValidUtf8(reason)) fail("close reason that is not UTF-8");
  closing_ = true;
  closeCode_ = code;
  closeReason_ = reason;
}

// --- Host -------------------------------------------------------------------------------------

struct Host::Pending {
  std::shared_ptr<detail::PendingResponseState> state;
  bool answered = false;
  TimePoint since;
};

Host::Host() {
  options_.dataDir = dataFolder();
  options_.adminToken = std::string(kAdminToken);
  objects::registerAll(registry_);
  for (const AppInfo& info : registry_.apps()) {
    AppSettings settings{{"jwt_secret", std::string(kJwtSecret)}};
    apps_.emplace_back(info.name, info.factory(settings));
    if (info.name == "channels") {
      settings["shards"] = "3";
      apps_.emplace_back("channels-sharded", info.factory(settings));
    }
  }
  for (auto& [name, app] : apps_) {
    if (app) detail::ApiAccess::setAppClock(*app, clock_);
  }
  RuntimeOptions ro;
  ro.dataDir = options_.dataDir;
  ro.idleEvict = Duration(static_cast<int64_t>(options_.idleEvictSeconds * 1000));
  ro.durability = storage::Durability::kNormal;  // what is on disk is the same; no fsync per input
  ro.maxSocketsPerObject = options_.maxSocketsPerObject;
  ro.maxAttachmentBytes = options_.maxAttachmentBytes;
  runtime_ = std::make_unique<Runtime>(ro, registry_, clock_);
  if (Status s = runtime_->start(); !s.isOk()) fail("runtime start: " + s.toString());
}

Host::~Host() {
  // Every client leaves, then what they left behind runs out: cleanup alarms, idle eviction,
  // and every deferred answer within the server's timeout.
  for (auto& c : clients_) {
    if (!c->gone_) clientClose(*c, 1000, "");
  }
  advance(Duration(601'000));
  for (const auto& p : pending_) {
    if (!p->answered) fail("a deferred HTTP answer never came (the server gives up after 600 s)");
  }
  runtime_->shutdown();
  runtime_.reset();
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(options_.dataDir, ec)) {
    std::filesystem::remove_all(entry.path(), ec);
  }
}

App* Host::app(std::string_view name) {
  for (auto& [n, a] : apps_) {
    if (n == name) return a.get();
  }
  return nullptr;
}

Response Host::dispatch(App& app, Request& request) {
  Route route;
  try {
    route = app.route(request);
  } catch (const std::exception& e) {
    fail(std::string("App::route threw: ") + e.what());
  }
  if (route.answer) return std::move(*route.answer);
  auto slot = runtime_->resolve(route.className, route.name, route.id);
  if (!slot.isOk()) {
    bool notFound =
        slot.status().code() == Status::Code::kNotFound && !request.isWebSocketUpgrade();
    return Response::json(notFound ? 404 : 400, jsonError(slot.status().message()));
  }
  return runtime_->fetch(**slot, request);
}

Response Host::http(App& app, Request request) {
  auto pending = std::make_shared<Pending>();
  pending->state = std::make_shared<detail::PendingResponseState>();
  pending->since = clock_.now();
  std::weak_ptr<Pending> weak = pending;
  pending->state->deliver = [weak](Response r) {
    auto p = weak.lock();
    if (!p) return;
    if (p->answered) fail("a deferred HTTP request answered twice");
    checkResponse(r, false);
    p->answered = true;
  };
  detail::ApiAccess::setPendingState(request, pending->state);
  Response response = dispatch(app, request);
  if (response.isDeferred()) {
    pending_.push_back(pending);
  } else {
    pending->state->answered = true;
    checkResponse(response, false);
  }
  settle();
  return response;
}

Client* Host::upgrade(App& app, Request request, Response* refusal) {
  detail::UpgradeContext upgrade;
  detail::ApiAccess::setUpgradeContext(request, &upgrade);
  Response response = dispatch(app, request);
  if (response.status() == 101 && upgrade.accepted) {
    // LWS_CALLBACK_ESTABLISHED: the connection is bound, early frames go out.
    std::shared_ptr<detail::SocketRecord> record = upgrade.accepted;
    auto client = std::make_unique<Client>(*this, record);
    Client& c = *client;
    clients_.push_back(std::move(client));
    record->transport = &c;
    for (FramePtr& f : record->early) c.send(f);
    record->early.clear();
    if (record->state == detail::SocketState::kClosing) c.close(1000, "");
    settle();
    return &c;
  }
  if (response.status() == 101)
    response = Response::json(500, R"({"error":"upgrade not accepted"})");
  checkResponse(response, false);
  if (refusal) *refusal = std::move(response);
  settle();
  return nullptr;
}

Response Host::admin(Request request) {
  Response response = handleAdmin(*runtime_, options_, request);
  checkResponse(response, false);
  settle();
  return response;
}

void Host::message(Client& client, Message message) {
  if (client.gone_ || client.closing_) return;
  if (message.data.size() > options_.maxMessageBytes) {
    failConnection(client, 1009, "message too big");
  } else if (!message.binary && !isValidUtf8(message.data)) {
    failConnection(client, 1007, "text frame is not valid UTF-8");
  } else {
    runtime_->onMessage(client.record_, std::move(message));
  }
  settle();
}

void Host::clientClose(Client& client, int code, std::string reason) {
  if (client.gone_) return;
  closed(client, CloseInfo{code, std::move(reason), true});
  settle();
}

void Host::clientDrop(Client& client) {
  if (client.gone_) return;
  closed(client, CloseInfo{1006, "WebSocket disconnected without sending Close frame.", false});
  settle();
}

void Host::evictAll() {
  for (ObjectSlot* slot : runtime_->slots()) {
    if (slot->isLive() && !slot->inEvent()) runtime_->evictNow(*slot);
  }
  settle();
}

void Host::advance(Duration d) {
  TimePoint end = clock_.now() + d;
  while (true) {
    settle();
    std::optional<TimePoint> next = runtime_->timers().next();
    if (!next || *next > end) break;
    if (*next > clock_.now()) clock_.set(*next);
  }
  clock_.set(end);
  settle();
}

void Host::settle() {
  bool more = true;
  while (more) {
    runtime_->runDue();
    more = false;
    for (auto& c : clients_) {
      if (c->closing_ && !c->gone_) {
        closed(*c, CloseInfo{c->closeCode_, c->closeReason_, true});
        more = true;
      }
    }
  }
}

void Host::closed(Client& client, CloseInfo info) {
  // Server::onClosed: the transport goes, the object hears of it once.
  client.gone_ = true;
  std::shared_ptr<detail::SocketRecord> record = client.record_;
  record->transport = nullptr;
  if (!client.errorReported_) runtime_->onClose(record, std::move(info));
}

void Host::failConnection(Client& client, int code, const std::string& reason) {
  // Conn::fail: close at once, and the object gets webSocketError (no close event follows).
  client.closing_ = true;
  client.closeCode_ = code;
  client.closeReason_ = reason;
  client.errorReported_ = true;
  std::shared_ptr<detail::SocketRecord> record = client.record_;
  record->state = detail::SocketState::kClosing;
  Runtime& rt = *runtime_;
  rt.defer([&rt, record, reason] { rt.onError(record, reason); });
}

// --- scripts ----------------------------------------------------------------------------------

void runScript(Host& host, std::string_view appName, std::string_view script, size_t maxSteps) {
  App* app = host.app(appName);
  if (app == nullptr) fail("no app " + std::string(appName));
  auto client = [&](char digit) -> Client* {
    if (digit < '0' || digit > '9') return nullptr;
    std::vector<Client*> live;
    for (const auto& c : host.clients()) {
      if (!c->gone()) live.push_back(c.get());
    }
    return live.empty() ? nullptr : live[static_cast<size_t>(digit - '0') % live.size()];
  };
  // ${d.key} in a message: what client d has seen of key.
  auto expand = [&](std::string_view text) {
    std::string out;
    while (!text.empty()) {
      size_t at = text.find("${");
      size_t end = at == std::string_view::npos ? at : text.find('}', at);
      if (end == std::string_view::npos) break;
      out.append(text.substr(0, at));
      std::string_view ref = text.substr(at + 2, end - at - 2);
      if (ref.size() >= 2 && ref[1] == '.') {
        if (Client* c = client(ref[0])) out += c->seen(ref.substr(2));
      }
      text.remove_prefix(end + 1);
    }
    out.append(text);
    return out;
  };
  auto number = [](std::string_view s, int64_t max) {
    int64_t n = 0;
    for (char c : s.substr(0, 9)) {
      if (c < '0' || c > '9') break;
      n = n * 10 + (c - '0');
    }
    return std::min(n, max);
  };
  size_t steps = 0;
  for (std::string_view line : lines(script)) {
    if (line.empty()) continue;
    if (++steps > maxSteps) break;
    char op = line[0];
    std::string_view rest = line.substr(1);
    if (op >= '0' && op <= '9') {
      if (Client* c = client(op)) host.message(*c, Message{false, expand(rest)});
    } else if (op == 'B' && !rest.empty()) {
      if (Client* c = client(rest[0])) host.message(*c, Message{true, std::string(rest.substr(1))});
    } else if (op == 'X' && !rest.empty()) {
      if (Client* c = client(rest[0])) {
        std::string_view codeAndReason = rest.substr(1);
        std::string_view code = word(codeAndReason);
        host.clientClose(*c, code.empty() ? 1005 : static_cast<int>(number(code, 65535)),
                         std::string(codeAndReason));
      }
    } else if (op == 'D' && !rest.empty()) {
      if (Client* c = client(rest[0])) host.clientDrop(*c);
    } else if (op == 'U' || op == 'A') {
      Request::Headers headers{{"upgrade", "websocket"}, {"connection", "Upgrade"}};
      if (op == 'A') headers.emplace_back("authorization", "Bearer " + tokenFor(word(rest)));
      host.upgrade(*app, requestFor("GET", rest, std::move(headers), {}));
    } else if (op == 'H') {
      std::string_view method = word(rest);
      std::string_view user = word(rest);
      std::string_view target = word(rest);
      if (!isMethodLwsKnows(method) || target.empty()) continue;
      Request::Headers headers;
      if (user != "-") headers.emplace_back("authorization", "Bearer " + tokenFor(user));
      if (!rest.empty()) headers.emplace_back("content-type", "application/json");
      host.http(*app,
                requestFor(std::string(method), target, std::move(headers), std::string(rest)));
    } else if (op == 'M' || op == 'm') {
      std::string_view method = word(rest);
      std::string_view target = word(rest);
      if (!isMethodLwsKnows(method) || target.empty()) continue;
      Request::Headers headers;
      if (op == 'M') {
        headers.emplace_back("authorization", "Bearer " + std::string(kAdminToken));
      } else if (!rest.empty()) {
        headers.emplace_back("authorization", std::string(rest));
      }
      host.admin(requestFor(std::string(method), target, std::move(headers), {}));
    } else if (op == 'E') {
      host.evictAll();
    } else if (op == 'T') {
      host.advance(Duration(number(rest, 24 * 3600 * 1000)));
    } else if (op == '@') {
      if (App* other = host.app(rest)) app = other;
    }
  }
}

}  // namespace dohost::fuzz

// libFuzzer calls this once before the first input, in every target.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  dohost::fuzz::initialize();
  return 0;
}
