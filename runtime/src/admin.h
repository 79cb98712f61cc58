// The admin API (GET /metrics, /objects, /objects/{class}/{name-or-id}, POST .../evict and
// .../alarm) answered from the runtime's state.
#pragma once

#include <string>
#include <string_view>

#include "dohost/host.h"
#include "dohost/http.h"
#include "runtime.h"

namespace dohost {

Response handleAdmin(Runtime& runtime, const HostOptions& options, Request& request);
std::string prometheusMetrics(Runtime& runtime);
std::string jsonError(std::string_view message);

// Storage fault injection (tests): DOHOST_TEST_FAULTS installs the fault VFS with its rules
// (bad rules: the error); then GET/PUT/DELETE /faults read, replace and clear them.
Status enableTestFaults();
Response handleFaults(Request& request);

}  // namespace dohost
