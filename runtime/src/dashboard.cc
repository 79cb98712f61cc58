#include "dashboard.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <string>

#include "dashboard_page.h"

namespace dohost {
namespace {

// The Content-Security-Policy of the page: its one inline script is allowed by its SHA-256
// (so nothing injected into the page could run), requests go to this listener only.
std::string pagePolicy() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(kDashboardScript, sizeof kDashboardScript - 1, digest, &size, EVP_sha256(), nullptr);
  unsigned char base64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
  EVP_EncodeBlock(base64, digest, static_cast<int>(size));
  return std::string("default-src 'none'; script-src 'sha256-") +
         reinterpret_cast<const char*>(base64) +
         "'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; "
         "form-action 'self'; frame-ancestors 'none'";
}

Response page(int status, std::string body, const std::string& policy) {
  return Response(status, std::move(body), "text/html; charset=utf-8")
      .setHeader("content-security-policy", policy)
      .setHeader("cache-control", "no-store")
      .setHeader("referrer-policy", "no-referrer")
      .setHeader("x-content-type-options", "nosniff");
}

bool tokenMatches(const HostOptions& options, const Request& request) {
  if (options.adminToken.empty()) return true;
  std::string got = request.bearerToken().value_or("");
  return got.size() == options.adminToken.size() &&
         CRYPTO_memcmp(got.data(), options.adminToken.data(), got.size()) == 0;
}

}  // namespace

bool isDashboardPath(std::string_view path) { return path == "/ui" || path == "/ui/"; }

Response handleDashboard(const HostOptions& options, const Request& request) {
  if (request.method() != "GET") {
    return Response::json(405, R"({"error":"use GET"})");
  }
  if (!tokenMatches(options, request)) {
    static const std::string kLoginPolicy =
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'";
    std::string body = kDashboardLogin;
    if (request.queryParam("token")) {
      body.replace(body.find("<!--message-->"), 14, "<p class=\"wrong\">That token is not the admin token.</p>");
    }
    return page(401, std::move(body), kLoginPolicy).setHeader("www-authenticate", "Bearer");
  }
  static const std::string kPolicy = pagePolicy();
  static const std::string kPage = std::string(kDashboardHead) + "<script>" + kDashboardScript +
                                   "</script>\n</body>\n</html>\n";
  return page(200, kPage, kPolicy);
}

}  // namespace dohost
