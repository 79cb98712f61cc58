"""Chat channels (seed 004) against the real dohost binary: JWT auth, the connection limit,
initial_state, join/leave notices, typing and presence, errors, persistence with replay
(sync and GET /messages, by message id or by seq), eviction, restarts, SIGKILL during a burst,
sharded channels, and the migration of a history the previous version wrote (integer ids).
The protocol is in docs/apps/channels.md."""
import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
import unittest
import uuid

import websockets

from harness import (CLUSTER, JWT_SECRET, Host, make_jwt, metric, no_message, quote, recv_json,
                     recv_until)

CLASS = "ChannelWebSocket"
HERE = os.path.dirname(os.path.abspath(__file__))
CHROMIUM = "/usr/bin/chromium"
PLAYWRIGHT = os.path.join(HERE, "node", "node_modules", "playwright-core")
RW = ("read", "write")
_names = itertools.count(1)
# A message id as crypto.randomUUID() makes it: version 4, lowercase.
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def new_channel(prefix="room"):
    """A channel id no other test uses (tests of a class share a host)."""
    return f"{prefix}-{next(_names)}-{os.getpid()}"


def token(user, perms=RW, username=None, **claims):
    payload = {"userId": user, "username": username or user.upper(), "permissions": list(perms)}
    payload.update(claims)
    return make_jwt(payload)


def bearer(user, perms=RW, **claims):
    return {"Authorization": f"Bearer {token(user, perms, **claims)}"}


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_with(header, payload, secret=JWT_SECRET, digest=hashlib.sha256):
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = b64(hmac.new(secret.encode(), signing.encode(), digest).digest())
    return f"{signing}.{sig}"


def upgrade_headers(extra=None):
    h = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
         "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    h.update(extra or {})
    return h


def fnv1a(text):
    h = 1469598103934665603
    for b in text.encode():
        h ^= b
        h = (h * 1099511628211) % (1 << 64)
    return h


def shard_of(user, shards):
    return fnv1a(user) % shards


def ws_path(channel, tok=None):
    path = f"/channel/{channel}/websocket"
    return path + (f"?token={quote(tok)}" if tok else "")


# The tables as the previous version of ChannelWebSocket created them (message ids were the
# INTEGER PRIMARY KEY, no UUIDs), with the host's own two tables.
OLD_SCHEMA = """
CREATE TABLE _do_meta(key TEXT PRIMARY KEY, value);
CREATE TABLE _do_kv(key BLOB PRIMARY KEY, value BLOB) WITHOUT ROWID;
CREATE TABLE channel_messages (
  id INTEGER PRIMARY KEY,
  channel TEXT NOT NULL,
  user_id TEXT NOT NULL,
  username TEXT NOT NULL,
  content TEXT NOT NULL,
  timestamp INTEGER NOT NULL,
  thread_id
);
CREATE TABLE channel_members (
  epoch INTEGER NOT NULL,
  shard INTEGER NOT NULL,
  socket_id INTEGER NOT NULL,
  user_id TEXT NOT NULL,
  username TEXT NOT NULL,
  joined_at INTEGER NOT NULL,
  status TEXT,
  PRIMARY KEY (epoch, shard, socket_id)
);
"""


def write_old_channel(data, channel, count):
    """Writes the database of `channel` as the previous version left it, with `count` messages
    (ids 1..count), into the data folder `data`. Returns (path, the messages as that version's
    clients saw them, but with the id under "seq": what they must be after the migration)."""
    folder = os.path.join(data, CLASS)
    os.makedirs(folder, exist_ok=True)
    oid = object_id(CLASS, channel)
    path = os.path.join(folder, oid + ".sqlite")
    start = int(time.time() * 1000) - 3_600_000
    messages = []
    for i in range(1, count + 1):
        m = {"seq": i, "channelId": channel, "userId": f"u{i % 3}", "username": f"User {i % 3}",
             "content": f"old message {i}", "timestamp": start + i}
        if i % 7 == 0:
            m["threadId"] = f"t-{i // 7}"
        elif i % 11 == 0:
            m["threadId"] = i
        messages.append(m)
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(OLD_SCHEMA)
        with db:
            db.executemany("INSERT INTO _do_meta(key, value) VALUES (?, ?)",
                           [("class", CLASS), ("id", oid), ("name", channel),
                            ("created_ms", start)])
            db.executemany(
                "INSERT INTO channel_messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(m["seq"], channel, m["userId"], m["username"], m["content"], m["timestamp"],
                  m.get("threadId")) for m in messages])
            # A member row of a process long gone (a sharded channel leaves these).
            db.execute("INSERT INTO channel_members VALUES (1, 0, 1, 'gone', 'Gone', 1, NULL)")
    finally:
        db.close()
    return path, messages


def without_id(m):
    return {k: v for k, v in m.items() if k != "id"}


_open_sockets = []


async def join(host, channel, user, perms=RW, username=None):
    """Connects `user` and returns (socket, initial_state)."""
    ws = await host.connect("channels", ws_path(channel), close_timeout=1,
                            headers={"Authorization": f"Bearer {token(user, perms, username)}"})
    _open_sockets.append(ws)
    first = await recv_json(ws)
    assert first["type"] == "initial_state", first
    return ws, first


async def next_of(ws, kind, timeout=5):
    return await recv_until(ws, lambda m: m.get("type") == kind, timeout)


async def say(ws, content, **extra):
    await ws.send(json.dumps({"type": "message", "content": content, **extra}))


async def collect_messages(ws, count, timeout=10):
    """The next `count` chat messages on `ws` (other frames are skipped)."""
    out = []
    while len(out) < count:
        m = await next_of(ws, "message", timeout)
        out.append(m["message"])
    return out


async def sync_all(ws, after=None, **fields):
    """Sends one sync (`afterMessageId` = after, plus `fields`, e.g. afterSeq=3) and gathers its
    pages; returns (messages, pages)."""
    request = {"type": "sync", **fields}
    if after is not None:
        request["afterMessageId"] = after
    await ws.send(json.dumps(request))
    messages, pages = [], []
    while True:
        page = await next_of(ws, "sync")
        pages.append(page)
        messages += page["messages"]
        if page["done"]:
            return messages, pages


def history(host, channel, tok=None, after=None, limit=None):
    """GET /messages as (status, body json)."""
    params = []
    if after is not None:
        params.append(f"after={after}")
    if limit is not None:
        params.append(f"limit={limit}")
    path = f"/channel/{channel}/messages" + ("?" + "&".join(params) if params else "")
    headers = {"Authorization": f"Bearer {tok or token('reader', ('read',))}"}
    status, _, body = host.http("GET", "channels", path, headers=headers)
    return status, (json.loads(body) if body else None)


def full_history(host, channel):
    """The whole history over HTTP, paging by message id."""
    out, after = [], ""
    while True:
        status, body = history(host, channel, after=after, limit=1000)
        assert status == 200, (status, body)
        out += body["messages"]
        if not body["hasMore"]:
            return out
        after = body["lastMessageId"]


def seqs(messages):
    return [m["seq"] for m in messages]


def object_id(cls, name):
    """idFromName (runtime/src/object_id.cc): two HMAC-SHA256 halves under a per-class key."""
    key = hashlib.sha256(f"dohost-namespace:{cls}".encode()).digest()
    head = hmac.new(key, name.encode(), hashlib.sha256).digest()[:16]
    return (head + hmac.new(key, head, hashlib.sha256).digest()[:16]).hex()


class SocketsClosed(unittest.IsolatedAsyncioTestCase):
    """Closes what join() opened, also when a test fails half-way."""

    async def asyncTearDown(self):
        while _open_sockets:
            ws = _open_sockets.pop()
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:
                pass


class ChannelTestCase(SocketsClosed):
    """One host for the whole class; each test uses its own channels."""
    host_env = {}
    idle_evict = None

    @classmethod
    def setUpClass(cls):
        cls.host = Host(apps=("channels",), env=cls.host_env, idle_evict=cls.idle_evict).start()

    @classmethod
    def tearDownClass(cls):
        cls.host.close()


class SeedClientTests(ChannelTestCase):
    """Seed 004's own reconnecting client (WaddleWebSocket), unchanged, in Node
    (tests/integration/node/seed_channels.js)."""

    def test_the_seed_client_catches_up_from_the_last_uuid_it_saw(self):
        node = shutil.which("node") or shutil.which("nodejs")
        if node is None or not os.path.isdir(os.path.join(HERE, "node", "node_modules", "ws")):
            self.skipTest("needs node and the ws package (tests/integration/node/setup)")
        proc = subprocess.run([node, os.path.join(HERE, "node", "seed_channels.js"),
                               str(self.host.apps["channels"]), token("alice"), token("bob")],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 0, f"{proc.stdout}\n{proc.stderr}")
        checks = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith('{"check"')]
        self.assertEqual(checks[-1]["check"], "done")
        self.assertTrue(all(c["ok"] for c in checks))
        self.assertEqual(len(checks), 6)


class AuthTests(ChannelTestCase):
    async def test_missing_and_invalid_tokens_are_refused_with_401(self):
        channel = new_channel()
        now = int(time.time())
        good = {"userId": "u1", "permissions": ["write"]}
        bad = [
            None,
            "not-a-token",
            make_jwt(good, secret="another-secret"),
            make_jwt(good, alg="none"),
            jwt_with({"alg": "HS512", "typ": "JWT"}, good, digest=hashlib.sha512),
            make_jwt({**good, "exp": now - 60}),
            make_jwt({**good, "nbf": now + 3600}),
            make_jwt({"username": "nobody"}),                   # no userId, no sub
            make_jwt({"userId": "u1", "permissions": "write"}),  # not an array
        ]
        for tok in bad:
            with self.subTest(tok=tok):
                headers = {"Authorization": f"Bearer {tok}"} if tok else {}
                status, hdrs, body = self.host.http("GET", "channels", ws_path(channel),
                                                    headers=upgrade_headers(headers))
                self.assertEqual(status, 401)
                self.assertEqual(json.loads(body)["error"], "Unauthorized")
                self.assertIn("reason", json.loads(body))
                with self.assertRaises(websockets.exceptions.InvalidStatusCode) as cm:
                    await self.host.connect("channels", ws_path(channel), headers=headers)
                self.assertEqual(cm.exception.status_code, 401)
                status, _, body = self.host.http("GET", "channels",
                                                 f"/channel/{channel}/messages", headers=headers)
                self.assertEqual(status, 401)

    async def test_token_in_query_and_sub_claim_and_numeric_user_are_accepted(self):
        channel = new_channel()
        ws = await self.host.connect("channels", ws_path(channel, token("q1")))
        self.assertEqual((await recv_json(ws))["type"], "initial_state")
        await ws.close()
        sub = make_jwt({"sub": "subject-7", "username": "Seven", "permissions": ["write"]})
        ws = await self.host.connect("channels", ws_path(channel, sub))
        init = await recv_json(ws)
        self.assertEqual([u["userId"] for u in init["onlineUsers"]], ["subject-7"])
        await say(ws, "from sub")
        msg = (await next_of(ws, "message"))["message"]
        self.assertEqual((msg["userId"], msg["username"]), ("subject-7", "Seven"))
        await ws.close()
        numeric = make_jwt({"userId": 42, "exp": int(time.time()) + 600})
        ws = await self.host.connect("channels", ws_path(channel, numeric))
        init = await recv_json(ws)
        self.assertEqual(init["onlineUsers"][0], {"userId": "42", "username": "42",
                                                  "joinedAt": init["onlineUsers"][0]["joinedAt"]})
        await ws.close()

    async def test_routes_other_than_the_channel_routes_are_refused(self):
        channel = new_channel()
        auth = bearer("u1")
        for path, status in [(f"/channel/{channel}/internal/post", 404),
                             (f"/internal/post", 404),
                             (f"/internal/deliver", 404),
                             (f"/channel/{channel}", 404),
                             (f"/channel/{channel}/websocket/x", 404),
                             ("/channel/bad%2Fid/messages", 404),
                             ("/channel/bad%23id/messages", 400),
                             ("/channel/bad id/messages", 400),
                             (f"/channel/{channel}/websocket", 426)]:
            with self.subTest(path=path):
                got, _, _ = self.host.http("GET", "channels", path.replace(" ", "%20"),
                                           headers=auth)
                self.assertEqual(got, status)
        got, _, _ = self.host.http("POST", "channels", f"/channel/{channel}/messages", body="{}",
                                   headers=auth)
        self.assertEqual(got, 405)
        got, _, _ = self.host.http("POST", "channels", "/internal/post", body="{}",
                                   headers={**auth, "x-channel-internal": "1"})
        self.assertEqual(got, 404)
        got, hdrs, body = self.host.http("GET", "channels", "/")
        self.assertEqual(got, 200)
        self.assertTrue(hdrs["content-type"].startswith("text/html"))
        self.assertIn(b"<html", body)

    async def test_client_supplied_identity_headers_are_ignored(self):
        channel = new_channel()
        forged = json.dumps({"userId": "admin", "username": "Admin", "permissions": ["write"]})
        ws = await self.host.connect("channels", ws_path(channel), headers={
            **bearer("reader", ("read",)), "X-Channel-User": forged,
            "x-channel-max-connections": "0"})
        init = await recv_json(ws)
        self.assertEqual(init["onlineUsers"][0]["userId"], "reader")
        await say(ws, "forged?")
        self.assertEqual(await next_of(ws, "error"),
                         {"type": "error", "message": "No write permission"})
        await ws.close()
        # Without a token the forged header gets nothing.
        status, _, _ = self.host.http("GET", "channels", ws_path(channel),
                                      headers=upgrade_headers({"x-channel-user": forged}))
        self.assertEqual(status, 401)


class ProtocolTests(ChannelTestCase):
    async def test_initial_state_has_the_last_50_messages_oldest_first_and_online_users(self):
        channel = new_channel()
        a, init = await join(self.host, channel, "alice", username="Alice")
        self.assertEqual(init["messages"], [])
        self.assertEqual((init["lastMessageId"], init["lastSeq"]), (None, 0))
        self.assertEqual(init["channelId"], channel)
        self.assertEqual([(u["userId"], u["username"]) for u in init["onlineUsers"]],
                         [("alice", "Alice")])
        for i in range(60):
            await say(a, f"m{i}", **({"threadId": "t1"} if i == 59 else {}))
        sent = await collect_messages(a, 60)
        self.assertEqual(seqs(sent), list(range(1, 61)))
        b, init = await join(self.host, channel, "bob", ("read",), username="Bob")
        self.assertEqual([m["content"] for m in init["messages"]], [f"m{i}" for i in range(10, 60)])
        self.assertEqual(init["messages"], sent[10:])
        self.assertEqual(init["messages"][-1]["threadId"], "t1")
        self.assertNotIn("threadId", init["messages"][0])
        self.assertEqual((init["lastMessageId"], init["lastSeq"]), (sent[-1]["id"], 60))
        self.assertEqual([u["userId"] for u in init["onlineUsers"]], ["alice", "bob"])
        for u in init["onlineUsers"]:
            self.assertIsInstance(u["joinedAt"], int)
        await a.close()
        await b.close()

    async def test_a_message_is_stored_and_sent_to_every_socket_including_the_sender(self):
        channel = new_channel()
        a, _ = await join(self.host, channel, "alice")
        b, _ = await join(self.host, channel, "bob")
        b2, _ = await join(self.host, channel, "bob")  # a second tab
        before = time.time() * 1000
        await say(a, "hello", threadId=7)
        got = [(await next_of(ws, "message"))["message"] for ws in (a, b, b2)]
        self.assertEqual(got[0], got[1])
        self.assertEqual(got[0], got[2])
        m = got[0]
        self.assertRegex(m["id"], UUID4)
        self.assertEqual({k: m[k] for k in ("seq", "channelId", "userId", "username", "content",
                                            "threadId")},
                         {"seq": 1, "channelId": channel, "userId": "alice", "username": "ALICE",
                          "content": "hello", "threadId": 7})
        self.assertGreaterEqual(m["timestamp"], before - 5000)
        self.assertEqual(full_history(self.host, channel), [m])
        for ws in (a, b, b2):
            self.assertTrue(await no_message(ws, 0.2))
        for ws in (a, b, b2):
            await ws.close()

    async def test_message_needs_the_write_permission(self):
        channel = new_channel()
        reader, _ = await join(self.host, channel, "reader", ("read",))
        writer, _ = await join(self.host, channel, "writer")
        await say(reader, "can I?")
        self.assertEqual(await next_of(reader, "error"),
                         {"type": "error", "message": "No write permission"})
        nobody, _ = await join(self.host, channel, "nobody", ())
        await say(nobody, "and me?")
        self.assertEqual((await next_of(nobody, "error"))["message"], "No write permission")
        # Nothing was stored or broadcast: the next message is seq 1.
        await say(writer, "I can")
        self.assertEqual((await next_of(reader, "message"))["message"]["seq"], 1)
        self.assertEqual([m["content"] for m in full_history(self.host, channel)], ["I can"])
        for ws in (reader, writer, nobody):
            await ws.close()

    async def test_join_and_leave_notices_go_to_the_others_once_per_user(self):
        channel = new_channel()
        a, _ = await join(self.host, channel, "alice")
        b1, init = await join(self.host, channel, "bob", username="Bob")
        joined = await next_of(a, "user_connected")
        self.assertEqual((joined["userId"], joined["username"]), ("bob", "Bob"))
        self.assertIsInstance(joined["joinedAt"], int)
        self.assertTrue(await no_message(b1, 0.2))  # not to the joiner itself
        b2, init = await join(self.host, channel, "bob", username="Bob")
        self.assertEqual([u["userId"] for u in init["onlineUsers"]], ["alice", "bob"])
        self.assertTrue(await no_message(a, 0.3))  # bob was already online
        await b1.close()
        self.assertTrue(await no_message(a, 0.3))  # bob still has a socket
        await b2.close()
        self.assertEqual(await next_of(a, "user_disconnected"),
                         {"type": "user_disconnected", "userId": "bob", "username": "Bob"})
        c, init = await join(self.host, channel, "carol")
        self.assertEqual([u["userId"] for u in init["onlineUsers"]], ["alice", "carol"])
        await c.close()
        await a.close()

    async def test_typing_goes_to_the_others_and_presence_is_kept(self):
        channel = new_channel()
        a, _ = await join(self.host, channel, "alice")
        b, _ = await join(self.host, channel, "bob")
        await next_of(a, "user_connected")
        await b.send(json.dumps({"type": "typing", "isTyping": True}))
        self.assertEqual(await next_of(a, "typing"), {"type": "typing", "userId": "bob",
                                                      "username": "BOB", "isTyping": True})
        await b.send(json.dumps({"type": "typing", "isTyping": False}))
        self.assertFalse((await next_of(a, "typing"))["isTyping"])
        await b.send(json.dumps({"type": "presence", "status": "away"}))
        self.assertEqual(await next_of(a, "presence"), {"type": "presence", "userId": "bob",
                                                        "username": "BOB", "status": "away"})
        self.assertTrue(await no_message(b, 0.3))  # the sender gets neither back
        c, init = await join(self.host, channel, "carol")
        self.assertEqual({u["userId"]: u.get("status") for u in init["onlineUsers"]},
                         {"alice": None, "bob": "away", "carol": None})
        self.assertEqual(init["messages"], [])  # typing and presence are not stored
        self.assertEqual(full_history(self.host, channel), [])
        for ws in (a, b, c):
            await ws.close()

    async def test_bad_frames_get_the_seeds_error_messages(self):
        channel = new_channel()
        a, _ = await join(self.host, channel, "alice")
        cases = [
            ("not json", "Invalid message format"),
            ("[1,2]", "Invalid message format"),
            ('"message"', "Invalid message format"),
            ('{"type":"dance"}', "Unknown message type"),
            ('{"content":"no type"}', "Unknown message type"),
            ('{"type":"message"}', "Invalid message format"),
            ('{"type":"message","content":""}', "Invalid message format"),
            ('{"type":"message","content":42}', "Invalid message format"),
            ('{"type":"message","content":"x","threadId":{"a":1}}', "Invalid message format"),
            (json.dumps({"type": "message", "content": "x" * 4001}), "Message too long"),
            ('{"type":"typing","isTyping":"yes"}', "Invalid message format"),
            ('{"type":"presence"}', "Invalid message format"),
            ('{"type":"sync","afterMessageId":-1}', "Invalid message format"),
            ('{"type":"sync","afterMessageId":"abc"}', "Invalid message format"),
            ('{"type":"sync","afterMessageId":1.5}', "Invalid message format"),
            ('{"type":"sync","afterMessageId":{"id":1}}', "Invalid message format"),
            ('{"type":"sync","afterSeq":-1}', "Invalid message format"),
            ('{"type":"sync","afterSeq":"' + str(uuid.uuid4()) + '"}', "Invalid message format"),
            ('{"type":"sync","afterMessageId":"' + str(uuid.uuid4()) + '","afterSeq":0}',
             "Invalid message format"),
        ]
        for frame, error in cases:
            with self.subTest(frame=frame[:40]):
                await a.send(frame)
                self.assertEqual(await recv_json(a), {"type": "error", "message": error})
        await a.send(b"\x00binary")
        self.assertEqual(await recv_json(a), {"type": "error", "message": "Invalid message format"})
        await a.send('{"type":"ping"}')
        self.assertEqual(await recv_json(a), {"type": "pong"})
        # The socket still works and nothing was stored.
        await say(a, "x" * 4000)
        self.assertEqual((await next_of(a, "message"))["message"]["seq"], 1)
        await a.close()

    async def test_sync_returns_every_missed_message_in_order_in_pages(self):
        channel = new_channel()
        a, _ = await join(self.host, channel, "alice")
        b, _ = await join(self.host, channel, "bob")
        await say(a, "before")
        seen = (await next_of(b, "message"))["message"]["id"]
        await b.close()
        for i in range(5):
            await say(a, f"missed {i}")
        missed = await collect_messages(a, 6)
        missed = missed[1:]
        b, init = await join(self.host, channel, "bob")
        self.assertRegex(seen, UUID4)
        got, pages = await sync_all(b, seen)
        self.assertEqual(got, missed)
        self.assertEqual(len(pages), 1)
        self.assertEqual((pages[0]["afterMessageId"], pages[0]["afterSeq"], pages[0]["hasMore"]),
                         (seen, 1, False))
        # Nothing missed: one empty page.
        got, pages = await sync_all(b, missed[-1]["id"])
        self.assertEqual((got, len(pages), pages[0]["hasMore"]), ([], 1, False))
        # 250 messages come as pages of 100, 100, 50.
        for i in range(244):
            await say(a, f"bulk {i}")
        await collect_messages(a, 244)
        got, pages = await sync_all(b, 0)
        self.assertEqual([len(p["messages"]) for p in pages], [100, 100, 50])
        self.assertEqual([p["page"] for p in pages], [0, 1, 2])
        self.assertEqual([p["hasMore"] for p in pages], [True, True, False])
        self.assertEqual([(p["afterMessageId"], p["afterSeq"]) for p in pages], [(None, 0)] * 3)
        self.assertEqual(seqs(got), list(range(1, 251)))
        self.assertEqual(got, full_history(self.host, channel))
        await a.close()
        await b.close()

    async def test_sync_stops_after_1000_messages_and_says_there_is_more(self):
        channel = new_channel()
        a, _ = await join(self.host, channel, "alice")
        for i in range(1003):
            await say(a, f"n{i}")
        await collect_messages(a, 1003, timeout=30)
        got, pages = await sync_all(a, 0)
        self.assertEqual(len(got), 1000)
        self.assertEqual(len(pages), 10)
        self.assertTrue(pages[-1]["hasMore"])
        rest, pages = await sync_all(a, got[-1]["id"])
        self.assertEqual(seqs(rest), [1001, 1002, 1003])
        self.assertFalse(pages[-1]["hasMore"])
        await a.close()

    async def test_messages_endpoint_pages_the_history_and_checks_its_input(self):
        channel = new_channel()
        a, _ = await join(self.host, channel, "alice")
        for i in range(7):
            await say(a, f"h{i}")
        sent = await collect_messages(a, 7)
        status, body = history(self.host, channel)
        self.assertEqual(status, 200)
        self.assertEqual(body, {"channelId": channel, "afterMessageId": None, "afterSeq": 0,
                                "messages": sent, "hasMore": False,
                                "lastMessageId": sent[-1]["id"], "lastSeq": 7})
        status, body = history(self.host, channel, after=2, limit=3)
        self.assertEqual(seqs(body["messages"]), [3, 4, 5])
        self.assertEqual((body["afterMessageId"], body["afterSeq"]), (sent[1]["id"], 2))
        self.assertEqual((body["hasMore"], body["lastMessageId"], body["lastSeq"]),
                         (True, sent[4]["id"], 5))
        status, body = history(self.host, channel, after=5, limit=3)
        self.assertEqual((seqs(body["messages"]), body["hasMore"]), ([6, 7], False))
        status, body = history(self.host, channel, after=7)
        self.assertEqual((body["messages"], body["lastMessageId"], body["lastSeq"]),
                         ([], sent[-1]["id"], 7))
        status, body = history(self.host, new_channel())  # an unknown channel is just empty
        self.assertEqual((status, body["messages"], body["lastMessageId"]), (200, [], None))
        for bad in ({"after": "x"}, {"after": -1}, {"after": "1.5"}, {"after": "0x10"},
                    {"after": sent[0]["id"][:-1]}, {"after": "%7B" + sent[0]["id"] + "%7D"},
                    {"limit": 0}, {"limit": 1001}, {"limit": "ten"}):
            with self.subTest(bad=bad):
                status, body = history(self.host, channel, **bad)
                self.assertEqual(status, 400)
        # The same token forms as the socket.
        tok = token("reader", ("read",))
        status, _, body = self.host.http("GET", "channels",
                                         f"/channel/{channel}/messages?token={quote(tok)}")
        self.assertEqual((status, len(json.loads(body)["messages"])), (200, 7))
        status, _, _ = self.host.http("GET", "channels", f"/channel/{channel}/messages")
        self.assertEqual(status, 401)
        await a.close()

    async def test_eviction_in_the_middle_of_a_conversation_loses_nothing(self):
        channel = new_channel()
        a, _ = await join(self.host, channel, "alice")
        b, _ = await join(self.host, channel, "bob", ("read",))
        await next_of(a, "user_connected")
        await say(a, "one")
        await collect_messages(b, 1)
        m0 = self.host.metrics()
        for round_ in range(3):
            status, _ = self.host.admin_json("POST", f"/objects/{CLASS}/{quote(channel)}/evict")
            self.assertEqual(status, 200)
            status, detail = self.host.admin_json("GET", f"/objects/{CLASS}/{quote(channel)}")
            self.assertEqual(detail["state"], "evicted")
            # The attachments kept who is who and what they may do.
            await say(a, f"after eviction {round_}")
            got = (await next_of(b, "message"))["message"]
            self.assertEqual((got["seq"], got["username"]), (2 + round_, "ALICE"))
            await say(b, "still read-only?")
            self.assertEqual((await next_of(b, "error"))["message"], "No write permission")
        await b.send(json.dumps({"type": "typing"}))
        self.assertEqual((await next_of(a, "typing"))["userId"], "bob")
        self.assertGreaterEqual(metric(self.host.metrics(), "dohost_object_rehydrations_total",
                                       **{"class": CLASS}) -
                                metric(m0, "dohost_object_rehydrations_total", **{"class": CLASS}),
                                3)
        self.host.admin_json("POST", f"/objects/{CLASS}/{quote(channel)}/evict")
        c, init = await join(self.host, channel, "carol")
        self.assertEqual(seqs(init["messages"]), [1, 2, 3, 4])
        self.assertEqual([u["userId"] for u in init["onlineUsers"]], ["alice", "bob", "carol"])
        await b.close()
        self.host.admin_json("POST", f"/objects/{CLASS}/{quote(channel)}/evict")
        self.assertEqual((await next_of(a, "user_disconnected"))["userId"], "bob")
        for ws in (a, c):
            await ws.close()


class MessageIdTests(ChannelTestCase):
    """Message ids are UUIDs (as crypto.randomUUID() in the seed), seq is the order, and every
    replay takes either."""

    async def chat(self, count, users=("alice", "bob")):
        """A channel with `count` messages from `users` in turn; returns (channel, sockets,
        the messages as broadcast)."""
        channel = new_channel("ids")
        socks = [(await join(self.host, channel, u))[0] for u in users]
        for i in range(count):
            await say(socks[i % len(socks)], f"n{i}")
        return channel, socks, await collect_messages(socks[0], count)

    async def test_ids_are_distinct_uuids_and_seq_increases_by_one_everywhere(self):
        channel, socks, sent = await self.chat(40, ("alice", "bob", "carol"))
        self.assertEqual(seqs(sent), list(range(1, 41)))
        self.assertEqual(len({m["id"] for m in sent}), 40)
        for m in sent:
            self.assertRegex(m["id"], UUID4)
        # Each copy of a message, wherever it comes from, has the same id and seq.
        for ws in socks[1:]:
            self.assertEqual(await collect_messages(ws, 40), sent)
        late, init = await join(self.host, channel, "dave")
        self.assertEqual(init["messages"], sent[-40:])
        self.assertEqual((init["lastMessageId"], init["lastSeq"]), (sent[-1]["id"], 40))
        self.assertEqual((await sync_all(late))[0], sent)
        self.assertEqual(full_history(self.host, channel), sent)
        # Ids are never given out again: not in another channel, not after an eviction.
        other, _, more = await self.chat(5)
        self.host.admin_json("POST", f"/objects/{CLASS}/{quote(channel)}/evict")
        await say(late, "after the eviction")
        last = (await next_of(late, "message"))["message"]
        self.assertEqual(last["seq"], 41)
        ids = [m["id"] for m in sent + more + [last]]
        self.assertEqual(len(set(ids)), len(ids))

    async def test_sync_by_id_by_seq_and_by_an_integer_id_of_the_previous_version(self):
        channel, (a, b), sent = await self.chat(12)
        expected = sent[7:]
        for after, fields in ((sent[6]["id"], {}),                # the seed's client
                              (sent[6]["id"].upper(), {}),        # UUIDs compare in any case
                              (None, {"afterSeq": 7}),            # dohost's seq
                              (None, {"afterSeq": "7"}),
                              (7, {}),                            # a client of the old version
                              ("7", {}),
                              (None, {"afterSeq": 7, "afterMessageId": None})):
            with self.subTest(after=after, fields=fields):
                got, pages = await sync_all(b, after, **fields)
                self.assertEqual(got, expected)
                self.assertEqual((pages[0]["afterMessageId"], pages[0]["afterSeq"]),
                                 (sent[6]["id"], 7))
        # From the newest message: nothing; from the start: everything.
        got, pages = await sync_all(b, sent[-1]["id"])
        self.assertEqual((got, pages[0]["afterSeq"]), ([], 12))
        got, pages = await sync_all(b, afterSeq=0)
        self.assertEqual((got, pages[0]["afterMessageId"]), (sent, None))
        # A seq past the end is simply nothing yet.
        got, pages = await sync_all(b, afterSeq=500)
        self.assertEqual((got, pages[0]["afterMessageId"], pages[0]["afterSeq"]), ([], None, 500))

    async def test_an_unknown_id_is_an_error_not_a_replay_from_the_start(self):
        channel, (a, b), sent = await self.chat(3)
        _, _, elsewhere = await self.chat(1)  # an id of another channel is unknown here too
        for unknown in (str(uuid.uuid4()), elsewhere[0]["id"]):
            with self.subTest(unknown=unknown):
                await b.send(json.dumps({"type": "sync", "afterMessageId": unknown}))
                self.assertEqual(await next_of(b, "error"), {"type": "error",
                                                      "message": "Unknown message id",
                                                      "afterMessageId": unknown})
                self.assertTrue(await no_message(b, 0.3))  # no sync page follows
        # The socket carries on, and so does the channel.
        got, _ = await sync_all(b, sent[0]["id"])
        self.assertEqual(got, sent[1:])
        await say(a, "still fine")
        self.assertEqual((await next_of(b, "message"))["message"]["seq"], 4)

    async def test_messages_endpoint_takes_an_id_or_a_seq(self):
        channel, _, sent = await self.chat(9)
        for after in (sent[3]["id"], sent[3]["id"].upper(), "4", "04"):
            with self.subTest(after=after):
                status, body = history(self.host, channel, after=after, limit=2)
                self.assertEqual(status, 200, body)
                self.assertEqual(body["messages"], sent[4:6])
                self.assertEqual((body["afterMessageId"], body["afterSeq"]), (sent[3]["id"], 4))
                self.assertEqual((body["lastMessageId"], body["lastSeq"], body["hasMore"]),
                                 (sent[5]["id"], 6, True))
        # Paging by lastMessageId and by lastSeq reads the same.
        for key in ("lastMessageId", "lastSeq"):
            out, after = [], ""
            while True:
                status, body = history(self.host, channel, after=after, limit=4)
                out += body["messages"]
                if not body["hasMore"]:
                    break
                after = body[key]
            self.assertEqual(out, sent)
        unknown = str(uuid.uuid4())
        status, body = history(self.host, channel, after=unknown)
        self.assertEqual(status, 404)
        self.assertIn(unknown, body["error"])
        for bad in ("x", "-4", "4.0", "1e2", sent[3]["id"] + "0", sent[3]["id"].replace("-", "")):
            with self.subTest(bad=bad):
                status, body = history(self.host, channel, after=bad)
                self.assertEqual(status, 400, body)
                self.assertIn("after must be a message id (a UUID) or a seq", body["error"])


class IdleEvictionTests(ChannelTestCase):
    idle_evict = 0.1

    async def evicted(self, name, timeout=5):
        """Waits until the host has evicted the idle object `name`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, detail = self.host.admin_json("GET", f"/objects/{CLASS}/{quote(name)}")
            if status == 200 and detail["state"] == "evicted":
                return
            await asyncio.sleep(0.02)
        self.fail(f"{name} was not evicted")

    async def test_a_channel_that_hibernates_between_messages_keeps_its_order(self):
        channel = new_channel()
        a, _ = await join(self.host, channel, "alice")
        b, _ = await join(self.host, channel, "bob")
        for i in range(4):
            await say(a if i % 2 == 0 else b, f"slow {i}")
            got_a = (await next_of(a, "message"))["message"]
            got_b = (await next_of(b, "message"))["message"]
            self.assertEqual(got_a, got_b)
            self.assertEqual(got_a["seq"], i + 1)
            await self.evicted(channel)
        got, _ = await sync_all(b, 0)
        self.assertEqual([x["content"] for x in got], [f"slow {i}" for i in range(4)])
        await a.close()
        await b.close()


class LimitTests(ChannelTestCase):
    host_env = {"DOHOST_CHANNELS_MAX_CONNECTIONS": "3"}

    async def test_upgrades_beyond_the_limit_get_503_and_the_others_carry_on(self):
        channel = new_channel()
        socks = [(await join(self.host, channel, f"u{i}"))[0] for i in range(3)]
        status, _, body = self.host.http("GET", "channels", ws_path(channel),
                                         headers=upgrade_headers(bearer("u9")))
        self.assertEqual((status, body), (503, b"Channel full"))
        with self.assertRaises(websockets.exceptions.InvalidStatusCode) as cm:
            await self.host.connect("channels", ws_path(channel), headers=bearer("u3"))
        self.assertEqual(cm.exception.status_code, 503)
        # The members are not disturbed.
        await say(socks[0], "still here")
        for ws in socks:
            self.assertEqual((await next_of(ws, "message"))["message"]["content"], "still here")
        # Another channel has its own limit.
        other = (await join(self.host, new_channel(), "u4"))[0]
        await other.close()
        # A socket that leaves frees its place.
        await socks[2].close()
        await next_of(socks[0], "user_disconnected")
        socks[2] = (await join(self.host, channel, "u5"))[0]
        with self.assertRaises(websockets.exceptions.InvalidStatusCode):
            await self.host.connect("channels", ws_path(channel), headers=bearer("u6"))
        for ws in socks:
            await ws.close()


class RestartTests(SocketsClosed):
    async def test_history_survives_a_restart(self):
        with Host(apps=("channels",)) as host:
            channel = new_channel()
            a, _ = await join(host, channel, "alice")
            for i in range(12):
                await say(a, f"r{i}", **({"threadId": "th"} if i == 3 else {}))
            before = await collect_messages(a, 12)
            host.restart()
            with self.assertRaises(websockets.exceptions.ConnectionClosed):
                for _ in range(5):
                    await a.recv()
            a, init = await join(host, channel, "alice")
            self.assertEqual(init["messages"], before)
            self.assertEqual([u["userId"] for u in init["onlineUsers"]], ["alice"])
            self.assertEqual(full_history(host, channel), before)
            await say(a, "after restart")
            self.assertEqual((await next_of(a, "message"))["message"]["seq"], 13)
            got, _ = await sync_all(a, before[9]["id"])  # an id from before the restart
            self.assertEqual(seqs(got), [11, 12, 13])
            got, _ = await sync_all(a, afterSeq=10)
            self.assertEqual(seqs(got), [11, 12, 13])
            await a.close()

    async def test_sigkill_during_a_burst_keeps_every_message_a_client_saw(self):
        with Host(apps=("channels",)) as host:
            channel = new_channel()
            sender, _ = await join(host, channel, "sender")
            watcher, _ = await join(host, channel, "watcher", ("read",))
            received = []

            async def watch():
                try:
                    while True:
                        m = json.loads(await watcher.recv())
                        if m["type"] == "message":
                            received.append(m["message"])
                except websockets.exceptions.ConnectionClosed:
                    pass

            watching = asyncio.create_task(watch())

            async def burst():
                try:
                    for i in range(2000):
                        await say(sender, f"burst {i}")
                        if i % 20 == 0:
                            await asyncio.sleep(0)
                except websockets.exceptions.ConnectionClosed:
                    pass

            bursting = asyncio.create_task(burst())
            deadline = time.time() + 20
            while len(received) < 100 and time.time() < deadline:
                await asyncio.sleep(0.005)
            self.assertGreaterEqual(len(received), 100)
            host.kill()
            await asyncio.wait_for(watching, 10)
            await asyncio.wait_for(bursting, 10)
            host.start()
            stored = {m["id"]: m for m in full_history(host, channel)}
            self.assertGreaterEqual(len(stored), len(received))
            for m in received:
                self.assertEqual(stored.get(m["id"]), m)
            # The history is one gap-free sequence, and new messages continue it.
            self.assertEqual(sorted(m["seq"] for m in stored.values()),
                             list(range(1, len(stored) + 1)))
            a, init = await join(host, channel, "sender")
            await say(a, "after the crash")
            after = (await next_of(a, "message"))["message"]
            self.assertEqual(after["seq"], len(stored) + 1)
            self.assertNotIn(after["id"], stored)  # no id is given out twice, crash or not
            await a.close()


class MigrationTests(SocketsClosed):
    """A channel database the previous version wrote (integer ids, no UUIDs): the host migrates
    it on first open, in one transaction, and it replays as before."""

    async def test_an_old_history_gets_uuids_keeps_its_order_and_replays(self):
        host = Host(apps=("channels",))
        try:
            channel = new_channel("old")
            path, old = write_old_channel(host.data, channel, 2345)  # more than one batch
            host.start()
            a, init = await join(host, channel, "alice")
            self.assertEqual([without_id(m) for m in init["messages"]], old[-50:])
            self.assertEqual(init["lastSeq"], 2345)
            whole = full_history(host, channel)
            self.assertEqual([without_id(m) for m in whole], old)
            ids = [m["id"] for m in whole]
            self.assertEqual(len(set(ids)), len(ids))
            for i in ids:
                self.assertRegex(i, UUID4)
            self.assertEqual(init["messages"], whole[-50:])
            self.assertEqual(init["lastMessageId"], whole[-1]["id"])
            # What a client of the previous version kept (an integer id) is the seq now.
            got, pages = await sync_all(a, 2340)
            self.assertEqual(got, whole[2340:])
            self.assertEqual(pages[0]["afterMessageId"], whole[2339]["id"])
            got, pages = await sync_all(a, whole[99]["id"])
            self.assertEqual((got, pages[-1]["hasMore"]), (whole[100:1100], True))
            status, body = history(host, channel, after=2000, limit=5)
            self.assertEqual(body["messages"], whole[2000:2005])
            # New messages continue the sequence, with new ids.
            await say(a, "the first new one")
            new = (await next_of(a, "message"))["message"]
            self.assertEqual(new["seq"], 2346)
            self.assertNotIn(new["id"], ids)
            await a.close()
            self.assertEqual(host.stop(), 0)
            # The file: the new shape, the old table gone, the old ids kept as seqs.
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                columns = [r[1] for r in db.execute("PRAGMA table_info(channel_messages)")]
                self.assertEqual(columns, ["seq", "id", "channel", "user_id", "username",
                                           "content", "timestamp", "thread_id"])
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_schema "
                                                   "WHERE type = 'table'")}
                self.assertTrue({"channel_messages", "channel_members"} <= tables, tables)
                self.assertNotIn("channel_messages_v1", tables)
                rows = db.execute("SELECT seq, id, content FROM channel_messages "
                                  "ORDER BY seq").fetchall()
                self.assertEqual(rows, [(m["seq"], m["id"], m["content"]) for m in whole + [new]])
            finally:
                db.close()
            # Once migrated, always the same ids: a restart does not migrate again.
            host.start()
            b, init = await join(host, channel, "bob")
            self.assertEqual(init["messages"], (whole + [new])[-50:])
            self.assertEqual(full_history(host, channel), whole + [new])
            await b.close()
        finally:
            host.close()

    async def test_an_empty_old_table_and_a_sharded_old_channel_migrate_too(self):
        host = Host(apps=("channels",), env={"DOHOST_CHANNELS_SHARDS": "3"})
        try:
            empty, full = new_channel("old-empty"), new_channel("old-sharded")
            write_old_channel(host.data, empty, 0)
            _, old = write_old_channel(host.data, full, 30)
            host.start()
            by_shard = {}
            for i in range(200):
                by_shard.setdefault(shard_of(f"m{i}", 3), []).append(f"m{i}")
            users = [u for k in range(3) for u in by_shard[k][:2]]  # two on each shard
            a, init = await join(host, empty, "alice")
            self.assertEqual((init["messages"], init["lastMessageId"], init["lastSeq"]),
                             ([], None, 0))
            await say(a, "first")
            self.assertEqual((await next_of(a, "message"))["message"]["seq"], 1)
            socks = {}
            for u in users:
                socks[u], init = await join(host, full, u)
                self.assertEqual([without_id(m) for m in init["messages"]], old[-30:])
            # Through the shards: by an old integer id, then by the UUID it has now.
            got, _ = await sync_all(socks[users[0]], 25)
            self.assertEqual([without_id(m) for m in got], old[25:])
            got2, _ = await sync_all(socks[users[3]], init["messages"][24]["id"])
            self.assertEqual(got2, got)
            for i, u in enumerate(users):
                await say(socks[u], f"new {i}")
            heard = {u: await collect_messages(socks[u], len(users)) for u in users}
            first = heard[users[0]]
            self.assertEqual(seqs(first), list(range(31, 31 + len(users))))
            for u in users:
                self.assertEqual(heard[u], first)  # exactly once, in order, everywhere
                self.assertTrue(await no_message(socks[u], 0.2))
        finally:
            host.close()


class ShardedTests(ChannelTestCase):
    host_env = {"DOHOST_CHANNELS_SHARDS": "4", "DOHOST_CHANNELS_MAX_CONNECTIONS": "12"}

    def users_on_distinct_shards(self, count, shards=4):
        """`count` user ids covering at least min(count, shards) shards."""
        users, covered = [], set()
        for i in range(1000):
            u = f"s{i}"
            k = shard_of(u, shards)
            if k not in covered or len(covered) == shards:
                users.append(u)
                covered.add(k)
            if len(users) == count:
                return users
        raise AssertionError("no users")

    async def test_every_member_gets_every_message_once_in_channel_order(self):
        channel = new_channel("big")
        users = self.users_on_distinct_shards(8)
        self.assertEqual(len({shard_of(u, 4) for u in users}), 4)
        socks = {}
        for u in users:
            socks[u], init = await join(self.host, channel, u)
        self.assertEqual(sorted(x["userId"] for x in init["onlineUsers"]), sorted(users))
        per_user = 15

        async def send_all(u):
            for i in range(per_user):
                await say(socks[u], f"{u}:{i}")

        await asyncio.gather(*(send_all(u) for u in users))
        total = per_user * len(users)
        got = {}
        for u in users:
            got[u] = await collect_messages(socks[u], total, timeout=20)
        first = got[users[0]]
        self.assertEqual(seqs(first), list(range(1, total + 1)))
        self.assertEqual(len({m["id"] for m in first}), total)
        for m in first:
            self.assertRegex(m["id"], UUID4)
        for u in users:
            self.assertEqual(got[u], first)  # exactly once, in the same order for everybody
        # Each sender's own messages keep the order they were sent in.
        for u in users:
            mine = [m["content"] for m in first if m["userId"] == u]
            self.assertEqual(mine, [f"{u}:{i}" for i in range(per_user)])
        self.assertEqual(full_history(self.host, channel), first)
        # Nothing more arrives: no duplicates trailing behind.
        for u in users:
            extra = []
            try:
                while True:
                    m = json.loads(await asyncio.wait_for(socks[u].recv(), 0.2))
                    if m["type"] == "message":
                        extra.append(m)
            except asyncio.TimeoutError:
                pass
            self.assertEqual(extra, [])
        # The sockets live on the shard objects, the history on the channel object.
        status, objects = self.host.admin_json("GET", f"/objects?class={CLASS}")
        names = {o.get("name") for o in objects}
        self.assertTrue({f"{channel}#{k}" for k in range(4)} <= names, names)
        for ws in socks.values():
            await ws.close()

    async def test_notices_typing_presence_and_sync_cross_shards(self):
        channel = new_channel("xs")
        a_user, b_user, c_user = [u for u in self.users_on_distinct_shards(3)]
        self.assertEqual(len({shard_of(u, 4) for u in (a_user, b_user, c_user)}), 3)
        a, init = await join(self.host, channel, a_user)
        b, init = await join(self.host, channel, b_user)
        self.assertEqual([u["userId"] for u in init["onlineUsers"]], [a_user, b_user])
        self.assertEqual((await next_of(a, "user_connected"))["userId"], b_user)
        await b.send(json.dumps({"type": "typing", "isTyping": True}))
        self.assertEqual((await next_of(a, "typing"))["userId"], b_user)
        await b.send(json.dumps({"type": "presence", "status": "busy"}))
        self.assertEqual((await next_of(a, "presence"))["status"], "busy")
        self.assertTrue(await no_message(b, 0.3))
        c, init = await join(self.host, channel, c_user)
        self.assertEqual({u["userId"]: u.get("status") for u in init["onlineUsers"]},
                         {a_user: None, b_user: "busy", c_user: None})
        await say(a, "hi from a")
        hi = None
        for ws in (a, b, c):
            hi = (await next_of(ws, "message"))["message"]
            self.assertEqual(hi["content"], "hi from a")
        await b.close()
        for ws in (a, c):
            self.assertEqual((await next_of(ws, "user_disconnected"))["userId"], b_user)
        for i in range(3):
            await say(c, f"while b was away {i}")
        await collect_messages(a, 3)
        b, init = await join(self.host, channel, b_user)
        self.assertEqual((init["lastMessageId"], init["lastSeq"]), (init["messages"][-1]["id"], 4))
        # A shard asks the channel object, which knows the ids: by id, by seq, as a number.
        for after, fields in ((hi["id"], {}), (None, {"afterSeq": 1}), (1, {})):
            got, pages = await sync_all(b, after, **fields)
            self.assertEqual([m["content"] for m in got],
                             [f"while b was away {i}" for i in range(3)])
            self.assertEqual((pages[0]["afterMessageId"], pages[0]["afterSeq"]), (hi["id"], 1))
        self.assertEqual(init["messages"], full_history(self.host, channel))
        unknown = str(uuid.uuid4())
        await b.send(json.dumps({"type": "sync", "afterMessageId": unknown}))
        self.assertEqual(await next_of(b, "error"), {"type": "error",
                                                      "message": "Unknown message id",
                                                      "afterMessageId": unknown})
        self.assertTrue(await no_message(b, 0.3))  # and no sync page
        # A read-only member of a shard cannot write either.
        r, _ = await join(self.host, channel, "sreader", ("read",))
        await say(r, "nope")
        self.assertEqual((await next_of(r, "error"))["message"], "No write permission")
        await r.send("garbage")
        self.assertEqual((await next_of(r, "error"))["message"], "Invalid message format")
        for ws in (a, b, c, r):
            await ws.close()

    async def test_shards_evicted_mid_conversation_still_deliver_in_order(self):
        channel = new_channel("ev")
        users = self.users_on_distinct_shards(4)
        socks = [(await join(self.host, channel, u))[0] for u in users]
        sent = 0
        for round_ in range(3):
            for k in range(4):
                self.host.admin_json("POST", f"/objects/{CLASS}/{quote(f'{channel}#{k}')}/evict")
            self.host.admin_json("POST", f"/objects/{CLASS}/{quote(channel)}/evict")
            for ws in socks:
                await say(ws, f"round {round_}")
            sent += len(socks)
        got = [await collect_messages(ws, sent) for ws in socks]
        for g in got[1:]:
            self.assertEqual(g, got[0])
        # Joins are not in the message stream; seqs are consecutive.
        self.assertEqual(seqs(got[0]), list(range(1, sent + 1)))
        for ws in socks:
            await ws.close()

    # The channel object's member rows were written on the host that owned it before; the
    # host that claims it next must still deliver to those shards, and count their members.
    @unittest.skipUnless(CLUSTER, "needs a cluster (DOHOST_TEST_CLUSTER=3)")
    async def test_a_channel_claimed_by_another_host_still_reaches_its_shards(self):
        a, b = self.host.hosts[0], self.host.hosts[1]
        channel = new_channel("moved")
        ws, _ = await join(a, channel, "alice")
        self.assertIs(self.host.owner_of(CLASS, channel), a)
        released = metric(a.metrics(), "dohost_placement_releases_total")
        self.assertEqual(a.admin_json("POST", f"/objects/{CLASS}/{quote(channel)}/evict")[0], 200)
        deadline = time.monotonic() + 5
        while metric(a.metrics(), "dohost_placement_releases_total") == released:
            self.assertLess(time.monotonic(), deadline, "the channel object was not let go")
            await asyncio.sleep(0.05)
        full_history(b, channel)  # host b claims the channel object
        self.assertIs(self.host.owner_of(CLASS, channel), b)
        await say(ws, "after the move")
        self.assertEqual((await next_of(ws, "message"))["message"]["content"], "after the move")
        bob, init = await join(a, channel, "bob")
        self.assertEqual(sorted(u["userId"] for u in init["onlineUsers"]), ["alice", "bob"])
        for w in (ws, bob):
            await w.close()

    async def test_members_of_an_earlier_run_are_not_counted(self):
        users = self.users_on_distinct_shards(2)
        with Host(apps=("channels",), env=self.host_env) as host:
            channel = new_channel("rerun")
            a, _ = await join(host, channel, users[0])
            host.restart()
            with self.assertRaises(websockets.exceptions.ConnectionClosed):
                for _ in range(5):
                    await a.recv()
            b, init = await join(host, channel, users[1])
            self.assertEqual([u["userId"] for u in init["onlineUsers"]], [users[1]])
            await say(b, "after the restart")
            self.assertEqual((await next_of(b, "message"))["message"]["content"],
                             "after the restart")
            await b.close()

    async def test_the_connection_limit_counts_the_whole_channel(self):
        channel = new_channel("lim")
        users = self.users_on_distinct_shards(13)
        socks = []
        for u in users[:12]:
            socks.append((await join(self.host, channel, u))[0])
        with self.assertRaises(websockets.exceptions.InvalidStatusCode) as cm:
            await self.host.connect("channels", ws_path(channel), headers=bearer(users[12]))
        self.assertEqual(cm.exception.status_code, 503)
        await say(socks[0], "full house")
        for ws in socks:
            self.assertEqual((await next_of(ws, "message"))["message"]["content"], "full house")
        for ws in socks:
            await ws.close()


class ChromiumDemoTests(SocketsClosed):
    """The demo page at / in headless Chromium (tests/integration/chromium_demo.js)."""

    async def test_demo_page_chats_reconnects_and_catches_up_after_a_crash(self):
        node = shutil.which("node")
        if not (os.path.exists(CHROMIUM) and os.path.isdir(PLAYWRIGHT) and node):
            self.skipTest("needs /usr/bin/chromium (Debian package chromium), node and "
                          "playwright-core in tests/integration/node (its setup script)")
        with Host(apps=("channels",)) as host:
            channel = new_channel("demo")
            proc = await asyncio.create_subprocess_exec(
                node, os.path.join(HERE, "chromium_demo.js"),
                f"http://127.0.0.1:{host.apps['channels']}", channel, token("alice"),
                token("bob"), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            try:
                async def line():
                    text = await asyncio.wait_for(proc.stdout.readline(), 90)
                    return text.decode().strip()

                async def answer(text):
                    proc.stdin.write((text + "\n").encode())
                    await proc.stdin.drain()

                async def failure(got):
                    err = await asyncio.wait_for(proc.stderr.read(), 30)
                    return f"{got}\n{err.decode(errors='replace')[-3000:]}"

                got = await line()
                self.assertEqual(got, "KILL", await failure(got) if got != "KILL" else "")
                host.kill()
                await answer("KILLED")
                got = await line()
                self.assertEqual(got, "RESTART", await failure(got) if got != "RESTART" else "")
                host.start()
                # While the pages wait to reconnect, more than initial_state holds is posted,
                # so catching up needs sync.
                carol, init = await join(host, channel, "carol")
                self.assertEqual(seqs(init["messages"]), [1, 2])
                for i in range(70):
                    await say(carol, f"while away {i}")
                posted = await collect_messages(carol, 70)
                total = posted[-1]["seq"]
                self.assertEqual(total, 72)
                await answer(f"POSTED {total}")
                got = await line()
                self.assertTrue(got.startswith("OK "), await failure(got))
                summary = json.loads(got[3:])
                self.assertEqual(summary["total"], total + 1)
                self.assertEqual(summary["lastSeq"], total + 1)
                self.assertGreaterEqual(summary["reconnectsA"], 1)
                self.assertGreaterEqual(summary["reconnectsB"], 1)
                # Each page asked for what it missed after reconnecting.
                self.assertGreaterEqual(summary["syncPagesA"], 1)
                self.assertGreaterEqual(summary["syncPagesB"], 1)
                self.assertEqual(await asyncio.wait_for(proc.wait(), 30), 0)
                last = full_history(host, channel)[-1]
                self.assertEqual(last["content"], "back again")
                self.assertEqual(summary["lastMessageId"], last["id"])
                await carol.close()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


@unittest.skipUnless(CLUSTER, "needs a cluster (DOHOST_TEST_CLUSTER=3)")
class ClusterTests(ChannelTestCase):
    async def test_members_on_every_host_see_each_message_once_in_one_order(self):
        channel = new_channel("spread")
        members = []
        for i, h in enumerate(self.host.hosts):
            for k in range(2):
                members.append((await join(h, channel, f"u{i}{k}"))[0])
        # Every member says 5 things at once, from every host.
        per_member = 5
        await asyncio.gather(*(say(ws, f"m{j}-{n}") for j, ws in enumerate(members)
                               for n in range(per_member)))
        total = per_member * len(members)
        seen = [await collect_messages(ws, total) for ws in members]
        orders = [[m["id"] for m in got] for got in seen]
        self.assertEqual(len(set(orders[0])), total)  # each message once
        for order in orders[1:]:
            self.assertEqual(order, orders[0])  # in one order everywhere
        self.assertEqual(seqs(seen[0]), sorted(seqs(seen[0])))
        for ws in members:  # and nothing more
            self.assertTrue(await no_message_of(ws, "message"))
        # One history, whichever host is asked.
        histories = [[m["id"] for m in full_history(h, channel)] for h in self.host.hosts]
        for hist in histories:
            self.assertEqual(hist, orders[0])
        for ws in members:
            await ws.close()


async def no_message_of(ws, kind, within=0.3):
    """True if no frame of type `kind` arrives within `within` seconds."""
    try:
        await next_of(ws, kind, within)
        return False
    except (asyncio.TimeoutError, TimeoutError):
        return True


if __name__ == "__main__":
    unittest.main()
