// One valid frame of every link frame kind, filled in enough to exercise each field: used by
// the link protocol tests and to write the fuzz target's seeds.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cluster/link_protocol.h"

namespace dohost::cluster::testing {

inline const std::string kSampleObjectId(64, 'a');

inline std::vector<LinkFrame> sampleFrames() {
  const SocketId socket = makeSocketId(7, 42);
  std::vector<LinkFrame> frames;
  frames.push_back(Hello{"host-a", 1234567, kLinkProtocolVersion, "cluster-secret"});
  frames.push_back(HelloOk{"host-b", 99});
  frames.push_back(Refused{"bad cluster token"});
  frames.push_back(HttpRequest{7, "ChatRoom", kSampleObjectId, "POST", "/rooms/lobby", "user=al%20ice",
                               {{"content-type", "application/json"}, {"x-trace", "1"}},
                               "{\"hello\":1}", "192.0.2.7", false, 0});
  frames.push_back(HttpRequest{8, "ChatRoom", kSampleObjectId, "GET", "/ws", "",
                               {{"upgrade", "websocket"}}, "", "2001:db8::1", true, socket});
  frames.push_back(HttpResponse{7, 201, {{"content-type", "text/plain"}}, "created\n", 0});
  frames.push_back(HttpResponse{8, 101, {}, "", socket});
  frames.push_back(NotOwner{9, "host-c"});
  frames.push_back(SocketMessage{socket, false, "hi there"});
  frames.push_back(SocketMessage{socket, true, std::string("\x00\xff\x01", 3)});
  frames.push_back(Send{{socket, makeSocketId(7, 43), makeSocketId(7, 1ull << 39)},
                        std::make_shared<Frame>("broadcast", false)});
  frames.push_back(Send{{socket}, std::make_shared<Frame>(std::string("\x01\x02", 2), true)});
  frames.push_back(Close{socket, 4000, "kicked"});
  frames.push_back(SocketClosed{socket, 1006, "", false});
  frames.push_back(SocketMeta{socket, {"member", "user:alice"}, std::string("{\"name\":\"alice\"}"),
                              AutoResponse{"ping", "pong"}});
  frames.push_back(SocketMeta{socket, {}, std::nullopt, std::nullopt});
  frames.push_back(Reattach{socket, "ChatRoom", kSampleObjectId, {"member"}, std::string("att"),
                            AutoResponse{"ping", "pong"}, int64_t{1767225600000}});
  frames.push_back(Reattach{socket, "ChatRoom", kSampleObjectId, {}, std::nullopt, std::nullopt,
                            std::nullopt});
  frames.push_back(ReattachResult{socket, true, ""});
  frames.push_back(ReattachResult{socket, false, "not owner"});
  frames.push_back(Ping{0x0123456789abcdefull});
  frames.push_back(Pong{0x0123456789abcdefull});
  frames.push_back(Leaving{"host-a"});
  return frames;
}

}  // namespace dohost::cluster::testing
