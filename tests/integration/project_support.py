"""Helpers shared by test_broadcaster.py and test_bridge.py (the two projectId-scoped apps)."""
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import time

import websockets

from harness import recv_json

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "node")


def raise_fd_limit(want=8192):
    """Lets this process (and the host it starts) hold a few thousand sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def raw_request(port, path, upgrade=True, headers=None, timeout=5):
    """Sends one GET (a WebSocket upgrade by default) and returns (status, headers, body).

    Used for refused upgrades: it reads any status line and body, where a WebSocket client
    library only reports that the handshake failed.
    """
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if upgrade:
        lines[2] = "Connection: Upgrade"
        lines += ["Upgrade: websocket", "Sec-WebSocket-Version: 13",
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ")[1])
        hdrs = {}
        for line in header_lines:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        length = int(hdrs.get("content-length", "-1"))
        while length < 0 or len(body) < length:
            if status == 101:
                break
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            body += chunk
        return status, hdrs, body


def refused(port, path, **kw):
    """(status, JSON body) of an upgrade the host refuses."""
    status, hdrs, body = raw_request(port, path, **kw)
    assert status != 101, f"{path} was accepted"
    assert hdrs.get("content-type", "").startswith("application/json"), hdrs
    return status, json.loads(body)


async def open_many(host, app, paths, batch=100):
    """Opens one WebSocket per path, `batch` handshakes at a time."""
    out = []
    for i in range(0, len(paths), batch):
        out += await asyncio.gather(*(host.connect(app, p) for p in paths[i:i + batch]))
    return out


async def close_all(sockets):
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def node_script(test, name, port):
    """Runs tests/integration/node/<name> against the port; returns its JSON lines."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        test.skipTest("node is not installed (the seed snippets run in Node)")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "ws")):
        test.skipTest("the ws package is not installed: run tests/integration/node/setup")
    proc = subprocess.run([node, os.path.join(NODE_DIR, name), str(port)], capture_output=True,
                          text=True, timeout=60)
    test.assertEqual(proc.returncode, 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}")
    return [json.loads(l) for l in proc.stdout.splitlines() if l.startswith('{"check"')]


def ms_now():
    return int(time.time() * 1000)


class ProjectClients:
    """Clients of one project of `app`, by name: `await p.join("r1", "runtime")`. Subclasses
    say where the welcome message keeps the client id."""

    app = None

    def __init__(self, host, project_id):
        self.host = host
        self.id = project_id
        self.ws = {}
        self.ids = {}
        self.welcome = {}

    @staticmethod
    def client_id(welcome):
        raise NotImplementedError

    async def join(self, name, client_type, query=""):
        ws = await self.host.connect(
            self.app, f"/websocket?type={client_type}&projectId={self.id}{query}")
        welcome = await recv_json(ws)
        self.ws[name], self.welcome[name] = ws, welcome
        self.ids[name] = self.client_id(welcome)
        return ws

    async def send(self, name, msg):
        await self.ws[name].send(json.dumps(msg) if not isinstance(msg, str) else msg)

    async def recv(self, name):
        return await recv_json(self.ws[name])
