#include "store/page_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <cstring>

#include <libpq-fe.h>

#include "store/pg_pipeline.h"

namespace dohost::store {
namespace {

// Type OIDs of the parameters (pg_type).
constexpr uint32_t kInt2 = 21, kInt4 = 23, kInt8 = 20, kText = 25, kBytea = 17;
constexpr uint32_t kInt4Array = 1007, kByteaArray = 1001;

constexpr const char* kSchema[] = {
    R"sql(CREATE TABLE IF NOT EXISTS do_object(
            object_key   text PRIMARY KEY,
            epoch        bigint NOT NULL,
            commit_epoch bigint NOT NULL DEFAULT 0,
            commit_seq   bigint NOT NULL DEFAULT 0,
            page_size    int NOT NULL DEFAULT 0,
            db_pages     int NOT NULL DEFAULT 0,
            alarm_at     timestamptz NULL,
            bucket       smallint NOT NULL DEFAULT 0))sql",
    R"sql(CREATE TABLE IF NOT EXISTS do_page(
            object_key text NOT NULL,
            pgno       int NOT NULL,
            data       bytea NOT NULL,
            PRIMARY KEY (object_key, pgno)))sql",
    R"sql(CREATE INDEX IF NOT EXISTS do_object_alarm ON do_object(bucket, alarm_at)
            WHERE alarm_at IS NOT NULL)sql",
};

// `<=` rather than the memo's `<`: a claim retried with the same token (after kUnknown) must
// succeed again. Tokens are etcd revisions, so two owners never share one.
constexpr char kClaim[] = R"sql(
  INSERT INTO do_object(object_key, epoch, bucket) VALUES ($1, $2, $3)
  ON CONFLICT (object_key) DO UPDATE SET epoch = EXCLUDED.epoch
    WHERE do_object.epoch <= EXCLUDED.epoch
  RETURNING commit_epoch, commit_seq, db_pages)sql";

// One object's commit as one statement, so that a group pipelines without waiting between
// statements: the page writes happen only if the head row passed the epoch check, so a fenced
// object changes nothing and returns no row.
constexpr char kCommitObject[] = R"sql(
  WITH head AS (
    UPDATE do_object
       SET commit_seq = commit_seq + 1, commit_epoch = $2, db_pages = $3, page_size = $4,
           alarm_at = to_timestamp($5::float8 / 1000)
     WHERE object_key = $1 AND epoch = $2
     RETURNING commit_seq),
  changed AS (
    INSERT INTO do_page(object_key, pgno, data)
    SELECT $1, p.pgno, p.data FROM unnest($6::int4[], $7::bytea[]) AS p(pgno, data)
     WHERE EXISTS (SELECT 1 FROM head)
    ON CONFLICT (object_key, pgno) DO UPDATE SET data = EXCLUDED.data),
  dropped AS (
    DELETE FROM do_page
     WHERE object_key = $1 AND pgno > $3 AND EXISTS (SELECT 1 FROM head))
  SELECT commit_seq FROM head)sql";

constexpr char kLoadHead[] = R"sql(
  SELECT epoch, commit_epoch, commit_seq, page_size, db_pages,
         (extract(epoch FROM alarm_at) * 1000)::int8
    FROM do_object WHERE object_key = $1)sql";
constexpr char kLoadPages[] = "SELECT pgno, data FROM do_page WHERE object_key = $1 ORDER BY pgno";

PgParam text(std::string value, uint32_t type) {
  return PgParam{.value = std::move(value), .binary = false, .type = type};
}

PgStatement plain(std::string sql) { return PgStatement{.sql = std::move(sql)}; }

void appendBigEndian32(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(value >> shift));
}

// The page numbers as an int4[] literal: {1,2,3}.
std::string pageNumbers(const storage::PageImages& pages) {
  std::string out = "{";
  for (const auto& [pgno, image] : pages) {
    if (out.size() > 1) out += ',';
    out += std::to_string(pgno);
  }
  return out + "}";
}

// The page images as a bytea[] in PostgreSQL's binary array format: dimensions, flags (no
// nulls), element type, then for the one dimension its length and lower bound (1), then each
// element as a length and its bytes.
std::string pageImages(const storage::PageImages& pages) {
  std::string out;
  appendBigEndian32(out, pages.empty() ? 0 : 1);
  appendBigEndian32(out, 0);
  appendBigEndian32(out, kBytea);
  if (pages.empty()) return out;
  appendBigEndian32(out, static_cast<uint32_t>(pages.size()));
  appendBigEndian32(out, 1);
  for (const auto& [pgno, image] : pages) {
    appendBigEndian32(out, static_cast<uint32_t>(image.size()));
    out += image;
  }
  return out;
}

PgStatement commitStatement(const ObjectCommit& object) {
  // A page above the new size would be deleted by the same statement's DELETE; it is not sent.
  storage::PageImages pages(object.pages.begin(), object.pages.upper_bound(object.dbPages));
  PgStatement statement{.sql = kCommitObject};
  statement.params = {
      text(object.objectKey, kText),
      text(std::to_string(object.epoch), kInt8),
      text(std::to_string(object.dbPages), kInt4),
      text(std::to_string(object.pageSize), kInt4),
      PgParam{.value = object.alarmAtMs ? std::optional(std::to_string(*object.alarmAtMs))
                                        : std::nullopt,
              .type = kInt8},
      text(pageNumbers(pages), kInt4Array),
      PgParam{.value = pageImages(pages), .binary = true, .type = kByteaArray},
  };
  return statement;
}

bool isOk(const PgResult& result, ExecStatusType expected) {
  return result && PQresultStatus(result.get()) == expected;
}

// The first result that is not `expected` for its statement, as an error text; "" if none.
std::string firstError(const PgBatchResult& batch) {
  for (const PgResult& result : batch.results) {
    ExecStatusType status = PQresultStatus(result.get());
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) return errorOf(result.get());
  }
  return "";
}

int64_t integerAt(const pg_result* result, int row, int column) {
  const char* value = PQgetvalue(result, row, column);
  int64_t out = 0;
  std::from_chars(value, value + std::strlen(value), out);
  return out;
}

uint32_t bigEndian32(const char* p) {
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  return uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | uint32_t{b[3]};
}

// A write whose batch ended early: definitely not done when it failed at a statement, or
// before its COMMIT was handed to libpq; otherwise PostgreSQL may have committed it.
Outcome incompleteWrite(const PgBatchResult& batch, size_t statements, std::string& error) {
  if (std::string failed = firstError(batch); !failed.empty()) {
    error = failed;
    return Outcome::kFailed;
  }
  error = batch.error;
  return batch.queued < statements ? Outcome::kFailed : Outcome::kUnknown;
}

}  // namespace

const char* outcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kOk: return "ok";
    case Outcome::kFenced: return "fenced";
    case Outcome::kFailed: return "failed";
    case Outcome::kUnknown: return "unknown outcome";
  }
  return "?";
}

Result<std::unique_ptr<PageStore>> PageStore::start(PageStoreOptions options) {
  if (!options.post) return Status::invalidArgument("the page store needs a post function");
  std::unique_ptr<PageStore> store(new PageStore(std::move(options)));
  if (store->wakeRead_ < 0) return Status::ioError("cannot make the page store's wake-up pipe");
  store->thread_ = std::thread([raw = store.get()] { raw->ioLoop(); });
  return store;
}

PageStore::PageStore(PageStoreOptions options) : options_(std::move(options)) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0) {
    wakeRead_ = fds[0];
    wakeWrite_ = fds[1];
  }
}

PageStore::~PageStore() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (wakeWrite_ >= 0) {
    char byte = 1;
    (void)!::write(wakeWrite_, &byte, 1);
  }
  if (thread_.joinable()) thread_.join();
  if (wakeRead_ >= 0) ::close(wakeRead_);
  if (wakeWrite_ >= 0) ::close(wakeWrite_);
}

std::chrono::steady_clock::time_point PageStore::deadline() const {
  return std::chrono::steady_clock::now() + options_.requestTimeout;
}

void PageStore::enqueue(Request request) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(request));
  }
  wake_.notify_one();
}

void PageStore::ioLoop() {
  while (true) {
    Request request;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) break;
      request = std::move(queue_.front());
      queue_.pop_front();
    }
    std::string connectError;
    if (connection_ && !connection_->idle()) connection_.reset();
    if (!connection_) {
      Result<std::unique_ptr<PgConnection>> made =
          PgConnection::connect(options_.conninfo, wakeRead_, deadline());
      if (made.isOk()) {
        connection_ = std::move(made).value();
      } else {
        connectError = made.status().message();
      }
    }
    if (!request.run(connection_.get(), connectError)) connection_.reset();
  }
  std::deque<Request> abandoned;
  {
    std::lock_guard lock(mutex_);
    abandoned.swap(queue_);
  }
  for (Request& request : abandoned) request.abandon();
  connection_.reset();
}

void PageStore::ensureSchema(std::function<void(SchemaAnswer)> done) {
  auto post = options_.post;
  auto answer = [post, done](SchemaAnswer a) { post([done, a] { done(a); }); };
  Request request;
  request.abandon = [answer] { answer({.error = "the page store stopped"}); };
  request.run = [this, answer](PgConnection* conn, const std::string& connectError) {
    if (conn == nullptr) {
      answer({.error = connectError});
      return false;
    }
    std::vector<PgStatement> statements;
    for (const char* sql : kSchema) statements.push_back(plain(sql));
    PgBatchResult batch = conn->run(statements, deadline());
    std::string failed = firstError(batch);
    if (!batch.complete || !failed.empty()) {
      answer({.error = failed.empty() ? batch.error : failed});
      return batch.complete;
    }
    answer({.outcome = Outcome::kOk});
    return true;
  };
  enqueue(std::move(request));
}

void PageStore::claim(std::string objectKey, int64_t epoch, int bucket,
                      std::function<void(ClaimAnswer)> done) {
  auto post = options_.post;
  auto answer = [post, done](ClaimAnswer a) { post([done, a] { done(a); }); };
  Request request;
  request.abandon = [answer] { answer({.error = "the page store stopped"}); };
  request.run = [this, answer, objectKey, epoch, bucket](PgConnection* conn,
                                                         const std::string& connectError) {
    if (conn == nullptr) {
      answer({.error = connectError});
      return false;
    }
    PgStatement statement{.sql = kClaim};
    statement.params = {text(objectKey, kText), text(std::to_string(epoch), kInt8),
                        text(std::to_string(bucket), kInt2)};
    PgBatchResult batch = conn->run({statement}, deadline());
    ClaimAnswer a;
    if (!batch.complete) {
      a.outcome = incompleteWrite(batch, 1, a.error);
    } else if (!isOk(batch.results[0], PGRES_TUPLES_OK)) {
      a.error = errorOf(batch.results[0].get());
    } else if (PQntuples(batch.results[0].get()) == 0) {
      a.outcome = Outcome::kFenced;
      a.error = "a newer owner holds the object";
    } else {
      const pg_result* row = batch.results[0].get();
      a.outcome = Outcome::kOk;
      a.commitEpoch = integerAt(row, 0, 0);
      a.commitSeq = integerAt(row, 0, 1);
      a.dbPages = static_cast<uint32_t>(integerAt(row, 0, 2));
    }
    answer(std::move(a));
    return batch.complete;
  };
  enqueue(std::move(request));
}

void PageStore::commit(std::vector<ObjectCommit> objects, std::function<void(CommitAnswer)> done) {
  auto post = options_.post;
  auto answer = [post, done](CommitAnswer a) { post([done, a] { done(a); }); };
  CommitAnswer blank;
  for (const ObjectCommit& object : objects) blank.objects.push_back({.objectKey = object.objectKey});
  Request request;
  request.abandon = [answer, blank] {
    CommitAnswer a = blank;
    a.error = "the page store stopped";
    answer(a);
  };
  request.run = [this, answer, blank, objects = std::move(objects)](
                    PgConnection* conn, const std::string& connectError) {
    CommitAnswer a = blank;
    if (conn == nullptr) {
      a.error = connectError;
      answer(a);
      return false;
    }
    std::vector<PgStatement> statements = {plain("BEGIN")};
    for (const ObjectCommit& object : objects) statements.push_back(commitStatement(object));
    statements.push_back(plain("COMMIT"));
    PgBatchResult batch = conn->run(statements, deadline());
    if (!batch.complete) {
      a.outcome = incompleteWrite(batch, statements.size(), a.error);
    } else if (std::string failed = firstError(batch); !failed.empty()) {
      a.error = failed;
    } else if (std::strcmp(PQcmdStatus(batch.results.back().get()), "COMMIT") != 0) {
      a.error = std::string("PostgreSQL answered the COMMIT with ") +
                PQcmdStatus(batch.results.back().get());
    } else {
      a.outcome = Outcome::kOk;
      for (size_t i = 0; i < objects.size(); ++i) {
        const pg_result* head = batch.results[i + 1].get();
        bool fenced = PQntuples(head) == 0;
        a.objects[i].outcome = fenced ? Outcome::kFenced : Outcome::kOk;
        if (!fenced) a.objects[i].commitSeq = integerAt(head, 0, 0);
      }
    }
    if (a.outcome != Outcome::kOk) {
      for (CommitAnswer::Object& object : a.objects) object.outcome = a.outcome;
    }
    answer(std::move(a));
    return batch.complete;
  };
  enqueue(std::move(request));
}

void PageStore::load(std::string objectKey, std::function<void(LoadAnswer)> done) {
  auto post = options_.post;
  auto answer = [post, done](LoadAnswer a) {
    auto shared = std::make_shared<LoadAnswer>(std::move(a));  // pages are not copied again
    post([done, shared] { done(std::move(*shared)); });
  };
  Request request;
  request.abandon = [answer] { answer({.error = "the page store stopped"}); };
  request.run = [this, answer, objectKey](PgConnection* conn, const std::string& connectError) {
    if (conn == nullptr) {
      answer({.error = connectError});
      return false;
    }
    std::vector<PgStatement> statements = {
        plain("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
        PgStatement{.sql = kLoadHead, .params = {text(objectKey, kText)}},
        PgStatement{.sql = kLoadPages, .params = {text(objectKey, kText)}, .binaryResult = true},
        plain("COMMIT")};
    PgBatchResult batch = conn->run(statements, deadline());
    LoadAnswer a;
    std::string failed = firstError(batch);
    if (!batch.complete || !failed.empty()) {
      a.error = failed.empty() ? batch.error : failed;
      answer(std::move(a));
      return batch.complete && conn->idle();
    }
    const pg_result* head = batch.results[1].get();
    a.outcome = Outcome::kOk;
    a.found = PQntuples(head) == 1;
    if (a.found) {
      a.epoch = integerAt(head, 0, 0);
      a.commitEpoch = integerAt(head, 0, 1);
      a.commitSeq = integerAt(head, 0, 2);
      a.pageSize = static_cast<uint32_t>(integerAt(head, 0, 3));
      a.dbPages = static_cast<uint32_t>(integerAt(head, 0, 4));
      if (!PQgetisnull(head, 0, 5)) a.alarmAtMs = integerAt(head, 0, 5);
    }
    const pg_result* pages = batch.results[2].get();
    for (int row = 0; row < PQntuples(pages); ++row) {
      if (PQgetlength(pages, row, 0) != 4) {
        a = LoadAnswer{.error = "PostgreSQL: a page number is not a 4-byte integer"};
        break;
      }
      uint32_t pgno = bigEndian32(PQgetvalue(pages, row, 0));
      a.pages[pgno] = std::string(PQgetvalue(pages, row, 1),
                                  static_cast<size_t>(PQgetlength(pages, row, 1)));
    }
    answer(std::move(a));
    return true;
  };
  enqueue(std::move(request));
}

}  // namespace dohost::store
