// The test kit (dohost/testing.h): the runtime with the network and the clock replaced. Each
// step takes what runtime/src/server.cc takes for the same input from libwebsockets.
#include "dohost/testing.h"

#include <sqlite3.h>

#include <filesystem>
#include <map>
#include <stdexcept>
#include <system_error>

#include "dohost/object_id.h"
#include "internal.h"
#include "object_slot.h"
#include "runtime.h"
#include "utf8.h"

namespace dohost::testing {

namespace {

// The server's bound on a deferred answer (Server::sweep): then 503.
constexpr Duration kDeferredAnswerBound = Duration(600'000);

std::string makeTempDir() {
  std::error_code ec;
  std::filesystem::path base = std::filesystem::temp_directory_path(ec);
  if (ec) base = "/tmp";
  std::string pattern = (base / "dohost-testhost-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error("dohost::testing::TestHost: cannot make a temporary folder in " +
                             base.string());
  }
  return pattern;
}

std::string jsonErrorBody(std::string_view message) {
  std::string out = "{\"error\":";
  appendJsonString(out, message);
  out += "}";
  return out;
}

void addUpgradeHeaders(Request& request) {
  auto add = [&request](const char* name, const char* value) {
    if (!request.header(name)) request.setHeader(name, value);
  };
  add("upgrade", "websocket");
  add("connection", "Upgrade");
  add("sec-websocket-version", "13");
  add("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
}

}  // namespace

// --- the in-memory connection under a TestSocket --------------------------------------------

struct TestSocket::Conn final : detail::Transport {
  std::shared_ptr<detail::SocketRecord> record;
  TestSocket* socket = nullptr;  // the client end; set once it exists
  bool closing = false;          // the host started the closing handshake
  CloseInfo hostClose;
  bool gone = false;           // the connection ended and the runtime was told
  bool errorReported = false;  // the object got webSocketError; no close event follows

  SendResult send(const FramePtr& frame) override {
    if (closing || gone || socket == nullptr) return SendResult::kClosed;
    socket->inbox_.push_back(Message{frame->binary, std::string(frame->payload())});
    return SendResult::kQueued;
  }
  void close(int code, const std::string& reason) override {
    if (closing || gone) return;
    closing = true;
    hostClose = CloseInfo{code, reason, true};
  }
  size_t queuedBytes() const override { return 0; }
};

struct TestHost::Impl {
  TestHostOptions options;
  std::string dataDir;
  bool ownDir = false;
  ManualClock clock;
  std::unique_ptr<Runtime> runtime;
  std::map<std::string, std::unique_ptr<App>, std::less<>> apps;

  explicit Impl(TestHostOptions o) : options(std::move(o)), clock(options.start) {}

  Runtime& started(const Registry& registry) {
    if (runtime) return *runtime;
    RuntimeOptions ro;
    ro.dataDir = dataDir;
    ro.idleEvict = options.idleEvict;
    ro.durability = storage::Durability::kNormal;  // the same files; no fsync per event
    ro.maxSocketsPerObject = options.maxSocketsPerObject;
    ro.maxAttachmentBytes = options.maxAttachmentBytes;
    ro.alarmRetryBase = options.alarmRetryBase;
    ro.alarmMaxRetries = options.alarmMaxRetries;
    runtime = std::make_unique<Runtime>(ro, registry, clock);
    if (Status s = runtime->start(); !s.isOk()) {
      runtime.reset();
      throw std::runtime_error("dohost::testing::TestHost: the runtime did not start: " +
                               s.toString());
    }
    for (const AppInfo& info : registry.apps()) {
      std::unique_ptr<App> app = info.factory(options.appSettings);
      if (!app) continue;
      detail::ApiAccess::setAppClock(*app, clock);
      apps.emplace(info.name, std::move(app));
    }
    return *runtime;
  }

  ObjectSlot* findSlot(std::string_view className, std::string_view name) const {
    if (!runtime) return nullptr;
    return runtime->findSlot(std::string(className), idFromName(className, name));
  }
};

// --- TestSocket -----------------------------------------------------------------------------

TestSocket::TestSocket(TestHost& host, std::shared_ptr<Conn> conn)
    : host_(&host), conn_(std::move(conn)) {
  conn_->socket = this;
}

bool TestSocket::send(std::string_view text) {
  if (closeInfo_ || conn_->closing || conn_->gone) return false;
  Runtime& rt = *host_->impl_->runtime;
  const TestHostOptions& o = host_->impl_->options;
  std::shared_ptr<detail::SocketRecord> record = conn_->record;
  auto fail = [&](int code, const char* reason) {
    // Conn::fail: the connection closes at once and the object gets webSocketError.
    conn_->closing = true;
    conn_->hostClose = CloseInfo{code, reason, true};
    conn_->errorReported = true;
    record->state = detail::SocketState::kClosing;
    std::string why = reason;
    rt.defer([&rt, record, why] { rt.onError(record, why); });
  };
  if (text.size() > o.maxMessageBytes) {
    fail(1009, "message too big");
  } else if (!isValidUtf8(text)) {
    fail(1007, "text frame is not valid UTF-8");
  } else {
    rt.onMessage(record, Message{false, std::string(text)});
  }
  host_->settle();
  return true;
}

bool TestSocket::sendBinary(std::string_view bytes) {
  if (closeInfo_ || conn_->closing || conn_->gone) return false;
  Runtime& rt = *host_->impl_->runtime;
  if (bytes.size() > host_->impl_->options.maxMessageBytes) {
    conn_->closing = true;
    conn_->hostClose = CloseInfo{1009, "message too big", true};
    conn_->errorReported = true;
    std::shared_ptr<detail::SocketRecord> record = conn_->record;
    record->state = detail::SocketState::kClosing;
    rt.defer([&rt, record] { rt.onError(record, "message too big"); });
  } else {
    rt.onMessage(conn_->record, Message{true, std::string(bytes)});
  }
  host_->settle();
  return true;
}

std::optional<Message> TestSocket::receive(Duration within) {
  host_->settle();
  if (inbox_.empty() && within > Duration(0)) {
    TimePoint end = host_->now() + within;
    Runtime& rt = *host_->impl_->runtime;
    while (inbox_.empty()) {
      std::optional<TimePoint> next = rt.timers().next();
      if (!next || *next > end) break;
      if (*next > host_->now()) host_->impl_->clock.set(*next);
      host_->settle();
    }
    if (inbox_.empty()) {
      host_->impl_->clock.set(end);
      host_->settle();
    }
  }
  if (inbox_.empty()) return std::nullopt;
  Message m = std::move(inbox_.front());
  inbox_.pop_front();
  return m;
}

std::vector<Message> TestSocket::drain() {
  host_->settle();
  std::vector<Message> out(std::make_move_iterator(inbox_.begin()),
                           std::make_move_iterator(inbox_.end()));
  inbox_.clear();
  return out;
}

void TestSocket::close(int code, std::string reason) {
  if (conn_->gone) return;
  if (!closeInfo_) closeInfo_ = CloseInfo{code, reason, true};
  conn_->gone = true;
  conn_->record->transport = nullptr;
  if (!conn_->errorReported) {
    host_->impl_->runtime->onClose(conn_->record, CloseInfo{code, std::move(reason), true});
  }
  host_->settle();
}

void TestSocket::drop() {
  if (conn_->gone) return;
  CloseInfo info{1006, "WebSocket disconnected without sending Close frame.", false};
  if (!closeInfo_) closeInfo_ = info;
  conn_->gone = true;
  conn_->record->transport = nullptr;
  if (!conn_->errorReported) host_->impl_->runtime->onClose(conn_->record, std::move(info));
  host_->settle();
}

std::vector<std::string> TestSocket::tags() const { return conn_->record->tags; }

std::optional<std::string> TestSocket::attachment() const {
  if (!conn_->record->hasAttachment) return std::nullopt;
  return conn_->record->attachment;
}

// --- StorageView ----------------------------------------------------------------------------

namespace {

// A read-only connection to `path`, closed on scope exit.
struct ReadConnection {
  sqlite3* db = nullptr;
  explicit ReadConnection(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      sqlite3_close(db);
      db = nullptr;
    } else {
      sqlite3_busy_timeout(db, 5000);
    }
  }
  ~ReadConnection() { sqlite3_close(db); }
  ReadConnection(const ReadConnection&) = delete;
  ReadConnection& operator=(const ReadConnection&) = delete;
};

SqlValue columnValue(sqlite3_stmt* st, int i) {
  switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER: return static_cast<int64_t>(sqlite3_column_int64(st, i));
    case SQLITE_FLOAT: return sqlite3_column_double(st, i);
    case SQLITE_TEXT: {
      const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st, i));
      return std::string(p, static_cast<size_t>(sqlite3_column_bytes(st, i)));
    }
    case SQLITE_BLOB: {
      const auto* p = static_cast<const char*>(sqlite3_column_blob(st, i));
      return Blob{std::string(p ? p : "", static_cast<size_t>(sqlite3_column_bytes(st, i)))};
    }
    default: return nullptr;
  }
}

std::string asBytes(const SqlValue& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  if (const auto* b = std::get_if<Blob>(&v)) return b->bytes;
  return {};
}

}  // namespace

bool StorageView::exists() const {
  std::error_code ec;
  return std::filesystem::exists(path_, ec);
}

Result<SqlResult> StorageView::query(std::string_view sql, const std::vector<SqlValue>& params) const {
  if (!exists()) return Status::notFound("the object has no database (" + path_ + ")");
  ReadConnection c(path_);
  if (c.db == nullptr) return Status::ioError("cannot open " + path_ + " read-only");
  sqlite3_stmt* st = nullptr;
  const char* tail = nullptr;
  if (sqlite3_prepare_v2(c.db, sql.data(), static_cast<int>(sql.size()), &st, &tail) != SQLITE_OK) {
    return Status::invalidArgument(sqlite3_errmsg(c.db));
  }
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> guard(st, sqlite3_finalize);
  if (st == nullptr) return Status::invalidArgument("no statement in the query");
  for (size_t i = 0; i < params.size(); ++i) {
    int n = static_cast<int>(i + 1);
    const SqlValue& p = params[i];
    if (std::holds_alternative<std::nullptr_t>(p)) sqlite3_bind_null(st, n);
    else if (const auto* v = std::get_if<int64_t>(&p)) sqlite3_bind_int64(st, n, *v);
    else if (const auto* d = std::get_if<double>(&p)) sqlite3_bind_double(st, n, *d);
    else if (const auto* s = std::get_if<std::string>(&p))
      sqlite3_bind_text(st, n, s->data(), static_cast<int>(s->size()), SQLITE_TRANSIENT);
    else if (const auto* b = std::get_if<Blob>(&p))
      sqlite3_bind_blob(st, n, b->bytes.data(), static_cast<int>(b->bytes.size()), SQLITE_TRANSIENT);
  }
  SqlResult out;
  int columns = sqlite3_column_count(st);
  for (int i = 0; i < columns; ++i) out.columns.emplace_back(sqlite3_column_name(st, i));
  while (true) {
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return Status::invalidArgument(sqlite3_errmsg(c.db));
    std::vector<SqlValue>& row = out.rows.emplace_back();
    for (int i = 0; i < columns; ++i) row.push_back(columnValue(st, i));
    ++out.rowsRead;
  }
  return out;
}

std::optional<std::string> StorageView::get(std::string_view key) const {
  Result<SqlResult> r = query("SELECT value FROM _do_kv WHERE key = ?", {Blob{std::string(key)}});
  if (!r.isOk() || r->rows.empty()) {
    // Keys may be stored as text by older files: look again.
    r = query("SELECT value FROM _do_kv WHERE key = ?", {std::string(key)});
    if (!r.isOk() || r->rows.empty()) return std::nullopt;
  }
  return asBytes(r->rows[0][0]);
}

std::vector<std::pair<std::string, std::string>> StorageView::list() const {
  std::vector<std::pair<std::string, std::string>> out;
  Result<SqlResult> r = query("SELECT key, value FROM _do_kv ORDER BY key");
  if (!r.isOk()) return out;
  for (const auto& row : r->rows) out.emplace_back(asBytes(row[0]), asBytes(row[1]));
  return out;
}

// --- TestHost -------------------------------------------------------------------------------

TestHost::TestHost(TestHostOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  if (impl_->options.dataDir.empty()) {
    impl_->dataDir = makeTempDir();
    impl_->ownDir = true;
  } else {
    impl_->dataDir = impl_->options.dataDir;
  }
}

TestHost::~TestHost() {
  if (impl_->runtime) {
    for (auto& s : sockets_) {
      if (!s->conn_->gone) s->drop();
    }
    impl_->runtime->shutdown();
    impl_->runtime.reset();
  }
  impl_->apps.clear();
  if (impl_->ownDir) {
    std::error_code ec;
    std::filesystem::remove_all(impl_->dataDir, ec);
  }
}

const std::string& TestHost::dataDir() const { return impl_->dataDir; }

TimePoint TestHost::now() const { return impl_->clock.now(); }

void TestHost::settle() {
  Runtime& rt = impl_->started(registry_);
  bool more = true;
  while (more) {
    rt.runDue();
    more = false;
    for (auto& s : sockets_) {
      TestSocket::Conn& c = *s->conn_;
      if (c.closing && !c.gone) {
        // The client answers the host's close frame at once; the object hears of it once.
        if (!s->closeInfo_) s->closeInfo_ = c.hostClose;
        c.gone = true;
        c.record->transport = nullptr;
        if (!c.errorReported) rt.onClose(c.record, c.hostClose);
        more = true;
      }
    }
  }
}

void TestHost::runDue() { settle(); }

void TestHost::advance(Duration d) {
  Runtime& rt = impl_->started(registry_);
  TimePoint end = now() + d;
  while (true) {
    settle();
    std::optional<TimePoint> next = rt.timers().next();
    if (!next || *next > end) break;
    if (*next > now()) impl_->clock.set(*next);
  }
  impl_->clock.set(end);
  settle();
}

Response TestHost::dispatch(const Route& route, Request& request, bool upgrade) {
  Runtime& rt = impl_->started(registry_);
  if (route.answer) return *route.answer;
  Result<ObjectSlot*> slot = rt.resolve(route.className, route.name, route.id);
  if (!slot.isOk()) {
    bool notFound = slot.status().code() == Status::Code::kNotFound && !upgrade;
    return Response::json(notFound ? 404 : 400, jsonErrorBody(slot.status().message()));
  }
  return rt.fetch(**slot, request);
}

// An HTTP request to `route`: deferred answers are waited for within the server's bound.
Response TestHost::answer(Request& request, const Route& route) {
  Runtime& rt = impl_->started(registry_);
  auto delivered = std::make_shared<std::optional<Response>>();
  auto state = std::make_shared<detail::PendingResponseState>();
  state->deliver = [delivered](Response r) {
    if (!*delivered) *delivered = std::move(r);
  };
  detail::ApiAccess::setPendingState(request, state);
  if (request.remoteAddress().empty()) detail::ApiAccess::setRemoteAddress(request, "127.0.0.1");
  Response response = dispatch(route, request, false);
  settle();
  if (!response.isDeferred()) {
    state->answered = true;
    return response;
  }
  TimePoint end = now() + kDeferredAnswerBound;
  while (!*delivered) {
    std::optional<TimePoint> next = rt.timers().next();
    if (!next || *next > end) break;
    if (*next > now()) impl_->clock.set(*next);
    settle();
  }
  if (*delivered) return std::move(**delivered);
  impl_->clock.set(end);
  settle();
  if (*delivered) return std::move(**delivered);
  state->clientGone = true;
  return Response::json(503, jsonErrorBody("the object did not answer in time"));
}

Response TestHost::fetch(std::string_view className, std::string_view name, Request request) {
  return answer(request, Route::toName(std::string(className), std::string(name)));
}

Response TestHost::fetchById(std::string_view className, std::string_view id, Request request) {
  return answer(request, Route::toId(std::string(className), std::string(id)));
}

Response TestHost::request(std::string_view app, Request request) {
  impl_->started(registry_);
  auto it = impl_->apps.find(app);
  if (it == impl_->apps.end()) {
    return Response::json(404, jsonErrorBody("no app " + std::string(app)));
  }
  if (request.remoteAddress().empty()) detail::ApiAccess::setRemoteAddress(request, "127.0.0.1");
  // The router sees a pending state, as on a listener (a router may look at it).
  auto state = std::make_shared<detail::PendingResponseState>();
  detail::ApiAccess::setPendingState(request, state);
  Route route = it->second->route(request);
  return answer(request, route);
}

Connection TestHost::upgrade(const Route& route, Request request) {
  impl_->started(registry_);
  detail::UpgradeContext context;
  detail::ApiAccess::setUpgradeContext(request, &context);
  Response response = dispatch(route, request, true);
  detail::ApiAccess::setUpgradeContext(request, nullptr);
  Connection out;
  if (response.status() != 101 || !context.accepted) {
    if (response.status() == 101) response = Response::json(500, R"({"error":"upgrade not accepted"})");
    out.response = std::move(response);
    settle();
    return out;
  }
  // LWS_CALLBACK_ESTABLISHED: the connection is bound; frames sent before go out, in order.
  auto conn = std::make_shared<TestSocket::Conn>();
  conn->record = context.accepted;
  sockets_.push_back(std::unique_ptr<TestSocket>(new TestSocket(*this, conn)));
  TestSocket* socket = sockets_.back().get();
  conn->record->transport = conn.get();
  for (FramePtr& f : conn->record->early) conn->send(f);
  conn->record->early.clear();
  if (conn->record->earlyClose) {
    conn->close(conn->record->earlyClose->first, conn->record->earlyClose->second);
  } else if (conn->record->state == detail::SocketState::kClosing) {
    conn->close(1000, "");
  }
  settle();
  out.socket = socket;
  out.response = std::move(response);
  return out;
}

Connection TestHost::connect(std::string_view className, std::string_view name, Request request) {
  addUpgradeHeaders(request);
  if (request.remoteAddress().empty()) detail::ApiAccess::setRemoteAddress(request, "127.0.0.1");
  return upgrade(Route::toName(std::string(className), std::string(name)), std::move(request));
}

Connection TestHost::connectApp(std::string_view app, Request request) {
  impl_->started(registry_);
  addUpgradeHeaders(request);
  if (request.remoteAddress().empty()) detail::ApiAccess::setRemoteAddress(request, "127.0.0.1");
  auto it = impl_->apps.find(app);
  if (it == impl_->apps.end()) {
    return Connection{nullptr, Response::json(404, jsonErrorBody("no app " + std::string(app)))};
  }
  // The router decides with the upgrade in view (Request::isWebSocketUpgrade), as on a listener.
  detail::UpgradeContext probe;
  detail::ApiAccess::setUpgradeContext(request, &probe);
  Route route = it->second->route(request);
  detail::ApiAccess::setUpgradeContext(request, nullptr);
  if (route.answer) {
    Response r = *route.answer;
    if (r.status() == 101) r = Response::json(500, R"({"error":"upgrade not accepted"})");
    return Connection{nullptr, std::move(r)};
  }
  return upgrade(route, std::move(request));
}

bool TestHost::evict(std::string_view className, std::string_view name) {
  impl_->started(registry_);
  ObjectSlot* slot = impl_->findSlot(className, name);
  if (slot == nullptr || !slot->isLive() || slot->inEvent()) return false;
  bool done = impl_->runtime->evictNow(*slot);
  settle();
  return done;
}

bool TestHost::runAlarm(std::string_view className, std::string_view name) {
  Runtime& rt = impl_->started(registry_);
  if (registry_.findClass(className) == nullptr) return false;
  ObjectSlot& slot = rt.slot(std::string(className), idFromName(className, name), std::string(name));
  bool ran = rt.runAlarmNow(slot);
  settle();
  return ran;
}

std::optional<TimePoint> TestHost::alarm(std::string_view className, std::string_view name) const {
  if (!impl_->runtime) return std::nullopt;
  return impl_->runtime->scheduledAlarm(std::string(className), idFromName(className, name));
}

bool TestHost::isLive(std::string_view className, std::string_view name) const {
  ObjectSlot* slot = impl_->findSlot(className, name);
  return slot != nullptr && slot->isLive();
}

StorageView TestHost::storage(std::string_view className, std::string_view name) const {
  return StorageView(impl_->dataDir + "/" + std::string(className) + "/" +
                     idFromName(className, name) + ".sqlite");
}

}  // namespace dohost::testing
