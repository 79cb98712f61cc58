// Fuzz target link: one message of the inter-host link, as another host (or anything that
// reached the link's port) sends it. decode() must refuse or accept without crashing; what it
// accepts must re-encode to exactly the same bytes (every frame has one encoding) and decode
// again to an equal frame, within the same limits. The first byte picks the limits: odd
// ones are small (so the seeds hit each bound), even ones the defaults; the rest is the frame.
#include <string>
#include <string_view>

#include "cluster/link_protocol.h"
#include "harness.h"

namespace {

using namespace dohost;
using namespace dohost::cluster;

LinkLimits limitsFor(uint8_t selector) {
  LinkLimits limits;
  if ((selector & 1) == 0) return limits;
  limits.maxFrameBytes = 4096;
  limits.maxBodyBytes = 64;
  limits.maxPayloadBytes = 64;
  limits.maxHeaders = 4;
  limits.maxHeaderBytes = 64;
  limits.maxFieldBytes = 64;  // an object id still fits
  limits.maxSocketsPerSend = 8;
  limits.maxTags = 3;
  limits.maxTagBytes = 16;
  limits.maxAttachmentBytes = 32;
  limits.maxAutoResponseBytes = 16;
  limits.maxCloseReasonBytes = 16;
  return limits;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const LinkLimits limits = limitsFor(data[0]);
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);

  Result<LinkFrame> decoded = decode(input, limits);
  if (!decoded.isOk()) {
    const std::string& why = decoded.status().message();
    if (why.empty()) fuzz::fail("a refusal without a reason");
    if (why.rfind("link frame", 0) != 0) fuzz::fail("a refusal that does not say it is a link frame: " + why);
    return 0;
  }
  const LinkFrame& frame = decoded.value();
  if (const Send* send = std::get_if<Send>(&frame); send != nullptr && send->frame == nullptr) {
    fuzz::fail("a decoded Send without its Frame");
  }
  std::string again = encode(frame);
  if (again != input) fuzz::fail(std::string("a ") + kindName(kindOf(frame)) + " re-encodes differently");
  Result<LinkFrame> twice = decode(again, limits);
  if (!twice.isOk()) fuzz::fail("a re-encoded frame is refused: " + twice.status().message());
  if (!(twice.value() == frame)) fuzz::fail(std::string("a ") + kindName(kindOf(frame)) + " decodes differently the second time");
  return 0;
}
