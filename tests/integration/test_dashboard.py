"""The admin API's read-only inspection endpoints (/objects/{class}/{name}/kv, /tables, /sql)
and the dashboard at /ui: first over plain HTTP (status codes, bounds, the read-only guarantee,
the token rule, the page's security headers), then in headless Chromium
(chromium_dashboard.js): a person signs in, finds objects, reads storage, runs SQL, is
refused a write, evicts an object, runs an alarm, watches the live figures and follows a
channel's history."""
import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import sqlite3
import unittest
import urllib.parse

from harness import Host, make_jwt, recv_json, recv_until

HERE = os.path.dirname(os.path.abspath(__file__))
CHROMIUM = "/usr/bin/chromium"
PLAYWRIGHT = os.path.join(HERE, "node", "node_modules", "playwright-core")
TOKEN = "dash-admin-token"
CONFIG = """
admin_sql_max_rows = 50
admin_sql_max_bytes = 200000
admin_sql_timeout = 0.3
"""


def q(s):
    return urllib.parse.quote(s, safe="")


def chat_token(user, name):
    return make_jwt({"userId": user, "username": name, "permissions": ["read", "write"]})


async def chat(host, channel, user, name, *contents):
    """Joins the channel, says each line (each stored before its broadcast), leaves."""
    ws = await host.connect("channels", f"/channel/{channel}/websocket",
                            headers={"Authorization": f"Bearer {chat_token(user, name)}"})
    assert (await recv_json(ws))["type"] == "initial_state"
    for text in contents:
        await ws.send(json.dumps({"type": "message", "content": text}))
        await recv_until(ws, lambda m: m.get("type") == "message" and m["message"]["content"] == text)
    return ws


class InspectCase(unittest.IsolatedAsyncioTestCase):
    idle_evict = None  # the host's default, 10 s

    @classmethod
    def setUpClass(cls):
        cls.host = Host(apps=("channels", "broadcaster"), test_plugin=True, config=CONFIG,
                        env={"DOHOST_ADMIN_TOKEN": TOKEN}, idle_evict=cls.idle_evict).start()

    @classmethod
    def tearDownClass(cls):
        cls.host.close()

    def get(self, path, token=TOKEN):
        status, body = self.host.admin_json("GET", path, token=token)
        return status, body

    def sql(self, path, text, token=TOKEN):
        headers = {"Content-Type": "text/plain"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, h, body = self.host.http("POST", None, path + "/sql", body=text.encode(),
                                         headers=headers, port=self.host.admin_port)
        return status, json.loads(body)

    def db_path(self, cls, name):
        status, detail = self.get(f"/objects/{cls}/{q(name)}")
        self.assertEqual(status, 200, detail)
        return os.path.join(self.host.data, cls, detail["id"] + ".sqlite")


class InspectEndpointTests(InspectCase):
    async def asyncSetUp(self):
        self.sockets = []

    async def asyncTearDown(self):
        for ws in self.sockets:
            await ws.close()

    async def echo(self, name, query=""):
        ws = await self.host.connect("testapp", f"/o/{name}?{query}")
        await recv_json(ws)
        self.sockets.append(ws)
        return ws

    async def test_kv_lists_entries_in_key_order_with_prefix_paging_and_bytes(self):
        ws = await self.echo("kv-one")
        # TestEcho keeps "constructed" and, once a socket closes, "events".
        status, body = self.get("/objects/TestEcho/kv-one/kv")
        self.assertEqual(status, 200, body)
        self.assertEqual(body, {"entries": [{"key": "constructed", "value": "1", "valueBytes": 1}],
                                "truncated": False})
        # Each socket's close appends an event (with its attachment) to "events".
        for i in range(3):
            extra = await self.echo("kv-one", f"att={'x' * 3000}")
            await extra.close()
            self.sockets.remove(extra)
        async def events_grown():
            while True:
                s, b = self.get("/objects/TestEcho/kv-one/kv?prefix=ev")
                if b["entries"] and b["entries"][0]["valueBytes"] > 9000:
                    return b
                await asyncio.sleep(0.05)
        body = await asyncio.wait_for(events_grown(), 10)
        entry = body["entries"][0]
        self.assertEqual(entry["key"], "events")
        self.assertTrue(entry["valueTruncated"])
        self.assertEqual(len(entry["value"].encode()), 4096)  # cut to 4 KiB, full size beside it
        self.assertGreater(entry["valueBytes"], 9000)
        status, page = self.get("/objects/TestEcho/kv-one/kv?limit=1")
        self.assertEqual([e["key"] for e in page["entries"]], ["constructed"])
        self.assertTrue(page["truncated"])
        status, page = self.get("/objects/TestEcho/kv-one/kv?limit=2")  # exactly all of them
        self.assertEqual(([e["key"] for e in page["entries"]], page["truncated"]),
                         (["constructed", "events"], False))
        status, page = self.get("/objects/TestEcho/kv-one/kv?limit=1&after=constructed")
        self.assertEqual([e["key"] for e in page["entries"]], ["events"])
        self.assertFalse(page["truncated"])
        status, page = self.get("/objects/TestEcho/kv-one/kv?prefix=zzz")
        self.assertEqual(page, {"entries": [], "truncated": False})
        for bad in ("0", "-1", "x", ""):
            status, err = self.get(f"/objects/TestEcho/kv-one/kv?limit={bad}")
            self.assertEqual(status, 400, bad)
            self.assertIn("limit", err["error"])
        # The page size is capped by admin_sql_max_rows (50 here).
        status, page = self.get("/objects/TestEcho/kv-one/kv?limit=100000")
        self.assertEqual(status, 200)
        # Keys and values that are not UTF-8 come as base64url (written here from outside, as
        # no bundled class stores such keys).
        with sqlite3.connect(self.db_path("TestEcho", "kv-one")) as db:
            db.execute("INSERT INTO _do_kv(key, value) VALUES (x'00ff', x'fe01')")
        status, page = self.get("/objects/TestEcho/kv-one/kv?limit=1")
        self.assertEqual(page["entries"], [{"key": {"base64url": "AP8"}, "value": {"base64url": "_gE"},
                                            "valueBytes": 2}])
        await ws.close()
        self.sockets.remove(ws)

    async def test_binary_keys_and_cells_come_as_base64url(self):
        await chat(self.host, "bin-room", "u1", "Ann", "hello")
        status, res = self.sql("/objects/ChannelWebSocket/bin-room",
                               "SELECT x'00ff10' AS b, 'é' AS t, 1.5 AS r, NULL AS n, 42 AS i")
        self.assertEqual(status, 200, res)
        self.assertEqual(res["results"][0], {
            "columns": ["b", "t", "r", "n", "i"],
            "rows": [[{"base64url": base64.urlsafe_b64encode(b"\x00\xff\x10").decode().rstrip("=")},
                      "é", 1.5, None, 42]],
            "truncated": False})

    async def test_tables_and_sql_on_a_channel(self):
        ws = await chat(self.host, "sql-room", "u1", "Ann", "one", "two", "three")
        await ws.close()
        status, tables = self.get("/objects/ChannelWebSocket/sql-room/tables")
        self.assertEqual(status, 200, tables)
        rows = {t["name"]: t["rows"] for t in tables}
        self.assertEqual(rows["channel_messages"], 3)
        self.assertIn("_do_meta", rows)
        self.assertIn("_do_kv", rows)
        status, res = self.sql("/objects/ChannelWebSocket/sql-room",
                               "SELECT content FROM channel_messages ORDER BY rowid; "
                               "SELECT count(*) AS n FROM channel_messages; "
                               "SELECT value FROM _do_meta WHERE key = 'name'")
        self.assertEqual(status, 200, res)
        self.assertEqual([r["rows"] for r in res["results"]],
                         [[["one"], ["two"], ["three"]], [[3]], [["sql-room"]]])
        self.assertEqual(res["results"][1]["columns"], ["n"])

    async def test_writing_statements_are_refused_and_change_nothing(self):
        ws = await chat(self.host, "ro-room", "u1", "Ann", "keep me")
        await ws.close()
        path = self.db_path("ChannelWebSocket", "ro-room")
        before = os.path.getsize(path)
        writes = ["DELETE FROM channel_messages", "UPDATE channel_messages SET content = 'x'",
                  "INSERT INTO channel_messages(channel, user_id, username, content, timestamp) "
                  "VALUES ('c', 'u', 'n', 'c', 1)", "DROP TABLE channel_messages",
                  "CREATE TABLE t(x)", "DELETE FROM _do_kv", "PRAGMA user_version = 7",
                  "SELECT 1; DELETE FROM channel_messages"]
        for statement in writes:
            with self.subTest(statement=statement):
                status, res = self.sql("/objects/ChannelWebSocket/ro-room", statement)
                self.assertEqual(status, 403, res)
                self.assertTrue(res["readOnly"])
                self.assertIn("readonly database", res["error"])
                self.assertIn("nothing was changed", res["error"])
        # The statement before the refused one ran and its rows come back.
        self.assertEqual(res["results"], [{"columns": ["1"], "rows": [[1]], "truncated": False}])
        outside = os.path.join(self.host.data, "..", "vacuumed-copy.sqlite")
        for statement in (f"ATTACH '{outside}' AS other", f"VACUUM INTO '{outside}'"):
            with self.subTest(statement=statement):
                status, res = self.sql("/objects/ChannelWebSocket/ro-room", statement)
                self.assertEqual(status, 403, res)
                self.assertIn("ATTACH is off", res["error"])
        self.assertFalse(os.path.exists(outside))
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            self.assertEqual(db.execute("SELECT content FROM channel_messages").fetchall(),
                             [("keep me",)])
            self.assertEqual(db.execute("PRAGMA user_version").fetchone(), (0,))
        self.assertEqual(os.path.getsize(path), before)
        # The channel still works: the host's own writes go on.
        ws = await chat(self.host, "ro-room", "u2", "Bob", "still here")
        await ws.close()

    async def test_bounds_rows_bytes_and_time(self):
        ws = await chat(self.host, "bounds-room", "u1", "Ann", "x")
        await ws.close()
        base = "/objects/ChannelWebSocket/bounds-room"
        status, res = self.sql(base, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                                     "WHERE i < 1000) SELECT i FROM n")
        self.assertEqual(status, 200)
        self.assertEqual(len(res["results"][0]["rows"]), 50)  # admin_sql_max_rows
        self.assertTrue(res["results"][0]["truncated"])
        for n, truncated in ((50, False), (51, True)):  # the bound, and just past it
            status, res = self.sql(base, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                                         f"FROM n WHERE i < {n}) SELECT i FROM n")
            self.assertEqual((len(res["results"][0]["rows"]), res["results"][0]["truncated"]),
                             (50, truncated))
        status, res = self.sql(base, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                                     "WHERE i < 40) SELECT i, zeroblob(10000) FROM n")
        self.assertEqual(status, 200)
        rows = res["results"][0]["rows"]
        self.assertEqual(len(rows), 21)  # 200000 bytes: the row that passes them is the last one
        self.assertTrue(res["results"][0]["truncated"])
        # A statement that would run forever is interrupted after admin_sql_timeout (0.3 s),
        # and the host goes on serving.
        status, res = self.sql(base, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                                     "SELECT count(*) FROM n")
        self.assertEqual(status, 400, res)
        self.assertIn("interrupted", res["error"])
        self.assertIn("300 ms", res["error"])
        status, res = self.sql(base, "SELECT 2")
        self.assertEqual((status, res["results"][0]["rows"]), (200, [[2]]))

    async def test_errors(self):
        await self.echo("err-one")  # tracked, but has stored nothing but its counter
        cases = [
            ("GET", "/objects/Nope/x/kv", None, 404, "no object class named Nope"),
            ("GET", "/objects/TestEcho/never-seen/kv", None, 404, "no object never-seen"),
            ("POST", "/objects/TestEcho/err-one/kv", "", 405, "use GET"),
            ("GET", "/objects/TestEcho/err-one/sql", None, 405, "use POST"),
            ("POST", "/objects/TestEcho/err-one/sql", "   ", 400, "SQL as the request body"),
            ("POST", "/objects/TestEcho/err-one/sql", "SELEC 1", 400, "syntax error"),
            ("POST", "/objects/TestEcho/err-one/sql", "SELECT * FROM nope", 400, "no such table"),
        ]
        for method, path, body, code, fragment in cases:
            with self.subTest(method=method, path=path, body=body):
                status, _, raw = self.host.http(method, None, path, body=body,
                                                headers={"Authorization": f"Bearer {TOKEN}"},
                                                port=self.host.admin_port)
                self.assertEqual(status, code, raw)
                self.assertIn(fragment, json.loads(raw)["error"])
        # Without the token, nothing.
        for method, path in (("GET", "/objects/TestEcho/err-one/kv"),
                             ("GET", "/objects/TestEcho/err-one/tables"),
                             ("POST", "/objects/TestEcho/err-one/sql")):
            status, _, _ = self.host.http(method, None, path, body="SELECT 1", port=self.host.admin_port)
            self.assertEqual(status, 401)

    async def test_an_object_not_written_yet_has_empty_storage(self):
        # A Broadcaster's /status reads without writing: the host tracks the object (for the
        # idle timeout, 10 s here), but it has no file. (GET /objects/C/N would open it.)
        status, _, _ = self.host.http("GET", "broadcaster", "/status?projectId=never-written")
        self.assertEqual(status, 200)
        self.assertEqual(self.get("/objects/Broadcaster/never-written/kv"),
                         (200, {"entries": [], "truncated": False}))
        self.assertEqual(self.get("/objects/Broadcaster/never-written/tables"), (200, []))
        status, res = self.sql("/objects/Broadcaster/never-written", "SELECT 1")
        self.assertEqual(status, 404)
        self.assertIn("stored nothing yet", res["error"])
        self.assertFalse(os.path.exists(os.path.join(self.host.data, "Broadcaster")))


class DashboardPageTests(InspectCase):
    def test_the_page_needs_the_token_and_offers_a_form_without_it(self):
        for path in ("/ui", "/ui?token=wrong"):
            with self.subTest(path=path):
                status, h, body = self.host.http("GET", None, path, port=self.host.admin_port)
                self.assertEqual(status, 401)
                self.assertTrue(h["content-type"].startswith("text/html"))
                text = body.decode()
                self.assertIn('<form method="get" action="/ui">', text)
                self.assertIn('name="token"', text)
                self.assertEqual("not the admin token" in text, "wrong" in path)
                self.assertNotIn("<script", text)
        status, h, body = self.host.http("GET", None, "/ui", port=self.host.admin_port,
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual(status, 200)
        status2, _, body2 = self.host.http("GET", None, f"/ui?token={TOKEN}", port=self.host.admin_port)
        self.assertEqual((status2, body2), (200, body))
        text = body.decode()
        self.assertNotIn(TOKEN, text)
        # One inline script, allowed by its hash; nothing from elsewhere.
        scripts = re.findall(r"<script>(.*?)</script>", text, re.S)
        self.assertEqual(len(scripts), 1)
        digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
        policy = h["content-security-policy"]
        self.assertIn(f"script-src 'sha256-{digest}'", policy)
        self.assertIn("default-src 'none'", policy)
        self.assertIn("connect-src 'self'", policy)
        self.assertNotRegex(text, r"(src|href)=\"(https?:)?//")
        self.assertEqual(h["referrer-policy"], "no-referrer")
        self.assertEqual(h["cache-control"], "no-store")
        status, _, _ = self.host.http("POST", None, "/ui", port=self.host.admin_port,
                                      headers={"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual(status, 405)

    def test_without_an_admin_token_the_page_is_open(self):
        with Host(apps=()) as host:
            status, h, body = host.http("GET", None, "/ui", port=host.admin_port)
            self.assertEqual(status, 200)
            self.assertIn(b"dohost dashboard", body)


class ChromiumDashboardTests(InspectCase):
    """What a person sees in the dashboard (tests/integration/chromium_dashboard.js)."""
    idle_evict = 600  # objects leave memory only when the page's button says so

    async def test_dashboard_in_chromium(self):
        node = shutil.which("node")
        if not (os.path.exists(CHROMIUM) and os.path.isdir(PLAYWRIGHT) and node):
            self.skipTest("needs /usr/bin/chromium (Debian package chromium), node and "
                          "playwright-core in tests/integration/node (its setup script)")
        host = self.host
        # What the page will find: an echo object with a tagged socket, a channel with history,
        # a Broadcaster project with a pending cleanup alarm.
        echo = await host.connect("testapp", "/o/dash-echo?tags=user:ann,room&att=" + q('{"role":"host"}'))
        await recv_json(echo)
        ann = await chat(host, "dash-room", "u1", "Ann", "first words", "second words")
        runtime = await host.connect("broadcaster", "/websocket?type=runtime&projectId=dash-project")
        await recv_json(runtime)
        await runtime.close()
        slashed = await host.connect("broadcaster", "/websocket?type=runtime&projectId=" + q("dash/slash"))
        await recv_json(slashed)
        extra = []
        background = []
        proc = await asyncio.create_subprocess_exec(
            node, os.path.join(HERE, "chromium_dashboard.js"), f"http://127.0.0.1:{host.admin_port}",
            TOKEN, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            while True:
                raw = await asyncio.wait_for(proc.stdout.readline(), 120)
                line = raw.decode().strip()
                if not line:
                    err = await asyncio.wait_for(proc.stderr.read(), 30)
                    self.fail("the page test ended early:\n" + err.decode(errors="replace")[-4000:])
                if line.startswith("OK"):
                    break
                if line.startswith("FAIL"):
                    err = await asyncio.wait_for(proc.stderr.read(), 30)
                    self.fail(line + "\n" + err.decode(errors="replace")[-4000:])
                if line == "OPEN 2 SOCKETS":
                    for _ in range(2):
                        ws = await host.connect("testapp", "/o/dash-echo")
                        await recv_json(ws)
                        extra.append(ws)
                elif line == "TRAFFIC":
                    # Messages for a few seconds, so the per-second figures move while the
                    # page watches them.
                    async def traffic():
                        for i in range(80):
                            await echo.send(f"ping {i}")
                            await recv_json(echo)
                            await asyncio.sleep(0.1)
                    background.append(asyncio.create_task(traffic()))
                elif line == "WAKE":
                    await echo.send("wake up")
                    await recv_json(echo)
                elif line == "SAY":
                    await ann.send(json.dumps({"type": "message", "content": "said while following"}))
                    await recv_until(ann, lambda m: m.get("type") == "message")
                else:
                    self.fail("unexpected line from the page test: " + line)
                proc.stdin.write(b"DONE\n")
                await proc.stdin.drain()
            for task in background:
                await task
            summary = json.loads(line[3:])
            self.assertGreaterEqual(summary["socketsSeen"], 3)
            self.assertGreater(summary["messagesInPerSecond"], 0)
        finally:
            for task in background:
                task.cancel()
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            for ws in [echo, ann, slashed] + extra:
                await ws.close()


if __name__ == "__main__":
    unittest.main()
