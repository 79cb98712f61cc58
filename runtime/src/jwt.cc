#include "dohost/jwt.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "dohost/json.h"

namespace dohost {
namespace {

std::string hmacSha256(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

}  // namespace

std::string base64UrlEncode(std::string_view in) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out.push_back(table[(v >> s) & 63]);
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out.push_back(table[(v >> 18) & 63]);
    out.push_back(table[(v >> 12) & 63]);
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out.push_back(table[(v >> 18) & 63]);
    out.push_back(table[(v >> 12) & 63]);
    out.push_back(table[(v >> 6) & 63]);
  }
  return out;
}

std::optional<std::string> base64UrlDecode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
  };
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  if (in.size() % 4 == 1) return std::nullopt;
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

std::optional<std::string> verifyJwtHs256(std::string_view token, std::string_view secret,
                                          TimePoint now, std::string* error) {
  auto fail = [&](const char* why) -> std::optional<std::string> {
    if (error) *error = why;
    return std::nullopt;
  };
  size_t dot1 = token.find('.');
  size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return fail("malformed token");
  }
  auto header = base64UrlDecode(token.substr(0, dot1));
  auto payload = base64UrlDecode(token.substr(dot1 + 1, dot2 - dot1 - 1));
  auto signature = base64UrlDecode(token.substr(dot2 + 1));
  if (!header || !payload || !signature) return fail("malformed token");
  nlohmann::json h = parseJson(*header).value_or(nlohmann::json());
  if (!h.is_object() || !h.contains("alg") || h["alg"] != "HS256") {
    return fail("unsupported algorithm: only HS256 is accepted");
  }
  std::string expected = hmacSha256(secret, token.substr(0, dot2));
  if (signature->size() != expected.size() ||
      CRYPTO_memcmp(signature->data(), expected.data(), expected.size()) != 0) {
    return fail("invalid signature");
  }
  nlohmann::json p = parseJson(*payload).value_or(nlohmann::json());
  if (!p.is_object()) return fail("malformed payload");
  double seconds = static_cast<double>(toUnixMillis(now)) / 1000.0;
  if (p.contains("exp")) {
    if (!p["exp"].is_number()) return fail("malformed exp claim");
    if (seconds >= p["exp"].get<double>()) return fail("token expired");
  }
  if (p.contains("nbf")) {
    if (!p["nbf"].is_number()) return fail("malformed nbf claim");
    if (seconds < p["nbf"].get<double>()) return fail("token not yet valid");
  }
  return *payload;
}

std::optional<std::string> verifyRequestJwtHs256(const Request& request, std::string_view secret,
                                                 TimePoint now, std::string* error) {
  std::optional<std::string> token = request.bearerToken();
  if (!token) {
    if (error) *error = "missing token (Authorization: Bearer <JWT> or ?token=<JWT>)";
    return std::nullopt;
  }
  return verifyJwtHs256(*token, secret, now, error);
}

std::string signJwtHs256(std::string_view payloadJson, std::string_view secret) {
  std::string input = base64UrlEncode(R"({"alg":"HS256","typ":"JWT"})") + "." +
                      base64UrlEncode(payloadJson);
  return input + "." + base64UrlEncode(hmacSha256(secret, input));
}

}  // namespace dohost
