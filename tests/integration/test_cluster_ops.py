"""Running a cluster (docs/cluster.md): a 3-member etcd that loses its leader while hosts serve,
and tools/cluster, the script that starts a local cluster. Real etcd members (Debian
etcd-server) and real dohost hosts on free loopback ports; every wait is bounded."""
import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from harness import ROOT, Host, binary, free_port, recv_json, recv_until
from test_cluster import ETCD, sanitizer_lines


def http_json(port, path, timeout=2):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        return r.status, json.loads(body) if body else None
    finally:
        conn.close()


class EtcdCluster:
    """`n` etcd members on loopback, one folder each, started together."""

    def __init__(self, n=3):
        self.dir = tempfile.mkdtemp(prefix="dohost-etcd3-")
        self.members = [{"name": f"m{i}", "client": free_port(), "peer": free_port(), "proc": None}
                        for i in range(n)]
        self.initial = ",".join(f"{m['name']}=http://127.0.0.1:{m['peer']}" for m in self.members)

    def urls(self, first=None):
        """The client URLs, `first` (a member) first: hosts try them in order."""
        ordered = sorted(self.members, key=lambda m: m is not first)
        return ",".join(f"http://127.0.0.1:{m['client']}" for m in ordered)

    def start(self, timeout=30):
        for m in self.members:
            url, peer = f"http://127.0.0.1:{m['client']}", f"http://127.0.0.1:{m['peer']}"
            m["log"] = open(os.path.join(self.dir, m["name"] + ".log"), "ab")
            m["proc"] = subprocess.Popen(
                [ETCD, "--name", m["name"], "--data-dir", os.path.join(self.dir, m["name"]),
                 "--listen-client-urls", url, "--advertise-client-urls", url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", self.initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", os.path.basename(self.dir),
                 "--logger", "zap", "--log-level", "error"],
                stdout=m["log"], stderr=m["log"])
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.leader() is not None:
                return self
            time.sleep(0.1)
        raise RuntimeError("the etcd cluster elected no leader; see " + self.dir)

    def status(self, m):
        """The member's status (the v3 JSON gateway's maintenance/status), or None."""
        if m["proc"] is None or m["proc"].poll() is not None:
            return None
        try:
            conn = http.client.HTTPConnection("127.0.0.1", m["client"], timeout=1)
            conn.request("POST", "/v3/maintenance/status", body="{}")
            body = json.loads(conn.getresponse().read())
            conn.close()
            return body
        except (OSError, ValueError):
            return None

    def leader(self):
        """The member that is the leader, as a live member reports it, or None."""
        for m in self.members:
            st = self.status(m)
            if st and st.get("leader") and st.get("leader") != "0":
                if st["leader"] == st.get("header", {}).get("member_id"):
                    return m
        return None

    def kill(self, m):
        m["proc"].kill()
        m["proc"].wait()
        m["proc"] = None

    def close(self):
        for m in self.members:
            if m["proc"] is not None:
                self.kill(m)
            if "log" in m:
                m["log"].close()
        shutil.rmtree(self.dir, ignore_errors=True)


class EtcdFailoverTest(unittest.IsolatedAsyncioTestCase):
    """A 3-member etcd tolerates the loss of one member, and so must the hosts using it: they
    keep their leases (no self-fence), keep their claims and can make new ones."""

    def setUp(self):
        if not os.path.exists(ETCD):
            self.skipTest("etcd-server is not installed")
        self.etcd = EtcdCluster(3).start()
        self.data = tempfile.mkdtemp(prefix="dohost-cluster-")
        self.hosts = []

    def tearDown(self):
        for h in self.hosts:
            h.stop(signal.SIGKILL)
        for h in self.hosts:
            self.assertEqual(sanitizer_lines(h), [], h.stderr())
        self.etcd.close()
        shutil.rmtree(self.data, ignore_errors=True)

    def start_host(self, i, urls):
        h = Host(apps=(), test_plugin=True, data=self.data,
                 args=["--cluster", urls, "--host-id", f"e3-{i}",
                       "--peer", f"127.0.0.1:{free_port()}",
                       "--cluster-lease-ttl", "5", "--cluster-lease-renew", "1"])
        h.host_id = f"e3-{i}"
        h.stderr_path = os.path.join(self.data, "..", os.path.basename(self.data) + f"-{i}.log")
        self.hosts.append(h)
        return h.start(timeout=20)

    async def put_through(self, host, name, key, value, timeout=10):
        deadline = time.time() + timeout
        while True:
            try:
                ws = await host.connect("testapp", f"/o/{name}")
                break
            except Exception:
                if time.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
        try:
            await recv_json(ws)  # hello
            await ws.send(json.dumps({"cmd": "put", "key": key, "value": value}))
            await recv_until(ws, lambda m: m.get("put") == key and m.get("value") == value)
        finally:
            await ws.close()

    async def test_hosts_keep_serving_when_the_etcd_leader_is_killed(self):
        # The leader is the first endpoint each host uses, so its death is both an election
        # and the loss of the hosts' own endpoint.
        leader = self.etcd.leader()
        self.assertIsNotNone(leader)
        urls = self.etcd.urls(first=leader)
        a, b = self.start_host(0, urls), self.start_host(1, urls)
        await self.put_through(a, "before-a", "k", "1")
        await self.put_through(b, "before-b", "k", "1")

        self.etcd.kill(leader)

        # Through the election and past a lease TTL: claims made before stay, new objects can
        # be claimed, and neither host fenced itself.
        await self.put_through(a, "after-a", "k", "2", timeout=15)
        await self.put_through(b, "after-b", "k", "2", timeout=15)
        await asyncio.sleep(6)
        await self.put_through(a, "before-a", "k", "3")
        await self.put_through(b, "before-b", "k", "3")
        for h in (a, b):
            status, body = h.admin_json("GET", "/cluster")
            self.assertEqual(status, 200)
            self.assertEqual(body["phase"], "serving", h.stderr())
            self.assertEqual(body["selfFences"], 0, h.stderr())
            self.assertEqual(sorted(x["id"] for x in body["hosts"]), ["e3-0", "e3-1"])
            self.assertIsNotNone(h.proc)
            self.assertIsNone(h.proc.poll())


def free_run(n):
    """A port p such that p .. p+n-1 are all free now."""
    for _ in range(200):
        base = free_port()
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports")


class ClusterScriptTest(unittest.TestCase):
    """tools/cluster: etcd and N hosts that share the app ports; SIGTERM stops them all."""

    def setUp(self):
        if not os.path.exists(ETCD):
            self.skipTest("etcd-server is not installed")
        self.data = tempfile.mkdtemp(prefix="dohost-cluster-script-")

    def tearDown(self):
        shutil.rmtree(self.data, ignore_errors=True)

    def script_logs(self, out_path):
        """What the script printed, and the end of each host's log."""
        text = open(out_path).read()
        folder = os.path.join(self.data, "_cluster")
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            with open(os.path.join(folder, name), errors="replace") as f:
                text += f"\n== {name}\n" + f.read()[-2000:]
        return text

    def test_tools_cluster_starts_etcd_and_two_hosts_sharing_the_app_port_and_sigterm_stops_them(self):
        etcd_port, admin_port, peer_port = free_run(2), free_run(2), free_run(2)
        app_port = free_port()
        cmd = [os.path.join(ROOT, "tools", "cluster"), "--bin", binary(), "--hosts", "2",
               "--data", self.data, "--etcd-port", str(etcd_port), "--admin-port", str(admin_port),
               "--peer-port", str(peer_port), "--",
               "--plugin", os.environ.get("DOHOST_TEST_PLUGIN", ""), "--log-level", "warn",
               "--app", f"testapp=127.0.0.1:{app_port}"]
        cmd += [f"--app={a}=off" for a in ("broadcaster", "hopeflow", "channels", "bridge", "guide")]
        out_path = os.path.join(self.data, "..", os.path.basename(self.data) + ".out")
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            deadline = time.time() + 30
            body = None
            while time.time() < deadline:
                try:
                    status, body = http_json(admin_port, "/cluster")
                    if status == 200 and len(body["hosts"]) == 2:
                        break
                except OSError:
                    pass
                self.assertIsNone(proc.poll(), self.script_logs(out_path))
                time.sleep(0.2)
            self.assertEqual(sorted(h["id"] for h in body["hosts"]), ["h1", "h2"],
                             self.script_logs(out_path))
            self.assertEqual({h["peer"] for h in body["hosts"]},
                             {f"127.0.0.1:{peer_port}", f"127.0.0.1:{peer_port + 1}"})
            status, other = http_json(admin_port + 1, "/cluster")
            self.assertEqual((status, other["self"]), (200, "h2"))
            # Both hosts listen on the one app port; whichever gets the connection answers.
            conn = http.client.HTTPConnection("127.0.0.1", app_port, timeout=5)
            conn.request("GET", "/o/script/events")
            self.assertIn(conn.getresponse().status, (200, 503))
            conn.close()

            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(timeout=30), 0)
            text = open(out_path).read()
            self.assertIn("h1 left (exit 0)", text)
            self.assertIn("h2 left (exit 0)", text)
            for port in (admin_port, admin_port + 1, etcd_port, app_port):
                with socket.socket() as s:
                    self.assertNotEqual(s.connect_ex(("127.0.0.1", port)), 0, port)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            try:
                os.remove(out_path)
            except OSError:
                pass

    def test_tools_cluster_refuses_bad_arguments_with_exit_2(self):
        for args in (["--hosts", "x"], ["--hosts", "0"], ["--bogus"], ["--data"]):
            r = subprocess.run([os.path.join(ROOT, "tools", "cluster"), "--bin", binary()] + args,
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn("tools/cluster", r.stderr, args)


if __name__ == "__main__":
    unittest.main()
