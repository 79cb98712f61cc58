// HS256 JSON Web Tokens, for apps that authenticate their clients (HopeFlow, channels).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "dohost/http.h"
#include "dohost/time.h"

namespace dohost {

// Verifies a compact JWS (header.payload.signature): alg must be exactly HS256 (anything else,
// "none" included, is refused), the signature is compared in constant time, and `exp` / `nbf`
// are honoured when present (numbers, seconds since the epoch). Returns the payload JSON text,
// or nullopt with `error` set to a short reason suitable for a 401 body.
std::optional<std::string> verifyJwtHs256(std::string_view token, std::string_view secret,
                                          TimePoint now, std::string* error);

// The request's token (Request::bearerToken: `Authorization: Bearer` or `?token=`), verified as
// above; a missing token is an error too.
std::optional<std::string> verifyRequestJwtHs256(const Request& request, std::string_view secret,
                                                 TimePoint now, std::string* error);

// Builds an HS256 token for `payloadJson` (for tests, tools and the bench).
std::string signJwtHs256(std::string_view payloadJson, std::string_view secret);

// Base64url without padding.
std::string base64UrlEncode(std::string_view bytes);
std::optional<std::string> base64UrlDecode(std::string_view text);

}  // namespace dohost
