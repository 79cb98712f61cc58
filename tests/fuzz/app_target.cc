// The fuzz targets of one bundled app, chosen at build time (tests/fuzz/meson.build):
// DOHOST_FUZZ_APP names the app; DOHOST_FUZZ_SCRIPT 0 reads the input as one HTTP request to
// its router (http_<app>), 1 as a script of WebSocket and HTTP steps (ws_<app>; see
// docs/fuzzing.md).
#include "harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dohost::fuzz;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  Host host;
#if DOHOST_FUZZ_SCRIPT
  runScript(host, DOHOST_FUZZ_APP, input);
#else
  std::optional<ParsedRequest> parsed = parseRequest(input);
  if (!parsed) return 0;
  dohost::App& app = *host.app(DOHOST_FUZZ_APP);
  if (parsed->upgrade) {
    if (Client* client = host.upgrade(app, std::move(parsed->request))) host.clientDrop(*client);
  } else {
    host.http(app, std::move(parsed->request));
  }
#endif
  return 0;
}
