"""Crash loops, through the test plugin's TestCrash class, whose constructor, fetch or alarm
throws on demand: after object_failure_limit failures the object is failed (admin API, doctl,
metrics), its clients get 503 or close 1011, other objects carry on, and after the backoff it
is tried again."""
import asyncio
import json
import subprocess
import time
import unittest

from websockets.exceptions import ConnectionClosed, InvalidStatusCode

from harness import Host, binary, metric, recv_json

CONFIG = """
object_failure_limit = 3
object_failure_window = 60
object_failure_backoff = 1
object_failure_backoff_max = 2
alarm_retry_base = 0.05
"""


class CrashLoopTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.host = Host(apps=(), test_plugin=True, config=CONFIG).start()

    def tearDown(self):
        self.host.close()

    def get(self, path):
        status, headers, body = self.host.http("GET", "testapp", path)
        return status, headers, json.loads(body) if body else None

    def mode(self, name, where):
        self.assertEqual(self.get(f"/mode/{name}?throw={where}")[0], 200)

    def detail(self, name):
        status, body = self.host.admin_json("GET", f"/objects/TestCrash/{name}")
        self.assertEqual(status, 200, body)
        return body

    def crash_metrics(self):
        m = self.host.metrics()
        return (metric(m, "dohost_object_failures_total", **{"class": "TestCrash"}),
                metric(m, "dohost_objects_failed", **{"class": "TestCrash"}))

    async def wait_until_ms(self, ms):
        await asyncio.sleep(max(0.0, ms / 1000 - time.time()) + 0.05)

    def doctl(self, *args):
        r = subprocess.run([binary("doctl"), "--data", self.host.data,
                            "--admin", f"127.0.0.1:{self.host.admin_port}"] + list(args),
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    async def test_constructor_that_always_throws(self):
        self.mode("ctor", "constructor")
        for _ in range(3):
            self.assertEqual(self.get("/c/ctor")[0], 500)
        status, headers, body = self.get("/c/ctor")
        self.assertEqual(status, 503)
        self.assertIn("TestCrash constructor fails on purpose", body["lastError"])
        self.assertGreater(body["retryAt"], time.time() * 1000)
        self.assertEqual(headers["retry-after"], "1")
        with self.assertRaises(InvalidStatusCode) as refused:
            await self.host.connect("testapp", "/c/ctor")
        self.assertEqual(refused.exception.status_code, 503)

        d = self.detail("ctor")
        self.assertEqual(d["state"], "failed")
        self.assertEqual(d["failure"]["count"], 3)
        self.assertIn("constructor fails on purpose", d["failure"]["lastError"])
        retry_at = d["failure"]["retryAt"]
        listed = self.host.admin_json("GET", "/objects?class=TestCrash")[1]
        self.assertEqual([o["state"] for o in listed if o["name"] == "ctor"], ["failed"])
        self.assertEqual(self.crash_metrics(), (3, 1))
        self.assertRegex(self.doctl("objects", "TestCrash"), r"ctor\s.*failed")
        shown = self.doctl("sockets", "TestCrash", "ctor")
        self.assertRegex(shown, r"state\s+failed")
        self.assertRegex(shown, r"failure\s+TestCrash constructor fails on purpose")
        self.assertRegex(shown, r"failed until\s+\S+")

        # Other objects, of this class and of another, carry on meanwhile.
        status, _, body = self.get("/c/healthy")
        self.assertEqual((status, body), (200, {"alarmsRun": 0}))
        ws = await self.host.connect("testapp", "/o/neighbour")
        self.assertEqual((await recv_json(ws))["hello"], "neighbour")
        await ws.close()

        # After the backoff it is tried once: still throwing, so failed again, for twice as long.
        await self.wait_until_ms(retry_at)
        self.assertEqual(self.get("/c/ctor")[0], 500)
        d = self.detail("ctor")
        self.assertEqual(d["state"], "failed")
        self.assertGreater(d["failure"]["retryAt"] - d["failure"]["lastFailureAt"], 1500)
        self.assertEqual(self.crash_metrics(), (4, 1))

        # Fixed: the next try after the backoff succeeds and the failed state is gone.
        self.mode("ctor", "")
        self.assertEqual(self.get("/c/ctor")[0], 503)
        await self.wait_until_ms(d["failure"]["retryAt"])
        self.assertEqual(self.get("/c/ctor")[0], 200)
        d = self.detail("ctor")
        self.assertEqual(d["state"], "live")
        self.assertNotIn("failure", d)
        self.assertEqual(self.crash_metrics(), (4, 0))

    async def test_fetch_that_always_throws_closes_its_sockets_with_1011(self):
        ws = await self.host.connect("testapp", "/c/sockets")
        other = await self.host.connect("testapp", "/c/other")
        await ws.send("before")
        self.assertEqual(await recv_json(ws), {"echo": "before"})
        self.mode("sockets", "fetch")
        for _ in range(3):
            self.assertEqual(self.get("/c/sockets")[0], 500)
        with self.assertRaises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        self.assertEqual(ws.close_code, 1011)
        with self.assertRaises(InvalidStatusCode) as refused:
            await self.host.connect("testapp", "/c/sockets")
        self.assertEqual(refused.exception.status_code, 503)
        d = self.detail("sockets")
        self.assertEqual((d["state"], d["sockets"]), ("failed", 0))
        self.assertIn("TestCrash fetch fails on purpose", d["failure"]["lastError"])
        await other.send("still here")
        self.assertEqual(await recv_json(other), {"echo": "still here"})
        await other.close()

    async def test_alarm_that_always_throws(self):
        self.mode("alarmed", "alarm")
        self.assertEqual(self.get("/c/alarmed?alarm=1")[0], 200)
        # The alarm runs and is retried (0.05 s, 0.1 s): its third failure fails the object.
        deadline = time.time() + 10
        while self.detail("alarmed")["state"] != "failed":
            self.assertLess(time.time(), deadline, self.detail("alarmed"))
            await asyncio.sleep(0.02)
        d = self.detail("alarmed")
        self.assertIn("TestCrash alarm fails on purpose", d["failure"]["lastError"])
        # doctl show reads the object's file, and with --admin adds the host's view of it.
        shown = self.doctl("show", "TestCrash", "alarmed")
        self.assertRegex(shown, r"host state\s+failed")
        self.assertRegex(shown, r"failure\s+TestCrash alarm fails on purpose")
        self.assertEqual(self.get("/c/alarmed")[0], 503)
        self.assertEqual(self.host.admin_json("POST", "/objects/TestCrash/alarmed/alarm")[0], 409)
        # Fixed: the alarm waits for the retry time, then runs and succeeds.
        self.mode("alarmed", "")
        await self.wait_until_ms(d["failure"]["retryAt"])
        deadline = time.time() + 10
        while True:
            status, _, body = self.get("/c/alarmed")
            if status == 200 and body["alarmsRun"] == 1:
                break
            self.assertLess(time.time(), deadline, (status, body))
            await asyncio.sleep(0.05)
        self.assertNotIn("failure", self.detail("alarmed"))


if __name__ == "__main__":
    unittest.main()
