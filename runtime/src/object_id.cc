#include "dohost/object_id.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <array>
#include <stdexcept>

namespace dohost {
namespace {

using Bytes16 = std::array<unsigned char, 16>;

// The per-class key: SHA-256 of a fixed label and the class name.
std::array<unsigned char, 32> classKey(std::string_view className) {
  std::string label = "dohost-namespace:";
  label.append(className);
  std::array<unsigned char, 32> key{};
  SHA256(reinterpret_cast<const unsigned char*>(label.data()), label.size(), key.data());
  return key;
}

Bytes16 mac16(std::string_view className, const unsigned char* data, size_t len) {
  auto key = classKey(className);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int outLen = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data, len, out, &outLen) ==
      nullptr) {
    throw std::runtime_error("HMAC-SHA256 failed");
  }
  Bytes16 r{};
  std::copy(out, out + 16, r.begin());
  return r;
}

std::string hex(const Bytes16& a, const Bytes16& b) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  s.reserve(64);
  for (const Bytes16* part : {&a, &b}) {
    for (unsigned char c : *part) {
      s.push_back(digits[c >> 4]);
      s.push_back(digits[c & 15]);
    }
  }
  return s;
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string idFromName(std::string_view className, std::string_view name) {
  Bytes16 head = mac16(className, reinterpret_cast<const unsigned char*>(name.data()), name.size());
  return hex(head, mac16(className, head.data(), head.size()));
}

std::string newUniqueId(std::string_view className) {
  Bytes16 head{};
  if (RAND_bytes(head.data(), static_cast<int>(head.size())) != 1) {
    throw std::runtime_error("no randomness for newUniqueId");
  }
  return hex(head, mac16(className, head.data(), head.size()));
}

std::optional<std::string> idFromString(std::string_view className, std::string_view text,
                                        std::string* error) {
  auto fail = [&](const char* why) -> std::optional<std::string> {
    if (error) *error = why;
    return std::nullopt;
  };
  if (text.size() != 64) return fail("Invalid object id: must be 64 hex digits");
  Bytes16 head{}, tail{};
  for (size_t i = 0; i < 32; ++i) {
    int hi = hexValue(text[2 * i]), lo = hexValue(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return fail("Invalid object id: must be 64 hex digits");
    (i < 16 ? head[i] : tail[i - 16]) = static_cast<unsigned char>(hi * 16 + lo);
  }
  if (mac16(className, head.data(), head.size()) != tail) {
    return fail("Object id is not valid for this class");
  }
  return hex(head, tail);
}

}  // namespace dohost
