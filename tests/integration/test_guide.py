"""The guide app (seed 002: Atomic Guide chat, analytics and collaboration rooms) against the
real dohost binary: JWT by query and by first message, every refusal, the envelope, chat with
history paging, presence across several sockets of a user, ping without waking the room,
metrics from POST and from the chat, collaborative editing with transformation of stale
edits and convergence of concurrent clients, the three rate limits, eviction and restarts.
The protocol is in docs/apps/guide.md."""
import asyncio
import datetime
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import time
import unittest

from websockets.exceptions import ConnectionClosed, InvalidStatusCode

from harness import Host, make_jwt, metric, no_message, quote, recv_json, recv_until
from project_support import NODE_DIR, raw_request

HERE = os.path.dirname(os.path.abspath(__file__))
APP = "guide"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# Most tests open many sockets from 127.0.0.1; the connection limit has its own tests.
OPEN_CONFIG = ("[apps.guide]\nconnections_per_minute = 1000000\nmessages_per_minute = 1000000\n"
               "broadcasts_per_minute = 1000000\n")
# The seed's heartbeat as JSON.stringify writes it (no spaces): the host answers it itself.
JS_PING = '{"type":"ping"}'
_names = itertools.count(1)


def new_context(prefix="ctx"):
    """A contextId no other test uses (tests of a class share a host)."""
    return f"{prefix}-{next(_names)}-{os.getpid()}"


def token(user, name=None, **claims):
    payload = {"sub": user, "name": name or user.capitalize()}
    payload.update(claims)
    return make_jwt(payload)


def epoch(iso):
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def ws_path(service, tok=None, context=None):
    params = []
    if tok is not None:
        params.append(f"token={quote(tok)}")
    if context is not None:
        params.append(f"contextId={quote(context)}")
    return f"/api/{service}/ws" + ("?" + "&".join(params) if params else "")


def assert_envelope(test, msg):
    """Every server message: {type, id, timestamp (ISO 8601), data[, error]}."""
    test.assertIsInstance(msg.get("type"), str, msg)
    test.assertRegex(msg.get("id", ""), UUID, msg)
    test.assertRegex(msg.get("timestamp", ""), ISO, msg)
    test.assertIn("data", msg)
    test.assertLessEqual(set(msg), {"type", "id", "timestamp", "data", "error"}, msg)


async def next_of(ws, kind, timeout=5):
    return await recv_until(ws, lambda m: m.get("type") == kind, timeout)


async def send(ws, kind, data=None, **extra):
    msg = {"type": kind, **extra}
    if data is not None:
        msg["data"] = data
    await ws.send(json.dumps(msg))


async def closed(ws, timeout=5):
    """Waits for the server's close; returns (code, reason)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason


class SocketsClosed(unittest.IsolatedAsyncioTestCase):
    """Closes the sockets a test opened, also when it fails half-way."""
    host = None

    def setUp(self):
        self.sockets = []

    async def asyncTearDown(self):
        for ws in self.sockets:
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:
                pass

    async def open(self, path, host=None, **kw):
        ws = await (host or self.host).connect(APP, path, close_timeout=1, **kw)
        self.sockets.append(ws)
        return ws


class GuideTestCase(SocketsClosed):
    """One host for the whole class; each test uses its own contexts."""
    config = OPEN_CONFIG
    idle_evict = None
    env = None

    @classmethod
    def setUpClass(cls):
        cls.host = Host(apps=(APP,), config=cls.config, idle_evict=cls.idle_evict,
                        env=cls.env).start()

    @classmethod
    def tearDownClass(cls):
        cls.host.close()

    async def join(self, service, user, context, name=None, host=None):
        """A socket authenticated by ?token= (nothing is sent to it on connect)."""
        return await self.open(ws_path(service, token(user, name), context), host=host)

    async def join_by_message(self, service, user, context, name=None, host=None):
        """A socket authenticated by a first `auth` message; returns (socket, auth_success)."""
        ws = await self.open(ws_path(service), host=host)
        await ws.send(json.dumps({"type": "auth", "token": token(user, name), "contextId": context}))
        ok = await recv_json(ws)
        self.assertEqual(ok["type"], "auth_success", ok)
        return ws, ok

    def post_metric(self, body, tok="default", host=None):
        headers = {"Content-Type": "application/json"}
        if tok == "default":
            tok = token("backend")
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        status, _, data = (host or self.host).http("POST", APP, "/api/analytics/metrics",
                                                   body=body, headers=headers)
        return status, (json.loads(data) if data else None)

    def evict(self, cls, name, host=None):
        status, body = (host or self.host).admin_json("POST", f"/objects/{cls}/{quote(name)}/evict")
        self.assertEqual(status, 200, body)


class AuthTests(GuideTestCase):
    async def test_query_token_joins_the_contexts_room(self):
        context = new_context()
        a = await self.join("chat", "alice", context)
        b = await self.join("chat", "bob", context)
        self.assertEqual((await next_of(a, "user_joined"))["data"], {"userId": "bob", "username": "Bob"})
        await send(a, "message", {"content": "hi", "messageType": "text"})
        for ws in (a, b):
            msg = await next_of(ws, "message")
            assert_envelope(self, msg)
            self.assertEqual(msg["data"]["content"], "hi")
        # Another context is another room: nothing reaches it.
        other = await self.join("chat", "carol", new_context())
        await send(a, "message", {"content": "only here"})
        self.assertEqual((await next_of(b, "message"))["data"]["content"], "only here")
        self.assertTrue(await no_message(other, 0.3))

    async def test_bad_tokens_are_refused_at_the_upgrade_with_401(self):
        context = new_context()
        now = int(time.time())
        bad = ["not-a-token", make_jwt({"sub": "u1"}, secret="another-secret"),
               make_jwt({"sub": "u1"}, alg="none"), make_jwt({"sub": "u1", "exp": now - 60}),
               make_jwt({"sub": "u1", "nbf": now + 3600}), make_jwt({"name": "nobody"}),
               make_jwt({"sub": "x" * 201})]
        for tok in bad:
            with self.subTest(tok=tok):
                status, hdrs, body = raw_request(self.host.apps[APP], ws_path("chat", tok, context))
                self.assertEqual(status, 401)
                self.assertEqual(json.loads(body)["error"], "Unauthorized")
                self.assertEqual(hdrs.get("www-authenticate"), "Bearer")
                with self.assertRaises(InvalidStatusCode) as cm:
                    await self.open(ws_path("analytics", tok, context))
                self.assertEqual(cm.exception.status_code, 401)
        # A Bearer header is a token too.
        status, _, _ = raw_request(self.host.apps[APP], ws_path("collaboration", context=context),
                                   headers={"Authorization": "Bearer not-a-token"})
        self.assertEqual(status, 401)

    async def test_user_and_name_claims(self):
        context = new_context()
        cases = [({"sub": "s1", "name": "Sub One"}, ("s1", "Sub One")),
                 ({"userId": "u2", "username": "User Two"}, ("u2", "User Two")),
                 ({"sub": 77}, ("77", "77")),
                 ({"sub": "s3", "userId": "ignored", "exp": int(time.time()) + 600}, ("s3", "s3"))]
        for claims, (user, name) in cases:
            with self.subTest(claims=claims):
                ws = await self.open(ws_path("chat", make_jwt(claims), context))
                await send(ws, "message", {"content": "who am I"})
                author = (await next_of(ws, "message"))["data"]["author"]
                self.assertEqual(author, {"userId": user, "username": name})
                await ws.close()

    async def test_bad_context_ids_are_refused_with_400(self):
        for context in ["", "has space", "a/b", "x" * 129, "semi;colon", "ünï"]:
            for tok in (token("alice"), None):
                with self.subTest(context=context, token=bool(tok)):
                    status, _, body = raw_request(self.host.apps[APP], ws_path("chat", tok, context))
                    self.assertEqual(status, 400)
                    self.assertIn("contextId", json.loads(body)["error"])
        ok = "A-z_0.9:@~" + "x" * 118
        ws = await self.join("chat", "alice", ok)
        await send(ws, "message", {"content": "128 characters"})
        self.assertEqual((await next_of(ws, "message"))["data"]["content"], "128 characters")
        status, _, body = raw_request(self.host.apps[APP], ws_path("chat", token("alice")))
        self.assertEqual(status, 400)
        self.assertIn("contextId is required", json.loads(body)["error"])

    async def test_first_message_auth_joins_the_room(self):
        context = new_context()
        watcher = await self.join("chat", "watcher", context)
        ws, ok = await self.join_by_message("chat", "alice", context)
        assert_envelope(self, ok)
        self.assertEqual(ok["data"], {"userId": "alice", "contextId": context})
        self.assertEqual((await next_of(watcher, "user_joined"))["data"]["userId"], "alice")
        await send(ws, "message", {"content": "by message", "messageType": "text"})
        for s in (ws, watcher):
            self.assertEqual((await next_of(s, "message"))["data"]["content"], "by message")

    async def test_first_message_auth_in_data_and_context_from_the_query(self):
        context = new_context()
        ws = await self.open(ws_path("collaboration", context=context))
        await send(ws, "auth", {"token": token("alice")})
        ok = await recv_json(ws)
        self.assertEqual(ok["data"], {"userId": "alice", "contextId": context})
        await send(ws, "join_session", {"sessionId": "s1"})
        self.assertEqual((await next_of(ws, "session_state"))["data"]["sessionId"], "s1")

    async def test_messages_right_behind_the_auth_message_are_not_lost(self):
        context = new_context()
        watcher = await self.join("chat", "watcher", context)
        ws = await self.open(ws_path("chat"))
        batch = [json.dumps({"type": "auth", "token": token("quick"), "contextId": context})]
        batch += [json.dumps({"type": "message", "data": {"content": f"m{i}"}}) for i in range(5)]
        await asyncio.gather(*(ws.send(m) for m in batch))
        self.assertEqual((await recv_json(ws))["type"], "auth_success")
        got = [(await next_of(watcher, "message"))["data"]["content"] for _ in range(5)]
        self.assertEqual(got, [f"m{i}" for i in range(5)])

    async def test_before_auth_anything_else_is_an_error_then_1008(self):
        context = new_context()
        chatter = await self.join("chat", "chatter", context)
        for first in [json.dumps({"type": "message", "data": {"content": "early"}}),
                      json.dumps({"type": "ping"}), "not json", b"\x00binary"]:
            with self.subTest(first=first):
                ws = await self.open(ws_path("chat", context=context))
                await send(chatter, "message", {"content": "you should not see this"})
                self.assertTrue(await no_message(ws, 0.3))  # receives nothing until auth
                await ws.send(first)
                err = await recv_json(ws)
                assert_envelope(self, err)
                self.assertEqual(err["type"], "error")
                self.assertTrue(err["error"].startswith("Authentication required"), err)
                self.assertEqual(await closed(ws), (1008, "Authentication required"))

    async def test_a_bad_token_in_auth_is_an_error_then_1008(self):
        context = new_context()
        for tok in ["garbage", make_jwt({"sub": "u"}, secret="wrong"), None, 42]:
            with self.subTest(tok=tok):
                ws = await self.open(ws_path("analytics"))
                msg = {"type": "auth", "contextId": context}
                if tok is not None:
                    msg["token"] = tok
                await ws.send(json.dumps(msg))
                err = await recv_json(ws)
                self.assertEqual(err["type"], "error")
                self.assertTrue(err["error"].startswith("Invalid token"), err)
                self.assertEqual(await closed(ws), (1008, "Invalid token"))

    async def test_a_bad_context_in_auth_is_an_error_then_1008(self):
        for context in ["", "bad id", "x" * 129, None]:
            with self.subTest(context=context):
                ws = await self.open(ws_path("chat"))
                msg = {"type": "auth", "token": token("alice")}
                if context is not None:
                    msg["contextId"] = context
                await ws.send(json.dumps(msg))
                err = await recv_json(ws)
                self.assertEqual(err["type"], "error")
                self.assertTrue(err["error"].startswith("Invalid contextId"), err)
                self.assertEqual(await closed(ws), (1008, "Invalid contextId"))

    async def test_auth_again_on_an_authenticated_socket(self):
        context = new_context()
        ws = await self.join("chat", "alice", context)
        await send(ws, "auth", token=token("alice"), contextId=context)
        self.assertEqual((await recv_json(ws))["data"], {"userId": "alice", "contextId": context})
        await send(ws, "auth", token=token("mallory"), contextId=context)
        err = await recv_json(ws)
        self.assertEqual(err["type"], "error")
        await send(ws, "message", {"content": "still here"})
        self.assertEqual((await next_of(ws, "message"))["data"]["content"], "still here")
        await send(ws, "auth", token="garbage")
        self.assertEqual((await recv_json(ws))["type"], "error")
        self.assertEqual((await closed(ws))[0], 1008)

    async def test_identity_headers_from_clients_are_ignored(self):
        context = new_context()
        forged = json.dumps({"userId": "admin", "username": "Admin"})
        ws = await self.open(ws_path("chat", token("alice"), context),
                             headers={"X-Guide-User": forged, "x-guide-auth": "message"})
        self.assertTrue(await no_message(ws, 0.3))  # no auth_success: it came by query
        await send(ws, "message", {"content": "me"})
        self.assertEqual((await next_of(ws, "message"))["data"]["author"]["userId"], "alice")
        # Without a token the forged header only reaches the lobby, which wants `auth`.
        ws2 = await self.open(ws_path("chat", context=context), headers={"x-guide-user": forged})
        await send(ws2, "message", {"content": "as admin?"})
        self.assertEqual((await recv_json(ws2))["type"], "error")
        self.assertEqual((await closed(ws2))[0], 1008)

    async def test_routes(self):
        for path, status in [("/", 404), ("/api/chat", 404), ("/api/chat/ws/x", 404),
                             ("/internal/builtin", 404), ("/api/analytics/internal/builtin", 404),
                             ("/api/chat/ws", 426), ("/api/analytics/ws", 426),
                             ("/api/collaboration/ws", 426), ("/api/analytics/metrics", 405),
                             ("/health", 200)]:
            with self.subTest(path=path):
                got, _, body = self.host.http("GET", APP, path)
                self.assertEqual(got, status)
                self.assertIsInstance(json.loads(body), dict)
        status, _, _ = self.host.http("POST", APP, "/internal/builtin", body="{}",
                                      headers={"x-guide-internal": "1"})
        self.assertEqual(status, 404)


class LifetimeTests(SocketsClosed):
    """Closes and shutdowns at the worst moments (the hand-over from lobby to room)."""

    async def test_a_socket_that_closes_right_behind_its_auth_changes_nothing(self):
        with Host(apps=(APP,), config=OPEN_CONFIG) as host:
            context = new_context()
            watcher = await self.join_for(host, "watcher", context)
            for i in range(20):
                ws = await host.connect(APP, ws_path("chat"), close_timeout=1)
                auth = json.dumps({"type": "auth", "token": token(f"brief{i}"), "contextId": context})
                await ws.send(auth)
                if i % 2:
                    ws.transport.abort()  # gone before the hand-over can finish
                else:
                    await ws.close()
            await send(watcher, "message", {"content": "still fine"})
            got = await recv_until(watcher, lambda m: m["type"] == "message")
            self.assertEqual(got["data"]["content"], "still fine")
            await asyncio.sleep(0.3)
            _, rooms = host.admin_json("GET", "/objects?class=ChatRoom")
            room = [o for o in rooms if o.get("name") == context][0]
            self.assertEqual(room["sockets"], 1)
            _, lobbies = host.admin_json("GET", "/objects?class=GuideLobby")
            self.assertEqual([o["sockets"] for o in lobbies if o.get("name") == "chat"], [0])

    async def test_shutdown_with_sockets_in_the_lobby_and_in_rooms(self):
        host = Host(apps=(APP,), config=OPEN_CONFIG).start()
        try:
            context = new_context()
            room = await self.join_for(host, "alice", context)
            pending = await host.connect(APP, ws_path("chat"), close_timeout=1)
            await pending.send(json.dumps({"type": "auth", "token": token("bob"), "contextId": context}))
            waiting = await host.connect(APP, ws_path("analytics"), close_timeout=1)
            self.assertEqual(host.stop(), 0)
            for ws in (room, pending, waiting):
                code, _ = await closed(ws)
                self.assertEqual(code, 1001)
        finally:
            host.close()

    async def join_for(self, host, user, context):
        return await self.open(ws_path("chat", token(user), context), host=host)


class AuthTimeoutTests(GuideTestCase):
    config = OPEN_CONFIG + "auth_timeout_ms = 600\n"

    async def test_no_auth_within_the_timeout_closes_1008(self):
        started = time.time()
        ws = await self.open(ws_path("chat"))
        err = await recv_json(ws, 5)
        self.assertEqual(err["type"], "error")
        self.assertTrue(err["error"].startswith("Authentication timeout"), err)
        self.assertEqual(await closed(ws), (1008, "Authentication timeout"))
        self.assertGreaterEqual(time.time() - started, 0.5)

    async def test_the_timeout_holds_across_eviction_of_the_lobby(self):
        ws = await self.open(ws_path("analytics"))
        self.evict("GuideLobby", "analytics")
        self.assertEqual(await closed(ws), (1008, "Authentication timeout"))

    async def test_auth_in_time_is_not_closed_later(self):
        context = new_context()
        ws, _ = await self.join_by_message("chat", "alice", context)
        await asyncio.sleep(1.0)
        await send(ws, "message", {"content": "still open"})
        self.assertEqual((await next_of(ws, "message"))["data"]["content"], "still open")


class ChatTests(GuideTestCase):
    async def test_a_message_is_stored_and_sent_to_everyone_including_the_sender(self):
        context = new_context()
        a = await self.join("chat", "alice", context, "Alice")
        b = await self.join("chat", "bob", context)
        b2 = await self.join("chat", "bob", context)
        before = time.time()
        await send(a, "message", {"content": "Hello, everyone!", "messageType": "text"})
        got = [await next_of(ws, "message") for ws in (a, b, b2)]
        self.assertEqual(got[0], got[1])
        self.assertEqual(got[0], got[2])
        msg = got[0]
        assert_envelope(self, msg)
        data = msg["data"]
        self.assertEqual(set(data), {"id", "content", "messageType", "author", "timestamp"})
        self.assertRegex(data["id"], UUID)
        self.assertEqual(msg["id"], data["id"])
        self.assertEqual(data["author"], {"userId": "alice", "username": "Alice"})
        self.assertEqual((data["content"], data["messageType"]), ("Hello, everyone!", "text"))
        self.assertRegex(data["timestamp"], ISO)
        self.assertEqual(msg["timestamp"], data["timestamp"])
        await send(b, "message", {"content": "no type"})
        self.assertEqual((await next_of(a, "message"))["data"]["messageType"], "text")
        await send(b, "message", {"content": "a link", "messageType": "link"})
        self.assertEqual((await next_of(a, "message"))["data"]["messageType"], "link")
        await send(a, "history", {})
        hist = (await next_of(a, "history"))["data"]
        self.assertEqual([m["content"] for m in hist["messages"]], ["Hello, everyone!", "no type", "a link"])
        self.assertEqual(hist["messages"][0], data)
        self.assertFalse(hist["hasMore"])
        self.assertLess(abs(epoch(data["timestamp"]) - before), 10)

    async def test_bad_input_gets_an_error_and_the_socket_stays_usable(self):
        context = new_context()
        ws = await self.join("chat", "alice", context)
        other = await self.join("chat", "bob", context)
        await next_of(ws, "user_joined")
        bad = [("not json", "Invalid message format"),
               (b"\x01\x02", "Invalid message format"),
               ("[1,2]", "Invalid message format"),
               (json.dumps({"data": {}}), "Invalid message format"),
               (json.dumps({"type": 5}), "Invalid message format"),
               (json.dumps({"type": "dance"}), "Unknown message type: dance"),
               (json.dumps({"type": "message"}), "Invalid message format: data must be an object"),
               (json.dumps({"type": "message", "data": "hi"}), "Invalid message format: data must be an object"),
               (json.dumps({"type": "message", "data": {}}), "Invalid message: content must be a non-empty string"),
               (json.dumps({"type": "message", "data": {"content": "  "}}), "Invalid message: content must be a non-empty string"),
               (json.dumps({"type": "message", "data": {"content": 5}}), "Invalid message: content must be a non-empty string"),
               (json.dumps({"type": "message", "data": {"content": "x" * 4001}}), "Message too long: at most 4000 bytes"),
               (json.dumps({"type": "message", "data": {"content": "x", "messageType": 3}}), "Invalid message: messageType must be a string of 1 to 32 characters"),
               (json.dumps({"type": "message", "data": {"content": "x", "messageType": "t" * 33}}), "Invalid message: messageType must be a string of 1 to 32 characters"),
               (json.dumps({"type": "typing", "data": {"isTyping": "yes"}}), "Invalid typing: isTyping must be a boolean"),
               (json.dumps({"type": "history", "data": {"limit": 0}}), "Invalid history: limit must be a positive integer"),
               (json.dumps({"type": "history", "data": {"limit": "10"}}), "Invalid history: limit must be a positive integer"),
               (json.dumps({"type": "history", "data": {"before": "yesterday"}}), "Invalid history: before must be an ISO 8601 time"),
               (json.dumps({"type": "history", "data": {"before": "2024-02-30T00:00:00Z"}}), "Invalid history: before must be an ISO 8601 time"),
               (json.dumps({"type": "history", "data": {"before": 1700000000000}}), "Invalid history: before must be an ISO 8601 time"),
               (json.dumps({"type": "history", "data": []}), "Invalid message format: data must be an object")]
        for frame, reason in bad:
            with self.subTest(frame=frame):
                await ws.send(frame)
                err = await recv_json(ws)
                assert_envelope(self, err)
                self.assertEqual((err["type"], err["error"]), ("error", reason))
        self.assertEqual(await no_message(other, 0.2), True)  # nothing reached the others
        # The content limit, exactly at it and just past it, each sent in fragments.
        for size, ok in ((4001, False), (4000, True)):
            text = json.dumps({"type": "message", "data": {"content": "y" * size}})
            await ws.send([text[i:i + 1000] for i in range(0, len(text), 1000)])
            if ok:
                self.assertEqual(len((await next_of(other, "message"))["data"]["content"]), 4000)
            else:
                self.assertEqual((await recv_json(ws))["error"], "Message too long: at most 4000 bytes")
        await send(ws, "message", {"content": "x" * 4000})
        self.assertEqual(len((await next_of(other, "message"))["data"]["content"]), 4000)
        await send(ws, "history", {})
        self.assertEqual(len((await next_of(ws, "history"))["data"]["messages"]), 2)

    async def test_typing_goes_to_the_others_and_is_not_stored(self):
        context = new_context()
        a = await self.join("chat", "alice", context)
        b = await self.join("chat", "bob", context)
        await next_of(a, "user_joined")
        await send(a, "typing", {"isTyping": True})
        t = await next_of(b, "typing")
        assert_envelope(self, t)
        self.assertEqual((t["data"]["userId"], t["data"]["isTyping"]), ("alice", True))
        await send(a, "typing", {"isTyping": False})
        self.assertFalse((await next_of(b, "typing"))["data"]["isTyping"])
        self.assertTrue(await no_message(a, 0.3))  # not to the sender
        await send(a, "history")
        self.assertEqual((await next_of(a, "history"))["data"], {"messages": [], "hasMore": False})

    async def test_history_pages_with_before(self):
        context = new_context()
        ws = await self.join("chat", "alice", context)
        for i in range(230):
            await send(ws, "message", {"content": f"m{i}"})
        sent = [(await next_of(ws, "message"))["data"] for _ in range(230)]
        stamps = [m["timestamp"] for m in sent]
        self.assertEqual(stamps, sorted(stamps))
        self.assertEqual(len(set(stamps)), 230)  # unique per room, so paging is exact
        await send(ws, "history", {})
        page = (await next_of(ws, "history"))["data"]
        self.assertEqual(page["messages"], sent[-50:])
        self.assertTrue(page["hasMore"])
        # Walk back with `before` = the oldest timestamp seen, 70 at a time.
        got, before = [], None
        while True:
            req = {"limit": 70}
            if before:
                req["before"] = before
            await send(ws, "history", req)
            page = (await next_of(ws, "history"))["data"]
            got = page["messages"] + got
            if not page["hasMore"]:
                break
            before = page["messages"][0]["timestamp"]
        self.assertEqual(got, sent)
        await send(ws, "history", {"limit": 1000})
        page = (await next_of(ws, "history"))["data"]
        self.assertEqual((len(page["messages"]), page["hasMore"]), (200, True))  # at most 200
        self.assertEqual(page["messages"], sent[-200:])
        await send(ws, "history", {"before": "2024-01-01T00:00:00Z", "limit": 50})
        self.assertEqual((await next_of(ws, "history"))["data"], {"messages": [], "hasMore": False})
        # Other spellings of the same instant: a zone offset, no fraction.
        t = datetime.datetime.fromisoformat(sent[100]["timestamp"].replace("Z", "+00:00"))
        plus_one = t.astimezone(datetime.timezone(datetime.timedelta(hours=1)))
        await send(ws, "history", {"before": plus_one.isoformat(timespec="milliseconds"), "limit": 3})
        self.assertEqual((await next_of(ws, "history"))["data"]["messages"], sent[97:100])

    async def test_user_joined_and_left_once_per_user_across_sockets(self):
        context = new_context()
        bob = await self.join("chat", "bob", context, "Bob")
        alice1 = await self.join("chat", "alice", context, "Alice")
        joined = await next_of(bob, "user_joined")
        assert_envelope(self, joined)
        self.assertEqual(joined["data"], {"userId": "alice", "username": "Alice"})
        alice2, _ = await self.join_by_message("chat", "alice", context, "Alice")
        alice3 = await self.join("chat", "alice", context, "Alice")
        self.assertTrue(await no_message(bob, 0.3))  # not again for her second and third socket
        self.assertTrue(await no_message(alice1, 0.1))  # and never to herself
        await alice1.close()
        await alice3.close()
        self.assertTrue(await no_message(bob, 0.3))  # she still has a socket
        await alice2.close()
        left = await next_of(bob, "user_left")
        assert_envelope(self, left)
        self.assertEqual(left["data"], {"userId": "alice", "username": "Alice"})
        carol = await self.join("chat", "carol", context)
        self.assertEqual((await next_of(bob, "user_joined"))["data"]["userId"], "carol")
        carol.transport.abort()  # a dropped connection leaves too
        self.assertEqual((await next_of(bob, "user_left"))["data"]["userId"], "carol")

    async def test_ping_is_answered_without_waking_the_room(self):
        context = new_context()
        ws = await self.join("chat", "alice", context)
        await send(ws, "message", {"content": "wake"})
        await next_of(ws, "message")
        self.evict("ChatRoom", context)
        before = self.host.metrics()
        for _ in range(3):
            await ws.send(JS_PING)
            pong = await recv_json(ws)
            assert_envelope(self, pong)
            self.assertEqual(pong["type"], "pong")
        after = self.host.metrics()
        rehydrations = "dohost_object_rehydrations_total"
        self.assertEqual(metric(after, rehydrations), metric(before, rehydrations))
        auto = "dohost_websocket_auto_responses_total"
        self.assertEqual(metric(after, auto, **{"class": "ChatRoom"}) -
                         metric(before, auto, **{"class": "ChatRoom"}), 3)
        _, detail = self.host.admin_json("GET", f"/objects/ChatRoom/{context}")
        self.assertEqual(detail["state"], "evicted")
        # Any other ping (more fields, other spacing) reaches the room, which answers the same.
        await ws.send(json.dumps({"type": "ping"}))
        self.assertEqual((await recv_json(ws))["type"], "pong")
        self.assertEqual(metric(self.host.metrics(), rehydrations), metric(before, rehydrations) + 1)

    async def test_history_survives_eviction_and_restart(self):
        with Host(apps=(APP,), config=OPEN_CONFIG) as host:
            context = new_context()
            ws = await self.join("chat", "alice", context, host=host)
            for i in range(3):
                await send(ws, "message", {"content": f"kept {i}"})
            sent = [(await next_of(ws, "message"))["data"] for _ in range(3)]
            await ws.close()
            host.restart()
            ws = await self.join("chat", "bob", context, host=host)
            await send(ws, "history", {})
            self.assertEqual((await next_of(ws, "history"))["data"]["messages"], sent)
            await send(ws, "message", {"content": "after restart"})
            after = (await next_of(ws, "message"))["data"]
            self.assertGreater(after["timestamp"], sent[-1]["timestamp"])


class AnalyticsTests(GuideTestCase):
    config = OPEN_CONFIG + "engagement_window_ms = 1500\n"

    async def test_subscribe_gets_last_values_then_updates_from_post(self):
        context = new_context()
        self.assertEqual(self.post_metric({"contextId": context, "metric": "performance",
                                           "value": 0.5}),
                         (202, {"contextId": context, "metric": "performance", "delivered": 0}))
        ws = await self.join("analytics", "teacher", context)
        await send(ws, "subscribe", {"metrics": ["performance", "quiz.score"]})
        sub = await recv_json(ws)
        assert_envelope(self, sub)
        self.assertEqual((sub["type"], sub["data"]), ("subscribed", {"metrics": ["performance", "quiz.score"]}))
        last = await recv_json(ws)
        assert_envelope(self, last)
        self.assertEqual(last["type"], "metric_update")
        self.assertEqual((last["data"]["metric"], last["data"]["value"]), ("performance", 0.5))
        self.assertRegex(last["data"]["timestamp"], ISO)
        self.assertTrue(await no_message(ws, 0.2))  # quiz.score has no value yet
        other = await self.join("analytics", "student", context)
        await send(other, "subscribe", {"metrics": ["quiz.score"]})
        await next_of(other, "subscribed")
        status, body = self.post_metric({"contextId": context, "metric": "quiz.score",
                                         "value": {"mean": 71, "n": 3}})
        self.assertEqual((status, body["delivered"]), (202, 2))
        for s in (ws, other):
            upd = await next_of(s, "metric_update")
            self.assertEqual(upd["data"]["value"], {"mean": 71, "n": 3})
        status, body = self.post_metric({"contextId": context, "metric": "performance", "value": 0.75})
        self.assertEqual(body["delivered"], 1)
        self.assertEqual((await next_of(ws, "metric_update"))["data"]["value"], 0.75)
        self.assertTrue(await no_message(other, 0.2))
        await send(ws, "unsubscribe", {"metrics": ["performance"]})
        self.assertEqual((await next_of(ws, "unsubscribed"))["data"], {"metrics": ["quiz.score"]})
        self.assertEqual(self.post_metric({"contextId": context, "metric": "performance",
                                           "value": 1})[1]["delivered"], 0)
        self.assertTrue(await no_message(ws, 0.2))
        await send(ws, "unsubscribe")
        self.assertEqual((await next_of(ws, "unsubscribed"))["data"], {"metrics": []})

    async def test_subscriptions_and_values_survive_eviction_and_restart(self):
        with Host(apps=(APP,), config=OPEN_CONFIG) as host:
            context = new_context()
            ws = await self.join("analytics", "teacher", context, host=host)
            await send(ws, "subscribe", {"metrics": ["score"]})
            await next_of(ws, "subscribed")
            self.evict("AnalyticsRoom", context, host=host)
            self.assertEqual(self.post_metric({"contextId": context, "metric": "score", "value": 3},
                                              host=host)[1]["delivered"], 1)
            self.assertEqual((await next_of(ws, "metric_update"))["data"]["value"], 3)
            await ws.close()
            host.restart()
            ws = await self.join("analytics", "teacher", context, host=host)
            await send(ws, "subscribe", {"metrics": ["score"]})
            await next_of(ws, "subscribed")
            self.assertEqual((await next_of(ws, "metric_update"))["data"]["value"], 3)

    async def test_built_in_metrics_come_from_the_chat(self):
        context = new_context()
        dash = await self.join("analytics", "teacher", context)
        await send(dash, "subscribe", {"metrics": ["activity", "engagement"]})
        await next_of(dash, "subscribed")

        async def value(name):
            return (await recv_until(dash, lambda m: m["type"] == "metric_update" and
                                     m["data"]["metric"] == name, 5))["data"]["value"]

        a = await self.join("chat", "alice", context)
        self.assertEqual(await value("activity"), 1)
        self.assertEqual(await value("engagement"), 0)
        b, _ = await self.join_by_message("chat", "bob", context)
        self.assertEqual(await value("activity"), 2)
        await send(a, "message", {"content": "one"})
        self.assertEqual(await value("engagement"), 1)
        await send(b, "message", {"content": "two"})
        self.assertEqual(await value("engagement"), 2)
        await b.close()
        self.assertEqual(await value("activity"), 1)
        # The messages leave the 1.5 s window: the chat's alarm pushes the lower counts (both may
        # leave it in one alarm run when the host is slow, so 1 may be skipped).
        seen = [await value("engagement")]
        while seen[-1] != 0:
            seen.append(await value("engagement"))
        self.assertIn(seen, ([1, 0], [0]))
        # A late subscriber gets the last values at once.
        late = await self.join("analytics", "late", context)
        await send(late, "subscribe", {"metrics": ["activity", "engagement"]})
        await next_of(late, "subscribed")
        got = {}
        for _ in range(2):
            upd = await next_of(late, "metric_update")
            got[upd["data"]["metric"]] = upd["data"]["value"]
        self.assertEqual(got, {"activity": 1, "engagement": 0})

    async def test_post_refusals(self):
        context = new_context()
        good = {"contextId": context, "metric": "m", "value": 1}
        for body, tok, status in [(good, None, 401), (good, "garbage", 401),
                                  (good, make_jwt({"sub": "x"}, secret="nope"), 401),
                                  ("not json", "default", 400), ([1], "default", 400),
                                  ({**good, "contextId": "bad id"}, "default", 400),
                                  ({"metric": "m", "value": 1}, "default", 400),
                                  ({**good, "metric": "has space"}, "default", 400),
                                  ({**good, "metric": "x" * 65}, "default", 400),
                                  ({**good, "metric": "activity"}, "default", 400),
                                  ({**good, "metric": "engagement"}, "default", 400),
                                  ({"contextId": context, "metric": "m"}, "default", 400),
                                  ({**good, "value": None}, "default", 400),
                                  ({**good, "value": "x" * 5000}, "default", 413)]:
            with self.subTest(body=body, tok=tok):
                got, answer = self.post_metric(body, tok)
                self.assertEqual(got, status, answer)
                self.assertIn("error", answer)
        status, _, _ = self.host.http("GET", APP, "/api/analytics/metrics")
        self.assertEqual(status, 405)
        ws = await self.join("analytics", "teacher", context)
        await send(ws, "subscribe", {"metrics": ["m"]})
        await next_of(ws, "subscribed")
        self.assertTrue(await no_message(ws, 0.2))  # nothing was stored

    async def test_bad_subscriptions_are_errors(self):
        context = new_context()
        ws = await self.join("analytics", "teacher", context)
        for data, reason in [(None, "Invalid subscribe: metrics must be an array of metric names"),
                             ({"metrics": "activity"}, "Invalid subscribe: metrics must be an array of 1 to 50 metric names"),
                             ({"metrics": []}, "Invalid subscribe: metrics must be an array of 1 to 50 metric names"),
                             ({"metrics": [f"m{i}" for i in range(51)]}, "Invalid subscribe: metrics must be an array of 1 to 50 metric names"),
                             ({"metrics": ["ok", 5]}, "Invalid subscribe: a metric name has 1 to 64 characters of A-Z a-z 0-9 . _ : -"),
                             ({"metrics": ["bad name"]}, "Invalid subscribe: a metric name has 1 to 64 characters of A-Z a-z 0-9 . _ : -")]:
            with self.subTest(data=data):
                await send(ws, "subscribe", data)
                err = await recv_json(ws)
                self.assertEqual((err["type"], err["error"]), ("error", reason))
        await send(ws, "subscribe", {"metrics": [f"a{i}" for i in range(30)]})
        await next_of(ws, "subscribed")
        await send(ws, "subscribe", {"metrics": [f"b{i}" for i in range(30)]})
        err = await recv_json(ws)
        self.assertEqual(err["error"], "Too many metrics: at most 50 per connection")
        await send(ws, "message", {"content": "chat is elsewhere"})
        self.assertEqual((await recv_json(ws))["error"], "Unknown message type: message")


class CollaborationTests(GuideTestCase):
    async def session(self, user, context, session="doc", role=None):
        ws = await self.join("collaboration", user, context)
        data = {"sessionId": session}
        if role:
            data["role"] = role
        await send(ws, "join_session", data)
        state = await next_of(ws, "session_state")
        return ws, state

    async def edit(self, ws, version, operation, position, content=None, length=None):
        data = {"operation": operation, "position": position, "version": version}
        if content is not None:
            data["content"] = content
        if length is not None:
            data["length"] = length
        await send(ws, "edit", data)

    async def test_join_gets_the_session_state_and_others_hear_of_it(self):
        context = new_context()
        a, state = await self.session("alice", context, role="host")
        assert_envelope(self, state)
        self.assertEqual(state["data"], {"sessionId": "doc", "text": "", "version": 0,
                                         "participants": [{"userId": "alice", "username": "Alice",
                                                           "role": "host"}]})
        b, state = await self.session("bob", context)
        self.assertEqual([p["userId"] for p in state["data"]["participants"]], ["alice", "bob"])
        self.assertEqual(state["data"]["participants"][1]["role"], "participant")
        joined = await next_of(a, "participant_joined")
        self.assertEqual(joined["data"], {"sessionId": "doc", "userId": "bob", "username": "Bob",
                                          "role": "participant"})
        elsewhere, _ = await self.session("carol", context, session="other")
        self.assertTrue(await no_message(a, 0.2))
        await send(b, "leave_session", {"sessionId": "doc"})
        self.assertEqual((await next_of(b, "session_left"))["data"], {"sessionId": "doc"})
        self.assertEqual((await next_of(a, "participant_left"))["data"]["userId"], "bob")
        await send(b, "leave_session", {"sessionId": "doc"})
        self.assertEqual((await recv_json(b))["error"], "Not in a session: send join_session first")
        await elsewhere.close()
        self.assertTrue(await no_message(a, 0.2))

    async def test_edits_are_broadcast_to_the_session_with_versions(self):
        context = new_context()
        a, _ = await self.session("alice", context)
        b, _ = await self.session("bob", context)
        other, _ = await self.session("carol", context, session="other")
        await self.edit(a, 0, "insert", 0, "Hello World")
        for ws in (a, b):
            e = await next_of(ws, "edit")
            assert_envelope(self, e)
            self.assertEqual(e["data"], {"sessionId": "doc", "operation": "insert", "position": 0,
                                         "content": "Hello World", "version": 1,
                                         "author": {"userId": "alice", "username": "Alice"}})
        await self.edit(b, 1, "delete", 5, length=6)
        for ws in (a, b):
            e = (await next_of(ws, "edit"))["data"]
            self.assertEqual((e["operation"], e["position"], e["length"], e["version"]),
                             ("delete", 5, 6, 2))
            self.assertNotIn("content", e)
        self.assertTrue(await no_message(other, 0.2))
        c, state = await self.session("dave", context)
        self.assertEqual((state["data"]["text"], state["data"]["version"]), ("Hello", 2))

    async def test_a_stale_edit_is_transformed(self):
        context = new_context()
        a, _ = await self.session("alice", context)
        b, _ = await self.session("bob", context)

        async def edits(ws, n):
            return [(await next_of(ws, "edit"))["data"] for _ in range(n)]

        def brief(e):
            return (e["operation"], e["position"], e.get("content", e.get("length")), e["version"])

        async def both(n):
            got_a, got_b = await edits(a, n), await edits(b, n)
            self.assertEqual(got_a, got_b)
            return [brief(e) for e in got_a]

        await self.edit(a, 0, "insert", 0, "hello world")
        self.assertEqual(await both(1), [("insert", 0, "hello world", 1)])
        # All against version 1. Alice: "hello big world".
        await self.edit(a, 1, "insert", 6, "big ")
        self.assertEqual(await both(1), [("insert", 6, "big ", 2)])
        # Bob deletes " world": the text inserted inside it since survives, so the delete
        # splits in two, the last part first.
        await self.edit(b, 1, "delete", 5, length=6)
        self.assertEqual(await both(2), [("delete", 10, 5, 3), ("delete", 5, 1, 4)])
        # An insert at the end moves with the text before it.
        await self.edit(a, 1, "insert", 11, "!")
        self.assertEqual(await both(1), [("insert", 9, "!", 5)])
        _, state = await self.session("carol", context)
        self.assertEqual((state["data"]["text"], state["data"]["version"]), ("hellobig !", 5))
        await next_of(a, "participant_joined")
        # Deleting "world" again: it is gone, nothing changes, only the sender hears so.
        await self.edit(b, 1, "delete", 6, length=5)
        self.assertEqual([brief(e) for e in await edits(b, 1)], [("delete", 10, 0, 5)])
        self.assertTrue(await no_message(a, 0.3))
        _, state = await self.session("dave", context)
        self.assertEqual((state["data"]["text"], state["data"]["version"]), ("hellobig !", 5))

    async def test_bad_edits_are_errors_and_change_nothing(self):
        context = new_context()
        a = await self.join("collaboration", "alice", context)
        await self.edit(a, 0, "insert", 0, "x")
        self.assertEqual((await recv_json(a))["error"], "Not in a session: send join_session first")
        await send(a, "join_session", {"sessionId": "doc"})
        await next_of(a, "session_state")
        await self.edit(a, 0, "insert", 0, "abc")
        await next_of(a, "edit")
        bad = [({"operation": "insert", "position": 0, "content": "x", "version": 2},
                "Invalid edit: version 2 is ahead of the session (version 1)"),
               ({"operation": "insert", "position": 4, "content": "x", "version": 1},
                "Invalid edit: position outside the text (length 3 at version 1)"),
               ({"operation": "insert", "position": 1, "content": "x", "version": 0},
                "Invalid edit: position outside the text (length 0 at version 0)"),
               ({"operation": "delete", "position": 2, "length": 2, "version": 1},
                "Invalid edit: position outside the text (length 3 at version 1)"),
               ({"operation": "delete", "position": 2, "length": 2 ** 63 - 1, "version": 1},
                "Invalid edit: position outside the text (length 3 at version 1)"),
               ({"operation": "insert", "position": 2 ** 63 - 1, "content": "x", "version": 1},
                "Invalid edit: position outside the text (length 3 at version 1)"),
               ({"operation": "insert", "position": 2 ** 64 - 1, "content": "x", "version": 1},
                "Invalid edit: position must be a non-negative integer"),
               ({"operation": "insert", "position": 0, "content": "x", "version": 2 ** 63 - 1},
                "Invalid edit: version 9223372036854775807 is ahead of the session (version 1)"),
               ({"operation": "replace", "position": 0, "version": 1},
                "Invalid edit: operation must be insert or delete"),
               ({"position": 0, "content": "x", "version": 1}, "Invalid edit: operation must be insert or delete"),
               ({"operation": "insert", "position": -1, "content": "x", "version": 1},
                "Invalid edit: position must be a non-negative integer"),
               ({"operation": "insert", "position": "0", "content": "x", "version": 1},
                "Invalid edit: position must be a non-negative integer"),
               ({"operation": "insert", "position": 0, "content": "x"}, "Invalid edit: version must be a non-negative integer"),
               ({"operation": "insert", "position": 0, "content": "x", "version": 1.5},
                "Invalid edit: version must be a non-negative integer"),
               ({"operation": "insert", "position": 0, "content": "", "version": 1},
                "Invalid edit: content must be a non-empty string"),
               ({"operation": "insert", "position": 0, "content": 7, "version": 1},
                "Invalid edit: content must be a non-empty string"),
               ({"operation": "delete", "position": 0, "length": 0, "version": 1},
                "Invalid edit: length must be a positive integer"),
               ({"operation": "delete", "position": 0, "version": 1}, "Invalid edit: length must be a positive integer"),
               ({"operation": "insert", "position": 0, "content": "x", "version": 1, "sessionId": "other"},
                "Invalid edit: sessionId is not the session this connection joined")]
        for data, reason in bad:
            with self.subTest(data=data):
                await send(a, "edit", data)
                err = await recv_json(a)
                self.assertEqual((err["type"], err["error"]), ("error", reason))
        await send(a, "edit", "insert")
        self.assertEqual((await recv_json(a))["error"], "Invalid message format: data must be an object")
        await send(a, "join_session", {"sessionId": "bad id"})
        self.assertTrue((await recv_json(a))["error"].startswith("Invalid join_session"))
        await send(a, "join_session", {"sessionId": "doc", "role": ""})
        self.assertTrue((await recv_json(a))["error"].startswith("Invalid join_session"))
        _, state = await self.session("bob", context)
        self.assertEqual((state["data"]["text"], state["data"]["version"]), ("abc", 1))

    async def test_utf16_positions_like_javascript(self):
        context = new_context()
        a, _ = await self.session("alice", context)
        await self.edit(a, 0, "insert", 0, "a😀b")  # the emoji is 2 UTF-16 code units
        await next_of(a, "edit")
        await self.edit(a, 1, "insert", 3, "é")
        self.assertEqual((await next_of(a, "edit"))["data"]["position"], 3)
        await self.edit(a, 2, "insert", 2, "x")  # between the halves of the emoji
        self.assertEqual((await recv_json(a))["error"], "Invalid edit: position splits a character")
        await self.edit(a, 2, "delete", 1, length=1)
        self.assertEqual((await recv_json(a))["error"], "Invalid edit: position splits a character")
        await self.edit(a, 2, "delete", 1, length=2)
        await next_of(a, "edit")
        _, state = await self.session("bob", context)
        self.assertEqual(state["data"]["text"], "aéb")

    async def test_texts_survive_eviction_and_restart(self):
        with Host(apps=(APP,), config=OPEN_CONFIG) as host:
            context = new_context()
            ws = await self.join("collaboration", "alice", context, host=host)
            await send(ws, "join_session", {"sessionId": "doc"})
            await next_of(ws, "session_state")
            await self.edit(ws, 0, "insert", 0, "persisted")
            await next_of(ws, "edit")
            self.evict("CollaborationRoom", context, host=host)
            await self.edit(ws, 0, "insert", 0, ">")  # stale, after an eviction
            self.assertEqual((await next_of(ws, "edit"))["data"]["version"], 2)
            await ws.close()
            host.restart()
            ws = await self.join("collaboration", "bob", context, host=host)
            await send(ws, "join_session", {"sessionId": "doc"})
            state = (await next_of(ws, "session_state"))["data"]
            # The stale insert at 0 goes after the text inserted there before it.
            self.assertEqual((state["text"], state["version"]), ("persisted>", 2))

    async def test_concurrent_clients_converge(self):
        """4 clients send random inserts and deletes against the version they last saw, while
        the others do the same; each applies the broadcast edits in order. All end with the
        same text, equal to the server's."""
        context = new_context()
        rng = random.Random(1234)
        clients = []
        for i in range(4):
            ws, state = await self.session(f"user{i}", context)
            clients.append({"ws": ws, "text": state["data"]["text"], "stale": 0,
                            "version": state["data"]["version"], "drained": asyncio.Event()})
        final = {}

        def apply(c, e):
            if e["operation"] == "delete" and e["length"] == 0:
                return  # a delete of text already gone: only its sender hears of it
            self.assertEqual(e["version"], c["version"] + 1)
            units = c["text"].encode("utf-16-le")
            p = e["position"] * 2
            if e["operation"] == "insert":
                units = units[:p] + e["content"].encode("utf-16-le") + units[p:]
            else:
                units = units[:p] + units[p + e["length"] * 2:]
            c["text"] = units.decode("utf-16-le")
            c["version"] = e["version"]

        async def reader(c):
            # Short waits: the final version may be set while this reader waits for a message
            # that is not coming (it already had everything); 20 s of silence is a failure.
            quiet = 0.0
            while "version" not in final or c["version"] < final["version"]:
                try:
                    msg = await recv_json(c["ws"], 0.5)
                except asyncio.TimeoutError:
                    quiet += 0.5
                    if quiet >= 20:
                        raise
                    continue
                quiet = 0.0
                if msg["type"] == "edit":
                    apply(c, msg["data"])
                elif msg["type"] == "pong":
                    c["drained"].set()  # every edit this client sent before was applied
                elif msg["type"] == "error":
                    raise AssertionError(msg)

        async def writer(c):
            for _ in range(40):
                seen = c["version"]
                length = len(c["text"])
                if length and rng.random() < 0.4:
                    p = rng.randrange(length)
                    await self.edit(c["ws"], seen, "delete", p,
                                    length=rng.randint(1, min(4, length - p)))
                else:
                    await self.edit(c["ws"], seen, "insert", rng.randint(0, length),
                                    rng.choice(["a", "bc", "XYZ", " ", "é", "--"]))
                if rng.random() < 0.7:
                    await asyncio.sleep(0)  # often send the next edit before the last ack
                else:
                    await asyncio.sleep(rng.random() * 0.02)
            await send(c["ws"], "ping", id="drain")  # not the exact ping: the room answers

        readers = [asyncio.create_task(reader(c)) for c in clients]
        await asyncio.gather(*(writer(c) for c in clients))
        await asyncio.wait_for(asyncio.gather(*(c["drained"].wait() for c in clients)), 30)
        probe, state = await self.session("probe", context)
        final["version"] = state["data"]["version"]
        await asyncio.wait_for(asyncio.gather(*readers), 30)
        self.assertEqual({c["text"] for c in clients}, {state["data"]["text"]})
        self.assertEqual({c["version"] for c in clients}, {final["version"]})
        self.assertGreater(final["version"], 100)


class RateLimitTests(SocketsClosed):
    """The message limit per connection, with its error and close frame on a real socket. The
    connection and broadcast limits, which need their windows to pass, are unit tests on the
    test kit's manual clock (tests/objects/guide_app_test.cc); here only the 429 on the wire."""

    async def test_connections_per_ip_over_the_limit_get_429_on_the_wire(self):
        config = "[apps.guide]\nconnections_per_minute = 2\n"
        with Host(apps=(APP,), config=config) as host:
            context = new_context()
            port = host.apps[APP]
            await self.open(ws_path("chat", token("a"), context), host=host)
            await self.open(ws_path("analytics"), host=host)  # by first message: counted too
            status, hdrs, body = raw_request(port, ws_path("collaboration", token("a"), context))
            self.assertEqual(status, 429)
            self.assertEqual(json.loads(body)["error"], "Rate limit exceeded")
            self.assertTrue(hdrs.get("retry-after", "").isdigit(), hdrs)

    async def test_messages_per_connection_error_then_1008_and_across_eviction(self):
        config = "[apps.guide]\nconnections_per_minute = 100\nmessages_per_minute = 5\n"
        with Host(apps=(APP,), config=config) as host:
            context = new_context()
            a = await self.open(ws_path("chat", token("alice"), context), host=host)
            b = await self.open(ws_path("chat", token("bob"), context), host=host)
            for i in range(3):
                await send(a, "message", {"content": f"m{i}"})
            for i in range(3):
                await next_of(b, "message")
            host.admin_json("POST", f"/objects/ChatRoom/{context}/evict")
            await send(a, "typing", {"isTyping": True})
            await send(a, "message", {"content": "fifth"})
            self.assertEqual((await next_of(b, "message"))["data"]["content"], "fifth")
            await send(a, "message", {"content": "sixth"})
            err = await recv_until(a, lambda m: m["type"] == "error")
            assert_envelope(self, err)
            self.assertEqual(err["error"], "Rate limit exceeded")
            self.assertEqual(await closed(a), (1008, "Rate limit exceeded"))
            left = await recv_until(b, lambda m: m["type"] != "typing")
            self.assertEqual(left["type"], "user_left")  # "sixth" went nowhere
            self.assertTrue(await no_message(b, 0.3))
            await send(b, "history", {})
            hist = (await next_of(b, "history"))["data"]["messages"]
            self.assertEqual([m["content"] for m in hist], ["m0", "m1", "m2", "fifth"])
            # A first-message socket: the auth message is its first of five.
            c = await self.open(ws_path("collaboration"), host=host)
            await send(c, "auth", token=token("carol"), contextId=context)
            await next_of(c, "auth_success")
            for _ in range(4):
                await send(c, "join_session", {"sessionId": "s"})
                await next_of(c, "session_state")
            await send(c, "join_session", {"sessionId": "s"})
            self.assertEqual((await recv_json(c))["error"], "Rate limit exceeded")
            self.assertEqual((await closed(c))[0], 1008)
            # Pings the host answers itself are not counted.
            d = await self.open(ws_path("chat", token("dave"), context), host=host)
            for _ in range(10):
                await d.send(JS_PING)
                self.assertEqual((await recv_json(d))["type"], "pong")
            await send(d, "message", {"content": "d"})
            self.assertEqual((await next_of(d, "message"))["data"]["content"], "d")


class SettingsTests(unittest.TestCase):
    def test_bad_settings_exit_2_with_one_line(self):
        for line in ["messages_per_minute = 0", "rate_window_ms = \"soon\"",
                     "connections_per_minute = -1", "default_context_id = \"bad id\"",
                     "no_such_setting = 1"]:
            with self.subTest(line=line):
                host = Host(apps=(APP,), config=f"[apps.guide]\n{line}\n")
                with self.assertRaises(RuntimeError) as cm:
                    host.start(timeout=10)
                host.close()
                self.assertIn("exited with 2", str(cm.exception))
                self.assertIn("guide:", str(cm.exception))


def node_or_skip(test):
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        test.skipTest("node is not installed (the seed snippets run in Node)")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "ws")):
        test.skipTest("the ws package is not installed: run tests/integration/node/setup")
    return node


SEED_CONFIG = ("[apps.guide]\nconnections_per_minute = 1000000\ndev_token = \"test\"\n"
               "default_context_id = \"seed-context\"\n")


class SeedSnippetTests(unittest.IsolatedAsyncioTestCase):
    """The seed's own client code, unchanged but for the host, in Node and in Chromium."""

    async def prepare(self, host, context):
        """The seed's edit is at version 15, position 42: give its session that history."""
        ws = await host.connect(APP, ws_path("collaboration", token("prep"), context))
        await send(ws, "join_session", {"sessionId": "session_123"})
        await next_of(ws, "session_state")
        for v in range(15):
            await send(ws, "edit", {"operation": "insert", "position": 0, "content": "abc",
                                    "version": v})
            await next_of(ws, "edit")
        await ws.close()

    def run_script(self, node, script, host, context):
        args = [node, os.path.join(HERE, script), str(host.apps[APP]), token("alice", "Alice"),
                token("bob", "Bob"), token("carol", "Carol")]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
        self.assertEqual(proc.returncode, 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}")
        return [json.loads(l) for l in proc.stdout.splitlines() if l.startswith('{"check"')]

    async def test_seed_snippets_in_node(self):
        node = node_or_skip(self)
        with Host(apps=(APP,), config=SEED_CONFIG) as host:
            context = "context_123"  # the snippets name it
            await self.prepare(host, context)
            checks = await asyncio.to_thread(self.run_script, node, "node/seed_guide.js", host, context)
            self.assertTrue(all(c["ok"] for c in checks), checks)
            self.assertGreaterEqual(len(checks), 12)

    async def test_seed_snippets_in_chromium(self):
        node = node_or_skip(self)
        if not (os.path.exists("/usr/bin/chromium") and
                os.path.isdir(os.path.join(NODE_DIR, "node_modules", "playwright-core"))):
            self.skipTest("needs /usr/bin/chromium and playwright-core (tests/integration/node/setup)")
        with Host(apps=(APP,), config=SEED_CONFIG) as host:
            context = "context_123"  # the snippets name it
            await self.prepare(host, context)
            checks = await asyncio.to_thread(self.run_script, node, "guide_chromium.js", host, context)
            self.assertTrue(all(c["ok"] for c in checks), checks)
            self.assertGreaterEqual(len(checks), 12)


if __name__ == "__main__":
    unittest.main()
