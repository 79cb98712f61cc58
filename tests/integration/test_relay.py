"""The cluster relay (docs/cluster.md, "The relay"): any host accepts any client and relays to
the object's owner over one link per pair of hosts. A real etcd (test_cluster.Etcd), 2 or 3
dohost processes sharing one --data folder with their own app, admin and peer ports, a lease
TTL of 2 s; objects are the test plugin's TestEcho (testapp). Every wait is bounded."""
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import struct
import tempfile
import time
import unittest
import urllib.request

import websockets

from harness import Host, free_port, metric, no_message, recv_json, recv_until
from test_cluster import ETCD, TTL, Etcd, sanitizer_lines

TOKEN = "relay-test-secret"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def string(s):
    b = s.encode() if isinstance(s, str) else s
    return varint(len(b)) + b


def hello(host_id, token, incarnation=1):
    return bytes([1, 1]) + string(host_id) + varint(incarnation) + string(token)


class RelayTest(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(ETCD):
            raise unittest.SkipTest("etcd-server is not installed")
        cls.etcd = Etcd().start()

    @classmethod
    def tearDownClass(cls):
        cls.etcd.close()

    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="dohost-relay-")
        self.hosts = []

    def tearDown(self):
        self.etcd.thaw()
        for h in self.hosts:
            h.stop(signal.SIGKILL)
        for h in self.hosts:
            self.assertEqual(sanitizer_lines(h), [], h.stderr())
        shutil.rmtree(self.data, ignore_errors=True)

    def start_hosts(self, n, token=TOKEN):
        prefix = self.id().rsplit(".", 1)[-1][5:25]
        out = []
        for i in range(n):
            peer = free_port()
            h = Host(apps=(), test_plugin=True, data=self.data,
                     args=["--cluster", self.etcd.url, "--host-id", f"{prefix}-{i}",
                           "--peer", f"127.0.0.1:{peer}", "--cluster-token", token,
                           "--cluster-lease-ttl", str(TTL), "--cluster-lease-renew", "0.5"])
            h.host_id = f"{prefix}-{i}"
            h.peer_port = peer
            if os.environ.get("RELAY_LOG"):  # debugging: the hosts' info lines too
                plain = h.command
                h.command = lambda plain=plain: [os.environ["RELAY_LOG"] if x == "warn" else x
                                                 for x in plain()]
            h.stderr_path = os.path.join(self.data, "..", os.path.basename(self.data) + f"-{i}.log")
            self.hosts.append(h)
            out.append(h.start())
        return out

    def events(self, host, name):
        status, _, body = host.http("GET", "testapp", f"/o/{name}/events")
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def live_on(self, name):
        out = []
        for h in self.hosts:
            if h.proc is None:
                continue
            _, objects = h.admin_json("GET", "/objects?class=TestEcho")
            if any(o.get("name") == name and o["state"] == "live" for o in objects):
                out.append(h)
        return out

    @staticmethod
    def frames(host, kind, direction="out"):
        return metric(host.metrics(), "dohost_relay_frames_total", direction=direction, kind=kind) or 0

    async def hello_of(self, ws):
        return await recv_until(ws, lambda m: "hello" in m)

    # --- cases -------------------------------------------------------------------------------

    async def test_http_requests_are_relayed_to_the_owner_both_ways(self):
        a, b = self.start_hosts(2)
        status, _, _ = a.http("GET", "testapp", "/o/on-a/events")  # a claims it (prefer-local)
        self.assertEqual(status, 200)
        status, _, _ = b.http("GET", "testapp", "/o/on-b/events")
        self.assertEqual(status, 200)
        for _ in range(3):
            self.assertEqual(self.events(b, "on-a"), [])
            self.assertEqual(self.events(a, "on-b"), [])
        self.assertEqual(self.live_on("on-a"), [a])
        self.assertEqual(self.live_on("on-b"), [b])
        # Routed here, answered there: a route the app answers itself never crosses.
        status, _, body = b.http("GET", "testapp", "/nothing")
        self.assertEqual(status, 404)
        self.assertGreaterEqual(self.frames(b, "HttpRequest"), 3)
        self.assertGreaterEqual(self.frames(a, "HttpRequest"), 3)
        self.assertGreaterEqual(self.frames(a, "HttpResponse", "in"), 3)
        m = a.metrics()
        self.assertEqual(metric(m, "dohost_relay_links_up"), 1)
        # /cluster shows the link's hosts.
        _, view = a.admin_json("GET", "/cluster")
        self.assertTrue(all("relayedSockets" in h for h in view["hosts"]))

    async def test_a_host_asked_for_an_object_it_let_go_but_still_holds_the_key_of_serves_it(self):
        # An evicted object's claim is dropped at once and its key deleted a moment later: a
        # request relayed in between finds the key naming the host. Put back by hand here
        # (under the host's lease, as if its release had not run yet), that moment lasts.
        a, b = self.start_hosts(2)
        self.assertEqual(a.http("GET", "testapp", "/o/gone/events")[0], 200)  # owned by a
        _, objects = a.admin_json("GET", "/objects?class=TestEcho")
        (obj,) = [o for o in objects if o.get("name") == "gone"]
        self.assertEqual(a.admin("POST", "/objects/TestEcho/gone/evict")[0], 200)
        deadline = time.monotonic() + 5
        while a.admin_json("GET", "/cluster")[1]["releasesTotal"] == 0:
            self.assertLess(time.monotonic(), deadline, "the object's key was not released")
            await asyncio.sleep(0.05)
        _, view = a.admin_json("GET", "/cluster")
        key = f"/dohost/v1/owners/TestEcho/{obj['id']}"
        value = json.dumps({"host": a.host_id, "incarnation": view["incarnation"]})
        put = {"key": base64.b64encode(key.encode()).decode(),
               "value": base64.b64encode(value.encode()).decode(), "lease": str(view["lease"])}
        request = urllib.request.Request(self.etcd.url + "/v3/kv/put", data=json.dumps(put).encode())
        with urllib.request.urlopen(request, timeout=5) as r:
            self.assertEqual(r.status, 200)
        # b relays to a, which claims the object again (the key is under its own lease) and
        # serves it, instead of answering NotOwner to every look-up of b.
        status, _, body = b.http("GET", "testapp", "/o/gone/events")
        self.assertEqual(status, 200, body)
        self.assertEqual(self.live_on("gone"), [a])

    async def test_a_websocket_to_an_object_owned_by_another_host_works_like_a_local_one(self):
        a, b = self.start_hosts(2)
        self.assertEqual(a.http("GET", "testapp", "/o/room/events")[0], 200)  # owned by a
        ws = await b.connect("testapp", "/o/room?tags=red,blue&att=first")
        hello = await self.hello_of(ws)
        self.assertEqual(hello, {"hello": "room", "tags": ["red", "blue"]})
        await ws.send(json.dumps({"cmd": "tags"}))
        self.assertEqual((await recv_until(ws, lambda m: "tags" in m))["tags"], ["red", "blue"])
        await ws.send(json.dumps({"cmd": "attachment"}))
        self.assertEqual((await recv_until(ws, lambda m: "attachment" in m))["attachment"], "first")
        await ws.send(json.dumps({"cmd": "setAttachment", "value": "second"}))
        await recv_until(ws, lambda m: m.get("ok"))
        await ws.send(json.dumps({"cmd": "attachment"}))
        self.assertEqual((await recv_until(ws, lambda m: "attachment" in m))["attachment"], "second")
        # Hibernation on the owner: evicted, the relayed socket stays, with its tags and attachment.
        status, _, _ = a.admin("POST", "/objects/TestEcho/room/evict")
        self.assertEqual(status, 200)
        self.assertEqual(self.live_on("room"), [])
        await ws.send(json.dumps({"cmd": "tags"}))
        self.assertEqual((await recv_until(ws, lambda m: "tags" in m))["tags"], ["red", "blue"])
        await ws.send(json.dumps({"cmd": "attachment"}))
        self.assertEqual((await recv_until(ws, lambda m: "attachment" in m))["attachment"], "second")
        await ws.send(json.dumps({"cmd": "constructed"}))
        self.assertEqual((await recv_until(ws, lambda m: "constructed" in m))["constructed"], 2)
        await ws.send(b"\x00\x01binary")
        self.assertEqual(await asyncio.wait_for(ws.recv(), 5), b"\x00\x01binary")
        # Auto-response: answered by the edge, the owner does not see the message.
        await ws.send(json.dumps({"cmd": "auto", "request": "ping", "response": "pong"}))
        await recv_until(ws, lambda m: m.get("ok"))
        await asyncio.sleep(0.2)  # the SocketMeta with the pair reaches the edge
        before = metric(a.metrics(), "dohost_websocket_messages_in_total", **{"class": "TestEcho"})
        await ws.send("ping")
        self.assertEqual(await asyncio.wait_for(ws.recv(), 5), "pong")
        self.assertEqual(metric(a.metrics(), "dohost_websocket_messages_in_total", **{"class": "TestEcho"}),
                         before)
        self.assertEqual(metric(b.metrics(), "dohost_websocket_auto_responses_total",
                                **{"class": "TestEcho"}), 1)
        self.assertGreaterEqual(self.frames(a, "SocketMeta"), 2)
        m = b.metrics()
        self.assertEqual(metric(m, "dohost_relay_sockets", role="edge"), 1)
        self.assertEqual(metric(a.metrics(), "dohost_relay_sockets", role="owner"), 1)
        _, view = b.admin_json("GET", "/cluster")
        counts = {h["id"]: h["relayedSockets"] for h in view["hosts"]}
        self.assertEqual(counts.get(a.host_id), 1, view)
        # The object closes: the client gets its code and reason.
        await ws.send(json.dumps({"cmd": "close", "code": 4001, "reason": "bye"}))
        await asyncio.wait_for(ws.wait_closed(), 5)
        self.assertEqual((ws.close_code, ws.close_reason), (4001, "bye"))
        # The client closes: the object's webSocketClose gets the client's code.
        ws2 = await b.connect("testapp", "/o/room?att=second-socket")
        await self.hello_of(ws2)
        await ws2.close(4002, "client leaves")
        deadline = time.time() + 5
        while True:
            closes = [e for e in self.events(a, "room") if e["event"] == "close"]
            if any(e["attachment"] == "second-socket" for e in closes):
                break
            self.assertLess(time.time(), deadline, closes)
            await asyncio.sleep(0.05)
        mine = [e for e in closes if e["attachment"] == "second-socket"][0]
        self.assertEqual((mine["code"], mine["reason"], mine["wasClean"]), (4002, "client leaves", True))
        self.assertEqual(self.live_on("room"), [a])
        # A refused upgrade is the owner's answer.
        with self.assertRaises(websockets.exceptions.InvalidStatusCode) as refused:
            await b.connect("testapp", "/o/room", headers={"x-refuse": "1"})
        self.assertEqual(refused.exception.status_code, 403)

    async def test_a_broadcast_to_sockets_on_two_other_hosts_crosses_each_link_once(self):
        a, b, c = self.start_hosts(3)
        self.assertEqual(a.http("GET", "testapp", "/o/fan/events")[0], 200)
        origin = await a.connect("testapp", "/o/fan")
        await self.hello_of(origin)
        clients = []
        for h in (b, c):
            for _ in range(4):
                ws = await h.connect("testapp", "/o/fan")
                await self.hello_of(ws)
                clients.append(ws)
        await asyncio.sleep(0.2)
        sends = self.frames(a, "Send")
        for i in range(3):
            await origin.send(json.dumps({"cmd": "broadcast", "text": f"m{i}"}))
            self.assertEqual((await recv_until(origin, lambda m: "sentTo" in m))["sentTo"], 9)
        for ws in clients:
            got = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]
            self.assertEqual(got, [{"broadcast": f"m{i}"} for i in range(3)])
            await no_message(ws, within=0.05)
        # Three broadcasts, two edges: six Send frames, each for four sockets.
        self.assertEqual(self.frames(a, "Send") - sends, 6)
        self.assertEqual(self.frames(b, "Send", "in") + self.frames(c, "Send", "in"),
                         self.frames(a, "Send"))
        for ws in clients:
            await ws.close()
        await origin.close()

    async def test_sockets_on_other_hosts_outlive_their_objects_host_and_reach_the_survivor(self):
        a, b, c = self.start_hosts(3)
        self.assertEqual(a.http("GET", "testapp", "/o/phoenix/events")[0], 200)
        on_b = await b.connect("testapp", "/o/phoenix?tags=x&att=on-b")
        await self.hello_of(on_b)
        on_c = await c.connect("testapp", "/o/phoenix?tags=y,z&att=on-c")
        await self.hello_of(on_c)
        await on_b.send(json.dumps({"cmd": "put", "key": "k", "value": "kept"}))
        await recv_until(on_b, lambda m: m.get("put") == "k")
        await recv_until(on_c, lambda m: m.get("put") == "k")
        self.assertEqual(a.http("GET", "testapp", "/o/flood/events")[0], 200)
        flood = await c.connect("testapp", "/o/flood")
        await self.hello_of(flood)
        await asyncio.sleep(0.1)
        a.kill()
        killed = time.time()
        # An HTTP request for the dead host's object, before its lease is gone: 503, retry.
        status, headers, _ = b.http("GET", "testapp", "/o/flood/events")
        self.assertEqual((status, headers.get("retry-after")), (503, "1"))
        # More than the hold allows while the object has no host: that client is told to retry.
        for i in range(300):
            await flood.send(json.dumps({"cmd": "echo", "n": i}))
        # Sent while the object has no host: held at the edges, then delivered.
        await on_b.send(json.dumps({"cmd": "get", "key": "k"}))
        await on_c.send(json.dumps({"cmd": "attachment"}))
        got_b = await recv_until(on_b, lambda m: "key" in m, timeout=TTL + 5)
        took = time.time() - killed
        self.assertEqual(got_b["value"], "kept")
        got_c = await recv_until(on_c, lambda m: "attachment" in m, timeout=5)
        self.assertEqual(got_c["attachment"], "on-c")
        self.assertLess(took, TTL + 5)
        for ws, tags, att in ((on_b, ["x"], "on-b"), (on_c, ["y", "z"], "on-c")):
            await ws.send(json.dumps({"cmd": "tags"}))
            self.assertEqual((await recv_until(ws, lambda m: "tags" in m))["tags"], tags)
            await ws.send(json.dumps({"cmd": "attachment"}))
            self.assertEqual((await recv_until(ws, lambda m: "attachment" in m))["attachment"], att)
        await asyncio.wait_for(flood.wait_closed(), 5)
        self.assertEqual(flood.close_code, 1013)
        await on_b.send(json.dumps({"cmd": "count"}))
        self.assertEqual((await recv_until(on_b, lambda m: "count" in m))["count"], 2)
        owners = self.live_on("phoenix")
        self.assertEqual(len(owners), 1)
        self.assertIn(owners[0], (b, c))
        # Nobody closed: the new instance saw no webSocketClose.
        self.assertEqual([e for e in self.events(b, "phoenix") if e["event"] == "close"], [])
        self.assertTrue(on_b.open and on_c.open)
        self.assertIn("stay open and wait for a new owner", b.stderr() + c.stderr())
        await on_b.close()
        await on_c.close()
        print(f"\n  owner killed: the edges' sockets reached the survivor after {took:.2f} s (TTL {TTL} s)")

    async def test_a_frozen_owner_is_found_out_by_the_links_pings_and_its_relayed_socket_moves(self):
        a, b = self.start_hosts(2)
        self.assertEqual(a.http("GET", "testapp", "/o/ice/events")[0], 200)
        ws = await b.connect("testapp", "/o/ice?att=cold")
        await self.hello_of(ws)
        await ws.send(json.dumps({"cmd": "put", "key": "k", "value": "v"}))
        await recv_until(ws, lambda m: m.get("put") == "k")
        os.kill(a.proc.pid, signal.SIGSTOP)
        frozen = time.time()
        try:
            deadline = frozen + 6
            while "pings unanswered" not in b.stderr():
                self.assertLess(time.time(), deadline)
                await asyncio.sleep(0.1)
            noticed = time.time() - frozen
            # From here on what the client sends is held, then reaches the object's next owner.
            await ws.send(json.dumps({"cmd": "get", "key": "k"}))
            self.assertEqual((await recv_until(ws, lambda m: "key" in m, timeout=TTL + 5))["value"], "v")
            await ws.send(json.dumps({"cmd": "attachment"}))
            self.assertEqual((await recv_until(ws, lambda m: "attachment" in m))["attachment"], "cold")
            _, objects = b.admin_json("GET", "/objects?class=TestEcho")  # (a cannot answer)
            self.assertEqual([o["state"] for o in objects if o.get("name") == "ice"], ["live"])
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        self.assertTrue(ws.open)
        await ws.close()
        print(f"\n  frozen owner: link down after {noticed:.2f} s")

    async def test_an_owner_that_fences_itself_leaves_its_relayed_sockets_open_and_they_move(self):
        a, b = self.start_hosts(2)
        self.assertEqual(a.http("GET", "testapp", "/o/fence/events")[0], 200)
        ws = await b.connect("testapp", "/o/fence?att=fenced")
        await self.hello_of(ws)
        await ws.send(json.dumps({"cmd": "put", "key": "k", "value": "v"}))
        await recv_until(ws, lambda m: m.get("put") == "k")
        self.etcd.freeze()  # every host's renewals fail: each fences itself
        try:
            deadline = time.time() + TTL + 3
            while "left to their edges" not in a.stderr():
                self.assertLess(time.time(), deadline)
                await asyncio.sleep(0.1)
        finally:
            self.etcd.thaw()
        # The client saw nothing; once a host owns the object again its messages reach it.
        await ws.send(json.dumps({"cmd": "get", "key": "k"}))
        self.assertEqual((await recv_until(ws, lambda m: "key" in m, timeout=15))["value"], "v")
        await ws.send(json.dumps({"cmd": "attachment"}))
        self.assertEqual((await recv_until(ws, lambda m: "attachment" in m))["attachment"], "fenced")
        self.assertTrue(ws.open)
        await ws.close()

    async def test_when_the_owner_leaves_with_sigterm_its_relayed_sockets_stay_open_and_move(self):
        a, b = self.start_hosts(2)
        self.assertEqual(a.http("GET", "testapp", "/o/mover/events")[0], 200)
        ws = await b.connect("testapp", "/o/mover?tags=t&att=kept")
        await self.hello_of(ws)
        await ws.send(json.dumps({"cmd": "put", "key": "k", "value": "v"}))
        await recv_until(ws, lambda m: m.get("put") == "k")
        a.proc.send_signal(signal.SIGTERM)
        self.assertEqual(a.stop(timeout=10), 0)
        left = time.time()
        await ws.send(json.dumps({"cmd": "get", "key": "k"}))
        self.assertEqual((await recv_until(ws, lambda m: "key" in m, timeout=5))["value"], "v")
        self.assertLess(time.time() - left, 3)
        await ws.send(json.dumps({"cmd": "attachment"}))
        self.assertEqual((await recv_until(ws, lambda m: "attachment" in m))["attachment"], "kept")
        self.assertEqual(self.live_on("mover"), [b])
        self.assertTrue(ws.open)
        self.assertEqual([e for e in self.events(b, "mover") if e["event"] == "close"], [])
        await ws.close()

    async def test_a_hostile_peer_is_refused_or_closed_and_nothing_else_breaks(self):
        a, b = self.start_hosts(2)
        url = f"ws://127.0.0.1:{b.peer_port}/"
        # A bad token: Refused, then the connection closes.
        bad = await websockets.connect(url, subprotocols=["dohost-link"], open_timeout=5)
        await bad.send(hello("intruder", "wrong"))
        answer = await asyncio.wait_for(bad.recv(), 5)
        self.assertEqual(answer[0], 3)  # Refused
        await asyncio.wait_for(bad.wait_closed(), 5)
        # Garbage before and after a good Hello: the link closes.
        junk = await websockets.connect(url, subprotocols=["dohost-link"], open_timeout=5)
        await junk.send(b"\xff\x00garbage")
        await asyncio.wait_for(junk.wait_closed(), 5)
        good = await websockets.connect(url, subprotocols=["dohost-link"], open_timeout=5)
        await good.send(hello("visitor", TOKEN, incarnation=77))
        self.assertEqual((await asyncio.wait_for(good.recv(), 5))[0], 2)  # HelloOk
        # Frames for sockets and streams that do not exist are ignored (the link stays).
        await good.send(bytes([7]) + struct.pack("<Q", 12345) + b"\x00" + string("hi"))
        await good.send(bytes([6]) + varint(99) + string(""))
        await good.send(bytes([10]) + struct.pack("<Q", 777) + varint(1000) + string("") + b"\x01")
        await good.send(bytes([14]) + struct.pack("<Q", 42))  # Ping
        while True:
            frame = await asyncio.wait_for(good.recv(), 5)
            if frame[0] == 15:  # Pong
                self.assertEqual(frame[1:], struct.pack("<Q", 42))
                break
        await good.send(b"\x07\x01")  # truncated
        await asyncio.wait_for(good.wait_closed(), 5)
        # A plain HTTP request on the peer port is no link.
        with socket.create_connection(("127.0.0.1", b.peer_port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertTrue(s.recv(100).startswith(b"HTTP/1.1"))
        log = b.stderr()
        self.assertIn("refused a link from intruder: bad cluster token", log)
        self.assertIn("bad frame", log)
        self.assertIn("which has no request", log)
        # The hosts still relay to each other.
        self.assertEqual(a.http("GET", "testapp", "/o/calm/events")[0], 200)
        self.assertEqual(self.events(b, "calm"), [])
        ws = await b.connect("testapp", "/o/calm")
        await self.hello_of(ws)
        await ws.close()


if __name__ == "__main__":
    unittest.main()
