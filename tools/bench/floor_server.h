// The floor: the least a WebSocket server on libwebsockets must do to fan a message out,
// run by the bench as its own process (`dohost-bench --floor-server PORT`) so that its CPU
// time and memory can be read like dohost's.
//
// One thread, one lws context, one listener. Every connection gets a short greeting. A
// message from any connection is framed once into one buffer and written at once, with
// lws_write, to every other connection; only a connection whose previous write was left
// partly buffered gets the frame queued for its writable callback. No JSON, no objects, no
// storage: what remains is the system calls and lws' framing, which is what loopback allows.
//
// It runs on epoll (lws' libev event library) by default: the floor is the least work, and
// lws' own poll() loop costs time in proportion to the open sockets on every turn. With
// `--floor-loop poll` it runs on lws' poll() loop, as dohost does today.
#pragma once

#include "ws_fleet.h"

namespace dohost::bench {

// Serves until killed. Returns a process exit code.
int floorServerMain(int port, LoopKind loop);

}  // namespace dohost::bench
