"""Starts the real dohost binary on free loopback ports, for integration tests.

Tests are unittest.IsolatedAsyncioTestCase classes using Debian's python3-websockets (asyncio
API). The binary comes from $DOHOST_BIN (set by meson), else build/tools/dohost/dohost.
"""
import asyncio
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APPS = ("broadcaster", "hopeflow", "channels", "bridge", "guide")
JWT_SECRET = "test-secret"


# Ports are chosen below the kernel's ephemeral range (ip_local_port_range, 32768-60999 by
# default): a port from bind(0) is free when chosen, but once closed the kernel may hand it to
# any outgoing connection (a client socket of a parallel suite) before the host binds it.
_PORT_LOW, _PORT_HIGH = 12000, 32000
_handed_out = set()
_rng = random.Random(os.getpid() ^ time.time_ns())


def free_port():
    """A loopback port nothing listens on, not handed out before by this process."""
    for _ in range(1000):
        port = _rng.randrange(_PORT_LOW, _PORT_HIGH)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port")


def binary(name="dohost"):
    env = os.environ.get("DOHOST_BIN" if name == "dohost" else "DOCTL_BIN")
    if env:
        return env
    return os.path.join(ROOT, "build", "tools", name, name)


def test_plugin_path():
    return os.environ.get("DOHOST_TEST_PLUGIN") or os.path.join(
        ROOT, "build", "tests", "integration", "plugin", "libdohost_test_objects.so")


class PortTaken(RuntimeError):
    """The host exited 2 because one of its ports was taken in the meantime."""


class Host:
    """One dohost process. Ports are chosen once, so restart() keeps the same URLs."""

    def __init__(self, apps=APPS, idle_evict=None, env=None, args=(), data=None, config=None,
                 test_plugin=False, program=None, extra_apps=(), bundled=True):
        """`program`: another host executable (default: $DOHOST_BIN); `extra_apps`: apps
        beyond the bundled ones (a plugin's or the program's own), each given a port;
        `bundled`: False for a program without the bundled apps."""
        self.bundled = bundled
        self.program = program or binary()
        self.apps = {a: free_port() for a in apps}
        self.extra_apps = list(extra_apps)
        for a in extra_apps:
            self.apps[a] = free_port()
        self.test_plugin = test_plugin
        if test_plugin:
            self.apps["testapp"] = free_port()
        self.admin_port = free_port()
        self.own_data = data is None
        self.data = data or tempfile.mkdtemp(prefix="dohost-test-")
        self.idle_evict = idle_evict
        self.env = dict(os.environ, JWT_SECRET=JWT_SECRET)
        self.env.update(env or {})
        self.args = list(args)
        self.config = config
        self.proc = None
        self.started_once = False
        self.stderr_path = os.path.join(self.data, "..", os.path.basename(self.data) + ".log")

    def command(self):
        cmd = [self.program, "--data", self.data, "--admin", f"127.0.0.1:{self.admin_port}",
               "--log-level", "warn"]
        for app in self.extra_apps:
            cmd += ["--app", f"{app}=127.0.0.1:{self.apps[app]}"]
        if self.test_plugin:
            cmd += ["--plugin", test_plugin_path(), "--app", f"testapp=127.0.0.1:{self.apps['testapp']}"]
        for app in APPS if self.bundled else ():
            cmd += ["--app", f"{app}=127.0.0.1:{self.apps[app]}" if app in self.apps else f"{app}=off"]
        if self.idle_evict is not None:
            cmd += ["--idle-evict", str(self.idle_evict)]
        if self.config:
            path = os.path.join(self.data, "..", os.path.basename(self.data) + ".toml")
            with open(path, "w") as f:
                f.write(self.config)
            cmd += ["--config", path]
        return cmd + self.args

    def start(self, timeout=10):
        # Another process may still take a chosen port before the host binds it: on the first
        # start (no URL handed out yet), choose new ports and try again.
        for attempt in range(3):
            try:
                return self._start(timeout)
            except PortTaken:
                if self.started_once or attempt == 2:
                    raise
                self.apps = {a: free_port() for a in self.apps}
                self.admin_port = free_port()

    def _start(self, timeout):
        self.log = open(self.stderr_path, "ab")
        start_offset = self.log.tell()
        self.proc = subprocess.Popen(self.command(), env=self.env, stderr=self.log,
                                     stdout=subprocess.DEVNULL)
        deadline = time.time() + timeout
        ports = list(self.apps.values()) + [self.admin_port]
        while time.time() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                self.log.close()
                err = self.stderr()
                if code == 2 and "cannot listen on" in self._log_since(start_offset):
                    raise PortTaken(err)
                raise RuntimeError(f"dohost exited with {code}: {err}")
            if all(self._open(p) for p in ports):
                self.started_once = True
                return self
            time.sleep(0.02)
        raise RuntimeError("dohost did not start listening: " + self.stderr())

    def _log_since(self, offset):
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    @staticmethod
    def _open(port):
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", port)) == 0

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Stops the host with `sig` and returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        self.log.close()
        return code

    def kill(self):
        return self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        return self.start()

    def close(self):
        self.stop()
        if self.own_data:
            shutil.rmtree(self.data, ignore_errors=True)
            for p in (self.stderr_path,):
                try:
                    os.remove(p)
                except OSError:
                    pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # --- URLs and clients --------------------------------------------------------------

    def url(self, app, path="/"):
        return f"http://127.0.0.1:{self.apps[app]}{path}"

    def ws_url(self, app, path="/"):
        return f"ws://127.0.0.1:{self.apps[app]}{path}"

    async def connect(self, app, path="/", headers=None, **kwargs):
        """A websockets client connection (raises InvalidStatusCode on a refused upgrade)."""
        return await websockets.connect(self.ws_url(app, path), extra_headers=headers or {},
                                        max_size=None, open_timeout=5, **kwargs)

    def http(self, method, app, path, body=None, headers=None, port=None):
        """Returns (status, headers dict lowercased, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", port or self.apps[app], timeout=10)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        conn.close()
        return r.status, hdrs, data

    def admin(self, method, path, token=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http(method, None, path, headers=headers, port=self.admin_port)

    def admin_json(self, method, path, token=None):
        status, _, body = self.admin(method, path, token)
        return status, (json.loads(body) if body else None)

    def metrics(self):
        """Prometheus text as {(name, frozenset(labels)): value}, plus lookups by name."""
        _, _, body = self.admin("GET", "/metrics")
        return parse_metrics(body.decode())


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        if "{" in name_labels:
            name, labels = name_labels.split("{", 1)
            pairs = [p.split("=", 1) for p in labels.rstrip("}").split(",") if p]
            labels = frozenset((k, v.strip('"')) for k, v in pairs)
        else:
            name, labels = name_labels, frozenset()
        out[(name, labels)] = float(value)
    return out


def metric(metrics, name, **labels):
    """Sum of a metric over series whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, l), v in metrics.items() if n == name and want <= set(l))


def make_jwt(payload, secret=JWT_SECRET, alg="HS256"):
    import base64
    import hashlib
    import hmac

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    signing = f"{header}.{body}".encode()
    sig = b64(hmac.new(secret.encode(), signing, hashlib.sha256).digest()) if alg == "HS256" else ""
    return f"{header}.{body}.{sig}"


async def recv_json(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, predicate, timeout=5):
    """Receives JSON messages until one matches; returns it (others are dropped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError("no matching message")
        msg = await recv_json(ws, left)
        if predicate(msg):
            return msg


async def wait_for(predicate, timeout=10.0):
    """Polls `predicate` until it returns something true; returns that."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def no_message(ws, within=0.3):
    """True if nothing arrives within `within` seconds."""
    try:
        await asyncio.wait_for(ws.recv(), within)
        return False
    except asyncio.TimeoutError:
        return True


def quote(s):
    return urllib.parse.quote(s, safe="")
