#include "dohost/registry.h"

#include <stdexcept>

namespace dohost {

const Clock& App::systemClock() {
  static const SystemClock clock;
  return clock;
}

void Registry::addClass(std::string name, ObjectFactory factory) {
  if (name.empty() || name[0] == '_' || name.find('/') != std::string::npos) {
    throw std::invalid_argument("object class name must be non-empty, without '/' or a leading '_'");
  }
  // A second registration under the same name is a mistake (two plugins, or a plugin and the
  // bundled classes): refuse it rather than let one silently replace the other.
  if (classes_.count(name)) {
    throw std::invalid_argument("object class " + name + " is registered twice");
  }
  classes_.emplace(std::move(name), std::move(factory));
}

void Registry::addApp(AppInfo app) {
  for (AppInfo& a : apps_) {
    if (a.name == app.name) {
      a = std::move(app);
      return;
    }
  }
  apps_.push_back(std::move(app));
}

const ObjectFactory* Registry::findClass(std::string_view name) const {
  auto it = classes_.find(name);
  return it == classes_.end() ? nullptr : &it->second;
}

}  // namespace dohost
