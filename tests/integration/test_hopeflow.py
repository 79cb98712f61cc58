"""HopeFlow Realtime (seed 003) against the real dohost binary: JWT auth, filters, publish with
acks, CORS, hibernation. The protocol is in docs/apps/hopeflow.md."""
import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import shutil
import subprocess
import time
import unittest

import websockets

from harness import (JWT_SECRET, Host, make_jwt, metric, no_message, quote, recv_json)

CLASS = "HopeFlowRealtime"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
HERE = os.path.dirname(os.path.abspath(__file__))
_users = itertools.count(1)


def new_user(prefix="user"):
    """A userId no other test uses (tests share a host)."""
    return f"{prefix}_{next(_users)}_{os.getpid()}"


def token(user, **claims):
    return make_jwt({"userId": user, **claims})


def bearer(user, **claims):
    return {"Authorization": f"Bearer {token(user, **claims)}"}


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_with(header, payload, secret=JWT_SECRET, digest=hashlib.sha256):
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = b64(hmac.new(secret.encode(), signing.encode(), digest).digest())
    return f"{signing}.{sig}"


def bad_tokens():
    """(kind, token) pairs that must all be refused with 401."""
    now = int(time.time())
    good = {"userId": "someone"}
    return [
        ("malformed: one part", "not-a-token"),
        ("malformed: two parts", "abc.def"),
        ("malformed: four parts", token("someone") + ".x"),
        ("malformed: bad base64", "!!!.@@@.###"),
        ("bad signature", make_jwt(good, secret="another-secret")),
        ("tampered payload", make_jwt(good).split(".")[0] + "." +
         b64(json.dumps({"userId": "admin"}).encode()) + "." + make_jwt(good).split(".")[2]),
        ("alg none", make_jwt(good, alg="none")),
        ("alg none with signature", jwt_with({"alg": "none", "typ": "JWT"}, good)),
        ("alg HS512", jwt_with({"alg": "HS512", "typ": "JWT"}, good, digest=hashlib.sha512)),
        ("alg missing", jwt_with({"typ": "JWT"}, good)),
        ("expired", token("someone", exp=now - 60)),
        ("nbf in the future", token("someone", nbf=now + 3600)),
        ("userId missing", make_jwt({"sub": "someone"})),
        ("userId empty", make_jwt({"userId": ""})),
        ("userId a number", make_jwt({"userId": 42})),
        ("userId null", make_jwt({"userId": None})),
        ("userId a list", make_jwt({"userId": ["a"]})),
        ("payload not an object", jwt_with({"alg": "HS256", "typ": "JWT"}, ["userId"])),
    ]


def upgrade_headers():
    return {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}


class HopeFlowCase(unittest.IsolatedAsyncioTestCase):
    """Shares one host per class; every test uses its own users."""
    host_kwargs = {}

    @classmethod
    def setUpClass(cls):
        cls.host = Host(apps=("hopeflow",), **cls.host_kwargs).start()

    @classmethod
    def tearDownClass(cls):
        cls.host.close()

    async def asyncSetUp(self):
        self.sockets = []

    async def asyncTearDown(self):
        for ws in self.sockets:
            await ws.close()

    async def connect(self, user, query=False, headers=None):
        if query:
            ws = await self.host.connect("hopeflow", f"/?token={quote(token(user))}",
                                         headers=headers)
        else:
            ws = await self.host.connect("hopeflow", "/", headers={**bearer(user), **(headers or {})})
        self.sockets.append(ws)
        return ws

    async def subscribe(self, ws, filters, kind="subscribe"):
        await ws.send(json.dumps({"type": kind, "filters": filters}))
        return await recv_json(ws)

    async def subscribed(self, user, filters, **kwargs):
        ws = await self.connect(user, **kwargs)
        reply = await self.subscribe(ws, filters)
        self.assertEqual(reply["type"], "subscribed", reply)
        return ws

    def post(self, body, headers=None, path="/publish", publisher=None):
        """Blocking POST /publish; returns (status, headers, parsed JSON or raw bytes)."""
        hdrs = {"Content-Type": "application/json", **bearer(publisher or new_user("publisher"))}
        hdrs.update(headers or {})
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        status, h, raw = self.host.http("POST", "hopeflow", path, data, hdrs)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return status, h, parsed

    async def publish(self, body, **kwargs):
        """POST /publish without blocking the event loop (the answer waits for our acks)."""
        return await asyncio.to_thread(self.post, body, **kwargs)

    def start_publish(self, body, **kwargs):
        return asyncio.create_task(self.publish(body, **kwargs))

    async def ack(self, ws, envelope, **result):
        msg = {"type": "ack", "envelopeId": envelope["envelopeId"], **result}
        await ws.send(json.dumps(msg))

    async def sync(self, ws):
        """Round trip through the object: every message sent before has been handled."""
        await ws.send("PING")
        self.assertEqual(await asyncio.wait_for(ws.recv(), 5), "pong")

    def assert_json_error(self, status, headers, body, expected):
        self.assertEqual(status, expected, body)
        self.assertTrue(headers.get("content-type", "").startswith("application/json"), headers)
        self.assertEqual(headers.get("access-control-allow-origin"), "*")
        self.assertIsInstance(body, dict, body)
        self.assertIn("error", body)

    def detail(self, user):
        status, body = self.host.admin_json("GET", f"/objects/{CLASS}/{quote(user)}")
        self.assertEqual(status, 200, body)
        return body

    def rehydrations(self):
        return metric(self.host.metrics(), "dohost_object_rehydrations_total", **{"class": CLASS})


class AuthTest(HopeFlowCase):
    def test_publish_refuses_every_kind_of_bad_token(self):
        target = new_user()
        body = {"userId": target, "payload": {}}
        for kind, bad in bad_tokens():
            for where in ("header", "query"):
                with self.subTest(kind=kind, where=where):
                    if where == "header":
                        status, h, resp = self.post(body, headers={"Authorization": f"Bearer {bad}"})
                    else:
                        hdrs = {"Content-Type": "application/json"}
                        status, h, raw = self.host.http("POST", "hopeflow",
                                                        f"/publish?token={quote(bad)}",
                                                        json.dumps(body), hdrs)
                        resp = json.loads(raw)
                    self.assert_json_error(status, h, resp, 401)

    def test_publish_without_token_or_with_another_scheme_is_401(self):
        body = json.dumps({"userId": new_user()})
        for hdrs in ({}, {"Authorization": ""}, {"Authorization": "Bearer"},
                     {"Authorization": "Bearer "}, {"Authorization": f"Basic {token('x')}"},
                     {"Authorization": token("x")}):
            with self.subTest(headers=hdrs):
                status, h, raw = self.host.http("POST", "hopeflow", "/publish", body,
                                                {"Content-Type": "application/json", **hdrs})
                self.assert_json_error(status, h, json.loads(raw), 401)
                self.assertEqual(h.get("www-authenticate"), "Bearer")

    def refused_upgrade(self, path="/", headers=None):
        """A WebSocket upgrade by hand; returns (status, headers, body) of the refusal."""
        status, h, raw = self.host.http("GET", "hopeflow", path, None,
                                        {**upgrade_headers(), **(headers or {})})
        return status, h, json.loads(raw)

    def test_upgrade_refuses_every_kind_of_bad_token(self):
        for kind, bad in bad_tokens() + [("empty", "")]:
            for where in ("header", "query"):
                with self.subTest(kind=kind, where=where):
                    if where == "header":
                        answer = self.refused_upgrade(headers={"Authorization": f"Bearer {bad}"})
                    else:
                        answer = self.refused_upgrade(f"/?token={quote(bad)}")
                    self.assert_json_error(*answer, 401)
        self.assert_json_error(*self.refused_upgrade(), 401)
        self.assert_json_error(*self.refused_upgrade(headers={"Authorization": "Basic x"}), 401)

    async def test_websocket_client_sees_the_401(self):
        now = int(time.time())
        for bad in (None, token("u", exp=now - 1), make_jwt({"userId": "u"}, alg="none")):
            with self.subTest(token=bad):
                headers = {"Authorization": f"Bearer {bad}"} if bad else {}
                with self.assertRaises(websockets.exceptions.InvalidStatusCode) as cm:
                    await self.host.connect("hopeflow", "/", headers=headers)
                self.assertEqual(cm.exception.status_code, 401)

    async def test_token_in_header_and_in_query(self):
        user = new_user()
        by_header = await self.subscribed(user, [{}])
        by_query = await self.subscribed(user, [{}], query=True)
        task = self.start_publish({"userId": user, "payload": {"n": 1}},
                                  headers={"Authorization": ""},
                                  path=f"/publish?token={quote(token(new_user('pub')))}")
        for ws in (by_header, by_query):
            envelope = await recv_json(ws)
            self.assertEqual(envelope["payload"], {"n": 1})
            await self.ack(ws, envelope, result="ok")
        status, _, resp = await task
        self.assertEqual(status, 200, resp)
        self.assertEqual(resp, {"clientCount": 2, "results": ["ok", "ok"]})

    def test_header_token_wins_over_query_token(self):
        # A bad Bearer token is not rescued by a good ?token=.
        answer = self.refused_upgrade(f"/?token={quote(token('u'))}",
                                      headers={"Authorization": "Bearer nope"})
        self.assert_json_error(*answer, 401)

    async def test_claims_in_range_are_accepted(self):
        now = int(time.time())
        user = new_user()
        ws = await self.host.connect("hopeflow", "/", headers=bearer(
            user, exp=now + 3600, nbf=now - 10, iat=now, role="anything"))
        self.sockets.append(ws)
        await self.sync(ws)
        status, _, resp = self.post({"userId": new_user()},
                                    headers=bearer("p", exp=now + 60, nbf=now - 1))
        self.assertEqual((status, resp), (200, {"clientCount": 0, "results": []}))

    async def test_client_cannot_claim_another_user_with_the_internal_header(self):
        alice, bob = new_user("alice"), new_user("bob")
        ws = await self.subscribed(alice, [{}], headers={"X-HopeFlow-User": bob})
        status, _, resp = self.post({"userId": bob})
        self.assertEqual(resp["clientCount"], 0)
        task = self.start_publish({"userId": alice})
        await self.ack(ws, await recv_json(ws))
        self.assertEqual((await task)[2]["clientCount"], 1)


class PublishValidationTest(HopeFlowCase):
    def test_wrong_content_type_is_415(self):
        body = json.dumps({"userId": new_user()})
        for ctype in (None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx",
                      "text/json"):
            with self.subTest(content_type=ctype):
                hdrs = bearer("p")
                if ctype:
                    hdrs["Content-Type"] = ctype
                status, h, raw = self.host.http("POST", "hopeflow", "/publish", body, hdrs)
                self.assert_json_error(status, h, json.loads(raw), 415)

    def test_json_content_type_variants_are_accepted(self):
        for ctype in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
            with self.subTest(content_type=ctype):
                status, h, resp = self.post({"userId": new_user()}, headers={"Content-Type": ctype})
                self.assertEqual((status, resp), (200, {"clientCount": 0, "results": []}))
                self.assertEqual(h.get("access-control-allow-origin"), "*")

    def test_auth_is_checked_before_content_type(self):
        status, h, raw = self.host.http("POST", "hopeflow", "/publish", "x",
                                        {"Content-Type": "text/plain"})
        self.assert_json_error(status, h, json.loads(raw), 401)

    def test_bad_bodies_are_400(self):
        cases = {
            "empty body": "",
            "invalid JSON": "{not json",
            "truncated JSON": '{"userId": "u"',
            "array": '[{"userId": "u"}]',
            "string": '"u"',
            "missing userId": '{"type": "message", "payload": {}}',
            "empty userId": '{"userId": ""}',
            "numeric userId": '{"userId": 7}',
            "null userId": '{"userId": null}',
            "numeric type": '{"userId": "u", "type": 3}',
            "empty type": '{"userId": "u", "type": ""}',
        }
        for name, body in cases.items():
            with self.subTest(name):
                status, h, resp = self.post(body)
                self.assert_json_error(status, h, resp, 400)

    def test_other_methods_and_paths(self):
        status, h, raw = self.host.http("GET", "hopeflow", "/publish", None, bearer("p"))
        self.assert_json_error(status, h, json.loads(raw), 405)
        self.assertIn("POST", h.get("allow", ""))
        status, h, raw = self.host.http("GET", "hopeflow", "/nowhere", None, bearer("p"))
        self.assert_json_error(status, h, json.loads(raw), 404)
        status, h, raw = self.host.http("GET", "hopeflow", "/", None, bearer("p"))
        self.assert_json_error(status, h, json.loads(raw), 426)


class CorsTest(HopeFlowCase):
    def test_preflight(self):
        status, h, body = self.host.http("OPTIONS", "hopeflow", "/publish", None, {
            "Origin": "https://dashboard.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        self.assertIn(status, (200, 204))
        self.assertEqual(h.get("access-control-allow-origin"), "*")
        self.assertIn("POST", [m.strip() for m in h.get("access-control-allow-methods", "").split(",")])
        allowed = [x.strip().lower() for x in h.get("access-control-allow-headers", "").split(",")]
        self.assertIn("authorization", allowed)
        self.assertIn("content-type", allowed)

    async def test_every_json_answer_carries_the_origin(self):
        user = new_user()
        ws = await self.subscribed(user, [{}])
        task = self.start_publish({"userId": user}, headers={"Origin": "https://x.example"})
        await self.ack(ws, await recv_json(ws))
        status, h, _ = await task
        self.assertEqual(status, 200)
        self.assertEqual(h.get("access-control-allow-origin"), "*")
        for status, h in (self.post({"userId": user}, headers={"Authorization": ""})[:2],
                          self.post({"userId": user}, headers={"Content-Type": "text/plain"})[:2],
                          self.post("{")[:2]):
            self.assertEqual(h.get("access-control-allow-origin"), "*", status)


class DeliveryTest(HopeFlowCase):
    async def test_type_defaults_to_message_and_answer_comes_with_the_acks(self):
        user = new_user()
        ws = await self.subscribed(user, [{"type": "message"}])
        started = time.monotonic()
        task = self.start_publish({"userId": user, "payload": {"text": "hi"}})
        envelope = await recv_json(ws)
        self.assertEqual(envelope["type"], "message")
        self.assertEqual(envelope["payload"], {"text": "hi"})
        self.assertEqual(envelope["userId"], user)
        self.assertRegex(envelope["envelopeId"], UUID)
        await self.ack(ws, envelope, result={"seen": True})
        status, h, resp = await task
        self.assertEqual(status, 200, resp)
        self.assertEqual(resp, {"clientCount": 1, "results": [{"seen": True}]})
        # Answered on the ack, not at the 5 s deadline.
        self.assertLess(time.monotonic() - started, 4)

    async def test_explicit_type_and_null_type(self):
        user = new_user()
        ws = await self.subscribed(user, [{"type": "message"}, {"type": "alert"}])
        for sent, expected in (("alert", "alert"), (None, "message")):
            task = self.start_publish({"userId": user, "type": sent})
            envelope = await recv_json(ws)
            self.assertEqual(envelope["type"], expected)
            self.assertNotIn("payload", envelope)
            await self.ack(ws, envelope)
            self.assertEqual((await task)[2], {"clientCount": 1, "results": [None]})

    async def test_envelope_ids_are_unique(self):
        user = new_user()
        ws = await self.subscribed(user, [{}])
        seen = set()
        for _ in range(5):
            task = self.start_publish({"userId": user})
            envelope = await recv_json(ws)
            seen.add(envelope["envelopeId"])
            await self.ack(ws, envelope)
            await task
        self.assertEqual(len(seen), 5)

    async def test_filters_match_exactly(self):
        user = new_user()
        chat = await self.subscribed(user, [{"type": "chat_message", "questId": "q1", "nodeId": "n1"}])
        quest = await self.subscribed(user, [{"questId": "q2"}])
        everything = await self.subscribed(user, [{}])
        nothing = await self.connect(user)  # no filters: receives nothing
        cases = [
            ({"type": "chat_message", "payload": {"questId": "q1", "nodeId": "n1", "x": 1}},
             {chat, everything}),
            ({"type": "chat_message", "payload": {"questId": "q1"}}, {everything}),
            ({"type": "other", "payload": {"questId": "q1", "nodeId": "n1"}}, {everything}),
            ({"type": "anything", "payload": {"questId": "q2"}}, {quest, everything}),
            ({"payload": {"questId": "Q2"}}, {everything}),        # case matters
            ({"payload": {"questId": ["q2"]}}, {everything}),      # strings only
            ({"payload": {"nested": {"questId": "q2"}}}, {everything}),
            ({"payload": "q2"}, {everything}),                     # not an object
            ({"payload": {"type": "chat_message", "questId": "q1", "nodeId": "n1"}},
             {everything}),  # `type` is the envelope's, not the payload's
        ]
        everyone = [chat, quest, everything, nothing]
        for body, receivers in cases:
            with self.subTest(body=body):
                task = self.start_publish({"userId": user, **body})
                for ws in receivers:
                    envelope = await recv_json(ws)
                    self.assertEqual(envelope.get("payload"), body.get("payload"))
                    await self.ack(ws, envelope, result=everyone.index(ws))
                status, _, resp = await task
                self.assertEqual(resp["clientCount"], len(receivers), body)
                self.assertEqual(sorted(resp["results"]), sorted(everyone.index(w) for w in receivers))
                for ws in set(everyone) - receivers:
                    self.assertTrue(await no_message(ws, 0.05), body)

    async def test_number_payload_field_does_not_match_string_filter(self):
        user = new_user()
        ws = await self.subscribed(user, [{"count": "1"}])
        status, _, resp = await self.publish({"userId": user, "payload": {"count": 1}})
        self.assertEqual(resp, {"clientCount": 0, "results": []})
        self.assertTrue(await no_message(ws, 0.1))

    async def test_subscribe_and_unsubscribe(self):
        user = new_user()
        ws = await self.connect(user)
        a, b, c = {"type": "a"}, {"type": "b"}, {"type": "c", "room": "r"}
        reply = await self.subscribe(ws, [a, b])
        self.assertEqual(reply, {"type": "subscribed", "filters": [a, b]})
        reply = await self.subscribe(ws, [b, c])  # b is not added twice
        self.assertEqual(reply, {"type": "subscribed", "filters": [a, b, c]})
        reply = await self.subscribe(ws, [a, {"type": "zzz"}], kind="unsubscribe")
        self.assertEqual(reply, {"type": "unsubscribed", "filters": [b, c]})
        status, _, resp = await self.publish({"userId": user, "type": "a"})
        self.assertEqual(resp, {"clientCount": 0, "results": []})
        # A filter with the same keys in another order is the same filter.
        reply = await self.subscribe(ws, [{"room": "r", "type": "c"}], kind="unsubscribe")
        self.assertEqual(reply, {"type": "unsubscribed", "filters": [b]})
        status, _, resp = await self.publish({"userId": user, "type": "c", "payload": {"room": "r"}})
        self.assertEqual(resp["clientCount"], 0)
        task = self.start_publish({"userId": user, "type": "b"})
        envelope = await recv_json(ws)
        self.assertEqual(envelope["type"], "b")
        await self.ack(ws, envelope, result="b")
        self.assertEqual((await task)[2], {"clientCount": 1, "results": ["b"]})
        # Filters are kept in the socket attachment (visible through the admin API).
        attachments = [s["attachment"] for s in self.detail(user)["socketList"]]
        self.assertEqual(attachments, [{"userId": user, "filters": [b]}])

    async def test_invalid_filters_are_refused_and_change_nothing(self):
        user = new_user()
        ws = await self.subscribed(user, [{"type": "keep"}])
        bad_messages = [
            {"type": "subscribe"},
            {"type": "subscribe", "filters": {"type": "x"}},
            {"type": "subscribe", "filters": "type=x"},
            {"type": "subscribe", "filters": [{"type": "ok"}, "x"]},
            {"type": "subscribe", "filters": [{"type": "ok"}, ["type", "x"]]},
            {"type": "subscribe", "filters": [None]},
            {"type": "subscribe", "filters": [{"type": 1}]},
            {"type": "subscribe", "filters": [{"type": "ok", "questId": None}]},
            {"type": "subscribe", "filters": [{"questId": {"eq": "q"}}]},
            {"type": "subscribe", "filters": [{"flag": True}]},
            {"type": "unsubscribe", "filters": [{"type": "keep"}, {"n": 5}]},
            {"type": "unsubscribe", "filters": None},
        ]
        for msg in bad_messages:
            with self.subTest(msg=msg):
                await ws.send(json.dumps(msg))
                reply = await recv_json(ws)
                self.assertEqual(reply["type"], "error", reply)
                self.assertIsInstance(reply["error"], str)
        reply = await self.subscribe(ws, [])
        self.assertEqual(reply, {"type": "subscribed", "filters": [{"type": "keep"}]})

    async def test_unknown_and_malformed_messages_get_errors(self):
        ws = await self.connect(new_user())
        for text in ("hello", "{", "[1,2]", '"subscribe"', '{"filters": []}', '{"type": 5}',
                     '{"type": "publish", "userId": "x"}', '{"type": "ack"}',
                     '{"type": "ack", "envelopeId": 12}'):
            with self.subTest(text=text):
                await ws.send(text)
                reply = await recv_json(ws)
                self.assertEqual(reply["type"], "error", reply)
        await ws.send(b"\x01\x02")
        self.assertEqual((await recv_json(ws))["type"], "error")
        await self.sync(ws)  # the socket is still usable

    async def test_at_most_50_filters_per_message(self):
        user = new_user()
        ws = await self.connect(user)
        filters = [{"type": f"t{i}"} for i in range(60)]
        filters[55] = {"type": 5}  # beyond the 50th: not even looked at
        reply = await self.subscribe(ws, filters)
        self.assertEqual(reply["type"], "subscribed", reply)
        self.assertEqual(reply["filters"], filters[:50])
        self.assertEqual(reply["ignored"], 10)
        _, _, resp = await self.publish({"userId": user, "type": "t55"})
        self.assertEqual(resp["clientCount"], 0)
        _, _, resp = await self.publish({"userId": user, "type": "t52"})
        self.assertEqual(resp["clientCount"], 0)
        task = self.start_publish({"userId": user, "type": "t49"})
        await self.ack(ws, await recv_json(ws))
        self.assertEqual((await task)[2]["clientCount"], 1)
        # More are added by later messages; unsubscribe handles 50 per message too.
        reply = await self.subscribe(ws, [{"type": f"t{i}"} for i in range(50, 60)])
        self.assertEqual(len(reply["filters"]), 60)
        reply = await self.subscribe(ws, [{"type": f"t{i}"} for i in range(60)], kind="unsubscribe")
        self.assertEqual(reply["type"], "unsubscribed")
        self.assertEqual(reply["filters"], [{"type": f"t{i}"} for i in range(50, 60)])
        self.assertEqual(reply["ignored"], 10)

    async def test_attachment_limit_refuses_more_filters(self):
        ws = await self.connect(new_user())
        big = "x" * 900
        total = 0
        for batch in range(5):
            reply = await self.subscribe(ws, [{"k": f"{batch}-{i}-{big}"} for i in range(10)])
            if reply["type"] == "error":
                break
            total = len(reply["filters"])
        self.assertEqual(reply["type"], "error")
        self.assertIn("too many filters", reply["error"])
        reply = await self.subscribe(ws, [])
        self.assertEqual(len(reply["filters"]), total)  # unchanged by the refused message

    async def test_several_sockets_per_user(self):
        user = new_user()
        sockets = [await self.subscribed(user, [{"type": "message"}]) for _ in range(4)]
        task = self.start_publish({"userId": user, "payload": {"k": "v"}})
        envelopes = [await recv_json(ws) for ws in sockets]
        self.assertEqual(len({e["envelopeId"] for e in envelopes}), 1)
        for i, (ws, envelope) in enumerate(zip(sockets, envelopes)):
            await self.ack(ws, envelope, result=i)
        status, _, resp = await task
        self.assertEqual(resp["clientCount"], 4)
        self.assertEqual(sorted(resp["results"]), [0, 1, 2, 3])

    async def test_users_are_isolated(self):
        alice, bob = new_user("alice"), new_user("bob")
        a1 = await self.subscribed(alice, [{}])
        a2 = await self.subscribed(alice, [{}])
        b1 = await self.subscribed(bob, [{}])
        # Multi-tenant: bob's token may publish to alice; the body's userId is the target.
        task = self.start_publish({"userId": alice, "payload": "for alice"}, publisher=bob)
        for ws in (a1, a2):
            envelope = await recv_json(ws)
            self.assertEqual(envelope["userId"], alice)
            await self.ack(ws, envelope, result="a")
        self.assertEqual((await task)[2], {"clientCount": 2, "results": ["a", "a"]})
        self.assertTrue(await no_message(b1, 0.2))
        task = self.start_publish({"userId": bob, "payload": "for bob"}, publisher=alice)
        envelope = await recv_json(b1)
        self.assertEqual(envelope["payload"], "for bob")
        await self.ack(b1, envelope, result="b")
        self.assertEqual((await task)[2], {"clientCount": 1, "results": ["b"]})
        self.assertTrue(await no_message(a1, 0.1))
        self.assertTrue(await no_message(a2, 0.1))

    async def test_acks_with_and_without_result(self):
        user = new_user()
        sockets = [await self.subscribed(user, [{}]) for _ in range(6)]
        results = [{"ok": 1}, [1, 2], "text", 3.5, False]
        task = self.start_publish({"userId": user})
        for i, ws in enumerate(sockets):
            envelope = await recv_json(ws)
            if i < len(results):
                await self.ack(ws, envelope, result=results[i])
                await self.sync(ws)  # keeps the arrival order deterministic
            else:
                await self.ack(ws, envelope)  # no result: recorded as null
        status, _, resp = await task
        self.assertEqual(resp, {"clientCount": 6, "results": results + [None]})

    async def test_explicit_null_result(self):
        user = new_user()
        ws = await self.subscribed(user, [{}])
        task = self.start_publish({"userId": user})
        await self.ack(ws, await recv_json(ws), result=None)
        self.assertEqual((await task)[2], {"clientCount": 1, "results": [None]})

    async def test_duplicate_and_foreign_acks_are_ignored(self):
        user = new_user()
        target = await self.subscribed(user, [{"type": "message"}])
        bystander = await self.subscribed(user, [{"type": "other"}])
        task = self.start_publish({"userId": user})
        envelope = await recv_json(target)
        await self.ack(bystander, envelope, result="not mine")  # was not sent this envelope
        await self.sync(bystander)
        await self.ack(target, envelope, result="first")
        await self.ack(target, envelope, result="second")
        self.assertEqual((await task)[2], {"clientCount": 1, "results": ["first"]})
        # A late ack for an answered publish draws no error.
        await self.ack(target, envelope, result="late")
        await self.sync(target)
        self.assertTrue(await no_message(target, 0.1))

    async def test_a_closed_socket_is_not_waited_for(self):
        user = new_user()
        stays = await self.subscribed(user, [{}])
        leaves = await self.subscribed(user, [{}])
        started = time.monotonic()
        task = self.start_publish({"userId": user})
        envelope = await recv_json(stays)
        await recv_json(leaves)
        await self.ack(stays, envelope, result="here")
        await leaves.close()
        status, _, resp = await task
        self.assertEqual(resp, {"clientCount": 2, "results": ["here"]})
        self.assertLess(time.monotonic() - started, 4)  # not the 5 s deadline

    async def test_ping_pong_any_case(self):
        ws = await self.connect(new_user())
        before = metric(self.host.metrics(), "dohost_websocket_auto_responses_total",
                        **{"class": CLASS})
        for text in ("ping", "PING", "Ping", "pInG", " ping\n", '{"type":"ping"}', '{"type":"PING"}'):
            with self.subTest(text=text):
                await ws.send(text)
                self.assertEqual(await asyncio.wait_for(ws.recv(), 5), "pong")
        after = metric(self.host.metrics(), "dohost_websocket_auto_responses_total",
                       **{"class": CLASS})
        self.assertEqual(after - before, 1)  # lowercase "ping" is answered by the host alone

    async def test_host_stays_responsive_while_a_publish_waits(self):
        # The default ack timeout is 5 s; a socket that never acks holds this publish open.
        silent_user, other = new_user("silent"), new_user("other")
        silent = await self.subscribed(silent_user, [{}])
        started = time.monotonic()
        waiting = self.start_publish({"userId": silent_user, "payload": "no ack"})
        await recv_json(silent)
        # Meanwhile: other users publish and get answers, pings are answered, admin works.
        ws = await self.subscribed(other, [{}])
        for i in range(3):
            task = self.start_publish({"userId": other, "payload": i})
            await self.ack(ws, await recv_json(ws), result=i)
            self.assertEqual((await task)[2], {"clientCount": 1, "results": [i]})
        await self.sync(ws)
        await self.sync(silent)  # the waiting object itself still takes messages
        self.assertEqual(self.host.admin("GET", "/metrics")[0], 200)
        self.assertFalse(waiting.done())
        status, _, resp = await waiting
        elapsed = time.monotonic() - started
        self.assertEqual((status, resp), (200, {"clientCount": 1, "results": []}))
        self.assertGreaterEqual(elapsed, 4.8)
        self.assertLess(elapsed, 15)


class EvictionTest(HopeFlowCase):
    async def test_publish_wakes_an_evicted_object(self):
        user = new_user()
        ws = await self.subscribed(user, [{"type": "wake", "room": "r1"}])
        status, body = self.host.admin_json("POST", f"/objects/{CLASS}/{quote(user)}/evict")
        self.assertEqual(status, 200, body)
        self.assertEqual(self.detail(user)["state"], "evicted")
        before = self.rehydrations()
        task = self.start_publish({"userId": user, "type": "wake", "payload": {"room": "r1"}})
        envelope = await recv_json(ws)  # the filter survived in the attachment
        self.assertEqual(envelope["type"], "wake")
        await self.ack(ws, envelope, result="awake")
        self.assertEqual((await task)[2], {"clientCount": 1, "results": ["awake"]})
        self.assertEqual(self.rehydrations(), before + 1)
        self.assertEqual(self.detail(user)["state"], "live")
        # Filters that do not match still do not match after the wake-up.
        _, _, resp = await self.publish({"userId": user, "type": "wake", "payload": {"room": "r2"}})
        self.assertEqual(resp["clientCount"], 0)

    async def test_forced_eviction_does_not_leave_a_publish_hanging(self):
        # The admin API evicts even an object that waits for acks; its caller must still get an
        # answer (the acks so far), not wait forever. A host that refuses that eviction instead
        # is fine too: then the ack completes the publish.
        user = new_user()
        ws = await self.subscribed(user, [{}])
        started = time.monotonic()
        task = self.start_publish({"userId": user})
        envelope = await recv_json(ws)
        status, body = self.host.admin_json("POST", f"/objects/{CLASS}/{quote(user)}/evict")
        evicted = status == 200 and body.get("evicted", True)
        await self.ack(ws, envelope, result="late")
        status, _, resp = await asyncio.wait_for(task, 4)
        self.assertEqual(status, 200)
        self.assertEqual(resp, {"clientCount": 1, "results": [] if evicted else ["late"]})
        self.assertLess(time.monotonic() - started, 4)  # not the 5 s deadline

    async def test_subscribe_after_eviction_keeps_earlier_filters(self):
        user = new_user()
        ws = await self.subscribed(user, [{"type": "a"}])
        self.host.admin_json("POST", f"/objects/{CLASS}/{quote(user)}/evict")
        reply = await self.subscribe(ws, [{"type": "b"}])
        self.assertEqual(reply["filters"], [{"type": "a"}, {"type": "b"}])


class ShortTimeoutTest(HopeFlowCase):
    """Idle objects evict after 0.2 s; /publish waits 2 s for acks."""
    host_kwargs = {"idle_evict": 0.2, "env": {"DOHOST_HOPEFLOW_ACK_TIMEOUT_MS": "2000"}}

    async def test_an_ack_that_never_comes(self):
        user = new_user()
        acker = await self.subscribed(user, [{}])
        silent = await self.subscribed(user, [{}])
        started = time.monotonic()
        task = self.start_publish({"userId": user})
        envelope = await recv_json(acker)
        await recv_json(silent)
        await self.ack(acker, envelope, result="only me")
        status, _, resp = await task
        self.assertEqual((status, resp), (200, {"clientCount": 2, "results": ["only me"]}))
        self.assertGreaterEqual(time.monotonic() - started, 1.9)
        # The late ack is ignored quietly.
        await self.ack(silent, envelope, result="too late")
        await self.sync(silent)
        self.assertTrue(await no_message(silent, 0.1))

    async def test_no_acks_at_all(self):
        user = new_user()
        ws = await self.subscribed(user, [{}])
        task = self.start_publish({"userId": user})
        await recv_json(ws)
        self.assertEqual((await task)[2], {"clientCount": 1, "results": []})

    async def wait_evicted(self, user):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.detail(user)["state"] == "evicted":
                return
            await asyncio.sleep(0.05)
        self.fail("the idle object was not evicted")

    async def test_idle_user_hibernates_and_a_publish_wakes_it(self):
        user = new_user()
        ws = await self.subscribed(user, [{"type": "message"}])
        await self.wait_evicted(user)
        before = self.rehydrations()
        task = self.start_publish({"userId": user, "payload": "wake up"})
        envelope = await recv_json(ws)
        self.assertEqual(envelope["payload"], "wake up")
        await self.ack(ws, envelope, result="awake")
        self.assertEqual((await task)[2], {"clientCount": 1, "results": ["awake"]})
        self.assertGreaterEqual(self.rehydrations(), before + 1)

    async def test_object_is_not_evicted_while_a_publish_waits(self):
        user = new_user()
        ws = await self.subscribed(user, [{}])
        await self.wait_evicted(user)
        task = self.start_publish({"userId": user})
        envelope = await recv_json(ws)
        await asyncio.sleep(0.6)  # three idle periods pass while the publish waits
        self.assertEqual(self.detail(user)["state"], "live")
        await self.ack(ws, envelope, result="kept")
        self.assertEqual((await task)[2], {"clientCount": 1, "results": ["kept"]})


class NodeClientTest(HopeFlowCase):
    """A client written from the seed's text alone (tests/integration/hopeflow_client.js)."""

    def run_client(self, mode):
        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            self.skipTest("node is not installed")
        if not os.path.isdir(os.path.join(HERE, "node", "node_modules", "ws")):
            self.skipTest("tests/integration/node/node_modules/ws is not installed")
        user = new_user("node")
        proc = subprocess.run(
            [node, os.path.join(HERE, "hopeflow_client.js"), self.host.url("hopeflow", ""),
             token(user), mode, user],
            capture_output=True, text=True, timeout=30)
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        self.assertEqual(proc.returncode, 0, f"{proc.stdout}\n{proc.stderr}")
        return user, {e["event"]: e for e in events}

    def check(self, user, events):
        self.assertIn("pong", events)
        envelope = events["envelope"]["envelope"]
        self.assertEqual(envelope["type"], "chat_message")
        self.assertEqual(envelope["userId"], user)
        self.assertRegex(envelope["envelopeId"], UUID)
        published = events["published"]
        self.assertEqual(published["status"], 200)
        self.assertEqual(published["cors"], "*")
        self.assertEqual(published["body"],
                         {"clientCount": 1, "results": [{"received": "hello from node"}]})

    async def test_node_client_with_bearer_header(self):
        user, events = await asyncio.to_thread(self.run_client, "header")
        self.check(user, events)

    async def test_node_client_with_query_token(self):
        user, events = await asyncio.to_thread(self.run_client, "query")
        self.check(user, events)


if __name__ == "__main__":
    unittest.main()
