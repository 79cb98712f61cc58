"""doctl against the real dohost binary: the offline commands (ls, show, kv, sql, history) on a
data folder a running host writes, also while it runs and after it stops; history across the
shards of a sharded channel and --follow; the online commands through the admin API (objects,
sockets, evict, alarm) with the admin token; and every error: unknown class or object, missing
data folder, unreachable host, bad usage. See docs/doctl.md."""
import asyncio
import base64
import datetime
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import unittest
import uuid

import websockets

from harness import JWT_SECRET, Host, binary, free_port, make_jwt, recv_json, recv_until
from test_channels import UUID4, write_old_channel

DOCTL = binary("doctl")
ADMIN_TOKEN = "doctl-test-token"
CHANNEL_CLASS = "ChannelWebSocket"
TIME = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"  # doctl's times: RFC 3339, UTC, ms


def doctl_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k != "DOHOST_ADMIN_TOKEN"}
    env.update(extra or {})
    return env


def run_doctl(*args, env=None, timeout=20):
    """Runs doctl to completion; returns (exit code, stdout, stderr)."""
    p = subprocess.run([DOCTL, *args], capture_output=True, text=True, timeout=timeout,
                       env=doctl_env(env))
    return p.returncode, p.stdout, p.stderr


def token(user, username, perms=("read", "write")):
    return make_jwt({"userId": user, "username": username, "permissions": list(perms)})


async def join_channel(host, channel, user, username):
    ws = await host.connect("channels", f"/channel/{channel}/websocket",
                            headers={"Authorization": f"Bearer {token(user, username)}"})
    first = await recv_json(ws)
    assert first["type"] == "initial_state", first
    return ws


async def say(ws, content, thread=None):
    """Sends a chat message and returns it as stored (the broadcast comes after the commit)."""
    msg = {"type": "message", "content": content}
    if thread is not None:
        msg["threadId"] = thread
    await ws.send(json.dumps(msg))
    frame = await recv_until(ws, lambda m: m.get("type") == "message"
                             and m["message"]["content"] == content)
    return frame["message"]


def fnv1a(text):
    h = 1469598103934665603
    for b in text.encode():
        h ^= b
        h = (h * 1099511628211) % (1 << 64)
    return h


def dump_database(path):
    """Every table's schema and rows, read with Python's own read-only SQLite connection."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(db.iterdump())
    finally:
        db.close()


class DoctlCase(unittest.IsolatedAsyncioTestCase):
    """A host shared by the tests of a class; each test names its own objects."""

    host_env = {}
    idle_evict = 0.2

    @classmethod
    def setUpClass(cls):
        cls.host = Host(apps=("broadcaster", "channels"), idle_evict=cls.idle_evict,
                        env=cls.host_env)
        cls.host.start()

    @classmethod
    def tearDownClass(cls):
        cls.host.close()

    async def asyncSetUp(self):
        # doctl runs as a blocking subprocess inside these async tests; that is expected.
        asyncio.get_running_loop().slow_callback_duration = 10

    def doctl(self, *args, **kwargs):
        return run_doctl("--data", self.host.data, *args, **kwargs)

    def ok(self, *args, **kwargs):
        code, out, err = self.doctl(*args, **kwargs)
        self.assertEqual(code, 0, f"doctl {args}: {err}")
        return out

    def ok_json(self, *args):
        return json.loads(self.ok(*args, "--json"))

    def assert_error(self, result, code, *fragments):
        """doctl failed with `code` and one line on stderr that mentions each fragment."""
        got, out, err = result
        self.assertEqual(got, code, f"stdout={out!r} stderr={err!r}")
        self.assertTrue(err.startswith("doctl: "), err)
        self.assertEqual(err.count("\n"), 1, err)
        for fragment in fragments:
            self.assertIn(fragment, err)

    def wait_for(self, predicate, timeout=5, what="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        self.fail(f"timed out waiting for {what}")

    def object_json(self, cls, name):
        for o in self.ok_json("ls", cls):
            if o["name"] == name:
                return o
        return None

    async def project_with_alarm(self, project):
        """A Broadcaster whose only client came and went: a cleanup alarm and two keys (its last
        activity and its cleanup delay)."""
        ws = await self.host.connect("broadcaster", f"/websocket?type=runtime&projectId={project}")
        await recv_json(ws)
        await ws.close()
        # The host has handled the close (and committed the moved alarm) once it lists no socket.
        self.wait_for(lambda: self.host.admin_json("GET", f"/objects/Broadcaster/{project}", token=ADMIN_TOKEN)[1]["sockets"] == 0,
                      what=f"{project}'s client to be gone")
        return self.wait_for(lambda: (o := self.object_json("Broadcaster", project))
                             and o["alarm"] and o, what=f"{project}'s cleanup alarm")


class OfflineTests(DoctlCase):
    """ls, show, kv, sql and history on the data folder of a running host."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        asyncio.run(cls.populate())

    @classmethod
    async def populate(cls):
        ws = await join_channel(cls.host, "general", "u1", "alice")
        cls.messages = [await say(ws, "hello"),
                        await say(ws, "two\nlines", thread="t-9"),
                        await say(ws, "third", thread=7)]
        await ws.close()

    async def test_ls_lists_every_class_and_skips_the_host_folder(self):
        alarm = await self.project_with_alarm("ls-p1")
        out = self.ok("ls")
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["CLASS", "NAME", "ID", "SIZE", "ALARM"])
        rows = {(line.split()[0], line.split()[1]): line for line in lines[1:]}
        self.assertIn(("Broadcaster", "ls-p1"), rows)
        self.assertIn((CHANNEL_CLASS, "general"), rows)
        self.assertNotIn("_dohost", out)
        # The alarm in RFC 3339, UTC; ids shortened to 16 characters unless --wide.
        alarm_text = datetime.datetime.fromtimestamp(
            alarm["alarm"] / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        self.assertIn(alarm_text, rows[("Broadcaster", "ls-p1")])
        self.assertIn(alarm["id"][:16] + "  ", rows[("Broadcaster", "ls-p1")])
        self.assertNotIn(alarm["id"], out)
        self.assertIn(alarm["id"], self.ok("ls", "--wide"))

    async def test_ls_json_matches_the_host_ids_and_sizes(self):
        await self.project_with_alarm("ls-json")
        objects = self.ok_json("ls")
        mine = [o for o in objects if o["name"] == "ls-json"]
        self.assertEqual(len(mine), 1)
        o = mine[0]
        self.assertEqual(o["class"], "Broadcaster")
        self.assertRegex(o["id"], "^[0-9a-f]{64}$")
        self.assertEqual(o["keys"], 2)
        self.assertGreater(o["storageBytes"], 0)
        self.assertIsNone(o["alarmFailed"])
        # Same id as the host gives the name (the admin API applies idFromName itself).
        status, detail = self.host.admin_json("GET", "/objects/Broadcaster/ls-json")
        self.assertEqual(status, 200)
        self.assertEqual(detail["id"], o["id"])
        self.assertEqual(detail["alarm"], o["alarm"])
        # A class filter.
        only = self.ok_json("ls", CHANNEL_CLASS)
        self.assertTrue(only)
        self.assertEqual({x["class"] for x in only}, {CHANNEL_CLASS})

    async def test_show_by_name_by_id_and_by_id_prefix(self):
        await self.project_with_alarm("show-p")
        by_name = self.ok_json("show", "Broadcaster", "show-p")
        self.assertEqual(by_name["name"], "show-p")
        self.assertEqual(by_name["keys"], 2)
        self.assertEqual(by_name["meta"]["class"], "Broadcaster")
        self.assertEqual(by_name["meta"]["id"], by_name["id"])
        self.assertEqual(by_name["meta"]["alarm"], by_name["alarm"])
        self.assertEqual({t["name"]: t["rows"] for t in by_name["tables"]}["_do_kv"], 2)
        oid = by_name["id"]
        by_id = self.ok_json("show", "Broadcaster", oid)
        for key in ("id", "name", "meta", "tables", "keys", "alarm"):
            self.assertEqual(by_id[key], by_name[key])
        self.assertEqual(self.ok_json("show", "Broadcaster", oid.upper())["id"], oid)
        self.assertEqual(self.ok_json("show", "Broadcaster", oid[:12])["id"], oid)
        out = self.ok("show", "Broadcaster", "show-p")
        fields = dict(line.split(None, 1) for line in out.splitlines()[:9] if line.strip())
        self.assertEqual(fields["class"], "Broadcaster")
        self.assertEqual(fields["id"], oid)
        self.assertEqual(fields["name"], "show-p")
        self.assertEqual(fields["keys"], "2")
        self.assertRegex(fields["alarm"], TIME + r" \(in \d+m\d+s\)$")
        self.assertRegex(out, r"(?m)^_do_kv\s+2$")

    async def test_show_lists_user_tables_with_row_counts(self):
        detail = self.ok_json("show", CHANNEL_CLASS, "general")
        tables = {t["name"]: t["rows"] for t in detail["tables"]}
        self.assertEqual(tables["channel_messages"], 3)
        self.assertIn("_do_meta", tables)
        self.assertIsNone(detail["alarm"])
        out = self.ok("show", CHANNEL_CLASS, "general")
        self.assertRegex(out, r"(?m)^channel_messages\s+3$")
        self.assertRegex(out, r"(?m)^alarm\s+none$")

    async def test_unknown_class_and_object_are_one_line_errors(self):
        for args in (("ls", "NoSuchClass"), ("show", "NoSuchClass", "x"),
                     ("kv", "NoSuchClass", "x"), ("sql", "NoSuchClass", "x", "SELECT 1")):
            self.assert_error(self.doctl(*args), 1, "no class NoSuchClass", "Broadcaster")
        self.assert_error(self.doctl("ls", "_dohost"), 1, "no class _dohost")
        self.assert_error(self.doctl("show", "../etc", "x"), 1, "no class ../etc")
        for args in (("show", CHANNEL_CLASS, "nobody"), ("kv", CHANNEL_CLASS, "nobody"),
                     ("sql", CHANNEL_CLASS, "nobody", "SELECT 1"),
                     ("show", CHANNEL_CLASS, "0" * 64)):
            self.assert_error(self.doctl(*args), 1, "no object", CHANNEL_CLASS)

    async def test_missing_data_folder(self):
        missing = os.path.join(tempfile.gettempdir(), f"doctl-missing-{os.getpid()}")
        for args in (("ls",), ("show", "Broadcaster", "x"), ("kv", "Broadcaster", "x"),
                     ("sql", "Broadcaster", "x", "SELECT 1"), ("history", "general")):
            self.assert_error(run_doctl("--data", missing, *args), 1,
                              f"data folder {missing} does not exist")

    async def test_kv_text_values_prefix_and_json(self):
        await self.project_with_alarm("kv-p")
        out = self.ok("kv", "Broadcaster", "kv-p")
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["KEY", "VALUE"])
        self.assertRegex(lines[1], r"^cleanupMs\s+300000$")
        self.assertRegex(lines[2], r"^lastActivity\s+\d{13}$")
        entries = self.ok_json("kv", "Broadcaster", "kv-p")
        self.assertEqual([e["key"] for e in entries], ["cleanupMs", "lastActivity"])
        self.assertNotIn("valueEncoding", entries[1])
        self.assertEqual(self.ok_json("kv", "Broadcaster", "kv-p", "--prefix", "last"), entries[1:])
        self.assertEqual(self.ok_json("kv", "Broadcaster", "kv-p", "--prefix", "zzz"), [])
        self.assertEqual(self.ok("kv", "Broadcaster", "kv-p", "--prefix", "zzz").split(),
                         ["KEY", "VALUE"])

    async def test_sql_reads_user_and_reserved_tables(self):
        result = self.ok_json("sql", CHANNEL_CLASS, "general",
                              "SELECT seq, id, content, thread_id FROM channel_messages ORDER BY seq")
        self.assertEqual(result["columns"], ["seq", "id", "content", "thread_id"])
        self.assertEqual(result["rows"], [[1, self.messages[0]["id"], "hello", None],
                                          [2, self.messages[1]["id"], "two\nlines", "t-9"],
                                          [3, self.messages[2]["id"], "third", 7]])
        meta = self.ok_json("sql", CHANNEL_CLASS, "general",
                            "SELECT value FROM _do_meta WHERE key = 'name'")
        self.assertEqual(meta["rows"], [["general"]])
        out = self.ok("sql", CHANNEL_CLASS, "general",
                      "SELECT seq, content, x'00ff' AS b, NULL AS n FROM channel_messages "
                      "WHERE seq = 2")
        self.assertEqual(out.splitlines()[0].split(), ["seq", "content", "b", "n"])
        self.assertEqual(out.splitlines()[1].split(), ["2", "two\\nlines", "0x00ff", "NULL"])
        blob = self.ok_json("sql", CHANNEL_CLASS, "general", "SELECT x'00ff'")
        self.assertEqual(blob["rows"], [[{"base64": "AP8="}]])
        self.assert_error(self.doctl("sql", CHANNEL_CLASS, "general", "SELEC 1"), 1,
                          "syntax error")

    async def test_sql_write_attempts_are_refused_and_change_nothing(self):
        path = self.ok_json("show", CHANNEL_CLASS, "general")["path"]
        before_rows = self.ok_json("sql", CHANNEL_CLASS, "general",
                                   "SELECT * FROM channel_messages ORDER BY seq")
        before_dump = dump_database(path)
        for statement in ("DELETE FROM channel_messages",
                          "INSERT INTO channel_messages(id, channel, user_id, username, content,"
                          " timestamp) VALUES ('x', 'general', 'x', 'x', 'x', 0)",
                          "UPDATE _do_meta SET value = 'evil' WHERE key = 'name'",
                          "DROP TABLE channel_messages",
                          "CREATE TABLE t(x)",
                          "SELECT 1; DELETE FROM _do_kv"):
            self.assert_error(self.doctl("sql", CHANNEL_CLASS, "general", statement), 1,
                              "attempt to write a readonly database", "read-only")
        target = os.path.join(tempfile.gettempdir(), f"doctl-vacuum-{os.getpid()}.db")
        self.assert_error(self.doctl("sql", CHANNEL_CLASS, "general", f"VACUUM INTO '{target}'"),
                          1, "ATTACH and VACUUM INTO are off")
        self.assertFalse(os.path.exists(target))
        self.assertEqual(dump_database(path), before_dump)
        self.assertEqual(self.ok_json("sql", CHANNEL_CLASS, "general",
                                      "SELECT * FROM channel_messages ORDER BY seq"), before_rows)
        # The host still serves the same history.
        status, _, body = self.host.http(
            "GET", "channels", "/channel/general/messages",
            headers={"Authorization": f"Bearer {token('u1', 'alice')}"})
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["messages"], self.messages)

    async def test_history_lines_and_json_oldest_first(self):
        out = self.ok("history", "general")
        lines = out.splitlines()
        self.assertEqual(len(lines), 3)
        self.assertRegex(lines[0], TIME + r"  #1  alice \(u1\): hello$")
        self.assertTrue(lines[1].endswith("#2  alice (u1): two\\nlines  [thread t-9]"), lines[1])
        self.assertTrue(lines[2].endswith("#3  alice (u1): third  [thread 7]"), lines[2])
        stored = [json.loads(line) for line in self.ok("history", "general", "--json").splitlines()]
        self.assertEqual(stored, self.messages)  # exactly what the clients received
        self.assertEqual([m["seq"] for m in stored], [1, 2, 3])
        for m in stored:
            self.assertRegex(m["id"], UUID4)
        # The channel can be named by its object id too.
        oid = self.ok_json("show", CHANNEL_CLASS, "general")["id"]
        self.assertEqual(self.ok("history", oid), out)

    async def test_history_after_since_and_limit(self):
        def ids(*args):
            return [json.loads(line)["seq"]
                    for line in self.ok("history", "general", "--json", *args).splitlines()]
        self.assertEqual(ids("--after", "1"), [2, 3])
        self.assertEqual(ids("--after", "3"), [])
        # --after takes the message's id as well as its seq.
        first, last = self.messages[0]["id"], self.messages[2]["id"]
        self.assertEqual(ids("--after", first), [2, 3])
        self.assertEqual(ids("--after", first.upper()), [2, 3])
        self.assertEqual(ids("--after", last), [])
        self.assertEqual(ids("--after", first, "--limit", "1"), [2])
        self.assertEqual(ids("--limit", "2"), [1, 2])
        self.assertEqual(ids("--after", "1", "--limit", "1"), [2])
        self.assertEqual(ids("--since", "1h"), [1, 2, 3])
        self.assertEqual(ids("--since", "2h30m"), [1, 2, 3])
        future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        self.assertEqual(ids("--since", future.strftime("%Y-%m-%dT%H:%M:%SZ")), [])
        # RFC 3339 with milliseconds and an offset: from the second message's time on.
        t2 = self.messages[1]["timestamp"]
        plus2 = datetime.timezone(datetime.timedelta(hours=2))
        at = datetime.datetime.fromtimestamp(t2 / 1000, plus2)
        since = at.isoformat(timespec="milliseconds")
        self.assertIn("+02:00", since)
        expected = [m["seq"] for m in self.messages if m["timestamp"] >= t2]
        self.assertEqual(ids("--since", since), expected)
        self.assertIn(2, expected)

    async def test_history_usage_errors_and_unknown_channel(self):
        self.assert_error(self.doctl("history", "general", "--since", "yesterday"), 2, "--since")
        self.assert_error(self.doctl("history", "general", "--limit", "0"), 2, "--limit")
        self.assert_error(self.doctl("history", "general", "--after", "-1"), 2, "--after")
        self.assert_error(self.doctl("history", "general", "--after", "x"), 2, "--after")
        self.assert_error(self.doctl("history", "general", "--after", "1.5"), 2, "--after")
        self.assert_error(self.doctl("history", "general", "--after",
                                     self.messages[0]["id"][:-1]), 2, "--after")
        self.assert_error(self.doctl("history", "no-such-channel"), 1, "no channel no-such-channel")
        unknown = str(uuid.uuid4())
        self.assert_error(self.doctl("history", "general", "--after", unknown), 1,
                          f"no message {unknown} in channel general")

    async def test_usage_errors(self):
        self.assert_error(run_doctl(), 2, "subcommand")
        self.assert_error(run_doctl("show", "Broadcaster"), 2, "object")
        self.assert_error(run_doctl("frobnicate"), 2)
        self.assert_error(run_doctl("--admin", "https://127.0.0.1:1", "objects"), 2, "http://")
        code, out, _ = run_doctl("--help")
        self.assertEqual(code, 0)
        for command in ("ls", "show", "kv", "sql", "history", "objects", "sockets", "evict",
                        "alarm"):
            self.assertIn(command, out)

    async def test_follow_prints_messages_stored_after_it_started(self):
        ws = await join_channel(self.host, "follow-room", "u2", "bob")
        first = await say(ws, "before")
        proc = await asyncio.create_subprocess_exec(
            DOCTL, "--data", self.host.data, "history", "follow-room", "--follow", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=doctl_env())
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            self.assertEqual(json.loads(line), first)  # the backlog, then it follows
            later = [await say(ws, "after-1", thread="t"), await say(ws, "after-2")]
            for expected in later:
                line = await asyncio.wait_for(proc.stdout.readline(), 10)
                self.assertEqual(json.loads(line), expected)
            proc.send_signal(signal.SIGINT)
            self.assertEqual(await asyncio.wait_for(proc.wait(), 10), 0)
            self.assertEqual(await proc.stdout.read(), b"")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await ws.close()

    async def test_follow_waits_for_a_channel_that_does_not_exist_yet(self):
        proc = await asyncio.create_subprocess_exec(
            DOCTL, "--data", self.host.data, "history", "born-later", "--follow", "--limit", "2",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=doctl_env())
        try:
            ws = await join_channel(self.host, "born-later", "u3", "carol")
            await say(ws, "first words")
            await say(ws, "second words")
            # --limit 2: it exits by itself after the second message.
            out, err = await asyncio.wait_for(proc.communicate(), 10)
            self.assertEqual(proc.returncode, 0, err)
            lines = out.decode().splitlines()
            self.assertEqual(len(lines), 2)
            self.assertTrue(lines[0].endswith("#1  carol (u3): first words"), lines[0])
            self.assertTrue(lines[1].endswith("#2  carol (u3): second words"), lines[1])
            await ws.close()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def test_failed_alarm_and_binary_values_from_a_copy(self):
        """A failed alarm and non-UTF-8 bytes, written with SQLite into a copy of a real object."""
        o = await self.project_with_alarm("copy-p")
        copy = tempfile.mkdtemp(prefix="doctl-copy-")
        try:
            os.makedirs(os.path.join(copy, "Broadcaster"))
            src_path = os.path.join(self.host.data, "Broadcaster", o["id"] + ".sqlite")
            dst_path = os.path.join(copy, "Broadcaster", o["id"] + ".sqlite")
            src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
            dst = sqlite3.connect(dst_path)
            src.backup(dst)
            src.close()
            with dst:
                dst.execute("DELETE FROM _do_meta WHERE key = 'alarm'")
                for key, value in (("alarm_failed_scheduled", o["alarm"]),
                                   ("alarm_failed_retries", 6),
                                   ("alarm_failed_error", "boom: disk on fire"),
                                   ("alarm_failed_at", o["alarm"] + 60000)):
                    dst.execute("INSERT INTO _do_meta(key, value) VALUES (?, ?)", (key, value))
                dst.execute("INSERT INTO _do_kv(key, value) VALUES (?, ?)",
                            (b"bin", b"\x00\xff\xfe"))
                dst.execute("INSERT INTO _do_kv(key, value) VALUES (?, ?)",
                            (b"\xff\x01", "caf\u00e9".encode()))
            dst.close()
            detail = json.loads(run_doctl("--data", copy, "show", "Broadcaster", "copy-p",
                                          "--json")[1])
            self.assertIsNone(detail["alarm"])
            self.assertEqual(detail["alarmFailed"], {"scheduledTime": o["alarm"], "retries": 6,
                                                     "lastError": "boom: disk on fire",
                                                     "failedAt": o["alarm"] + 60000})
            code, out, err = run_doctl("--data", copy, "show", "Broadcaster", "copy-p")
            self.assertEqual(code, 0, err)
            self.assertRegex(out, r"(?m)^alarm failed\s+the alarm of \S+Z gave up after 6 "
                                  r"retries at \S+Z$")
            self.assertRegex(out, r"(?m)^last error\s+boom: disk on fire$")
            listed = json.loads(run_doctl("--data", copy, "ls", "--json")[1])
            self.assertEqual(listed[0]["alarmFailed"]["retries"], 6)
            self.assertIn("FAILED after 6 retries", run_doctl("--data", copy, "ls")[1])
            entries = json.loads(run_doctl("--data", copy, "kv", "Broadcaster", "copy-p",
                                           "--json")[1])
            by_key = {e["key"]: e for e in entries}
            self.assertEqual(by_key["bin"], {"key": "bin", "value": "AP/+",
                                             "valueEncoding": "base64"})
            self.assertEqual(by_key["/wE="], {"key": "/wE=", "keyEncoding": "base64",
                                              "value": "caf\u00e9"})
            table = run_doctl("--data", copy, "kv", "Broadcaster", "copy-p")[1]
            self.assertRegex(table, r"(?m)^bin\s+0x00fffe$")
            self.assertRegex(table, r"(?m)^0xff01\s+caf\u00e9$")
            prefixed = json.loads(run_doctl("--data", copy, "kv", "Broadcaster", "copy-p",
                                            "--prefix", "b", "--json")[1])
            self.assertEqual([e["key"] for e in prefixed], ["bin"])
        finally:
            shutil.rmtree(copy, ignore_errors=True)


class ShardedHistoryTests(DoctlCase):
    """With shards, the sockets live on "<channel>#<k>" and the history on "<channel>"."""

    host_env = {"DOHOST_CHANNELS_SHARDS": "2"}

    async def test_history_is_one_sequence_across_shards(self):
        users = ["u1"]
        users.append(next(f"s{i}" for i in range(100) if fnv1a(f"s{i}") % 2 != fnv1a("u1") % 2))
        a = await join_channel(self.host, "split", users[0], "ann")
        b = await join_channel(self.host, "split", users[1], "ben")
        sent = []
        for i in range(3):
            sent.append(await say(a, f"a{i}"))
            sent.append(await say(b, f"b{i}"))
        # The sockets live on the shard objects (in memory: they keep nothing on disk), the
        # history on the channel object.
        status, objects = self.host.admin_json("GET", f"/objects?class={CHANNEL_CLASS}")
        self.assertEqual(status, 200)
        self.assertTrue({"split#0", "split#1"} <= {o["name"] for o in objects}, objects)
        self.assertIn("split", {o["name"] for o in self.ok_json("ls", CHANNEL_CLASS)})
        got = [json.loads(line) for line in self.ok("history", "split", "--json").splitlines()]
        self.assertEqual([m["seq"] for m in got], list(range(1, 7)))
        self.assertEqual(got, sorted(sent, key=lambda m: m["seq"]))
        self.assertEqual(len({m["id"] for m in got}), 6)
        later = [json.loads(line) for line in
                 self.ok("history", "split", "--json", "--after", got[2]["id"]).splitlines()]
        self.assertEqual(later, got[3:])
        self.assertEqual({m["username"] for m in got}, {"ann", "ben"})
        await a.close()
        await b.close()


class OldFormatHistoryTests(unittest.IsolatedAsyncioTestCase):
    """A data folder the previous version wrote (integer message ids, no UUIDs): doctl reads it
    before the host has opened it, and after the host migrated it."""

    async def asyncSetUp(self):
        asyncio.get_running_loop().slow_callback_duration = 10

    async def test_history_of_an_old_channel_before_and_after_the_migration(self):
        host = Host(apps=("channels",))
        try:
            _, old = write_old_channel(host.data, "legacy", 12)

            def history(*args):
                code, out, err = run_doctl("--data", host.data, "history", "legacy", *args)
                self.assertEqual(code, 0, err)
                return out

            # Not migrated yet: the seq is the old id, and there is no UUID yet.
            got = [json.loads(line) for line in history("--json").splitlines()]
            self.assertEqual(got, [{"id": None, **m} for m in old])
            lines = history("--after", "10").splitlines()
            self.assertEqual(len(lines), 2)
            self.assertRegex(lines[0], TIME + r"  #11  User 2 \(u2\): old message 11  \[thread 11\]$")
            missing = str(uuid.uuid4())
            code, _, err = run_doctl("--data", host.data, "history", "legacy", "--after", missing)
            self.assertEqual((code, err.strip()), (1, f"doctl: no message {missing} in channel legacy"))
            # The host migrates on first open; doctl then shows the UUIDs, the same seqs.
            host.start()
            ws = await join_channel(host, "legacy", "u9", "nine")
            await ws.close()
            now = [json.loads(line) for line in history("--json").splitlines()]
            self.assertEqual([{k: v for k, v in m.items() if k != "id"} for m in now], old)
            for m in now:
                self.assertRegex(m["id"], UUID4)
            after = [json.loads(line) for line in history("--json", "--after", now[9]["id"]).splitlines()]
            self.assertEqual(after, now[10:])
            self.assertEqual(history("--after", "10"), history("--after", now[9]["id"]))
        finally:
            host.close()


class OnlineTests(DoctlCase):
    """objects, sockets, evict and alarm through the admin API, which needs a token here."""

    host_env = {"DOHOST_ADMIN_TOKEN": ADMIN_TOKEN}
    idle_evict = 30  # objects stay in memory until `evict` says otherwise

    def admin(self, *args, token=ADMIN_TOKEN, env=None):
        extra = ["--token", token] if token else []
        return run_doctl("--admin", f"127.0.0.1:{self.host.admin_port}", *extra, *args, env=env)

    def admin_ok(self, *args, **kwargs):
        code, out, err = self.admin(*args, **kwargs)
        self.assertEqual(code, 0, f"doctl {args}: {err}")
        return out

    async def test_objects_and_sockets_show_tags_and_attachments(self):
        ws = await self.host.connect("broadcaster", "/websocket?type=admin&projectId=online-p")
        welcome = await recv_json(ws)
        client_id = welcome["payload"]["clientId"]
        try:
            objects = json.loads(self.admin_ok("objects", "--json"))
            mine = [o for o in objects if o["name"] == "online-p"]
            self.assertEqual(len(mine), 1)
            self.assertEqual(mine[0]["class"], "Broadcaster")
            self.assertEqual(mine[0]["sockets"], 1)
            table = self.admin_ok("objects", "Broadcaster")
            self.assertEqual(table.splitlines()[0].split(),
                             ["CLASS", "NAME", "ID", "STATE", "SOCKETS", "SIZE", "ALARM"])
            row = next(line for line in table.splitlines() if "online-p" in line)
            self.assertEqual(row.split()[:2], ["Broadcaster", "online-p"])
            self.assertIn(mine[0]["id"][:16], row)
            detail = json.loads(self.admin_ok("sockets", "Broadcaster", "online-p", "--json"))
            [sock] = detail["socketList"]
            self.assertEqual(sorted(sock["tags"]), sorted(["admin", f"client:{client_id}"]))
            self.assertEqual(sock["attachment"]["type"], "admin")
            self.assertEqual(sock["attachment"]["id"], client_id)
            out = self.admin_ok("sockets", "Broadcaster", mine[0]["id"])  # by id as well
            self.assertRegex(out, r"(?m)^name\s+online-p$")
            self.assertRegex(out, r"(?m)^sockets\s+1$")
            sock_row = out.splitlines()[-1]
            self.assertIn(f"client:{client_id}", sock_row)
            self.assertIn('"type":"admin"', sock_row)
        finally:
            await ws.close()

    async def test_evict_then_the_object_is_evicted_with_its_socket_open(self):
        ws = await self.host.connect("broadcaster", "/websocket?type=runtime&projectId=evict-p")
        await recv_json(ws)
        try:
            before = json.loads(self.admin_ok("sockets", "Broadcaster", "evict-p", "--json"))
            self.assertEqual(before["state"], "live")
            self.assertEqual(self.admin_ok("evict", "Broadcaster", "evict-p"),
                             "Broadcaster evict-p: evicted (its sockets stay open)\n")
            detail = json.loads(self.admin_ok("sockets", "Broadcaster", "evict-p", "--json"))
            self.assertEqual(detail["state"], "evicted")
            self.assertEqual(detail["sockets"], 1)
            again = json.loads(self.admin_ok("evict", "Broadcaster", "evict-p", "--json"))
            self.assertEqual(again["evicted"], False)
            self.assertEqual(self.admin_ok("evict", "Broadcaster", "evict-p"),
                             "Broadcaster evict-p: not in memory, nothing to evict\n")
        finally:
            await ws.close()

    async def test_alarm_runs_now(self):
        o = await self.project_with_alarm("alarm-p")
        self.assertEqual(o["keys"], 2)
        self.assertEqual(self.admin_ok("alarm", "Broadcaster", "alarm-p"),
                         "Broadcaster alarm-p: alarm ran\n")
        # The Broadcaster's cleanup alarm ran early: the client left a moment ago, so it keeps
        # the project and sets itself again for a whole delay after that activity.
        after = self.object_json("Broadcaster", "alarm-p")
        self.assertEqual(after["keys"], 2)
        self.assertAlmostEqual(after["alarm"], o["alarm"], delta=1)  # both in whole ms
        self.assertEqual(self.admin_ok("alarm", "Broadcaster", "alarm-p"),
                         "Broadcaster alarm-p: alarm ran\n")

    async def test_token_from_the_environment_and_wrong_tokens(self):
        code, out, err = self.admin("objects", token=None, env={"DOHOST_ADMIN_TOKEN": ADMIN_TOKEN})
        self.assertEqual(code, 0, err)
        self.assert_error(self.admin("objects", token=None), 1, "401")
        self.assert_error(self.admin("objects", token="wrong"), 1, "401", "token")

    async def test_unknown_class_or_object(self):
        self.assert_error(self.admin("sockets", "NoSuchClass", "x"), 1, "404",
                          "no object class named NoSuchClass")
        self.assert_error(self.admin("sockets", "Broadcaster", "never-seen"), 1, "404",
                          "never-seen")
        self.assert_error(self.admin("evict", "Broadcaster", "never-seen"), 1, "404")
        self.assert_error(self.admin("alarm", "Broadcaster", "never-seen"), 1, "404")

    async def test_unreachable_host(self):
        port = free_port()  # nothing listens there
        for args in (("objects",), ("sockets", "Broadcaster", "x"), ("evict", "Broadcaster", "x"),
                     ("alarm", "Broadcaster", "x")):
            self.assert_error(run_doctl("--admin", f"http://127.0.0.1:{port}", *args), 3,
                              f"cannot reach the admin API at http://127.0.0.1:{port}")


class StoppedHostTests(DoctlCase):
    """The data folder stays readable after the host stops, even after SIGKILL."""

    async def test_offline_commands_after_sigterm_and_sigkill(self):
        ws = await join_channel(self.host, "after-stop", "u1", "alice")
        sent = [await say(ws, f"m{i}") for i in range(3)]
        await ws.close()
        self.host.kill()
        got = [json.loads(line) for line in self.ok("history", "after-stop", "--json").splitlines()]
        self.assertEqual(got, sent)
        self.host.start()
        ws = await join_channel(self.host, "after-stop", "u1", "alice")
        sent.append(await say(ws, "m3"))
        await ws.close()
        self.assertEqual(self.host.stop(), 0)
        got = [json.loads(line) for line in self.ok("history", "after-stop", "--json").splitlines()]
        self.assertEqual(got, sent)
        names = {o["name"] for o in self.ok_json("ls")}
        self.assertIn("after-stop", names)


class TokenTests(unittest.IsolatedAsyncioTestCase):
    """doctl token: the bundled apps accept what it signs, and refuse it once expired or
    signed with another secret."""

    @classmethod
    def setUpClass(cls):
        cls.host = Host(apps=("channels", "hopeflow")).start()

    @classmethod
    def tearDownClass(cls):
        cls.host.close()

    def token(self, *args, secret=JWT_SECRET, env_name="JWT_SECRET"):
        code, out, err = run_doctl("token", *args, env={env_name: secret})
        self.assertEqual(code, 0, err)
        self.assertEqual(out.count("\n"), 1, out)
        return out.strip()

    @staticmethod
    def claims(jwt):
        header, payload, _ = jwt.split(".")
        pad = lambda s: s + "=" * (-len(s) % 4)
        return (json.loads(base64.urlsafe_b64decode(pad(header))),
                json.loads(base64.urlsafe_b64decode(pad(payload))))

    def test_claims_for_every_bundled_app(self):
        before = int(time.time())
        jwt = self.token("--user", "u1", "--name", "Ann", "--ttl", "90m",
                         "--claim", "team=blue", "--claim", "level=3", "--claim", 'tags=["a"]')
        header, claims = self.claims(jwt)
        self.assertEqual(header, {"alg": "HS256", "typ": "JWT"})
        self.assertEqual({k: claims[k] for k in ("sub", "userId", "name", "username", "permissions")},
                         {"sub": "u1", "userId": "u1", "name": "Ann", "username": "Ann",
                          "permissions": ["read", "write"]})
        self.assertGreaterEqual(claims["iat"], before)
        self.assertEqual(claims["exp"] - claims["iat"], 90 * 60)
        self.assertEqual((claims["team"], claims["level"], claims["tags"]), ("blue", 3, ["a"]))
        _, plain = self.claims(self.token("--user", "u2", "--perm", "read", "--ttl", "0"))
        self.assertEqual((plain["name"], plain["permissions"]), ("u2", ["read"]))
        self.assertNotIn("exp", plain)
        _, none = self.claims(self.token("--user", "u3", "--perm", ""))
        self.assertEqual(none["permissions"], [])

    async def test_channels_and_hopeflow_accept_it(self):
        jwt = self.token("--user", "u1", "--name", "Ann")
        ws = await self.host.connect("channels", "/channel/token-room/websocket",
                                     headers={"Authorization": f"Bearer {jwt}"})
        first = await recv_json(ws)
        self.assertEqual(first["type"], "initial_state", first)
        await ws.send(json.dumps({"type": "message", "content": "signed by doctl"}))
        got = await recv_until(ws, lambda m: m.get("type") == "message")
        self.assertEqual((got["message"]["userId"], got["message"]["username"]), ("u1", "Ann"))
        await ws.close()
        # --perm read: joins, but may not write.
        reader = self.token("--user", "u2", "--perm", "read", secret=JWT_SECRET)
        ws = await self.host.connect("channels", f"/channel/token-room/websocket?token={reader}")
        self.assertEqual((await recv_json(ws))["type"], "initial_state")
        await ws.send(json.dumps({"type": "message", "content": "not allowed"}))
        err = await recv_until(ws, lambda m: m.get("type") == "error")
        self.assertEqual(err["message"], "No write permission")
        await ws.close()
        hf = await self.host.connect("hopeflow", f"/?token={self.token('--user', 'hf-user')}")
        await hf.send(json.dumps({"type": "subscribe", "filters": [{}]}))
        self.assertEqual((await recv_json(hf))["type"], "subscribed")
        await hf.close()

    async def test_apps_refuse_it_expired_or_signed_with_another_secret(self):
        expired = self.token("--user", "u1", "--claim", f"exp={int(time.time()) - 5}")
        other = self.token("--user", "u1", "--secret-env", "OTHER_SECRET", env_name="OTHER_SECRET",
                           secret="not-the-host-secret")
        for bad in (expired, other):
            for app, path in (("channels", "/channel/token-room/websocket"), ("hopeflow", "/")):
                with self.subTest(app=app, token=bad[-8:]):
                    with self.assertRaises(websockets.exceptions.InvalidStatusCode) as cm:
                        await self.host.connect(app, path, headers={"Authorization": f"Bearer {bad}"})
                    self.assertEqual(cm.exception.status_code, 401)
        # A token with a short lifetime is accepted, then refused once it ran out. Its `exp`
        # says when; the lifetime leaves room for a slow doctl and a slow host.
        short = self.token("--user", "u1", "--ttl", "4s")
        payload = short.split(".")[1]
        exp = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
        ws = await self.host.connect("hopeflow", f"/?token={short}")
        await ws.close()
        await asyncio.sleep(max(0.0, exp + 1.1 - time.time()))
        with self.assertRaises(websockets.exceptions.InvalidStatusCode) as cm:
            await self.host.connect("hopeflow", f"/?token={short}")
        self.assertEqual(cm.exception.status_code, 401)

    def test_errors(self):
        code, out, err = run_doctl("token", "--user", "u1", env={"JWT_SECRET": ""})
        self.assertEqual((code, out), (2, ""))
        self.assertIn("JWT_SECRET", err)
        code, _, err = run_doctl("token", "--user", "u1", "--secret-env", "NOPE_SECRET")
        self.assertEqual(code, 2)
        self.assertIn("NOPE_SECRET", err)
        for args, fragment in ((["--name", "Ann"], "--user"),
                               (["--user", "u1", "--ttl", "soon"], "--ttl"),
                               (["--user", "u1", "--claim", "novalue"], "KEY=VALUE"),
                               (["--user", "", ], "--user")):
            with self.subTest(args=args):
                code, out, err = run_doctl("token", *args, env={"JWT_SECRET": "s"})
                self.assertEqual((code, out), (2, ""), err)
                self.assertTrue(err.startswith("doctl: ") and fragment in err, err)


if __name__ == "__main__":
    unittest.main()
