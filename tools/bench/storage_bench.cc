#include "storage_bench.h"

#include <cstdio>
#include <memory>
#include <random>

#include "dohost/dohost.h"
#include "dohost/object_id.h"
#include "dohost/storage/object_db.h"
#include "object_slot.h"
#include "runtime.h"

namespace dohost::bench {
namespace {

constexpr const char* kStoreClass = "BenchStore";
constexpr const char* kObjectName = "bench";

// What the next event of BenchStore does. The bench sets it before each fetch so the object
// does not parse anything: the figure is the runtime's and SQLite's, not a query parser's.
struct BenchOp {
  std::string key;
  std::string value;
  int keys = 0;
};
BenchOp gOp;

std::string keyName(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "key%05d", i);
  return buf;
}

class BenchStore final : public DurableObject {
 public:
  explicit BenchStore(ObjectState& state) : state_(state) {}

  Response fetch(Request& request) override {
    Storage& s = state_.storage();
    const std::string& path = request.path();
    if (path == "/put") {
      s.put(gOp.key, gOp.value);
      return Response::text(200, "ok");
    }
    if (path == "/get") {
      std::optional<std::string> v = s.get(gOp.key);
      return Response::text(v ? 200 : 404, v ? "found" : "missing");
    }
    if (path == "/get-many") {
      // gOp.keys lookups in one event: the per-call cost without the event around it.
      int found = 0;
      for (int i = 0; i < gOp.keys; ++i) found += s.get(keyName(i)).has_value();
      return Response::text(200, std::to_string(found));
    }
    if (path == "/list") {
      KvPairs all = s.list({});
      return Response::text(200, std::to_string(all.size()));
    }
    if (path == "/seed") {
      for (int i = 0; i < gOp.keys; ++i) s.put(keyName(i), gOp.value);
      return Response::text(200, "seeded");
    }
    return Response::text(200, "noop");
  }

 private:
  ObjectState& state_;
};

// One runtime on its own data folder with the given durability.
struct Harness {
  Harness(const std::string& dataDir, storage::Durability durability) {
    registry.addClass<BenchStore>(kStoreClass);
    RuntimeOptions options;
    options.dataDir = dataDir;
    options.idleEvict = Duration(3'600'000);  // the bench evicts explicitly
    options.durability = durability;
    runtime = std::make_unique<Runtime>(options, registry, clock);
    Status s = runtime->start();
    if (!s.isOk()) throw std::runtime_error("runtime start: " + s.toString());
  }

  ObjectSlot& slot() {
    return runtime->slot(kStoreClass, idFromName(kStoreClass, kObjectName), std::string(kObjectName));
  }

  // One event; returns its duration in microseconds.
  double timedFetch(const char* path) {
    Request request("GET", path);
    auto start = SteadyClock::now();
    Response r = runtime->fetch(slot(), request);
    auto end = SteadyClock::now();
    if (r.status() >= 500) throw std::runtime_error(std::string("event ") + path + " failed: " + r.body());
    return microsBetween(start, end);
  }

  Registry registry;
  SystemClock clock;
  std::unique_ptr<Runtime> runtime;
};

// Runs `op` until `maxCount` samples or `seconds` have passed (at least `minCount`).
template <typename Fn>
std::vector<double> sample(double seconds, size_t minCount, size_t maxCount, Fn op) {
  std::vector<double> out;
  auto deadline = SteadyClock::now() + std::chrono::duration<double>(seconds);
  while (out.size() < maxCount && (out.size() < minCount || SteadyClock::now() < deadline)) {
    out.push_back(op());
  }
  return out;
}

Json figure(const std::string& key, const std::string& name, const std::vector<double>& samples,
            const std::string& note = {}) {
  Summary s = summarize(samples);
  Json j{{"key", key}, {"name", name}, {"unit", "us"}};
  j.update(toJson(s));
  j["opsPerSecond"] = s.mean > 0 ? 1e6 / s.mean : 0;
  if (!note.empty()) j["note"] = note;
  std::fprintf(stderr, "  storage %-34s median %9.1f us  p99 %9.1f us  (%zu samples)\n",
               name.c_str(), s.median, s.p99, s.count);
  return j;
}

}  // namespace

Json runStorageBench(const StorageBenchOptions& options) {
  Json figures = Json::array();
  std::mt19937 rng(42);
  std::string value(static_cast<size_t>(options.valueBytes), 'v');
  double secs = options.secondsPerFigure;

  for (storage::Durability durability : {storage::Durability::kFull, storage::Durability::kNormal}) {
    bool full = durability == storage::Durability::kFull;
    TempFolder dir(options.tempParent);
    Harness h(dir.path(), durability);
    gOp.value = value;
    gOp.keys = options.keys;
    h.timedFetch("/seed");
    std::uniform_int_distribution<int> pick(0, options.keys - 1);

    auto puts = sample(secs, 50, 100000, [&] {
      gOp.key = keyName(pick(rng));
      return h.timedFetch("/put");
    });
    figures.push_back(figure(full ? "put_full" : "put_normal",
                             std::string("put+commit, durability ") + (full ? "FULL" : "NORMAL"),
                             puts, "one event per put: one SQLite transaction and commit each"));
    if (!full) continue;  // reads do not depend on the durability

    auto gets = sample(secs, 100, 200000, [&] {
      gOp.key = keyName(pick(rng));
      return h.timedFetch("/get");
    });
    figures.push_back(figure("get", "get (one event per get)", gets,
                             "random key of " + std::to_string(options.keys)));

    auto getMany = sample(secs / 2, 20, 10000, [&] {
      return h.timedFetch("/get-many") / options.keys;
    });
    figures.push_back(figure("get_in_event", "  get, " + std::to_string(options.keys) + " in one event (per get)",
                             getMany, "the storage call alone: the event's own cost spread over the gets"));

    auto lists = sample(secs, 50, 100000, [&] { return h.timedFetch("/list"); });
    figures.push_back(figure("list_1000", "list of " + std::to_string(options.keys) + " keys", lists,
                             "list() with no options, values of " +
                                 std::to_string(options.valueBytes) + " bytes"));

    // Rehydration: the instance and its database handle are gone; the next event constructs
    // the object and its first storage read opens the database again.
    auto rehydrate = sample(secs, 50, 20000, [&] {
      h.runtime->evictNow(h.slot());
      gOp.key = keyName(pick(rng));
      return h.timedFetch("/get");
    });
    figures.push_back(figure("rehydrate", "rehydrate (construct + first read)", rehydrate,
                             "evictNow() then one event that reads one key"));

    auto construct = sample(secs / 2, 50, 20000, [&] {
      h.runtime->evictNow(h.slot());
      return h.timedFetch("/noop");
    });
    figures.push_back(figure("rehydrate_no_storage", "  of which: construct, no storage", construct,
                             "evictNow() then one event that does not touch storage"));

    // The database open alone, as the runtime does it on the first storage call.
    h.runtime->evictNow(h.slot());
    std::string path = dir.path() + "/" + kStoreClass + "/" + idFromName(kStoreClass, kObjectName) + ".sqlite";
    storage::OpenOptions openOptions;
    openOptions.durability = durability;
    auto opens = sample(secs / 2, 50, 20000, [&] {
      auto start = SteadyClock::now();
      auto db = storage::ObjectDatabase::open(path, openOptions);
      auto end = SteadyClock::now();
      if (!db.isOk()) throw std::runtime_error("open: " + db.status().toString());
      return microsBetween(start, end);
    });
    figures.push_back(figure("open_database", "  of which: open the database", opens,
                             "ObjectDatabase::open on the existing file (WAL, pragmas, schema check)"));
  }
  return Json{{"figures", figures}};
}

}  // namespace dohost::bench
