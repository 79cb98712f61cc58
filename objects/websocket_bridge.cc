#include "objects/register_all.h"

namespace dohost::objects {

// Not yet implemented: registers nothing, so the host starts without this app.
void registerWebSocketBridge(Registry& registry) {}

}  // namespace dohost::objects
