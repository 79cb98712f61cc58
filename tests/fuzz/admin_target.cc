// Fuzz target admin: the input is one HTTP request to the admin API (as text, like the http_*
// targets), sent to a host that holds objects of every bundled class in each state: live with
// sockets, evicted with sockets, with alarms and storage.
#include "harness.h"

namespace {

// Builds the objects the requests find (the steps are those of the ws_* targets).
constexpr std::string_view kSetup =
    "@broadcaster\n"
    "U/websocket?type=runtime&projectId=demo\n"
    "U/websocket?type=admin&projectId=demo\n"
    "0{\"type\":\"hello\",\"payload\":{}}\n"
    "@bridge\n"
    "U/websocket?type=runtime&projectId=demo\n"
    "@hopeflow\n"
    "Aalice /\n"
    "@channels\n"
    "Abob /channel/general/websocket\n"
    "3{\"type\":\"message\",\"content\":\"hello\"}\n"
    "E\n"
    "@broadcaster\n"
    "U/websocket?type=data-agent&projectId=live\n";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dohost::fuzz;
  std::optional<ParsedRequest> parsed =
      parseRequest(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!parsed || parsed->upgrade) return 0;  // the admin listener refuses upgrades before routing
  Host host;
  runScript(host, "broadcaster", kSetup);
  host.admin(std::move(parsed->request));
  return 0;
}
