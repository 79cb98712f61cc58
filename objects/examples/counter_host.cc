// An example of a user's own host: one class of their own, its app, and the bundled apps,
// linked against libdohost (meson dependency dohost_dep). docs/api.md walks through it.
#include <nlohmann/json.hpp>

#include "dohost/dohost.h"
#include "dohost/host.h"
#include "objects/register_all.h"

namespace {

// Counts visits per name in SQL; the count survives eviction and restarts.
class Counter final : public dohost::DurableObject {
 public:
  explicit Counter(dohost::ObjectState& state) : state_(state) {
    state_.storage().sql().exec("CREATE TABLE IF NOT EXISTS visits (at INTEGER NOT NULL)");
  }

  dohost::Response fetch(dohost::Request& request) override {
    auto& sql = state_.storage().sql();
    sql.exec("INSERT INTO visits (at) VALUES (?)", dohost::toUnixMillis(state_.now()));
    int64_t n = sql.exec("SELECT count(*) FROM visits").one().integer(0);
    nlohmann::json body{{"name", state_.name().value_or("")}, {"visits", n}};
    return dohost::Response::json(200, body.dump());
  }

 private:
  dohost::ObjectState& state_;
};

// /counter/<name> goes to the object <name>; anything else is answered here.
class CounterApp final : public dohost::App {
 public:
  dohost::Route route(dohost::Request& request) override {
    const std::string& p = request.path();
    if (p.rfind("/counter/", 0) == 0 && p.size() > 9) {
      return dohost::Route::toName("Counter", p.substr(9));
    }
    return dohost::Route::respond(dohost::Response::json(404, R"({"error":"not found"})"));
  }
};

}  // namespace

int main(int argc, char** argv) {
  dohost::Registry registry;
  dohost::objects::registerAll(registry);
  registry.addClass<Counter>("Counter");
  registry.addApp({"counter", "127.0.0.1:8800",
                   [](const dohost::AppSettings&) { return std::make_unique<CounterApp>(); }});
  return dohost::hostMain(argc, argv, registry);
}
