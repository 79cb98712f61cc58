#include "cluster/rendezvous.h"

namespace dohost::cluster {
namespace {

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

uint64_t fnv1a(std::string_view bytes, uint64_t h = kFnvOffset) {
  for (char c : bytes) {
    h ^= static_cast<uint8_t>(c);
    h *= kFnvPrime;
  }
  return h;
}

// A strong 64-bit mix (the finalizer of SplitMix64), so that nearby inputs score apart.
uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

uint64_t score(uint32_t bucket, std::string_view hostId) {
  return mix(fnv1a(hostId) ^ mix(uint64_t{bucket} + 0x9e3779b97f4a7c15ULL));
}

}  // namespace

uint32_t bucketOf(std::string_view objectKey) {
  return static_cast<uint32_t>(mix(fnv1a(objectKey)) % kAlarmBuckets);
}

std::optional<std::string> ownerOfBucket(uint32_t bucket,
                                         std::span<const std::string> liveHostIds) {
  const std::string* best = nullptr;
  uint64_t bestScore = 0;
  for (const std::string& host : liveHostIds) {
    uint64_t s = score(bucket, host);
    if (best == nullptr || s > bestScore || (s == bestScore && host < *best)) {
      best = &host;
      bestScore = s;
    }
  }
  if (best == nullptr) return std::nullopt;
  return *best;
}

}  // namespace dohost::cluster
