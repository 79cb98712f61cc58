// A user's own object class, built outside the source tree against an installed libdohost
// (test_install.py): with -DGREETER_MAIN as a host of its own (pkg-config --cflags --libs
// dohost), without it as a plugin for the installed dohost (pkg-config --cflags dohost).
#include <memory>
#include <string>

#include "dohost/dohost.h"
#include "dohost/host.h"

namespace {

// Greets each caller by name and counts greetings in SQL, so the count survives restarts.
class Greeter final : public dohost::DurableObject {
 public:
  explicit Greeter(dohost::ObjectState& state) : state_(state) {
    state_.storage().sql().exec("CREATE TABLE IF NOT EXISTS greetings (at INTEGER NOT NULL)");
  }

  dohost::Response fetch(dohost::Request& request) override {
    auto& sql = state_.storage().sql();
    sql.exec("INSERT INTO greetings (at) VALUES (?)", dohost::toUnixMillis(state_.now()));
    int64_t n = sql.exec("SELECT count(*) FROM greetings").one().integer(0);
    return dohost::Response::text(200, "hello " + state_.name().value_or("?") + " #" +
                                           std::to_string(n) + "\n");
  }

 private:
  dohost::ObjectState& state_;
};

// /greet/<name> goes to the object <name>.
class GreeterApp final : public dohost::App {
 public:
  dohost::Route route(dohost::Request& request) override {
    const std::string& p = request.path();
    if (p.rfind("/greet/", 0) == 0 && p.size() > 7) return dohost::Route::toName("Greeter", p.substr(7));
    return dohost::Route::respond(dohost::Response::text(404, "not found\n"));
  }
};

void registerGreeter(dohost::Registry& registry) {
  registry.addClass<Greeter>("Greeter");
  registry.addApp({"greeter", "127.0.0.1:8801",
                   [](const dohost::AppSettings&) { return std::make_unique<GreeterApp>(); }});
}

}  // namespace

#ifdef GREETER_MAIN
int main(int argc, char** argv) {
  dohost::Registry registry;
  registerGreeter(registry);
  return dohost::hostMain(argc, argv, registry);
}
#else
extern "C" void dohost_register(dohost::Registry& registry) { registerGreeter(registry); }
#endif
