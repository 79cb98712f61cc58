"""The host itself, through the test plugin's TestEcho class: hibernation API, limits, close
handling, TLS, shutdown, config errors, admin API and metrics. Real binary, real sockets."""
import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatusCode

from harness import (Host, binary, free_port, metric, no_message, recv_json, test_plugin_path,
                     wait_for)


def events(host, name):
    status, _, body = host.http("GET", "testapp", f"/o/{name}/events")
    assert status == 200, status
    return json.loads(body)


class HostTestCase(unittest.IsolatedAsyncioTestCase):
    config = None
    env = None

    def setUp(self):
        self.host = Host(apps=(), test_plugin=True, config=self.config, env=self.env).start()

    def tearDown(self):
        self.host.close()

    async def connect(self, name, query=""):
        ws = await self.host.connect("testapp", f"/o/{name}?{query}")
        hello = await recv_json(ws)
        self.assertEqual(hello["hello"], name)
        return ws

    async def cmd(self, ws, **command):
        await ws.send(json.dumps(command))
        return await recv_json(ws)


class HibernationApiTest(HostTestCase):
    async def test_tags_and_get_web_sockets(self):
        a = await self.connect("room", "tags=red,blue")
        b = await self.connect("room", "tags=blue")
        c = await self.connect("room")
        self.assertEqual(await self.cmd(a, cmd="tags"), {"tags": ["red", "blue"]})
        self.assertEqual(await self.cmd(a, cmd="count"), {"count": 3})
        self.assertEqual(await self.cmd(a, cmd="count", tag="blue"), {"count": 2})
        self.assertEqual(await self.cmd(a, cmd="count", tag="green"), {"count": 0})
        other = await self.connect("another-room", "tags=blue")
        self.assertEqual(await self.cmd(other, cmd="count", tag="blue"), {"count": 1})
        for ws in (a, b, c, other):
            await ws.close()

    async def test_broadcast_by_tag_and_except(self):
        a = await self.connect("fan", "tags=x")
        b = await self.connect("fan", "tags=x")
        c = await self.connect("fan", "tags=y")
        await a.send(json.dumps({"cmd": "broadcast", "tag": "x", "text": "hi", "exceptSelf": True}))
        self.assertEqual(await recv_json(b), {"broadcast": "hi"})
        self.assertEqual(await recv_json(a), {"sentTo": 1})
        self.assertTrue(await no_message(c))
        await a.send(json.dumps({"cmd": "broadcast", "text": "all"}))
        for ws in (a, b, c):
            self.assertEqual(await recv_json(ws), {"broadcast": "all"})
        for ws in (a, b, c):
            await ws.close()

    async def test_text_and_binary_messages(self):
        ws = await self.connect("echo")
        await ws.send("plain text")
        self.assertEqual(await recv_json(ws), {"echo": "plain text"})
        await ws.send(bytes([0, 1, 2, 255]))
        self.assertEqual(await ws.recv(), bytes([0, 1, 2, 255]))
        await ws.send("é" * 1000)
        self.assertEqual(await recv_json(ws), {"echo": "é" * 1000})
        await ws.close()

    async def test_attachment_survives_eviction(self):
        ws = await self.connect("sleepy", "att=alice&tags=member")
        self.assertEqual(await self.cmd(ws, cmd="constructed"), {"constructed": 1})
        status, body = self.host.admin_json("POST", "/objects/TestEcho/sleepy/evict")
        self.assertEqual((status, body["evicted"]), (200, True))
        status, detail = self.host.admin_json("GET", "/objects/TestEcho/sleepy")
        self.assertEqual(detail["state"], "evicted")
        self.assertEqual(detail["sockets"], 1)
        self.assertEqual(detail["socketList"][0]["tags"], ["member"])
        self.assertEqual(detail["socketList"][0]["attachment"], "alice")
        m = self.host.metrics()
        self.assertEqual(metric(m, "dohost_object_evictions_total", **{"class": "TestEcho"}), 1)
        self.assertEqual(metric(m, "dohost_websockets_open", **{"class": "TestEcho"}), 1)
        self.assertEqual(metric(m, "dohost_objects_live", **{"class": "TestEcho"}), 0)
        # The next message rebuilds the object, which finds the socket with its attachment.
        self.assertEqual(await self.cmd(ws, cmd="attachment"), {"attachment": "alice"})
        self.assertEqual(await self.cmd(ws, cmd="tags"), {"tags": ["member"]})
        self.assertEqual(await self.cmd(ws, cmd="constructed"), {"constructed": 2})
        m = self.host.metrics()
        self.assertEqual(metric(m, "dohost_object_rehydrations_total", **{"class": "TestEcho"}), 1)
        self.assertEqual(metric(m, "dohost_objects_live", **{"class": "TestEcho"}), 1)
        await ws.close()

    async def test_attachment_limit(self):
        ws = await self.connect("big")
        reply = await self.cmd(ws, cmd="setAttachment", size=16 * 1024)
        self.assertEqual(reply, {"ok": True})
        reply = await self.cmd(ws, cmd="setAttachment", size=16 * 1024 + 1)
        self.assertIn("more than the limit of 16384 bytes", reply["error"])
        await ws.close()

    async def test_auto_response_does_not_wake_the_object(self):
        ws = await self.connect("auto")
        self.assertEqual(await self.cmd(ws, cmd="auto", request="ping", response="pong"), {"ok": True})
        self.assertEqual(await self.cmd(ws, cmd="autoTimestamp"), {"autoTimestamp": None})
        self.host.admin_json("POST", "/objects/TestEcho/auto/evict")
        before = self.host.metrics()
        for _ in range(3):
            await ws.send("ping")
            self.assertEqual(await asyncio.wait_for(ws.recv(), 5), "pong")
        after = self.host.metrics()
        self.assertEqual(metric(after, "dohost_websocket_auto_responses_total", **{"class": "TestEcho"}), 3)
        self.assertEqual(metric(after, "dohost_object_rehydrations_total"),
                         metric(before, "dohost_object_rehydrations_total"))
        _, detail = self.host.admin_json("GET", "/objects/TestEcho/auto")
        self.assertEqual(detail["state"], "evicted")
        stamp = (await self.cmd(ws, cmd="autoTimestamp"))["autoTimestamp"]
        self.assertIsInstance(stamp, int)
        self.assertLess(abs(stamp - time.time() * 1000), 10_000)
        await ws.close()

    async def test_writes_and_sends_of_a_failed_event_are_discarded(self):
        a = await self.connect("gate")
        b = await self.connect("gate")
        await a.send(json.dumps({"cmd": "sendThenThrow"}))
        self.assertTrue(await no_message(b, 0.5))
        self.assertTrue(await no_message(a, 0.1))
        self.assertEqual(await self.cmd(b, cmd="stored"), {"thrown": "no"})
        await a.close()
        await b.close()

    async def test_alarm_wakes_the_object_and_admin_runs_it(self):
        ws = await self.connect("alarmed")
        self.assertEqual(await self.cmd(ws, cmd="alarm", ms=300), {"ok": True})
        self.host.admin_json("POST", "/objects/TestEcho/alarmed/evict")
        self.assertEqual(await recv_json(ws, 5), {"alarm": True})
        self.assertEqual(await self.cmd(ws, cmd="alarm", ms=3_600_000), {"ok": True})
        status, body = self.host.admin_json("POST", "/objects/TestEcho/alarmed/alarm")
        self.assertEqual((status, body), (200, {"ran": True}))
        self.assertEqual(await recv_json(ws, 5), {"alarm": True})
        m = self.host.metrics()
        self.assertEqual(metric(m, "dohost_alarms_fired_total", **{"class": "TestEcho"}), 2)
        await ws.close()


class CloseHandlingTest(HostTestCase):
    async def test_client_close_reaches_the_object_once(self):
        a = await self.connect("closing", "att=a")
        b = await self.connect("closing", "att=b")
        await a.close(4001, "bye")
        self.assertEqual(a.close_code, 4001)  # the host answered the Close
        self.assertEqual(await recv_json(b), {"closed": "a", "code": 4001})
        closes = [e for e in events(self.host, "closing") if e["event"] == "close"]
        self.assertEqual(closes, [{"event": "close", "code": 4001, "reason": "bye", "wasClean": True,
                                   "attachment": "a"}])
        self.assertEqual(await self.cmd(b, cmd="count"), {"count": 1})
        await b.close()

    async def test_dropped_connection_is_1006_not_clean(self):
        a = await self.connect("dropping", "att=a")
        b = await self.connect("dropping", "att=b")
        a.transport.abort()
        self.assertEqual(await recv_json(b), {"closed": "a", "code": 1006})
        closes = [e for e in events(self.host, "dropping") if e["event"] == "close"]
        self.assertEqual(closes[0]["code"], 1006)
        self.assertFalse(closes[0]["wasClean"])
        await b.close()

    async def test_object_closes_a_socket(self):
        ws = await self.connect("closer")
        await ws.send(json.dumps({"cmd": "close", "code": 4000, "reason": "done"}))
        with self.assertRaises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        self.assertEqual(ws.close_code, 4000)
        self.assertEqual(ws.close_reason, "done")

    async def test_close_during_the_upgrade_keeps_frame_and_code(self):
        ws = await self.host.connect("testapp", "/o/refused?refuseWith=4001")
        self.assertEqual(await recv_json(ws), {"type": "error", "message": "refused during the upgrade"})
        with self.assertRaises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        self.assertEqual(ws.close_code, 4001)
        self.assertEqual(ws.close_reason, "refused")


class TransferTest(HostTestCase):
    """ObjectState::transferWebSocket: a socket handed from one object to another."""

    async def test_a_handed_over_socket_continues_in_the_other_object(self):
        a = await self.connect("desk", "att=at-desk")
        watcher = await self.connect("desk")
        # Two commands right behind the hand-over: they wait for the new object.
        await asyncio.gather(
            a.send(json.dumps({"cmd": "transfer", "to": "room7", "query": "tags=moved&att=fresh"})),
            a.send(json.dumps({"cmd": "tags"})), a.send(json.dumps({"cmd": "attachment"})))
        self.assertEqual(await recv_json(a), {"transferring": True})
        self.assertEqual(await recv_json(a), {"hello": "room7", "tags": ["moved"]})
        self.assertEqual(await recv_json(a), {"tags": ["moved"]})
        self.assertEqual(await recv_json(a), {"attachment": "fresh"})
        self.assertEqual(await self.cmd(watcher, cmd="count"), {"count": 1})
        self.assertEqual(await self.cmd(a, cmd="count"), {"count": 1})
        await a.close(4000, "done")
        closes = await wait_for(lambda: [e for e in events(self.host, "room7") if e["event"] == "close"])
        self.assertEqual([(e["code"], e["attachment"]) for e in closes], [(4000, "fresh")])
        self.assertEqual([e for e in events(self.host, "desk") if e["event"] == "close"], [])
        await watcher.close()

    async def test_a_refused_hand_over_closes_the_socket_1008(self):
        a = await self.connect("desk2")
        await a.send(json.dumps({"cmd": "transfer", "to": "wall", "refuse": True}))
        self.assertEqual(await recv_json(a), {"transferring": True})
        with self.assertRaises(ConnectionClosed):
            await asyncio.wait_for(a.recv(), 5)
        self.assertEqual(a.close_code, 1008)
        b = await self.connect("desk2")
        self.assertEqual(await self.cmd(b, cmd="count"), {"count": 1})
        await b.close()

    async def test_a_failed_event_hands_nothing_over_and_closes_1011(self):
        a = await self.connect("desk3")
        await a.send(json.dumps({"cmd": "transfer", "to": "elsewhere", "thenThrow": True}))
        with self.assertRaises(ConnectionClosed):
            await asyncio.wait_for(a.recv(), 5)
        self.assertEqual(a.close_code, 1011)
        _, detail = self.host.admin_json("GET", "/objects/TestEcho/elsewhere")
        self.assertNotEqual(detail.get("sockets"), 1)

    async def test_close_codes_an_object_may_send(self):
        for code in (1008, 1011, 4001):
            ws = await self.connect("codes")
            await ws.send(json.dumps({"cmd": "close", "code": code, "reason": "why"}))
            with self.assertRaises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            self.assertEqual((ws.close_code, ws.close_reason), (code, "why"))
        ws = await self.connect("codes")
        await ws.send(json.dumps({"cmd": "close", "code": 1005}))  # never sent on the wire
        self.assertTrue(await no_message(ws, 0.3))
        self.assertEqual(await self.cmd(ws, cmd="count"), {"count": 1})
        await ws.close()


class RouterErrorTest(HostTestCase):
    async def test_a_throwing_router_is_answered_500_and_logged(self):
        status, _, body = self.host.http("GET", "testapp", "/throw")
        self.assertEqual(status, 500)
        self.assertIn(b"error", body)
        with self.assertRaises(InvalidStatusCode) as refused:
            await self.host.connect("testapp", "/throw")
        self.assertEqual(refused.exception.status_code, 500)
        self.assertIn("the router failed", self.host.stderr())
        # The host carries on: HTTP and WebSockets still work.
        self.assertEqual(self.host.http("GET", "testapp", "/slow")[0], 200)
        ws = await self.connect("after-throw")
        self.assertEqual(await self.cmd(ws, cmd="count"), {"count": 1})
        await ws.close()


class LimitsTest(HostTestCase):
    config = """
max_message_bytes = 4096
max_sockets_per_object = 3
max_queued_bytes = 65536
ping_interval = 1
ping_timeout = 1
"""

    async def test_message_too_big_closes_1009(self):
        ws = await self.connect("limits", "att=big")
        await ws.send("x" * 4096)  # exactly the limit is fine
        self.assertEqual(await recv_json(ws), {"echo": "x" * 4096})
        await ws.send("x" * 4097)
        with self.assertRaises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        self.assertEqual(ws.close_code, 1009)
        errs = await wait_for(lambda: [e for e in events(self.host, "limits") if e["event"] == "error"])
        self.assertIn("message too big", errs[0]["reason"])
        self.assertEqual(errs[0]["attachment"], "big")

    async def test_invalid_utf8_closes_1007(self):
        ws = await self.connect("utf8")
        await ws.write_frame(True, 0x1, b"\xff\xfe invalid")
        with self.assertRaises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        self.assertEqual(ws.close_code, 1007)

    async def test_socket_limit_refuses_with_503(self):
        sockets = [await self.connect("full") for _ in range(3)]
        with self.assertRaises(InvalidStatusCode) as refused:
            await self.host.connect("testapp", "/o/full")
        self.assertEqual(refused.exception.status_code, 503)
        self.assertEqual(await self.cmd(sockets[0], cmd="count"), {"count": 3})
        await sockets[0].close()
        await wait_for(lambda: self.host.admin_json("GET", "/objects/TestEcho/full")[1]["sockets"] == 2)
        extra = await self.connect("full")  # room again
        for ws in sockets[1:] + [extra]:
            await ws.close()

    async def test_bad_tags_refuse_the_upgrade(self):
        with self.assertRaises(InvalidStatusCode) as refused:
            await self.host.connect("testapp", "/o/tags?tags=" + ",".join(f"t{i}" for i in range(11)))
        self.assertEqual(refused.exception.status_code, 500)
        with self.assertRaises(InvalidStatusCode):
            await self.host.connect("testapp", "/o/tags?tags=" + "x" * 257)
        ok = await self.connect("tags", "tags=" + ",".join(f"t{i}" for i in range(10)))
        await ok.close()

    async def test_slow_reader_is_closed_1008_and_others_carry_on(self):
        slow = await websockets.connect(self.host.ws_url("testapp", "/o/slow?att=slow"), max_queue=1,
                                        read_limit=2 ** 16, max_size=None)
        await recv_json(slow)
        fast = await self.connect("slow", "att=fast")
        await slow.send(json.dumps({"cmd": "flood", "size": 60000, "count": 400}))
        # The slow client stops reading after one message; the host must not wait for it.
        await asyncio.sleep(0.5)
        await fast.send(json.dumps({"cmd": "broadcast", "text": "still here", "exceptSelf": True}))
        reply = await recv_json(fast)
        self.assertIn("sentTo", reply)
        errs = await wait_for(lambda: [e for e in events(self.host, "slow") if e["event"] == "error"])
        self.assertIn("outbound queue full", errs[0]["reason"])
        self.assertEqual(errs[0]["attachment"], "slow")
        with self.assertRaises(ConnectionClosed):
            while True:
                await asyncio.wait_for(slow.recv(), 5)
        self.assertEqual(slow.close_code, 1008)
        await fast.close()

    async def test_vanished_peer_is_found_by_ping_timeout(self):
        # A raw client that completes the handshake and then never answers pings.
        sock = socket.create_connection(("127.0.0.1", self.host.apps["testapp"]))
        sock.sendall(b"GET /o/ghost?att=ghost HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        self.assertIn(b"101", sock.recv(4096))
        try:
            closes = await wait_for(
                lambda: [e for e in events(self.host, "ghost") if e["event"] == "close"], 15)
            self.assertEqual(closes[0]["code"], 1006)
            self.assertFalse(closes[0]["wasClean"])
            self.assertEqual(self.host.admin_json("GET", "/objects/TestEcho/ghost")[1]["sockets"], 0)
        finally:
            sock.close()


class AdminApiTest(HostTestCase):
    env = {"DOHOST_ADMIN_TOKEN": "admin-secret"}

    async def test_token_is_required(self):
        status, body = self.host.admin_json("GET", "/objects")
        self.assertEqual(status, 401)
        self.assertIn("error", body)
        status, _ = self.host.admin_json("GET", "/objects", token="wrong")
        self.assertEqual(status, 401)
        status, body = self.host.admin_json("GET", "/objects", token="admin-secret")
        self.assertEqual((status, body), (200, []))

    async def test_objects_list_detail_and_errors(self):
        t = "admin-secret"
        ws = await self.connect("listed", "tags=a&att=%7B%22user%22%3A%22u1%22%7D")
        status, objects = self.host.admin_json("GET", "/objects?class=TestEcho", token=t)
        self.assertEqual(status, 200)
        self.assertEqual(len(objects), 1)
        o = objects[0]
        self.assertEqual((o["class"], o["name"], o["state"], o["sockets"]), ("TestEcho", "listed", "live", 1))
        self.assertEqual(len(o["id"]), 64)
        self.assertGreater(o["storageBytes"], 0)
        self.assertIn("evictable", o)
        status, detail = self.host.admin_json("GET", f"/objects/TestEcho/{o['id']}", token=t)
        self.assertEqual(detail["name"], "listed")  # by id as well as by name
        self.assertEqual(detail["socketList"][0]["attachment"], {"user": "u1"})
        self.assertEqual(self.host.admin_json("GET", "/objects/Nope/x", token=t)[0], 404)
        self.assertEqual(self.host.admin_json("GET", "/objects/TestEcho/never-seen", token=t)[0], 404)
        self.assertEqual(self.host.admin_json("POST", "/objects/TestEcho/listed/alarm", token=t)[0], 404)
        self.assertEqual(self.host.admin_json("GET", "/nothing", token=t)[0], 404)
        await ws.close()

    async def test_metrics_names(self):
        status, _, body = self.host.admin("GET", "/metrics", token="admin-secret")
        self.assertEqual(status, 200)
        text = body.decode()
        for name in ["dohost_objects_live", "dohost_objects_known", "dohost_object_evictions_total",
                     "dohost_object_rehydrations_total", "dohost_websockets_open",
                     "dohost_websocket_messages_in_total", "dohost_websocket_messages_out_total",
                     "dohost_websocket_auto_responses_total", "dohost_alarms_fired_total",
                     "dohost_alarm_retries_total", "dohost_storage_commits_total"]:
            self.assertIn(f"# TYPE {name} ", text)
            self.assertIn(f'{name}{{class="TestEcho"}} ', text)


class IdleEvictionTest(unittest.IsolatedAsyncioTestCase):
    async def test_idle_object_is_evicted_and_sockets_stay(self):
        with Host(apps=(), test_plugin=True, idle_evict=0.2) as host:
            ws = await host.connect("testapp", "/o/idle?att=keep")
            await recv_json(ws)
            await wait_for(lambda: host.admin_json("GET", "/objects/TestEcho/idle")[1]["state"] == "evicted")
            await ws.send(json.dumps({"cmd": "attachment"}))
            self.assertEqual(await recv_json(ws), {"attachment": "keep"})
            m = host.metrics()
            self.assertGreaterEqual(metric(m, "dohost_object_evictions_total", **{"class": "TestEcho"}), 1)
            self.assertGreaterEqual(metric(m, "dohost_object_rehydrations_total", **{"class": "TestEcho"}), 1)
            await ws.close()


class ProcessTest(unittest.IsolatedAsyncioTestCase):
    async def test_sigterm_closes_sockets_with_1001_and_keeps_data(self):
        host = Host(apps=(), test_plugin=True).start()
        try:
            ws = await host.connect("testapp", "/o/persist?att=p")
            await recv_json(ws)
            await ws.send(json.dumps({"cmd": "constructed"}))
            await recv_json(ws)
            code = await asyncio.get_running_loop().run_in_executor(None, host.stop)
            self.assertEqual(code, 0)
            with self.assertRaises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            self.assertEqual(ws.close_code, 1001)
            host.start()
            ws = await host.connect("testapp", "/o/persist")
            await recv_json(ws)
            await ws.send(json.dumps({"cmd": "constructed"}))
            self.assertEqual(await recv_json(ws), {"constructed": 2})
            self.assertEqual(events(host, "persist")[0]["code"], 1001)
            await ws.close()
        finally:
            host.close()

    def run_host(self, *args, config=None):
        data = tempfile.mkdtemp(prefix="dohost-cfg-")
        admin = [] if "--admin" in args else ["--admin", "127.0.0.1:0"]
        cmd = [binary(), "--data", data] + admin + [
            a for app in ("broadcaster", "hopeflow", "channels", "bridge", "guide")
            for a in ("--app", f"{app}=off")]
        if config is not None:
            path = os.path.join(data, "bad.toml")
            with open(path, "w") as f:
                f.write(config)
            cmd += ["--config", path]
        r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=10)
        return r.returncode, r.stderr.strip()

    def test_bad_configuration_exits_2_with_one_line(self):
        cases = [
            (("--idle-evict", "abc"), None),
            (("--app", "nosuch=127.0.0.1:1"), None),
            (("--admin", "localhost"), None),
            ((), "this is = = not toml"),
            ((), "unknown_key = 1"),
            ((), 'durability = "sometimes"'),
            (("--plugin", "/nonexistent.so"), None),
        ]
        for args, config in cases:
            with self.subTest(args=args, config=config):
                code, err = self.run_host(*args, config=config)
                self.assertEqual(code, 2, err)
                self.assertEqual(len(err.splitlines()), 1, err)
                self.assertTrue(err.startswith("dohost: "), err)

    async def test_json_log_lines(self):
        for how in ("flag", "config"):
            with self.subTest(how=how):
                kwargs = ({"args": ["--log-format", "json"]} if how == "flag"
                          else {"config": 'log_format = "json"\n'})
                host = Host(apps=(), test_plugin=True, **kwargs).start()
                try:
                    ws = await host.connect("testapp", "/o/logged")
                    await recv_json(ws)
                    await ws.send(json.dumps({"cmd": "sendThenThrow"}))
                    # The failed event resets the instance; the next command sees it rolled back.
                    await ws.send(json.dumps({"cmd": "stored"}))
                    self.assertEqual(await recv_json(ws), {"thrown": "no"})
                    await ws.close()
                finally:
                    host.stop()
                lines = [json.loads(line) for line in host.stderr().splitlines()]
                host.close()
                failed = [l for l in lines if l["msg"].startswith("webSocketMessage failed")]
                self.assertTrue(failed, lines)
                self.assertEqual(list(failed[0])[:2], ["time", "level"])
                self.assertEqual(failed[0]["level"], "error")
                self.assertIn("failed after sending", failed[0]["msg"])
                self.assertEqual(failed[0]["class"], "TestEcho")
                self.assertRegex(failed[0]["id"], "^[0-9a-f]{64}$")
                self.assertRegex(failed[0]["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_bad_log_format_exits_2(self):
        for args, config in ((("--log-format", "xml"), None), ((), 'log_format = "xml"'),
                             ((), "log_format = 1")):
            with self.subTest(args=args, config=config):
                code, err = self.run_host(*args, config=config)
                self.assertEqual(code, 2, err)
                self.assertEqual(len(err.splitlines()), 1, err)
                self.assertIn("log", err)

    def test_plugin_errors_exit_2_with_the_message(self):
        throwing = os.environ.get("DOHOST_THROWING_PLUGIN") or os.path.join(
            os.path.dirname(test_plugin_path()), "libdohost_throwing_plugin.so")
        code, err = self.run_host("--plugin", throwing)
        self.assertEqual(code, 2, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("dohost_register failed: this plugin refuses to register", err)
        # The same classes twice: the second registration is refused, not a silent replace.
        code, err = self.run_host("--plugin", test_plugin_path(), "--plugin", test_plugin_path())
        self.assertEqual(code, 2, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("object class TestEcho is registered twice", err)

    def test_busy_port_exits_2(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            code, err = self.run_host("--admin", f"127.0.0.1:{port}")
        self.assertEqual(code, 2)
        self.assertIn(f"127.0.0.1:{port}", err)
        self.assertEqual(len(err.splitlines()), 1)


class TlsTest(unittest.IsolatedAsyncioTestCase):
    async def test_wss_listener(self):
        tmp = tempfile.mkdtemp(prefix="dohost-tls-")
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1"],
                       check=True, capture_output=True)
        config = f'[apps.testapp]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        with Host(apps=(), test_plugin=True, config=config) as host:
            ctx = ssl.create_default_context(cafile=cert)
            ctx.check_hostname = False
            url = f"wss://127.0.0.1:{host.apps['testapp']}/o/secure"
            async with websockets.connect(url, ssl=ctx) as ws:
                self.assertEqual(json.loads(await ws.recv())["hello"], "secure")
                await ws.send("over tls")
                self.assertEqual(json.loads(await ws.recv()), {"echo": "over tls"})
            with self.assertRaises(Exception):  # plain ws on a TLS port does not work
                async with websockets.connect(f"ws://127.0.0.1:{host.apps['testapp']}/o/secure",
                                              open_timeout=2) as ws:
                    await ws.recv()


if __name__ == "__main__":
    unittest.main()


def counter_host():
    return os.environ.get("DOHOST_COUNTER_HOST") or os.path.join(
        os.path.dirname(binary()), "..", "..", "objects", "examples", "counter-host")


def counter_plugin():
    return os.environ.get("DOHOST_COUNTER_PLUGIN") or os.path.join(
        os.path.dirname(binary()), "..", "..", "objects", "examples", "libcounter_plugin.so")


class ApiExampleTest(unittest.IsolatedAsyncioTestCase):
    """The examples of docs/api.md (objects/examples/): a user's own main linked against
    libdohost, and the same classes as a plugin of dohost."""

    def own_host(self, **kwargs):
        return Host(apps=(), program=counter_host(), extra_apps=("counter",), **kwargs)

    def get(self, host, path, method="GET"):
        status, _, body = host.http(method, "counter", path)
        return status, (json.loads(body) if status in (200, 404) else body)

    def test_counter_by_name_survives_restarts(self):
        with self.own_host() as host:
            for expected in (1, 2, 3):
                status, body = self.get(host, "/counter/alice")
                self.assertEqual(status, 200)
                self.assertEqual((body["name"], body["visits"]), ("alice", expected))
                self.assertRegex(body["id"], r"^[0-9a-f]{64}$")
                host.restart()
            files = [f for f in os.listdir(os.path.join(host.data, "Counter")) if f.endswith(".sqlite")]
            self.assertEqual(len(files), 1)  # DATA/<class>/<64-hex id>.sqlite
            self.assertEqual(files[0], body["id"] + ".sqlite")

    def test_counter_by_unique_id_has_no_name(self):
        with self.own_host() as host:
            status, made = self.get(host, "/counter", method="POST")
            self.assertEqual(status, 200)
            self.assertEqual((made["name"], made["visits"]), (None, 1))
            status, again = self.get(host, "/counter/id/" + made["id"])
            self.assertEqual((status, again["id"], again["name"], again["visits"]),
                             (200, made["id"], None, 2))
            status, other = self.get(host, "/counter", method="POST")
            self.assertNotEqual(other["id"], made["id"])
            self.assertEqual(self.get(host, "/counter/id/" + "0" * 64)[0], 404)  # not an id of Counter

    def test_app_setting_bounds_names(self):
        with self.own_host(env={"DOHOST_COUNTER_MAX_NAME_BYTES": "4"}) as host:
            self.assertEqual(self.get(host, "/counter/abcd")[0], 200)
            self.assertEqual(self.get(host, "/counter/abcde")[0], 404)
        bad = self.own_host(env={"DOHOST_COUNTER_MAX_NAME_BYTES": "0"})
        with self.assertRaisesRegex(RuntimeError, "max_name_bytes"):
            bad.start()
        bad.close()

    async def test_room_relays_between_members(self):
        with self.own_host() as host:
            ann = await host.connect("counter", "/room/lobby?user=ann")
            bob = await host.connect("counter", "/room/lobby?user=bob")
            await ann.send(json.dumps({"text": "hi"}))
            self.assertEqual(await recv_json(bob), {"from": "ann", "text": "hi"})
            await no_message(ann)
            await bob.send("{")
            self.assertIn("error", await recv_json(bob))
            await bob.send("[]")
            self.assertIn("error", await recv_json(bob))
            await bob.close()
            self.assertEqual(await recv_json(ann), {"left": "bob"})
            await ann.close()
            with self.assertRaises(InvalidStatusCode) as refused:
                await host.connect("counter", "/room/lobby?user=")
            self.assertEqual(refused.exception.status_code, 400)

    def test_plugin_runs_in_dohost(self):
        with Host(apps=("broadcaster",), extra_apps=("counter",),
                  args=["--plugin", counter_plugin()]) as host:
            status, body = self.get(host, "/counter/carol")
            self.assertEqual((status, body["name"], body["visits"]), (200, "carol", 1))
            self.assertEqual(host.http("GET", "broadcaster", "/health")[0], 200)
