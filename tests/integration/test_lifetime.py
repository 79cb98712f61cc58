"""Socket lifetimes at the worst moments, through the test plugin's TestEcho class: SIGTERM while
a client has stopped reading (its socket outlives the drain), closes that arrive during the
shutdown and during evictions. Under the ASan build these also prove there is no
use-after-free: the host must exit 0 with nothing from a sanitizer on stderr."""
import asyncio
import json
import os
import random
import signal
import socket
import struct
import time
import unittest

from harness import Host, make_jwt, recv_json


SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:")


def sanitizer_lines(host):
    return [line for line in host.stderr().splitlines() if any(m in line for m in SANITIZER_MARKS)]


def events(host, name):
    status, _, body = host.http("GET", "testapp", f"/o/{name}/events")
    assert status == 200, status
    return json.loads(body)


def closes_by_attachment(host, name):
    out = {}
    for e in events(host, name):
        if e["event"] in ("close", "error"):
            out.setdefault(e["attachment"], []).append(e)
    return out


class RawClient:
    """A WebSocket client on a plain socket: it sends masked frames and reads only when told,
    so it can stop reading (a tiny receive buffer makes the host's side fill up fast)."""

    def __init__(self, port, path, rcvbuf=4096):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.decode(errors="replace"))

    def send_text(self, text):
        payload = text.encode()
        key = os.urandom(4)
        n = len(payload)
        header = bytes([0x81])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + key + masked)

    def abort(self):
        """Drops the connection with a reset, no Close frame."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def outbox_filler_count(frame_bytes):
    """Frames of `frame_bytes` that overfill the kernel's send and receive buffers several times."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            wmem_max = int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        wmem_max = 4 << 20
    return max(300, 3 * wmem_max // frame_bytes)


class ShutdownTest(unittest.IsolatedAsyncioTestCase):
    async def test_sigterm_while_a_client_never_reads(self):
        # The queue bound is far above what the test sends, so the stuck socket is not closed
        # with 1008 before the signal: it is still open, with a full outbox, after the drain.
        host = Host(apps=(), test_plugin=True, config="max_queued_bytes = 1073741824\n").start()
        try:
            port = host.apps["testapp"]
            stuck = RawClient(port, "/o/stuck?att=stuck")
            reader = await host.connect("testapp", "/o/stuck?att=reader")
            await recv_json(reader)
            text = "x" * 60000
            for _ in range(outbox_filler_count(len(text))):
                await reader.send(json.dumps({"cmd": "broadcast", "text": text, "exceptSelf": True}))
                self.assertEqual(await recv_json(reader), {"sentTo": 1})
            code = await asyncio.get_running_loop().run_in_executor(None, host.stop)
            self.assertEqual(sanitizer_lines(host), [])
            self.assertEqual(code, 0, host.stderr())
            self.assertEqual(reader.close_code, 1001)
            stuck.abort()
            # Both closes reached the object and were committed, the stuck one's too.
            host.start()
            closes = closes_by_attachment(host, "stuck")
            self.assertEqual(sorted(closes), ["reader", "stuck"])
            self.assertEqual([e["code"] for e in closes["stuck"]], [1001])
            self.assertEqual([e["code"] for e in closes["reader"]], [1001])
        finally:
            host.close()

    async def test_closes_during_the_shutdown(self):
        host = Host(apps=(), test_plugin=True, config="max_queued_bytes = 1073741824\n").start()
        try:
            port = host.apps["testapp"]
            rng = random.Random(15)
            clients = []  # (object, attachment, client)
            for i in range(24):
                obj = f"busy{i % 3}"
                clients.append((obj, f"c{i}", RawClient(port, f"/o/{obj}?att=c{i}")))
            # One of them stops reading with a full outbox, so the drain runs its full length.
            feeder = await host.connect("testapp", "/o/busy0?att=feeder")
            await recv_json(feeder)
            text = "y" * 60000
            for _ in range(outbox_filler_count(len(text)) // 2):
                await feeder.send(json.dumps({"cmd": "broadcast", "text": text, "exceptSelf": True}))
                await recv_json(feeder)
            stopped = asyncio.get_running_loop().run_in_executor(None, host.stop, signal.SIGTERM, 30)
            await asyncio.sleep(0.05)  # the signal is on its way
            # While the host drains and tears down: resets, Close frames and messages, spread
            # over the drain (2 s) and past it.
            start = time.monotonic()
            order = list(clients)
            rng.shuffle(order)
            for k, (obj, att, c) in enumerate(order):
                delay = start + 2.6 * k / len(order) - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    if k % 3 == 0:
                        c.abort()
                    elif k % 3 == 1:
                        c.sock.sendall(b"\x88\x82" + b"\x00\x00\x00\x00" + struct.pack("!H", 1000))
                    else:
                        c.send_text(json.dumps({"cmd": "broadcast", "text": "late"}))
                except OSError:
                    pass  # the host already closed it: also a worst moment
            code = await stopped
            self.assertEqual(sanitizer_lines(host), [])
            self.assertEqual(code, 0, host.stderr())
            for _, _, c in clients:
                c.sock.close()
            host.start()
            # Every socket's end reached its object exactly once and was committed.
            for obj in ("busy0", "busy1", "busy2"):
                closes = closes_by_attachment(host, obj)
                expected = sorted(att for o, att, _ in clients if o == obj) + (["feeder"] if obj == "busy0" else [])
                self.assertEqual(sorted(closes), sorted(expected), obj)
                for att, ends in closes.items():
                    self.assertEqual(len(ends), 1, (obj, att, ends))
        finally:
            host.close()


    async def test_sigterm_while_an_answer_waits(self):
        # A hopeflow /publish waits (up to ack_timeout_ms) for the acks of its user's sockets; the
        # client never acks. SIGTERM comes while the answer is pending in the object.
        host = Host(apps=("hopeflow",), config="[apps.hopeflow]\nack_timeout_ms = 600000\n").start()
        try:
            user = "waiting-user"
            ws = await host.connect("hopeflow", "/", headers={"Authorization": "Bearer " + make_jwt({"userId": user})})
            await ws.send(json.dumps({"type": "subscribe", "filters": [{}]}))
            self.assertEqual((await recv_json(ws))["type"], "subscribed")
            headers = {"Content-Type": "application/json",
                       "Authorization": "Bearer " + make_jwt({"userId": "publisher"})}

            def publish():
                try:
                    return host.http("POST", "hopeflow", "/publish",
                                     json.dumps({"userId": user, "payload": {"n": 1}}), headers)[0]
                except (OSError, ConnectionError) as e:  # the host went away first
                    return type(e).__name__

            pending = asyncio.get_running_loop().run_in_executor(None, publish)
            envelope = await recv_json(ws)  # delivered, and never acked
            self.assertEqual(envelope["payload"], {"n": 1})
            code = await asyncio.get_running_loop().run_in_executor(None, host.stop)
            self.assertEqual(sanitizer_lines(host), [])
            self.assertEqual(code, 0, host.stderr())
            answer = await pending
            self.assertIn(answer, (503, "RemoteDisconnected", "ConnectionResetError"), answer)
        finally:
            host.close()


class EvictionCloseTest(unittest.IsolatedAsyncioTestCase):
    async def test_closes_racing_evictions(self):
        host = Host(apps=(), test_plugin=True, idle_evict=0.05).start()
        try:
            port = host.apps["testapp"]
            loop = asyncio.get_running_loop()
            expected = []
            for rnd in range(25):
                clients = [RawClient(port, f"/o/racy?att=r{rnd}-{i}") for i in range(4)]
                expected += [f"r{rnd}-{i}" for i in range(4)]
                evict = loop.run_in_executor(None, host.admin, "POST", "/objects/TestEcho/racy/evict")
                for i, c in enumerate(clients):
                    if i % 2 == 0:
                        c.abort()
                    else:
                        c.send_text(json.dumps({"cmd": "broadcast", "text": "bye"}))
                        c.sock.sendall(b"\x88\x82" + b"\x00\x00\x00\x00" + struct.pack("!H", 1000))
                    if rnd % 5 == i:
                        await asyncio.sleep(0.06)  # past the idle timeout: evicted meanwhile
                status, _, _ = await evict
                self.assertIn(status, (200, 409))
                for c in clients:
                    c.sock.close()
            # Wait until every close has been delivered, then check each came exactly once.
            deadline = time.time() + 10
            while time.time() < deadline:
                closes = closes_by_attachment(host, "racy")
                if len(closes) >= len(expected):
                    break
                await asyncio.sleep(0.1)
            self.assertEqual(sorted(closes), sorted(expected))
            for att, ends in closes.items():
                self.assertEqual(len(ends), 1, (att, ends))
            # The object and the host carry on.
            ws = await host.connect("testapp", "/o/racy?att=after")
            await recv_json(ws)
            await ws.send("still here")
            self.assertEqual(await recv_json(ws), {"echo": "still here"})
            await ws.close()
            self.assertEqual(host.stop(), 0, host.stderr())
            self.assertEqual(sanitizer_lines(host), [])
        finally:
            host.close()


if __name__ == "__main__":
    unittest.main()
