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
ETCD = "/usr/bin/etcd"
TTL = 2  # seconds; etcd's minimum
# DOHOST_TEST_CLUSTER=N: `Host` starts N hosts sharing one data folder (ClusterHost below).
CLUSTER = int(os.environ.get("DOHOST_TEST_CLUSTER") or 0)


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


class OneHost:
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


class Etcd:
    """One etcd member on free loopback ports, in a temporary folder."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="dohost-etcd-")
        self.client_port = free_port()
        self.peer_port = free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.proc = None

    def start(self, timeout=20):
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.log = open(os.path.join(self.dir, "etcd.log"), "ab")
        self.proc = subprocess.Popen(
            [ETCD, "--name", "m0", "--data-dir", os.path.join(self.dir, "m0"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"m0={peer}", "--initial-cluster-state", "new",
             "--initial-cluster-token", os.path.basename(self.dir),
             "--logger", "zap", "--log-level", "error"],
            stdout=self.log, stderr=self.log)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("etcd exited; see " + self.dir)
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=1)
                conn.request("GET", "/health")
                if b"true" in conn.getresponse().read():
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("etcd did not become healthy")

    def freeze(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self):
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)



class ClusterHost:
    """N dohost processes with --cluster that share one data folder and a local etcd, behind
    OneHost's interface, so a suite written for one host runs over a cluster. Each host has app
    ports of its own; `connect`, `http`, `url` and `ws_url` take the hosts in turn, so a test's
    clients land on different hosts. `apps` and `admin_port` are the first host's. Admin calls
    about one object go to the host that owns it; `metrics` sums every host's. Restarts
    restart every host, keeping ports."""

    def __init__(self, apps=APPS, idle_evict=None, env=None, args=(), data=None, config=None,
                 test_plugin=False, n=None, **kwargs):
        self.n = n or CLUSTER
        self.own_data = data is None
        self.data = data or tempfile.mkdtemp(prefix="dohost-test-")
        self.etcd = Etcd()
        self.args = list(args)
        self.hosts = [OneHost(apps=apps, idle_evict=idle_evict, env=env, data=self.data,
                              config=config, test_plugin=test_plugin, **kwargs)
                      for _ in range(self.n)]
        for i, h in enumerate(self.hosts):
            h.peer_port = free_port()
            h.stderr_path = os.path.join(self.data, "..", os.path.basename(self.data) + f"-{i}.log")
        self.generation = 0
        self.turn = 0

    @property
    def apps(self):
        return self.hosts[0].apps

    @property
    def admin_port(self):
        return self.hosts[0].admin_port

    @property
    def proc(self):
        return self.hosts[0].proc

    def next_host(self):
        h = self.hosts[self.turn % self.n]
        self.turn += 1
        return h

    def start(self, timeout=10):
        if self.etcd.proc is None:
            self.etcd.start()
        self.revoke_leases()  # keys of hosts killed before: no waiting for their TTL
        # A new name per start, so no host waits for the lease of its earlier life.
        self.generation += 1
        tag = os.path.basename(self.data)[-6:]
        for i, h in enumerate(self.hosts):
            h.host_id = f"{tag}-{i}-{self.generation}"
            h.args = self.args + ["--cluster", self.etcd.url, "--host-id", h.host_id,
                                  "--peer", f"127.0.0.1:{h.peer_port}",
                                  "--cluster-lease-ttl", str(TTL), "--cluster-lease-renew", "0.5"]
            h.start(timeout)
        return self

    def revoke_leases(self):
        status, body = self._etcd_post("/v3/lease/leases", {})
        for lease in (body or {}).get("leases", []):
            self._etcd_post("/v3/lease/revoke", {"ID": lease["ID"]})

    def _etcd_post(self, path, payload):
        conn = http.client.HTTPConnection("127.0.0.1", self.etcd.client_port, timeout=5)
        try:
            conn.request("POST", path, body=json.dumps(payload))
            r = conn.getresponse()
            data = r.read()
            return r.status, json.loads(data) if data else None
        finally:
            conn.close()

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Stops every host with `sig`; returns the first nonzero exit code, else 0."""
        codes = [h.stop(sig, timeout) for h in self.hosts]
        if all(c is None for c in codes):
            return None
        return next((c for c in codes if c), 0)

    def kill(self):
        return self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        return self.start()

    def close(self):
        for h in self.hosts:
            h.stop()
        self.etcd.close()
        if self.own_data:
            shutil.rmtree(self.data, ignore_errors=True)
        for h in self.hosts:
            try:
                os.remove(h.stderr_path)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def stderr(self):
        return "\n".join(f"--- {h.host_id}:\n{h.stderr()}" for h in self.hosts)

    def url(self, app, path="/"):
        return self.next_host().url(app, path)

    def ws_url(self, app, path="/"):
        return self.next_host().ws_url(app, path)

    async def connect(self, app, path="/", headers=None, **kwargs):
        return await self.next_host().connect(app, path, headers, **kwargs)

    def http(self, method, app, path, body=None, headers=None, port=None):
        if port is not None:
            return self.hosts[0].http(method, app, path, body, headers, port)
        return self.next_host().http(method, app, path, body, headers)

    def owner_of(self, class_name, name):
        """The host that owns the object named `name` of `class_name` (every host's /objects
        says who owns it, as far as it knows), or None."""
        ids = {h.host_id: h for h in self.hosts}
        for h in self.hosts:
            _, objects = h.admin_json("GET", "/objects?class=" + urllib.parse.quote(class_name))
            for o in objects or []:
                if o.get("name") == name and o.get("host") in ids:
                    return ids[o["host"]]
        return None

    def admin(self, method, path, token=None):
        parts = urllib.parse.urlsplit(path).path.split("/")
        host = self.hosts[0]
        if method == "GET" and parts[1:] == ["objects"]:
            return 200, {"content-type": "application/json"}, json.dumps(
                self.objects(path, token)).encode()
        if len(parts) >= 4 and parts[1] == "objects":  # /objects/<class>/<name>[/...]
            host = self.owner_of(urllib.parse.unquote(parts[2]),
                                 urllib.parse.unquote(parts[3])) or host
        return host.admin(method, path, token)

    def admin_json(self, method, path, token=None):
        status, _, body = self.admin(method, path, token)
        return status, (json.loads(body) if body else None)

    def objects(self, path, token=None):
        """GET /objects of the cluster: every host's list, one entry per object, the owner's
        where a host owns it."""
        merged = {}
        for h in self.hosts:
            status, objects = h.admin_json("GET", path, token)
            assert status == 200, (status, objects)
            for o in objects:
                key = (o["class"], o["id"])
                if key not in merged or o.get("host") == h.host_id:
                    merged[key] = o
        return list(merged.values())

    def metrics(self):
        """Every host's metrics, summed series by series."""
        out = {}
        for h in self.hosts:
            for k, v in h.metrics().items():
                out[k] = out.get(k, 0) + v
        return out


Host = ClusterHost if CLUSTER else OneHost


def per_process(test):
    """Skips `test` over a cluster: what it checks belongs to one process."""
    import unittest
    return unittest.skipIf(CLUSTER, "checks one process (not meaningful summed over a cluster)")(test)


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
