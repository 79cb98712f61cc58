// Alarm buckets (scale-out.md 5.6): every object key falls in one of 1024 buckets, and each
// bucket belongs to the live host with the highest hash(bucket, hostId) (rendezvous hashing).
// When a host leaves, only its buckets move (each to its second choice); when one joins, it
// takes about 1/N of the buckets, from every other host.
//
// The hash is FNV-1a followed by a 64-bit finalizer, fixed here so that every host of a
// cluster computes the same owners whatever its compiler or standard library.
//
// Thread: any; pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace dohost::cluster {

inline constexpr uint32_t kAlarmBuckets = 1024;

// The bucket of an object key ("<class>/<id64hex>"), in [0, kAlarmBuckets).
uint32_t bucketOf(std::string_view objectKey);
// The host of `liveHostIds` that owns `bucket`; nullopt when there is none. The order of the
// list does not matter; ties (only for equal ids) go to the smaller id.
std::optional<std::string> ownerOfBucket(uint32_t bucket, std::span<const std::string> liveHostIds);

}  // namespace dohost::cluster
