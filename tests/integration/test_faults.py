"""Storage faults against the real dohost binary: the host is started with DOHOST_TEST_FAULTS
(the fault VFS, see docs/operations.md "Fault injection") and faults are armed through the
admin API's /faults. A commit that cannot write, an fsync error, a disk that fills up, a
folder that turns read-only (also for real, with chattr +i, where the machine allows it),
database files that are corrupt or truncated at open, and an alarm whose time cannot be read.
Each gives the affected clients a clear error (1011, 503) and a log line; every other object
carries on; what was acknowledged before is intact and the object works once the fault is gone.
"""
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
import unittest

from websockets.exceptions import ConnectionClosed, InvalidStatusCode

from harness import Host, binary, recv_json, recv_until, wait_for
from test_channels import token, write_old_channel, ws_path

ECHO = "TestEcho"


class FaultCase(unittest.IsolatedAsyncioTestCase):
    env = {"DOHOST_TEST_FAULTS": ""}
    config = None
    apps = ()

    def setUp(self):
        self.host = Host(apps=self.apps, test_plugin=True, env=self.env, config=self.config).start()
        self.sockets = []

    async def asyncTearDown(self):
        for ws in self.sockets:
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:
                pass

    def tearDown(self):
        self.host.close()

    # --- faults --------------------------------------------------------------------------

    def arm(self, spec):
        status, _, body = self.host.http("PUT", None, "/faults", body=spec,
                                         port=self.host.admin_port)
        self.assertEqual(status, 200, body)
        return json.loads(body)["rules"]

    def rules(self):
        status, body = self.host.admin_json("GET", "/faults")
        self.assertEqual(status, 200, body)
        return body["rules"]

    def failed_calls(self):
        return sum(r["failed"] for r in self.rules())

    def clear(self):
        status, _, _ = self.host.http("DELETE", None, "/faults", port=self.host.admin_port)
        self.assertEqual(status, 200)

    def object_id(self, name, cls=ECHO):
        status, body = self.host.admin_json("GET", f"/objects/{cls}/{name}")
        self.assertEqual(status, 200, body)
        return body["id"]

    def object_file(self, name, cls=ECHO):
        return os.path.join(self.host.data, cls, self.object_id(name, cls) + ".sqlite")

    # --- the test object's client --------------------------------------------------------

    async def connect(self, name):
        ws = await self.host.connect("testapp", f"/o/{name}")
        self.sockets.append(ws)
        self.assertEqual((await recv_json(ws))["hello"], name)
        return ws

    async def put(self, ws, key, value):
        await ws.send(json.dumps({"cmd": "put", "key": key, "value": value}))

    async def get(self, ws, key):
        await ws.send(json.dumps({"cmd": "get", "key": key}))
        return (await recv_until(ws, lambda m: "value" in m and "put" not in m))["value"]

    async def put_acknowledged(self, ws, key, value):
        await self.put(ws, key, value)
        self.assertEqual(await recv_json(ws), {"put": key, "value": value})

    async def put_refused(self, ws, key, value):
        """The put meets the fault: the host closes the socket with 1011."""
        await self.put(ws, key, value)
        code, _ = await self.closed_with(ws)
        self.assertEqual(code, 1011)

    async def upgrade_refused(self, name):
        with self.assertRaises(InvalidStatusCode) as refused:
            await self.host.connect("testapp", f"/o/{name}")
        self.assertEqual(refused.exception.status_code, 503)

    async def heals(self, name, key, kept):
        """A reconnect reads `kept` (what was acknowledged) and writes again."""
        again = await self.connect(name)
        self.assertEqual(await self.get(again, key), kept)
        await self.put_acknowledged(again, key, "after")

    async def closed_with(self, ws, timeout=5):
        """Reads until the host closes `ws`; returns the close code and what arrived first."""
        seen = []
        try:
            while True:
                seen.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
        except ConnectionClosed:
            return ws.close_code, seen

    def log(self):
        with open(self.host.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")


class FaultInjectionSwitch(unittest.TestCase):
    def test_without_the_variable_there_is_no_fault_admin(self):
        with Host(apps=(), test_plugin=True) as host:
            status, body = host.admin_json("GET", "/faults")
            self.assertEqual(status, 404)
            self.assertIn("DOHOST_TEST_FAULTS", body["error"])

    def test_a_bad_rule_in_the_variable_stops_the_host_with_exit_2(self):
        data = tempfile.mkdtemp(prefix="dohost-test-")
        try:
            env = dict(os.environ, DOHOST_TEST_FAULTS="write,colour=red")
            r = subprocess.run([binary(), "--data", data, "--admin", "127.0.0.1:0",
                                "--app", "broadcaster=off", "--app", "hopeflow=off",
                                "--app", "channels=off", "--app", "bridge=off"],
                               env=env, capture_output=True, timeout=10)
            self.assertEqual(r.returncode, 2)
            self.assertIn(b"DOHOST_TEST_FAULTS", r.stderr)
            self.assertIn(b"colour", r.stderr)
        finally:
            shutil.rmtree(data, ignore_errors=True)


class CommitFaults(FaultCase):
    async def test_a_failed_grouped_commit_closes_every_socket_it_would_have_told_with_1011(self):
        a, b, c = [await self.connect("room") for _ in range(3)]
        other = await self.connect("other")
        await self.put_acknowledged(a, "k", "v1")
        for ws in (b, c):
            self.assertEqual(await recv_json(ws), {"put": "k", "value": "v1"})

        self.arm(f"write,path={self.object_id('room')}")
        await self.put(a, "k", "v2")
        await self.put(b, "k", "v3")
        for ws in (a, b, c):
            code, seen = await self.closed_with(ws)
            self.assertEqual(code, 1011)
            self.assertFalse([m for m in seen if m.get("put")], seen)  # v2, v3 never left
        # Another object commits and carries on, on the same host.
        await self.put_acknowledged(other, "k", "x")
        self.assertIn("WebSockets closed with 1011", self.log())

        self.clear()
        await self.heals("room", "k", "v1")  # the last committed state
        self.host.restart()
        after = await self.connect("room")
        self.assertEqual(await self.get(after, "k"), "after")

    async def test_an_fsync_error_closes_with_1011_and_the_object_stays_whole(self):
        a = await self.connect("synced")
        await self.put_acknowledged(a, "k", "v1")
        self.arm(f"sync,path={self.object_id('synced')}")
        await self.put_refused(a, "k", "v2")
        self.clear()
        # The failed fsync may have left the commit's bytes in the file: v2 was never
        # acknowledged, so either value is whole; v1 is never lost.
        again = await self.connect("synced")
        seen = await self.get(again, "k")
        self.assertIn(seen, ("v1", "v2"))
        self.host.restart()
        after = await self.connect("synced")
        self.assertEqual(await self.get(after, "k"), seen)

    async def test_an_http_request_that_meets_a_fault_gets_503_with_a_json_body(self):
        status, _, _ = self.host.http("GET", "testapp", "/o/web/events")
        self.assertEqual(status, 200)
        self.arm(f"write,path={self.object_id('web')}")
        status, _, _ = self.host.admin("POST", f"/objects/{ECHO}/web/evict")
        self.assertEqual(status, 200)
        # The constructor writes on every wake-up, so the request needs a commit.
        status, headers, body = self.host.http("GET", "testapp", "/o/web/events")
        self.assertEqual(status, 503)
        self.assertIn("json", headers["content-type"])
        self.assertIn("storage", json.loads(body)["error"])
        status, _, _ = self.host.http("GET", "testapp", "/o/neighbour/events")
        self.assertEqual(status, 200)
        self.assertIn("fetch failed: commit failed", self.log())
        self.clear()
        status, _, _ = self.host.http("GET", "testapp", "/o/web/events")
        self.assertEqual(status, 200)

    async def test_a_disk_that_fills_up_refuses_writes_then_heals(self):
        a = await self.connect("filled")
        await self.put_acknowledged(a, "k", "acknowledged")
        self.arm(f"write,path={self.host.data},quota=0")
        await self.put_refused(a, "k", "x" * 20000)
        await self.upgrade_refused("newcomer")
        self.assertTrue(self.failed_calls() >= 2)
        self.assertIn("database or disk is full", self.log())

        self.clear()  # space freed
        await self.heals("filled", "k", "acknowledged")
        await self.heals("newcomer", "k", None)


class ChannelCommitFault(FaultCase):
    apps = ("channels",)

    async def join(self, channel, user):
        ws = await self.host.connect("channels", ws_path(channel),
                                     headers={"Authorization": f"Bearer {token(user)}"})
        self.sockets.append(ws)
        first = await recv_json(ws)
        self.assertEqual(first["type"], "initial_state")
        return ws, first

    async def test_chat_members_are_closed_with_1011_and_resync_to_the_stored_history(self):
        ann, _ = await self.join("general", "ann")
        bob, _ = await self.join("general", "bob")
        await recv_until(ann, lambda m: m["type"] == "user_connected")
        await ann.send(json.dumps({"type": "message", "content": "kept"}))
        kept = (await recv_until(bob, lambda m: m["type"] == "message"))["message"]
        await recv_until(ann, lambda m: m["type"] == "message")

        self.arm(f"write,path={self.object_id('general', 'ChannelWebSocket')}")
        await ann.send(json.dumps({"type": "message", "content": "lost"}))
        for ws in (ann, bob):
            code, seen = await self.closed_with(ws)
            self.assertEqual(code, 1011)
            self.assertFalse([m for m in seen if m.get("type") == "message"], seen)

        self.clear()
        bob, state = await self.join("general", "bob")
        self.assertEqual((state["lastMessageId"], state["lastSeq"]), (kept["id"], kept["seq"]))
        self.assertEqual([m["content"] for m in state["messages"]], ["kept"])
        await bob.send(json.dumps({"type": "message", "content": "after"}))
        after = (await recv_until(bob, lambda m: m["type"] == "message"))["message"]
        self.assertEqual(after["seq"], kept["seq"] + 1)
        self.assertNotEqual(after["id"], kept["id"])

    async def test_a_migration_that_cannot_commit_leaves_the_old_history_as_it_was(self):
        """The first open of a history the previous version wrote migrates it in one
        transaction: when that cannot commit, the file stays exactly as it was."""
        path, old = write_old_channel(self.host.data, "legacy", 1500)

        def contents():
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                return list(db.iterdump())
            finally:
                db.close()

        auth = {"Authorization": f"Bearer {token('ann')}"}
        # Opens the object without reading its history (a bad `after` is refused first), so
        # the fault below hits the migration, not the host's own writes at open.
        status, _, _ = self.host.http("GET", "channels", "/channel/legacy/messages?after=x",
                                      headers=auth)
        self.assertEqual(status, 400)
        before = contents()
        self.assertIn("  id INTEGER PRIMARY KEY,", "\n".join(before))  # still the old shape
        self.arm(f"write,path={self.object_id('legacy', 'ChannelWebSocket')}")
        status, _, body = self.host.http("GET", "channels", "/channel/legacy/messages",
                                         headers=auth)
        self.assertIn(status, (500, 503), body)
        self.assertGreater(self.failed_calls(), 0)
        self.assertEqual(contents(), before)  # the old table, every row, nothing half-done

        self.clear()
        status, _, body = self.host.http("GET", "channels", "/channel/legacy/messages?after=1400",
                                         headers=auth)
        self.assertEqual(status, 200, body)
        got = json.loads(body)["messages"]
        self.assertEqual([{k: v for k, v in m.items() if k != "id"} for m in got], old[1400:])
        self.assertEqual(len({m["id"] for m in got}), 100)
        self.assertNotEqual(contents(), before)


class FilesAtOpen(FaultCase):
    async def test_corrupt_and_truncated_files_answer_503_and_the_host_carries_on(self):
        for name in ("garbled", "short", "fine"):
            ws = await self.connect(name)
            await self.put_acknowledged(ws, "k", "v" * 60000)  # several pages
            await ws.close()
        garbled, short = self.object_file("garbled"), self.object_file("short")
        self.host.stop()
        with open(garbled, "r+b") as f:
            f.write(b"this is not a database" * 10)
        os.truncate(short, os.path.getsize(short) // 2)
        sizes = (os.path.getsize(garbled), os.path.getsize(short))
        self.host.start()

        for name in ("garbled", "short"):
            await self.upgrade_refused(name)
            status, _, body = self.host.http("GET", "testapp", f"/o/{name}/events")
            self.assertEqual(status, 503)
            self.assertIn("storage", json.loads(body)["error"])
        fine = await self.connect("fine")
        self.assertEqual(await self.get(fine, "k"), "v" * 60000)
        self.assertEqual((os.path.getsize(garbled), os.path.getsize(short)), sizes)  # untouched
        log = self.log()
        self.assertIn("file is not a database", log)
        self.assertIn("malformed", log)


class ReadOnlyFolder(FaultCase):
    async def test_a_folder_that_turns_read_only_refuses_writes_then_recovers(self):
        a = await self.connect("ro")
        await self.put_acknowledged(a, "k", "before")
        self.arm(f"readonly,path={self.host.data}")
        await self.put_refused(a, "k", "during")
        await self.upgrade_refused("created-while-read-only")
        self.clear()
        await self.heals("ro", "k", "before")


def can_make_immutable():
    probe = tempfile.mkdtemp(prefix="dohost-chattr-")
    try:
        ok = subprocess.run(["chattr", "+i", probe], capture_output=True).returncode == 0
        if ok:
            subprocess.run(["chattr", "-i", probe], capture_output=True)
        return ok
    except OSError:
        return False
    finally:
        os.rmdir(probe)


@unittest.skipUnless(can_make_immutable(), "needs chattr +i (root, and a file system that has it)")
class ImmutableFolder(FaultCase):
    """The same with the real thing: the data folder, its databases and their logs made
    immutable (chattr +i), which refuses writes to root too, also on files the host already
    has open. (A read-only remount is refused while the host has files open for writing.)
    The -shm index files stay writable: SQLite maps them into memory, and a write to a mapped
    file that turned immutable is SIGBUS, which no SQLite process survives."""
    env = {}

    def chattr(self, flag):
        paths = []
        for base, dirs, files in os.walk(self.host.data):
            paths.append(base)
            paths += [os.path.join(base, f) for f in files if not f.endswith("-shm")]
        subprocess.run(["chattr", flag] + paths, check=True, capture_output=True)

    def tearDown(self):
        subprocess.run(["chattr", "-R", "-i", self.host.data], capture_output=True)
        super().tearDown()

    async def test_an_immutable_data_folder_refuses_writes_then_recovers(self):
        a = await self.connect("ro")
        await self.put_acknowledged(a, "k", "before")
        self.chattr("+i")
        try:
            await self.put_refused(a, "k", "during")
            await self.upgrade_refused("created-while-read-only")
        finally:
            self.chattr("-i")
        self.assertIn("disk I/O error", self.log())
        await self.heals("ro", "k", "before")


class AlarmReadFault(FaultCase):
    config = "alarm_retry_base = 0.3\n"

    async def test_an_alarm_whose_time_cannot_be_read_is_kept_and_fires_later(self):
        ws = await self.connect("alarmed")
        await ws.send(json.dumps({"cmd": "alarm", "ms": 500}))
        self.assertEqual(await recv_json(ws), {"ok": True})
        object_id = self.object_id("alarmed")
        await ws.close()
        self.host.stop()  # before it fires
        time.sleep(0.6)
        # Started with the fault armed: the first open of the object's file (the wake-up's
        # read of its alarm) fails.
        self.host.env["DOHOST_TEST_FAULTS"] = f"open,path={object_id},count=1"
        self.host.start()
        await wait_for(lambda: self.failed_calls() == 1)
        status, _, body = self.host.http("GET", "testapp", "/o/alarmed/events")
        self.assertEqual(status, 200)
        events = await wait_for(lambda: [e for e in json.loads(
            self.host.http("GET", "testapp", "/o/alarmed/events")[2]) if e["event"] == "alarm"])
        self.assertEqual(events[0]["retry"], 0)
        self.assertIn("cannot read the stored alarm", self.log())


if __name__ == "__main__":
    unittest.main()
