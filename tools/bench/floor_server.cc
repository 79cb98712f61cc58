#include "floor_server.h"

#include <libwebsockets.h>
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace dohost::bench {
namespace {

// A frame with LWS_PRE bytes of headroom, shared by every connection it goes to.
struct FloorFrame {
  std::string bytes;  // LWS_PRE headroom + payload
  size_t size() const { return bytes.size() - LWS_PRE; }
  unsigned char* payload() { return reinterpret_cast<unsigned char*>(bytes.data()) + LWS_PRE; }
};

struct FloorConn {
  lws* wsi = nullptr;
  size_t slot = 0;        // index in gConns
  bool greeted = false;
  std::string rx;
  std::vector<std::shared_ptr<FloorFrame>> backlog;  // only when a write was left buffered
};

std::vector<FloorConn*> gConns;
const char kGreeting[] = R"({"type":"connected","from":{"type":"system"}})";

bool writeFrame(lws* wsi, FloorFrame& f) {
  return lws_write(wsi, f.payload(), f.size(), LWS_WRITE_TEXT) >= static_cast<int>(f.size());
}

void fanOut(FloorConn& from) {
  auto frame = std::make_shared<FloorFrame>();
  frame->bytes.assign(LWS_PRE, '\0');
  frame->bytes.append(from.rx);
  for (FloorConn* c : gConns) {
    if (c == &from || !c->greeted) continue;
    if (!c->backlog.empty() || lws_partial_buffered(c->wsi)) {
      c->backlog.push_back(frame);
      lws_callback_on_writable(c->wsi);
      continue;
    }
    if (!writeFrame(c->wsi, *frame)) {
      lws_set_timeout(c->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
    }
  }
}

int floorCallback(lws* wsi, lws_callback_reasons reason, void* user, void* in, size_t len) {
  auto* c = static_cast<FloorConn*>(user);
  switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
      new (c) FloorConn();
      c->wsi = wsi;
      c->slot = gConns.size();
      gConns.push_back(c);
      lws_callback_on_writable(wsi);  // the greeting
      return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE: {
      if (!c->greeted) {
        std::string g(LWS_PRE, '\0');
        g.append(kGreeting);
        auto* p = reinterpret_cast<unsigned char*>(g.data()) + LWS_PRE;
        if (lws_write(wsi, p, sizeof kGreeting - 1, LWS_WRITE_TEXT) < 0) return -1;
        c->greeted = true;
        return 0;
      }
      size_t done = 0;
      while (done < c->backlog.size() && !lws_partial_buffered(wsi)) {
        if (!writeFrame(wsi, *c->backlog[done])) return -1;
        ++done;
      }
      c->backlog.erase(c->backlog.begin(), c->backlog.begin() + static_cast<std::ptrdiff_t>(done));
      if (!c->backlog.empty()) lws_callback_on_writable(wsi);
      return 0;
    }
    case LWS_CALLBACK_RECEIVE:
      if (lws_is_first_fragment(wsi)) c->rx.clear();
      c->rx.append(static_cast<const char*>(in), len);
      if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0) fanOut(*c);
      return 0;
    case LWS_CALLBACK_CLOSED: {
      if (c->wsi == nullptr) return 0;
      FloorConn* last = gConns.back();
      gConns[c->slot] = last;
      last->slot = c->slot;
      gConns.pop_back();
      c->~FloorConn();
      return 0;
    }
    default:
      return lws_callback_http_dummy(wsi, reason, user, in, len);
  }
}

const lws_protocols kFloorProtocols[] = {
    // The same receive buffer size as dohost's protocol, so memory per socket compares.
    {"floor", floorCallback, sizeof(FloorConn), 1024, 0, nullptr, 0},
    {nullptr, nullptr, 0, 0, 0, nullptr, 0},
};

}  // namespace

int floorServerMain(int port, LoopKind loopKind) {
  signal(SIGPIPE, SIG_IGN);
  lws_set_log_level(LLL_ERR, nullptr);
  lws_context_creation_info info{};
  info.port = port;
  info.iface = "127.0.0.1";
  info.protocols = kFloorProtocols;
  info.pt_serv_buf_size = 64 * 1024;
  info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
  void* loop = nullptr;
  void* loops[1] = {nullptr};
  if (loopKind == LoopKind::kEpoll) {
    loop = newEpollLoop();
    loops[0] = loop;
    info.foreign_loops = loops;
    info.options |= LWS_SERVER_OPTION_LIBEV;
  }
  lws_context* context = lws_create_context(&info);
  if (context == nullptr) {
    std::fprintf(stderr, "floor server: cannot listen on 127.0.0.1:%d\n", port);
    return 2;
  }
  if (loop != nullptr) {
    while (true) runLoopOnce(loop);
  }
  while (lws_service(context, 0) >= 0) {
  }
  lws_context_destroy(context);
  return 0;
}

}  // namespace dohost::bench
