"""A cluster of hosts on one machine (docs/cluster.md): a real etcd (Debian etcd-server) on free
loopback ports, started here and killed by its PID; 2 or 3 dohost processes with --cluster that
share one --data folder, each with its own app and admin ports; a lease TTL of 2 s so that
failovers are quick. Objects are the test plugin's TestEcho (testapp): WebSocket commands put,
get and alarm, and GET /o/<name>/events. Every wait is bounded."""
import asyncio
import http.client
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import unittest

import websockets

from harness import ETCD, TTL, Etcd, Host, binary, free_port, metric, recv_json, recv_until

SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:")


class ClusterTest(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(ETCD):
            raise unittest.SkipTest("etcd-server is not installed")
        cls.etcd = Etcd().start()

    @classmethod
    def tearDownClass(cls):
        cls.etcd.close()

    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="dohost-cluster-")
        self.hosts = []
        self.etcd.thaw()

    def tearDown(self):
        self.etcd.thaw()
        for h in self.hosts:
            if h.proc is not None:
                os.kill(h.proc.pid, signal.SIGCONT)
            h.stop(signal.SIGKILL)
        for h in self.hosts:
            self.assertEqual(sanitizer_lines(h), [], h.stderr())
        shutil.rmtree(self.data, ignore_errors=True)

    def start_hosts(self, n, ttl=TTL, renew=0.5, idle_evict=None):
        """`n` hosts named <test>-0.. (names unique per test, so no host waits for the lease
        of one from an earlier test)."""
        prefix = self.id().rsplit(".", 1)[-1][5:25]
        out = []
        for i in range(n):
            h = Host(apps=(), test_plugin=True, data=self.data, idle_evict=idle_evict,
                     args=["--cluster", self.etcd.url, "--host-id", f"{prefix}-{i}",
                           "--peer", f"127.0.0.1:{free_port()}",
                           "--cluster-lease-ttl", str(ttl), "--cluster-lease-renew", str(renew)])
            h.host_id = f"{prefix}-{i}"
            h.stderr_path = os.path.join(self.data, "..", os.path.basename(self.data) + f"-{i}.log")
            self.hosts.append(h)
            out.append(h.start())
        return out

    # --- helpers ---------------------------------------------------------------------------

    def get_events(self, host, name):
        status, headers, body = host.http("GET", "testapp", f"/o/{name}/events")
        return status, headers, json.loads(body) if body else None

    def entries(self, host, name):
        """The host's /objects entries for the TestEcho named `name`."""
        _, objects = host.admin_json("GET", "/objects?class=TestEcho")
        return [o for o in objects if o.get("name") == name]

    def object_file(self, name):
        folder = os.path.join(self.data, "TestEcho")
        for f in os.listdir(folder) if os.path.isdir(folder) else []:
            if not f.endswith(".sqlite"):
                continue
            path = os.path.join(folder, f)
            if self.meta(path, "name") == name:
                return path
        return None

    @staticmethod
    def meta(path, key):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute("SELECT value FROM _do_meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @staticmethod
    def kv(path, key):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute("SELECT value FROM _do_kv WHERE key = ?", (key.encode(),)).fetchone()
        if row is None:
            return None
        return row[0].decode() if isinstance(row[0], bytes) else row[0]

    async def connect_when_owned(self, host, name, timeout):
        """Connects to the object through `host`, retrying while another host owns it."""
        deadline = time.time() + timeout
        while True:
            try:
                ws = await host.connect("testapp", f"/o/{name}")
                await recv_json(ws)  # hello
                return ws
            except websockets.exceptions.InvalidStatusCode as e:
                if e.status_code != 503 or time.time() > deadline:
                    raise
            await asyncio.sleep(0.1)

    @staticmethod
    async def put(ws, key, value):
        await ws.send(json.dumps({"cmd": "put", "key": key, "value": value}))
        return await recv_until(ws, lambda m: m.get("put") == key and m.get("value") == value)

    @staticmethod
    async def get(ws, key):
        await ws.send(json.dumps({"cmd": "get", "key": key}))
        return (await recv_until(ws, lambda m: m.get("key") == key))["value"]

    def cluster(self, host):
        status, body = host.admin_json("GET", "/cluster")
        self.assertEqual(status, 200)
        return body

    # --- cases -------------------------------------------------------------------------------

    async def test_requests_for_one_object_through_every_host_find_it_live_on_exactly_one_host(self):
        hosts = self.start_hosts(3)
        first = hosts[1]
        status, _, _ = self.get_events(first, "solo")
        self.assertEqual(status, 200)  # prefer-local: the host that was asked first claims it
        # Every other host relays to the owner: the same answer, and nothing runs twice.
        for h in hosts:
            status, headers, body = self.get_events(h, "solo")
            self.assertEqual((status, body), (200, []))
        # A WebSocket through another host reaches the object on its owner too.
        relayed = await hosts[2].connect("testapp", "/o/solo")
        self.assertEqual((await recv_json(relayed))["hello"], "solo")
        await relayed.close()
        ws = await first.connect("testapp", "/o/solo")
        await recv_json(ws)
        await ws.close()
        # Every host's admin API agrees: live on the first, nowhere else.
        live = [h for h in hosts if any(e["state"] == "live" for e in self.entries(h, "solo"))]
        self.assertEqual(live, [first])
        self.assertEqual(self.entries(first, "solo")[0]["host"], first.host_id)
        # /cluster: every host sees three hosts, and the owner counts its object.
        for h in hosts:
            deadline = time.time() + 5
            while True:
                view = self.cluster(h)
                counts = {x["id"]: x["objectsOwned"] for x in view["hosts"]}
                if len(view["hosts"]) == 3 and counts.get(first.host_id) == 1:
                    break
                self.assertLess(time.time(), deadline, view)
                await asyncio.sleep(0.1)
            self.assertEqual(view["self"], h.host_id)
            self.assertEqual(view["phase"], "serving")
            self.assertGreater(view["incarnation"], 0)
            self.assertTrue(all(x["lease"] and x["peer"] for x in view["hosts"]))
        doctl = subprocess.run([binary("doctl"), "--admin", f"http://127.0.0.1:{first.admin_port}",
                                "cluster"], capture_output=True, text=True, timeout=10)
        self.assertEqual(doctl.returncode, 0, doctl.stderr)
        for h in hosts:
            self.assertIn(h.host_id, doctl.stdout)
        m = first.metrics()
        self.assertEqual(metric(m, "dohost_cluster_hosts"), 3)
        self.assertGreaterEqual(metric(m, "dohost_placement_claims_total"), 1)
        self.assertEqual(metric(hosts[0].metrics(), "dohost_placement_owned"), 0)

    async def test_when_the_owner_is_killed_a_survivor_owns_the_object_within_ttl_plus_3s_with_all_committed_data(self):
        a, b = self.start_hosts(2)
        ws = await self.connect_when_owned(a, "failover", 5)
        for i in range(20):
            await self.put(ws, f"k{i}", f"v{i}")  # acknowledged: committed first
        a.kill()
        killed = time.time()
        survivor = await self.connect_when_owned(b, "failover", TTL + 3)
        took = time.time() - killed
        self.assertLess(took, TTL + 3)
        for i in range(20):
            self.assertEqual(await self.get(survivor, f"k{i}"), f"v{i}")
        await survivor.close()
        self.assertEqual([e["host"] for e in self.entries(b, "failover")], [b.host_id])
        print(f"\n  failover: {took:.2f} s after SIGKILL (TTL {TTL} s)")

    async def test_a_host_whose_etcd_is_frozen_fences_itself_before_its_lease_can_expire(self):
        a, b = self.start_hosts(2)
        ws = await self.connect_when_owned(a, "frozen", 5)
        await self.put(ws, "k", "before")
        path = self.object_file("frozen")
        token_before = self.meta(path, "fence_token")
        self.assertIsNotNone(token_before)
        commits = metric(a.metrics(), "dohost_storage_commits_total")

        self.etcd.freeze()
        frozen = time.time()
        try:
            # The lease cannot expire before TTL after the last renewal; the host stops first.
            deadline = frozen + TTL + 2
            while self.cluster(a)["phase"] == "serving":
                self.assertLess(time.time(), deadline)
                await asyncio.sleep(0.05)
            fenced_after = time.time() - frozen
            self.assertLess(fenced_after, TTL)
            # Its socket is closed with 1012, and it runs nothing for the object meanwhile.
            await asyncio.wait_for(ws.wait_closed(), 5)
            self.assertEqual(ws.close_code, 1012)
            status, _, body = self.get_events(a, "frozen")
            self.assertEqual(status, 503)
            self.assertIn("cluster unavailable", body["error"])
            self.assertEqual(metric(a.metrics(), "dohost_storage_commits_total"), commits)
            self.assertEqual(metric(a.metrics(), "dohost_cluster_self_fences_total"), 1)
            self.assertEqual(metric(a.metrics(), "dohost_cluster_serving"), 0)
            self.assertIsNotNone(self.cluster(a)["lastSelfFence"])
        finally:
            self.etcd.thaw()
        self.assertIn("self-fence", a.stderr())

        # etcd back: the hosts register again and the object is claimed afresh, with a newer
        # token; the token in the file never went backwards.
        seen = [int(token_before)]
        ws2 = None
        deadline = time.time() + 15
        while ws2 is None:
            self.assertLess(time.time(), deadline)
            for h in (b, a):
                try:
                    ws2 = await h.connect("testapp", "/o/frozen")
                    await recv_json(ws2)
                    break
                except websockets.exceptions.InvalidStatusCode:
                    ws2 = None
            seen.append(int(self.meta(path, "fence_token")))
            await asyncio.sleep(0.1)
        self.assertEqual(await self.get(ws2, "k"), "before")
        await self.put(ws2, "k", "after")
        seen.append(int(self.meta(path, "fence_token")))
        await ws2.close()
        self.assertEqual(seen, sorted(seen))
        self.assertGreater(seen[-1], seen[0])
        print(f"\n  self-fence {fenced_after:.2f} s after etcd froze (TTL {TTL} s)")

    async def test_a_commit_from_a_host_whose_token_is_older_than_the_files_is_refused_and_nothing_of_it_is_visible(self):
        a, b = self.start_hosts(2)
        zombie = await self.connect_when_owned(a, "zombie", 5)
        await self.put(zombie, "k", "first")
        path = self.object_file("zombie")
        old_token = int(self.meta(path, "fence_token"))

        os.kill(a.proc.pid, signal.SIGSTOP)  # frozen past its lease
        try:
            ws = await self.connect_when_owned(b, "zombie", TTL + 5)
            self.assertEqual(await self.get(ws, "k"), "first")
            await self.put(ws, "k", "second")
            new_token = int(self.meta(path, "fence_token"))
            self.assertGreater(new_token, old_token)
            # The frozen host's client writes; the bytes wait in the kernel for it.
            await zombie.send(json.dumps({"cmd": "put", "key": "k", "value": "zombie"}))
            await zombie.send(json.dumps({"cmd": "put", "key": "z", "value": "zombie"}))
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)

        # Refused: by the commit's token check or, had the keeper won the race, by the
        # self-fence before the event; either way nothing of it is committed or sent.
        got = []
        try:
            while True:
                got.append(json.loads(await asyncio.wait_for(zombie.recv(), 5)))
        except websockets.exceptions.ConnectionClosed:
            pass
        self.assertEqual([m for m in got if m.get("value") == "zombie"], [])
        self.assertEqual(zombie.close_code, 1012)
        self.assertEqual(await self.get(ws, "k"), "second")
        self.assertIsNone(await self.get(ws, "z"))
        self.assertEqual(self.kv(path, "kv:k"), "second")
        self.assertIsNone(self.kv(path, "kv:z"))
        self.assertEqual(int(self.meta(path, "fence_token")), new_token)
        m = a.metrics()
        refusals = metric(m, "dohost_fencing_refusals_total")
        self.assertGreaterEqual(refusals + metric(m, "dohost_cluster_self_fences_total"), 1)
        if refusals:
            self.assertIn("fencing: commit refused", a.stderr())
        await ws.close()
        print("\n  refused by " + ("the commit's token check" if refusals else "the self-fence"))

    async def test_an_alarm_set_on_an_object_of_a_host_that_is_then_killed_fires_on_a_survivor(self):
        a, b = self.start_hosts(2)
        ws = await self.connect_when_owned(a, "wake", 5)
        await ws.send(json.dumps({"cmd": "alarm", "ms": 1500}))
        await recv_until(ws, lambda m: m.get("ok"))
        a.kill()
        path = self.object_file("wake")
        # Nobody asks for the object: the survivor's rescan of the shared alarm index finds the
        # alarm, claims the object once the dead host's lease is gone, and runs it.
        deadline = time.time() + 1.5 + TTL + 4
        while True:
            events = json.loads(self.kv(path, "events") or "[]")
            if any(e["event"] == "alarm" for e in events):
                break
            self.assertLess(time.time(), deadline)
            await asyncio.sleep(0.1)
        self.assertEqual(metric(b.metrics(), "dohost_alarms_fired_total"), 1)
        self.assertEqual([e["host"] for e in self.entries(b, "wake")], [b.host_id])

    async def test_an_unowned_objects_alarm_fires_on_exactly_one_host(self):
        hosts = self.start_hosts(3, idle_evict=0.3)
        ws = await self.connect_when_owned(hosts[0], "once", 5)
        await ws.send(json.dumps({"cmd": "alarm", "ms": 2000}))
        await recv_until(ws, lambda m: m.get("ok"))
        await ws.close()  # idle, no socket: evicted, and its ownership key released
        path = self.object_file("once")
        deadline = time.time() + 8
        while not any(e["event"] == "alarm" for e in json.loads(self.kv(path, "events") or "[]")):
            self.assertLess(time.time(), deadline)
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # a second run would show by now
        alarms = [e for e in json.loads(self.kv(path, "events")) if e["event"] == "alarm"]
        self.assertEqual(len(alarms), 1)
        fired = [metric(h.metrics(), "dohost_alarms_fired_total") for h in hosts]
        self.assertEqual(sum(fired), 1, fired)
        self.assertGreaterEqual(metric(hosts[0].metrics(), "dohost_placement_releases_total"), 1)

    async def test_sigterm_releases_the_hosts_objects_at_once_and_exits_0(self):
        # A long TTL: a claim within a second cannot come from the lease expiring.
        a, b = self.start_hosts(2, ttl=10, renew=1)
        ws = await self.connect_when_owned(a, "handover", 5)
        await self.put(ws, "k", "kept")
        status, _, body = self.get_events(b, "handover")  # relayed to the owner
        self.assertEqual((status, body), (200, []))
        a.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(ws.wait_closed(), 5)
        self.assertEqual(ws.close_code, 1012)  # leaving the cluster: reconnect elsewhere
        self.assertEqual(a.stop(timeout=10), 0)
        left = time.time()
        survivor = await self.connect_when_owned(b, "handover", 3)
        self.assertLess(time.time() - left, 2)
        self.assertEqual(await self.get(survivor, "k"), "kept")
        await survivor.close()

    async def test_bad_cluster_flags_are_one_line_errors(self):
        cases = [
            (["--cluster", "127.0.0.1:1"], "expected http://HOST:PORT"),
            (["--cluster", self.etcd.url], "--cluster needs --host-id"),
            (["--cluster", self.etcd.url, "--host-id", "a/b", "--peer", "127.0.0.1:1"], "--host-id"),
            (["--cluster", self.etcd.url, "--host-id", "x"], "--cluster needs --peer"),
            (["--host-id", "x"], "need --cluster"),
            (["--cluster", self.etcd.url, "--host-id", "x", "--peer", "127.0.0.1:1",
              "--cluster-lease-ttl", "2", "--cluster-lease-renew", "3"], "must be shorter"),
        ]
        for args, expected in cases:
            h = Host(apps=(), data=self.data, args=args)
            proc = subprocess.run(h.command(), capture_output=True, text=True, timeout=10)
            self.assertEqual(proc.returncode, 2, args)
            self.assertIn(expected, proc.stderr, args)
            self.assertEqual(len(proc.stderr.strip().splitlines()), 1, proc.stderr)


def sanitizer_lines(host):
    return [line for line in host.stderr().splitlines() if any(m in line for m in SANITIZER_MARKS)]


if __name__ == "__main__":
    unittest.main()
