#include <doctest/doctest.h>

#include <string>

#include "dohost/json.h"
#include "dohost/jwt.h"
#include "toml_depth.h"

namespace dohost {
namespace {

using nlohmann::json;

std::string nested(size_t depth, const std::string& inner = "1") {
  return std::string(depth, '[') + inner + std::string(depth, ']');
}

std::string nestedObjects(size_t depth) {
  std::string s;
  for (size_t i = 0; i < depth; ++i) s += R"({"k":)";
  s += "null";
  return s + std::string(depth, '}');
}

}  // namespace

TEST_CASE("parseJson builds the same value as nlohmann's parser") {
  for (const char* text :
       {"null", "true", "false", "0", "-7", "18446744073709551615", "-9223372036854775808",
        "1.5", "-0.0", "1e308", "\"a\\u00e9\\n\"", "[]", "{}", "[1,[2,[3]],{\"a\":[]}]",
        R"({"b":1,"a":{"c":[true,null,"x"]},"e":""})", " \t\n[ 1 , 2 ]\n"}) {
    CAPTURE(text);
    std::optional<json> parsed = parseJson(text);
    REQUIRE(parsed);
    CHECK(*parsed == json::parse(text));
  }
}

TEST_CASE("parseJson keeps the order of members in an ordered_json and the last duplicate") {
  auto parsed = parseJson<nlohmann::ordered_json>(R"({"z":1,"a":2,"m":{"y":1,"b":2},"z":3})");
  REQUIRE(parsed);
  CHECK(parsed->dump() == R"({"z":3,"a":2,"m":{"y":1,"b":2}})");
  auto plain = parseJson(R"({"a":1,"a":2})");
  REQUIRE(plain);
  CHECK((*plain)["a"] == 2);
}

TEST_CASE("nesting up to the limit is read; one level more is refused before any tree is built") {
  JsonLimits limits{8};
  CHECK(parseJson(nested(8), limits));
  CHECK(parseJson(nestedObjects(8), limits));
  JsonError error;
  CHECK_FALSE(parseJson(nested(9), limits, &error));
  CHECK(error.kind == JsonError::Kind::kTooDeep);
  CHECK(error.message == "JSON nested deeper than 8 levels");
  CHECK_FALSE(parseJson(nestedObjects(9), limits, &error));
  CHECK(error.kind == JsonError::Kind::kTooDeep);
  // Mixed, and deep only in a later member.
  CHECK_FALSE(parseJson(R"({"a":1,"b":)" + nested(8) + "}", limits));
  CHECK(parseJson(R"({"a":1,"b":)" + nested(7) + "}", limits));
  // Width is not depth.
  std::string wide = "[";
  for (int i = 0; i < 10000; ++i) wide += "[1],";
  wide += "[]]";
  auto parsed = parseJson(wide, limits);
  REQUIRE(parsed);
  CHECK(parsed->size() == 10001);
}

TEST_CASE("nesting a million deep is refused at once, not parsed") {
  JsonError error;
  CHECK_FALSE(parseJson(nested(1'000'000), JsonLimits{}, &error));
  CHECK(error.kind == JsonError::Kind::kTooDeep);
  CHECK(error.message == "JSON nested deeper than 64 levels");
  // Unbalanced too: the limit is met before the missing brackets would be.
  CHECK_FALSE(parseJson(std::string(1'000'000, '['), JsonLimits{}, &error));
  CHECK(error.kind == JsonError::Kind::kTooDeep);
}

TEST_CASE("the default limit is the process-wide setting") {
  JsonLimits saved = jsonLimits();
  CHECK(saved.maxDepth == kDefaultMaxJsonDepth);
  CHECK(parseJson(nested(64)));
  CHECK_FALSE(parseJson(nested(65)));
  setJsonLimits(JsonLimits{3});
  CHECK(parseJson(nested(3)));
  CHECK_FALSE(parseJson(nested(4)));
  setJsonLimits(saved);
  CHECK(parseJson(nested(64)));
}

TEST_CASE("a number a double cannot hold is refused, not turned into null") {
  JsonError error;
  for (std::string text : {std::string(100'000, '9'), std::string("1e400"), std::string("-1e400"),
                           "[1, {\"n\": " + std::string(400, '9') + "}]"}) {
    CAPTURE(text.substr(0, 30));
    CHECK_FALSE(parseJson(text, JsonLimits{}, &error));
    CHECK(error.kind == JsonError::Kind::kNumberOutOfRange);
    CHECK(error.message == "JSON number out of range (beyond what a double holds)");
  }
  // Integers beyond 64 bits that a double holds, and long fractions, become doubles as in
  // JavaScript.
  auto big = parseJson("123456789012345678901234567890");
  REQUIRE(big);
  CHECK(big->is_number_float());
  CHECK(parseJson("0." + std::string(100'000, '1')));
  CHECK(parseJson("1e-400"));  // underflows to 0, as JSON.parse does
}

TEST_CASE("a 1 MB string comes through intact") {
  std::string big(1'000'000, 'x');
  big[500'000] = '\n';
  std::string text = json(big).dump();
  auto parsed = parseJson(text);
  REQUIRE(parsed);
  CHECK(parsed->get<std::string>() == big);
}

TEST_CASE("syntax errors say where, and leave nothing behind") {
  JsonError error;
  for (const char* text : {"", " ", "[1,]", "{\"a\"}", "nul", "[1] x", "\"abc", "{\"a\":1",
                           "[1] // comment", "\x01", "'a'"}) {
    CAPTURE(text);
    CHECK_FALSE(parseJson(text, JsonLimits{}, &error));
    CHECK(error.kind == JsonError::Kind::kSyntax);
    CHECK(error.message.rfind("invalid JSON at byte ", 0) == 0);
  }
}

TEST_CASE("a token whose header or claims nest too deep is malformed, before or after the signature") {
  std::string error;
  std::string deepClaims = signJwtHs256(R"({"userId":"u","x":)" + nested(64) + "}", "secret");
  CHECK_FALSE(verifyJwtHs256(deepClaims, "secret", fromUnixMillis(0), &error));
  CHECK(error == "malformed payload");
  std::string deepHeader = base64UrlEncode(nested(100'000)) + "." +
                           base64UrlEncode(R"({"userId":"u"})") + ".AAAA";
  CHECK_FALSE(verifyJwtHs256(deepHeader, "secret", fromUnixMillis(0), &error));
  CHECK(error == "unsupported algorithm: only HS256 is accepted");
}

TEST_CASE("TOML nesting: real configs pass, deep dotted keys, headers and inline values do not") {
  CHECK_FALSE(tomlNestingError(R"(data = "./data"
admin = "127.0.0.1:9090"  # a comment [[[[ with brackets
plugins = ["a.so", "b.so"]
weird = "a.b.c.d.e.f.g.h [ { "
multi = """
[x.y.z]
a.b.c = 1
"""
lit = '''a.b'''
"quoted.key.with.dots" = 1.5
[apps.channels]
listen = "0.0.0.0:8789"
nested = {a = {b = [1, 2, {c = 3}]}}
[[arrays.of.tables]]
x = [
  [1, 2],
  [3, 4],
]
)"));
  std::string dotted = "a";
  for (int i = 0; i < 100'000; ++i) dotted += ".a";
  auto error = tomlNestingError(dotted + " = 1\n");
  REQUIRE(error);
  CHECK(*error == "line 1 nests deeper than 128 levels");
  CHECK(tomlNestingError("x = 1\n[" + dotted + "]\n"));
  CHECK(tomlNestingError("x = {" + dotted + " = 1}\n"));
  CHECK(tomlNestingError("x = " + nested(200) + "\n"));
  std::string inlineTables = "x = ";
  for (int i = 0; i < 100; ++i) inlineTables += "{a = ";
  inlineTables += "1" + std::string(100, '}') + "\n";
  CHECK(tomlNestingError(inlineTables));
  // Just inside: 64 dotted segments (each may step through an array of tables: 2 levels).
  std::string key64 = "a";
  for (int i = 1; i < 64; ++i) key64 += ".a";
  CHECK_FALSE(tomlNestingError(key64 + " = 1\n"));
  CHECK(tomlNestingError(key64 + ".a = 1\n"));
  // Dots and brackets in strings and comments are not structure.
  CHECK_FALSE(tomlNestingError("x = \"" + dotted + "\"\ny = '" + std::string(1000, '[') +
                               "'\n# " + dotted + "\n"));
  CHECK_FALSE(tomlNestingError("x = \"\"\"\n" + dotted + "\n\"\"\"\n"));
}

}  // namespace dohost
