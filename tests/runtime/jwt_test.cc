#include <doctest/doctest.h>

#include "dohost/jwt.h"

namespace dohost {

namespace {
const TimePoint kNow = fromUnixMillis(1'800'000'000'000);
}

TEST_CASE("an HS256 token signed with the secret verifies and returns its payload") {
  std::string token = signJwtHs256(R"({"userId":"u1"})", "secret");
  std::string error;
  auto payload = verifyJwtHs256(token, "secret", kNow, &error);
  REQUIRE(payload);
  CHECK(*payload == R"({"userId":"u1"})");
}

TEST_CASE("tokens are refused for each kind of fault") {
  std::string error;
  std::string good = signJwtHs256(R"({"userId":"u1"})", "secret");
  CHECK_FALSE(verifyJwtHs256(good, "other", kNow, &error));
  CHECK(error == "invalid signature");
  CHECK_FALSE(verifyJwtHs256("abc", "secret", kNow, &error));
  CHECK(error == "malformed token");
  CHECK_FALSE(verifyJwtHs256("a.b.c.d", "secret", kNow, &error));
  CHECK(error == "malformed token");

  std::string none = base64UrlEncode(R"({"alg":"none"})") + "." +
                     base64UrlEncode(R"({"userId":"u1"})") + ".";
  CHECK_FALSE(verifyJwtHs256(none, "secret", kNow, &error));
  CHECK(error == "unsupported algorithm: only HS256 is accepted");

  std::string expired = signJwtHs256(R"({"userId":"u1","exp":1700000000})", "secret");
  CHECK_FALSE(verifyJwtHs256(expired, "secret", kNow, &error));
  CHECK(error == "token expired");
  std::string future = signJwtHs256(R"({"userId":"u1","nbf":1900000000})", "secret");
  CHECK_FALSE(verifyJwtHs256(future, "secret", kNow, &error));
  CHECK(error == "token not yet valid");
  std::string valid = signJwtHs256(R"({"userId":"u1","nbf":1700000000,"exp":1900000000})", "secret");
  CHECK(verifyJwtHs256(valid, "secret", kNow, &error));

  // A payload changed after signing no longer matches its signature.
  std::string tampered = good;
  size_t dot = tampered.find('.');
  tampered.replace(dot + 1, tampered.find('.', dot + 1) - dot - 1,
                   base64UrlEncode(R"({"userId":"admin"})"));
  CHECK_FALSE(verifyJwtHs256(tampered, "secret", kNow, &error));
  CHECK(error == "invalid signature");
}

TEST_CASE("base64url round-trips every length") {
  std::string bytes;
  for (int i = 0; i < 40; ++i) {
    CHECK(base64UrlDecode(base64UrlEncode(bytes)) == bytes);
    bytes.push_back(static_cast<char>(i * 37));
  }
  CHECK_FALSE(base64UrlDecode("a"));
  CHECK_FALSE(base64UrlDecode("ab*d"));
}

}  // namespace dohost
