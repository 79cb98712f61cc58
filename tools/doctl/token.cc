// doctl token: signs an HS256 JWT that the bundled apps accept, for trying them out (the
// channels demo page, the README tour). The signing is the runtime's own (dohost/jwt.h).
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "commands.h"
#include "dohost/json.h"
#include "dohost/jwt.h"

namespace doctl {

int runToken(const GlobalOptions& options, const TokenOptions& token) {
  const char* secret = std::getenv(token.secretEnv.c_str());
  if (secret == nullptr || *secret == '\0') {
    throw CliError(kExitUsage, "token: the environment variable " + token.secretEnv +
                                   " holding the secret is not set (see --secret-env)");
  }
  if (token.user.empty()) throw CliError(kExitUsage, "token: --user must not be empty");
  // Every bundled app finds its claims here: channels reads userId (or sub), username and
  // permissions; hopeflow userId; the guide sub (or userId) and name (or username).
  int64_t now = nowMs() / 1000;
  std::string name = token.name.value_or(token.user);
  json claims{{"sub", token.user},   {"userId", token.user}, {"name", name},
              {"username", name},    {"permissions", token.permissions}, {"iat", now}};
  if (token.ttlMs > 0) {
    claims["exp"] = now + static_cast<int64_t>(std::ceil(static_cast<double>(token.ttlMs) / 1000));
  }
  for (const std::string& claim : token.claims) {
    size_t eq = claim.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw CliError(kExitUsage, "token: --claim expects KEY=VALUE, got \"" + claim + "\"");
    }
    // A value that reads as JSON (a number, true, an array...) is that; anything else a string.
    std::string text = claim.substr(eq + 1);
    dohost::JsonError error;
    std::optional<json> value = dohost::parseJson<json>(text, dohost::jsonLimits(), &error);
    if (!value && error.kind != dohost::JsonError::Kind::kSyntax) {
      throw CliError(kExitUsage, "token: --claim " + claim.substr(0, eq) + ": " + error.message);
    }
    claims[claim.substr(0, eq)] = value ? std::move(*value) : json(text);
  }
  std::string jwt = dohost::signJwtHs256(claims.dump(), secret);
  if (options.json) {
    std::string text = json{{"token", jwt}, {"claims", claims}}.dump(2);
    std::printf("%s\n", text.c_str());
  } else {
    std::printf("%s\n", jwt.c_str());
  }
  return 0;
}

}  // namespace doctl
