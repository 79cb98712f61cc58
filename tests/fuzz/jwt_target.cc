// Fuzz target jwt: the input is a token (or any bytes) as a client sends it. It is verified as
// given, from an Authorization header and from ?token= (Request::bearerToken); its payload part
// and the input itself are also signed with the secret, so the claim checks behind the
// signature run too. base64url must round-trip.
#include <nlohmann/json.hpp>

#include "harness.h"

namespace {

using namespace dohost;

const TimePoint kNow = fromUnixMillis(1'800'000'000'000);

void verify(std::string_view token) {
  std::string error;
  std::optional<std::string> payload = verifyJwtHs256(token, fuzz::kJwtSecret, kNow, &error);
  if (!payload && error.empty()) fuzz::fail("a refused token without a reason");
  if (payload && !nlohmann::json::accept(*payload))
    fuzz::fail("an accepted token whose payload is not JSON");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  verify(input);

  for (std::string header : {"Bearer " + std::string(input), std::string(input)}) {
    Request request("GET", "/", "", {{"authorization", header}});
    std::string error;
    auto payload = verifyRequestJwtHs256(request, fuzz::kJwtSecret, kNow, &error);
    if (!payload && error.empty()) fuzz::fail("a refused request without a reason");
  }
  std::string query;
  appendQueryFragment(query, "token=" + std::string(input));
  Request byQuery("GET", "/", query);
  if (std::optional<std::string> token = byQuery.bearerToken(); token && *token != input) {
    fuzz::fail("?token= did not come back as sent");
  }

  // The claims behind a valid signature: the input's payload part, and the input itself.
  size_t dot1 = input.find('.');
  size_t dot2 = dot1 == std::string_view::npos ? dot1 : input.find('.', dot1 + 1);
  if (dot2 != std::string_view::npos) {
    if (auto claims = base64UrlDecode(input.substr(dot1 + 1, dot2 - dot1 - 1))) {
      verify(signJwtHs256(*claims, fuzz::kJwtSecret));
    }
  }
  std::string signedInput = signJwtHs256(input, fuzz::kJwtSecret);
  std::string error;
  auto payload = verifyJwtHs256(signedInput, fuzz::kJwtSecret, kNow, &error);
  if (payload && *payload != input) fuzz::fail("the payload of a signed token changed");
  if (!payload && error == "invalid signature")
    fuzz::fail("a token signed with the secret was refused as forged");

  std::optional<std::string> decoded = base64UrlDecode(input);
  if (decoded && base64UrlDecode(base64UrlEncode(*decoded)) != decoded) {
    fuzz::fail("base64url does not round-trip");
  }
  if (base64UrlDecode(base64UrlEncode(input)) != input) fuzz::fail("base64url does not round-trip");
  return 0;
}
