"""Graceful leave (docs/cluster.md, "Graceful leave"): SIGTERM on one host of a cluster hands
its objects over first, then closes the connections it holds with 1012 spread over
--cluster-leave-spread, and exits 0; a rolling restart of every host under traffic loses no
acknowledged write and drops each client at most once per restart of its host. A real etcd
(test_cluster.Etcd), dohost processes sharing one --data folder with their own app, admin and
peer ports, a lease TTL of 2 s; objects are the test plugin's TestEcho (testapp). Every wait is
bounded; the only timing assertions are generous ones."""
import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import websockets

from harness import Host, free_port, recv_until
from test_cluster import ETCD, TTL, Etcd, sanitizer_lines


class LeaveTest(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(ETCD):
            raise unittest.SkipTest("etcd-server is not installed")
        cls.etcd = Etcd().start()

    @classmethod
    def tearDownClass(cls):
        cls.etcd.close()

    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="dohost-leave-")
        self.hosts = []

    def tearDown(self):
        for h in self.hosts:
            h.stop(signal.SIGKILL)
        for h in self.hosts:
            self.assertEqual(sanitizer_lines(h), [], h.stderr())
        shutil.rmtree(self.data, ignore_errors=True)

    def start_hosts(self, n, spread):
        prefix = self.id().rsplit(".", 1)[-1][5:25]
        out = []
        for i in range(n):
            peer = free_port()
            h = Host(apps=(), test_plugin=True, data=self.data,
                     args=["--cluster", self.etcd.url, "--host-id", f"{prefix}-{i}",
                           "--peer", f"127.0.0.1:{peer}", "--cluster-lease-ttl", str(TTL),
                           "--cluster-lease-renew", "0.5", "--cluster-leave-spread", str(spread)])
            h.host_id = f"{prefix}-{i}"
            h.stderr_path = os.path.join(self.data, "..", os.path.basename(self.data) + f"-{i}.log")
            self.hosts.append(h)
            out.append(h.start())
        return out

    @staticmethod
    def exit_code(host, timeout=15):
        # Waits without signalling again (a second SIGTERM would end the spread).
        try:
            code = host.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            host.proc.kill()
            code = host.proc.wait()
        host.proc = None
        host.log.close()
        return code

    @staticmethod
    async def closed_at(ws):
        await asyncio.wait_for(ws.wait_closed(), 20)
        return time.monotonic(), ws.close_code

    # --- cases -------------------------------------------------------------------------------

    async def test_the_1012_closes_of_a_leaving_host_are_spread_and_ownership_goes_first(self):
        spread = 2.0
        a, b = self.start_hosts(2, spread)
        n = 8
        clients = []
        for i in range(n):
            ws = await a.connect("testapp", f"/o/spread-{i}")  # a claims each (prefer-local)
            await recv_until(ws, lambda m: "hello" in m)
            await ws.send(json.dumps({"cmd": "put", "key": "k", "value": f"v{i}"}))
            await recv_until(ws, lambda m: m.get("put") == "k")
            clients.append(ws)
        closes = [asyncio.ensure_future(self.closed_at(ws)) for ws in clients]
        sent = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        # Ownership goes before the closes: as soon as the first client hears 1012, another
        # host can claim an object whose client the leaving host still holds.
        done, _ = await asyncio.wait(closes, return_when=asyncio.FIRST_COMPLETED, timeout=20)
        self.assertTrue(done)
        last = clients[-1]
        still_open_before = last.open
        moved = await b.connect("testapp", f"/o/spread-{n - 1}")
        await recv_until(moved, lambda m: "hello" in m)
        still_open_after = last.open
        await moved.send(json.dumps({"cmd": "get", "key": "k"}))
        self.assertEqual((await recv_until(moved, lambda m: "key" in m))["value"], f"v{n - 1}")
        self.assertTrue(still_open_before and still_open_after,
                        "the last client was closed before another host could claim its object")
        results = await asyncio.gather(*closes)
        self.assertEqual([code for _, code in results], [1012] * n)
        times = sorted(t for t, _ in results)
        # Spread: the closes span about the window (7/8 of it for 8 clients); at least half.
        self.assertGreaterEqual(times[-1] - times[0], spread / 2, times)
        self.assertLess(times[-1] - sent, spread + 5, times)
        self.assertEqual(await asyncio.to_thread(self.exit_code, a), 0)
        await moved.close()

    async def test_a_second_sigterm_ends_the_spread_at_once(self):
        a, _ = self.start_hosts(2, 60)
        clients = []
        for i in range(4):
            ws = await a.connect("testapp", f"/o/hurry-{i}")
            await recv_until(ws, lambda m: "hello" in m)
            clients.append(ws)
        closes = [asyncio.ensure_future(self.closed_at(ws)) for ws in clients]
        a.proc.send_signal(signal.SIGTERM)
        done, _ = await asyncio.wait(closes, return_when=asyncio.FIRST_COMPLETED, timeout=20)
        self.assertTrue(done)
        self.assertTrue(clients[-1].open)  # its turn is 45 s away
        a.proc.send_signal(signal.SIGTERM)
        results = await asyncio.wait_for(asyncio.gather(*closes), 10)
        self.assertEqual([code for _, code in results], [1012] * 4)
        self.assertEqual(await asyncio.to_thread(self.exit_code, a), 0)

    async def test_a_bad_leave_spread_is_a_one_line_error(self):
        for value in ["-1", "601", "soon"]:
            h = Host(apps=(), data=self.data, args=["--cluster-leave-spread", value])
            proc = subprocess.run(h.command(), capture_output=True, text=True, timeout=10)
            self.assertEqual(proc.returncode, 2, value)
            self.assertIn("cluster-leave-spread", proc.stderr, value)
            self.assertEqual(len(proc.stderr.strip().splitlines()), 1, proc.stderr)

    async def test_a_rolling_restart_loses_no_acknowledged_write_and_drops_each_client_at_most_once(self):
        hosts = self.start_hosts(3, 1)
        alive = set(range(3))
        leaving = {}        # host index -> restart round while it leaves
        rounds = [0]
        acked = {}          # key -> value, acknowledged (the put's broadcast came back)
        drops = []          # (client, host index, round, close code)
        stalls = []
        stop = asyncio.Event()

        async def connect(i, avoid):
            # Another live host than the one that dropped us; a host that went away meanwhile
            # is just the next one tried.
            for attempt in range(60):
                choices = sorted(alive - {avoid}) or sorted(alive)
                h = choices[(i + attempt) % len(choices)]
                try:
                    ws = await hosts[h].connect("testapp", f"/o/roll-{i % 3}")
                    await recv_until(ws, lambda m: "hello" in m, timeout=10)
                    return h, ws
                except (OSError, asyncio.TimeoutError, TimeoutError,
                        websockets.exceptions.WebSocketException):
                    await asyncio.sleep(0.1)
            raise AssertionError(f"client {i} found no host to connect to")

        async def client(i):
            # Clients 0-2 start on hosts 0-2, which claim roll-0..2; clients 3-5 start on the
            # next host along, so their sockets are relayed to the owner.
            start_on = (i + i // 3) % 3
            ws = await hosts[start_on].connect("testapp", f"/o/roll-{i % 3}")
            await recv_until(ws, lambda m: "hello" in m)
            h = start_on
            seq = 0
            while not stop.is_set():
                key, value = f"c{i}-{seq}", f"v{seq}"
                message = json.dumps({"cmd": "put", "key": key, "value": value})
                tries = 0
                while True:
                    try:
                        await ws.send(message)
                        await recv_until(ws, lambda m: m.get("put") == key, timeout=3)
                        acked[key] = value
                        break
                    except (TimeoutError, asyncio.TimeoutError):
                        # Unanswered (sent to a host that was handing the object over): the
                        # put is idempotent, so it is sent again.
                        tries += 1
                        if tries >= 5:
                            stalls.append(key)
                            return
                    except websockets.exceptions.ConnectionClosed:
                        drops.append((i, h, leaving.get(h), ws.close_code))
                        h, ws = await connect(i, h)
                seq += 1
                await asyncio.sleep(0.02)
            await ws.close()

        tasks = [asyncio.ensure_future(client(i)) for i in range(6)]
        started = time.monotonic()
        await asyncio.sleep(1)
        codes = []
        for k in range(3):
            rounds[0] += 1
            leaving[k] = rounds[0]
            alive.discard(k)
            hosts[k].proc.send_signal(signal.SIGTERM)
            codes.append(await asyncio.to_thread(self.exit_code, hosts[k]))
            await asyncio.to_thread(hosts[k].start)
            leaving.pop(k)
            alive.add(k)
            await asyncio.sleep(1)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        elapsed = time.monotonic() - started
        self.assertEqual(codes, [0, 0, 0])
        self.assertEqual(stalls, [])
        # Only a client whose own connection was on the leaving host is dropped, with 1012,
        # and once per restart of that host.
        for i, h, round_, code in drops:
            self.assertIsNotNone(round_, (i, h, drops))
            self.assertEqual(code, 1012, drops)
        per_round = [(i, r) for i, _, r, _ in drops]
        self.assertEqual(len(per_round), len(set(per_round)), drops)
        self.assertGreaterEqual(len(drops), 6, drops)  # clients 1-4 at least, and 0 and 5
        self.assertGreater(len(acked), 30)
        # Every acknowledged write is there, read back through one host.
        readers = {}
        for o in range(3):
            ws = await hosts[o].connect("testapp", f"/o/roll-{o}")
            await recv_until(ws, lambda m: "hello" in m)
            readers[o] = ws
        missing = []
        for key, value in acked.items():
            ws = readers[int(key[1:].split("-")[0]) % 3]
            await ws.send(json.dumps({"cmd": "get", "key": key}))
            got = await recv_until(ws, lambda m: m.get("key") == key)
            if got["value"] != value:
                missing.append((key, value, got["value"]))
        for ws in readers.values():
            await ws.close()
        self.assertEqual(missing, [], f"{len(missing)} of {len(acked)} acknowledged writes lost")
        print(f"rolling restart: {len(acked)} acknowledged writes, {len(drops)} drops, "
              f"{elapsed:.1f} s", flush=True)


if __name__ == "__main__":
    unittest.main()
