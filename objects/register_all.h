// Registers the bundled object classes and their apps.
#pragma once

#include "dohost/registry.h"

namespace dohost::objects {

void registerBroadcaster(Registry& registry);      // broadcaster.cc
void registerWebSocketBridge(Registry& registry);  // websocket_bridge.cc
void registerHopeFlow(Registry& registry);         // hopeflow_realtime.cc
void registerChannels(Registry& registry);         // channel_websocket.cc
void registerGuide(Registry& registry);            // guide_app.cc

inline void registerAll(Registry& registry) {
  registerBroadcaster(registry);
  registerWebSocketBridge(registry);
  registerHopeFlow(registry);
  registerChannels(registry);
  registerGuide(registry);
}

}  // namespace dohost::objects
