// The registry of object classes and apps. Bundled classes and a user's own register the same
// way: in their own main() linked against libdohost, or from a plugin .so loaded with
// `dohost --plugin`, which exports `extern "C" void dohost_register(dohost::Registry&)`.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dohost/durable_object.h"
#include "dohost/http.h"
#include "dohost/object_state.h"
#include "dohost/time.h"

namespace dohost {

using ObjectFactory = std::function<std::unique_ptr<DurableObject>(ObjectState&)>;

// What an app router decides for one request: answer it, or hand it to an object.
struct Route {
  std::optional<Response> answer;
  std::string className;
  std::optional<std::string> name;  // reach the object by name (idFromName) ...
  std::optional<std::string> id;    // ... or by id
  static Route respond(Response r) { Route x; x.answer = std::move(r); return x; }
  static Route toName(std::string cls, std::string name) {
    Route x; x.className = std::move(cls); x.name = std::move(name); return x;
  }
  static Route toId(std::string cls, std::string id) {
    Route x; x.className = std::move(cls); x.id = std::move(id); return x;
  }
};

// Per-app settings from the config file and environment, as strings (jwt_secret, ...).
using AppSettings = std::map<std::string, std::string>;

// An app is a router, like a Worker's fetch(): it looks at each request on its listener.
// Thread: the loop thread. It may change the request (e.g. add headers it verified).
class App {
 public:
  virtual ~App() = default;
  virtual Route route(Request& request) = 0;

  // The host's clock, for what a router decides by time (token expiry, rate windows): the
  // system clock in dohost, the manual clock of a dohost::testing::TestHost. Set by the host
  // before the first route().
  const Clock& clock() const { return *clock_; }

 private:
  friend struct detail::ApiAccess;
  static const Clock& systemClock();
  const Clock* clock_ = &systemClock();
};

using AppFactory = std::function<std::unique_ptr<App>(const AppSettings& settings)>;

struct AppInfo {
  std::string name;
  std::string defaultListen;  // "127.0.0.1:8787"
  AppFactory factory;
};

class Registry {
 public:
  void addClass(std::string name, ObjectFactory factory);
  template <typename T>
  void addClass(std::string name) {
    addClass(std::move(name), [](ObjectState& s) { return std::make_unique<T>(s); });
  }
  void addApp(AppInfo app);

  const ObjectFactory* findClass(std::string_view name) const;
  const std::map<std::string, ObjectFactory, std::less<>>& classes() const { return classes_; }
  const std::vector<AppInfo>& apps() const { return apps_; }

 private:
  std::map<std::string, ObjectFactory, std::less<>> classes_;
  std::vector<AppInfo> apps_;
};

}  // namespace dohost
