#include "dohost/json.h"

namespace dohost {
namespace {

JsonLimits gLimits;

}  // namespace

const JsonLimits& jsonLimits() { return gLimits; }

void setJsonLimits(const JsonLimits& limits) { gLimits = limits; }

}  // namespace dohost
