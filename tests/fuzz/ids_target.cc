// Fuzz target ids: the id and name parsers every request goes through. The input is an object
// id or name as a client writes it (in an admin path, a route, a query): idFromString accepts
// exactly the ids idFromName makes for that class, in any case; percent-decoding and query
// parameters take any bytes.
#include "harness.h"
#include "objects/channel_common.h"

namespace {

using namespace dohost;

bool isLowerHexId(std::string_view id) {
  if (id.size() != 64) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  for (std::string_view cls :
       {"Broadcaster", "WebSocketBridge", "HopeFlowRealtime", "ChannelWebSocket"}) {
    std::string error;
    std::optional<std::string> id = idFromString(cls, input, &error);
    if (id) {
      if (!isLowerHexId(*id)) fuzz::fail("idFromString gave a non-normalized id");
      if (idFromString(cls, *id) != id) fuzz::fail("a normalized id is not valid again");
    } else if (error.empty()) {
      fuzz::fail("idFromString refused without a reason");
    }
    std::string named = idFromName(cls, input);
    if (!isLowerHexId(named) || idFromString(cls, named) != named) {
      fuzz::fail("idFromName made an id idFromString refuses");
    }
  }

  std::string decoded = percentDecode(input, false);
  if (decoded.size() > input.size()) fuzz::fail("percent-decoding grew the text");
  std::string query;
  appendQueryFragment(query, "id=" + std::string(input));
  Request request("GET", "/", query + "&" + std::string(input));
  if (request.queryParam("id") != std::string(input)) {
    fuzz::fail("a query parameter did not come back as sent");
  }
  objects::parseInt(input);
  objects::parseInt(objects::trim(input));
  return 0;
}
