// The admin API's /faults: storage fault injection for tests, present only when the host was
// started with DOHOST_TEST_FAULTS (docs/operations.md, "Fault injection").
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "admin.h"
#include "dohost/log.h"
#include "dohost/storage/fault_vfs.h"

namespace dohost {

Status enableTestFaults() {
  const char* spec = std::getenv("DOHOST_TEST_FAULTS");
  if (spec == nullptr) return Status::ok();
  auto rules = storage::faults::parse(spec);
  if (!rules.isOk()) return rules.status();
  if (Status s = storage::faults::install(); !s.isOk()) return s;
  storage::faults::arm(std::move(rules).value());
  logLine(LogLevel::kWarn, "storage fault injection is on (DOHOST_TEST_FAULTS): a test facility");
  return Status::ok();
}

Response handleFaults(Request& request) {
  namespace faults = storage::faults;
  if (!faults::installed()) {
    return Response::json(404, jsonError("fault injection is off (start the host with DOHOST_TEST_FAULTS)"));
  }
  const std::string& method = request.method();
  if (method == "PUT") {
    auto rules = faults::parse(request.body());
    if (!rules.isOk()) return Response::json(400, jsonError(rules.status().message()));
    faults::arm(std::move(rules).value());
    logLine(LogLevel::kWarn, "storage faults armed: " + request.body());
  } else if (method == "DELETE") {
    faults::clear();
    logLine(LogLevel::kWarn, "storage faults cleared");
  } else if (method != "GET") {
    return Response::json(405, jsonError("use GET, PUT or DELETE"));
  }
  nlohmann::json list = nlohmann::json::array();
  for (const faults::Rule& r : faults::rules()) {
    list.push_back({{"rule", faults::describe(r)}, {"seen", r.seen}, {"failed", r.failed}});
  }
  return Response::json(200, nlohmann::json{{"rules", list}}.dump());
}

}  // namespace dohost
