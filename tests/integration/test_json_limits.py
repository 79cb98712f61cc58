"""Hostile JSON at every entry point of every app, against the real dohost binary: nesting
100,000 deep (one such message used to kill the host), nesting just past the limit, a 1 MB
string and a 100,000-digit number. Each is an error in the app's documented form or an intact
delivery; the host stays up and every other client carries on. The limit is documented in
docs/operations.md (`max_json_depth`) and in each app's page."""
import asyncio
import json
import os
import subprocess
import tempfile
import unittest

import websockets

from harness import APPS, Host, binary, make_jwt, no_message, quote, recv_json, recv_until
from project_support import ProjectClients, ms_now, raise_fd_limit

raise_fd_limit()

LIMIT = 64  # the default max_json_depth


def nested(depth, inner="1"):
    """`depth` arrays, one in the other, around `inner`."""
    return "[" * depth + inner + "]" * depth


DEEP = nested(100_000)
BIG_STRING = "x" * 1_000_000           # a message stays under the 1 MiB frame limit
HUGE_NUMBER = "9" * 100_000            # beyond a double: would silently become null
TOO_DEEP = "JSON nested deeper than 64 levels"
OUT_OF_RANGE = "JSON number out of range (beyond what a double holds)"


def with_field(message, name, raw):
    """`message` (a dict) as JSON text with one more member whose value is raw JSON text."""
    text = json.dumps(message)
    return text[:-1] + f', "{name}": {raw}}}'


class HostileJsonCase(unittest.IsolatedAsyncioTestCase):
    """One host with every app for the class; each test uses its own projects, users and
    channels, and ends by checking the process is still there."""
    host_kwargs = {}

    @classmethod
    def setUpClass(cls):
        cls.host = Host(apps=APPS, **cls.host_kwargs).start()

    @classmethod
    def tearDownClass(cls):
        cls.host.close()

    async def asyncSetUp(self):
        self.sockets = []

    async def asyncTearDown(self):
        for ws in self.sockets:
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:
                pass
        self.assert_alive()

    def assert_alive(self):
        self.assertIsNone(self.host.proc.poll(), "dohost died: " + self.host.stderr())

    async def connect(self, app, path, headers=None):
        ws = await self.host.connect(app, path, headers=headers)
        self.sockets.append(ws)
        return ws


# --- broadcaster and bridge ------------------------------------------------------------------

class Project(ProjectClients):
    def __init__(self, case, app, project_id):
        super().__init__(case.host, project_id)
        self.app = app
        self.case = case

    def client_id(self, welcome):
        return welcome["payload"]["clientId"] if self.app == "broadcaster" else welcome["clientId"]

    async def join(self, name, client_type, query=""):
        ws = await super().join(name, client_type, query)
        self.case.sockets.append(ws)
        return ws


class ProjectCase(HostileJsonCase):
    """broadcaster and bridge: a runtime `r`, an agent `a` and an admin `m` per project."""
    app = agent = None

    async def project(self):
        p = Project(self, self.app, f"{self._testMethodName}-{ms_now()}")
        await p.join("r", "runtime")
        await p.join("a", self.agent)
        await p.join("m", "admin")
        return p

    async def refused(self, p, text, expected_message):
        """`r` sends `text`: it gets invalid_json with `expected_message`, nobody else gets
        anything, and the next good message reaches the agent and the admin as usual."""
        await p.send("r", text)
        err = await p.recv("r")
        self.assertEqual(err["type"], "error", err)
        self.assertEqual(self.code_and_message(err), ("invalid_json", expected_message))
        await p.send("r", self.probe)
        key = next(iter(self.probe_key))
        self.assertEqual((await p.recv("a"))[key], self.probe_key[key])  # nothing came before
        self.assertEqual((await p.recv("m"))[key], self.probe_key[key])
        self.assert_alive()


class BroadcasterTest(ProjectCase):
    app, agent = "broadcaster", "data-agent"
    probe = {"id": "after", "type": "note", "to": {"type": "data-agent"}, "payload": 1}
    probe_key = {"id": "after"}

    @staticmethod
    def code_and_message(err):
        return err["payload"]["code"], err["payload"]["message"]

    async def test_payload_nested_100000_deep_is_an_error_and_the_host_carries_on(self):
        p = await self.project()
        other = Project(self, "broadcaster", f"other-{ms_now()}")
        await other.join("r", "runtime")
        await other.join("a", "data-agent")
        await self.refused(p, with_field({"id": "deep", "type": "x", "to": {"type": "data-agent"}},
                                         "payload", DEEP), TOO_DEEP)
        # Another project's clients carry on too.
        await other.send("r", {"id": "o", "type": "note", "payload": "still here"})
        self.assertEqual((await other.recv("a"))["payload"], "still here")

    async def test_a_whole_message_nested_100000_deep_is_an_error(self):
        p = await self.project()
        await self.refused(p, DEEP, TOO_DEEP)

    async def test_nesting_up_to_the_limit_is_delivered_intact_one_more_level_is_an_error(self):
        p = await self.project()
        # The message object is level 1, so the payload may nest LIMIT - 1 levels.
        ok = with_field({"id": "ok", "type": "x", "to": {"type": "data-agent"}}, "payload",
                        nested(LIMIT - 1))
        await p.send("r", ok)
        got = await p.recv("a")
        self.assertEqual(got["payload"], json.loads(nested(LIMIT - 1)))
        self.assertEqual(await p.recv("m"), got)
        await self.refused(p, with_field({"id": "no", "type": "x", "to": {"type": "data-agent"}},
                                         "payload", nested(LIMIT)), TOO_DEEP)

    async def test_a_1_mb_string_is_delivered_intact(self):
        p = await self.project()
        await p.send("r", {"id": "big", "type": "x", "to": {"type": "data-agent"},
                           "payload": {"text": BIG_STRING}})
        got = await p.recv("a")
        self.assertEqual(got["payload"]["text"], BIG_STRING)
        self.assertEqual((await p.recv("m"))["payload"]["text"], BIG_STRING)

    async def test_a_100000_digit_number_is_an_error_not_a_changed_value(self):
        p = await self.project()
        await self.refused(p, with_field({"id": "n", "type": "x", "to": {"type": "data-agent"}},
                                         "payload", HUGE_NUMBER), OUT_OF_RANGE)
        await self.refused(p, with_field({"id": "n", "type": "x"}, "payload", "1e400"),
                           OUT_OF_RANGE)


class BridgeTest(ProjectCase):
    app, agent = "bridge", "agent"
    probe = {"type": "graphql_query", "requestId": "after", "query": "q"}
    probe_key = {"requestId": "after"}

    @staticmethod
    def code_and_message(err):
        return err["code"], err["message"]

    async def test_variables_nested_100000_deep_are_an_error_and_the_host_carries_on(self):
        p = await self.project()
        await self.refused(p, with_field({"type": "graphql_query", "requestId": "d", "query": "q"},
                                         "variables", DEEP), TOO_DEEP)

    async def test_an_agent_answer_nested_100000_deep_is_an_error(self):
        p = await self.project()
        await p.send("a", with_field({"type": "query_response", "requestId": "x"}, "data", DEEP))
        err = await p.recv("a")
        self.assertEqual((err["code"], err["message"]), ("invalid_json", TOO_DEEP))
        self.assertTrue(await no_message(p.ws["r"]))

    async def test_nesting_up_to_the_limit_is_forwarded_one_more_level_is_an_error(self):
        p = await self.project()
        await p.send("r", with_field({"type": "graphql_query", "requestId": "ok", "query": "q"},
                                     "variables", nested(LIMIT - 1)))
        got = await p.recv("a")
        self.assertEqual(got["variables"], json.loads(nested(LIMIT - 1)))
        await p.recv("m")
        await self.refused(p, with_field({"type": "graphql_query", "requestId": "no", "query": "q"},
                                         "variables", nested(LIMIT)), TOO_DEEP)

    async def test_a_1_mb_query_is_forwarded_intact(self):
        p = await self.project()
        await p.send("r", {"type": "graphql_query", "requestId": "big", "query": BIG_STRING})
        self.assertEqual((await p.recv("a"))["query"], BIG_STRING)
        self.assertEqual((await p.recv("m"))["query"], BIG_STRING)

    async def test_a_100000_digit_number_is_an_error(self):
        p = await self.project()
        await self.refused(p, with_field({"type": "graphql_query", "requestId": "n", "query": "q"},
                                         "variables", HUGE_NUMBER), OUT_OF_RANGE)


# --- hopeflow ---------------------------------------------------------------------------------

def hopeflow_bearer(user):
    return {"Authorization": f"Bearer {make_jwt({'userId': user})}"}


class HopeFlowTest(HostileJsonCase):
    def user(self):
        return f"{self._testMethodName}-{ms_now()}"

    async def subscriber(self, user, filters=({"type": "alert"},)):
        ws = await self.connect("hopeflow", "/", headers=hopeflow_bearer(user))
        await ws.send(json.dumps({"type": "subscribe", "filters": list(filters)}))
        self.assertEqual((await recv_json(ws))["type"], "subscribed")
        return ws

    def post(self, body):
        headers = {"Content-Type": "application/json", **hopeflow_bearer("publisher")}
        status, _, raw = self.host.http("POST", "hopeflow", "/publish", body, headers)
        return status, json.loads(raw)

    async def publish(self, body):
        return await asyncio.to_thread(self.post, body)

    async def assert_delivers(self, user, ws):
        """A publish to `user` reaches `ws` and its ack completes the publish."""
        task = asyncio.create_task(self.publish({"userId": user, "type": "alert", "payload": 1}))
        envelope = await recv_until(ws, lambda m: m.get("type") == "alert")
        await ws.send(json.dumps({"type": "ack", "envelopeId": envelope["envelopeId"]}))
        status, body = await task
        self.assertEqual((status, body["clientCount"]), (200, 1))

    async def test_subscribe_filters_nested_100000_deep_are_an_error(self):
        user = self.user()
        ws = await self.subscriber(user)
        await ws.send(with_field({"type": "subscribe"}, "filters", DEEP))
        self.assertEqual(await recv_json(ws), {"type": "error", "error": TOO_DEEP})
        await self.assert_delivers(user, ws)

    async def test_an_ack_result_nested_100000_deep_is_an_error_and_a_good_ack_still_counts(self):
        user = self.user()
        ws = await self.subscriber(user)
        task = asyncio.create_task(self.publish({"userId": user, "type": "alert"}))
        envelope = await recv_json(ws)
        await ws.send(with_field({"type": "ack", "envelopeId": envelope["envelopeId"]},
                                 "result", DEEP))
        self.assertEqual(await recv_json(ws), {"type": "error", "error": TOO_DEEP})
        await ws.send(json.dumps({"type": "ack", "envelopeId": envelope["envelopeId"],
                                  "result": {"text": BIG_STRING}}))
        status, body = await task
        self.assertEqual(status, 200)
        self.assertEqual(body["results"], [{"text": BIG_STRING}])  # a 1 MB result, intact

    async def test_publish_bodies_nested_too_deep_are_400_and_nothing_is_sent(self):
        user = self.user()
        ws = await self.subscriber(user)
        for payload, error in ((DEEP, TOO_DEEP), (nested(LIMIT), TOO_DEEP),
                               (HUGE_NUMBER, OUT_OF_RANGE)):
            with self.subTest(payload=payload[:20]):
                body = with_field({"userId": user, "type": "alert"}, "payload", payload)
                status, answer = await self.publish(body)
                self.assertEqual(status, 400)
                self.assertEqual(answer, {"error": "invalid JSON body: " + error})
                self.assertTrue(await no_message(ws, 0.1))
        await self.assert_delivers(user, ws)

    async def test_publish_nested_to_the_limit_and_a_1_mb_string_arrive_intact(self):
        user = self.user()
        ws = await self.subscriber(user)
        for payload in (json.loads(nested(LIMIT - 1)), {"text": BIG_STRING}):
            task = asyncio.create_task(self.publish({"userId": user, "type": "alert",
                                                     "payload": payload}))
            envelope = await recv_json(ws)
            self.assertEqual(envelope["payload"], payload)
            await ws.send(json.dumps({"type": "ack", "envelopeId": envelope["envelopeId"]}))
            self.assertEqual((await task)[0], 200)

    async def test_a_100000_digit_number_in_a_message_is_an_error(self):
        user = self.user()
        ws = await self.subscriber(user)
        await ws.send(with_field({"type": "subscribe"}, "filters", f"[{{\"n\": {HUGE_NUMBER}}}]"))
        self.assertEqual(await recv_json(ws), {"type": "error", "error": OUT_OF_RANGE})
        await self.assert_delivers(user, ws)

    async def test_a_token_with_claims_nested_too_deep_is_401(self):
        tok = make_jwt({"userId": "deep-claims", "extra": json.loads(nested(LIMIT))})
        status, _, body = self.host.http("POST", "hopeflow", "/publish",
                                         json.dumps({"userId": "x"}),
                                         {"Content-Type": "application/json",
                                          "Authorization": f"Bearer {tok}"})
        self.assertEqual(status, 401)
        self.assertEqual(json.loads(body)["reason"], "malformed payload")


# --- channels ---------------------------------------------------------------------------------

def channel_bearer(user):
    return {"Authorization": "Bearer " + make_jwt(
        {"userId": user, "username": user.upper(), "permissions": ["read", "write"]})}


class ChannelsTest(HostileJsonCase):
    async def members(self):
        channel = f"c-{self._testMethodName[-40:]}-{ms_now()}"
        a = await self.connect("channels", f"/channel/{channel}/websocket", channel_bearer("ann"))
        b = await self.connect("channels", f"/channel/{channel}/websocket", channel_bearer("bob"))
        for ws in (a, b):
            self.assertEqual((await recv_json(ws))["type"], "initial_state")
        await recv_until(a, lambda m: m["type"] == "user_connected")
        return a, b

    async def refused(self, a, b, text, reason):
        await a.send(text)
        err = await recv_until(a, lambda m: m["type"] == "error")
        self.assertEqual(err, {"type": "error", "message": "Invalid message format",
                               "reason": reason})
        await a.send(json.dumps({"type": "message", "content": "after"}))
        got = await recv_until(b, lambda m: m["type"] in ("message", "error"))
        self.assertEqual(got["message"]["content"], "after")  # nothing was stored before it
        self.assert_alive()

    async def test_a_message_nested_100000_deep_is_an_error_and_the_host_carries_on(self):
        a, b = await self.members()
        await self.refused(a, b, with_field({"type": "message", "content": "hi"}, "extra", DEEP),
                           TOO_DEEP)
        await self.refused(a, b, with_field({"type": "sync"}, "afterMessageId", DEEP), TOO_DEEP)

    async def test_one_level_past_the_limit_is_an_error(self):
        a, b = await self.members()
        await self.refused(a, b, with_field({"type": "typing"}, "x", nested(LIMIT)), TOO_DEEP)
        # At the limit the message is read (and the unknown member ignored).
        await a.send(with_field({"type": "message", "content": "at the limit"}, "x",
                                nested(LIMIT - 1)))
        got = await recv_until(b, lambda m: m["type"] == "message")
        self.assertEqual(got["message"]["content"], "at the limit")

    async def test_a_1_mb_content_is_too_long_and_a_huge_number_is_an_error(self):
        a, b = await self.members()
        await a.send(json.dumps({"type": "message", "content": BIG_STRING}))
        self.assertEqual(await recv_until(a, lambda m: m["type"] == "error"),
                         {"type": "error", "message": "Message too long"})
        await self.refused(a, b, with_field({"type": "message", "content": "hi"}, "threadId",
                                            HUGE_NUMBER), OUT_OF_RANGE)


# --- the admin API and attachments read back -------------------------------------------------

class AttachmentTest(HostileJsonCase):
    """A plugin class may keep any bytes as an attachment; the admin API shows an attachment
    that is JSON nested past the limit as its text, and doctl reads that answer."""
    host_kwargs = {"test_plugin": True, "config": "max_attachment_bytes = 300000\n"}

    async def test_a_deep_attachment_is_shown_as_text(self):
        name = f"deep-{ms_now()}"
        ws = await self.connect("testapp", f"/o/{name}")
        await recv_json(ws)
        await ws.send(json.dumps({"cmd": "setAttachment", "value": DEEP}))
        self.assertEqual(await recv_json(ws), {"ok": True})
        status, body = self.host.admin_json("GET", f"/objects/TestEcho/{quote(name)}")
        self.assertEqual(status, 200)
        self.assertEqual(body["socketList"][0]["attachment"], DEEP)
        proc = subprocess.run([binary("doctl"), "--admin", f"http://127.0.0.1:{self.host.admin_port}",
                               "sockets", "TestEcho", name], capture_output=True, text=True,
                              timeout=30)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assert_alive()


# --- the setting and the config file ----------------------------------------------------------

class DepthSettingTest(HostileJsonCase):
    host_kwargs = {"config": "max_json_depth = 4\n"}

    async def test_the_limit_is_a_setting(self):
        p = Project(self, "broadcaster", f"setting-{ms_now()}")
        await p.join("r", "runtime")
        await p.join("a", "data-agent")
        await p.send("r", with_field({"id": "ok", "type": "x"}, "payload", nested(3)))
        self.assertEqual((await p.recv("a"))["payload"], json.loads(nested(3)))
        await p.send("r", with_field({"id": "no", "type": "x"}, "payload", nested(4)))
        err = await p.recv("r")
        self.assertEqual(err["payload"]["message"], "JSON nested deeper than 4 levels")


class ConfigTest(unittest.TestCase):
    def run_host(self, config):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "dohost.toml")
            with open(path, "w") as f:
                f.write(config)
            return subprocess.run([binary(), "--config", path, "--data", d, "--admin", "127.0.0.1:0",
                                   *[a for app in APPS for a in ("--app", f"{app}=off")]],
                                  capture_output=True, text=True, timeout=60)

    def test_bad_depth_settings_stop_the_host_with_exit_2(self):
        for value in ("0", "-1", "10001", "2.5", '"64"'):
            with self.subTest(value=value):
                proc = self.run_host(f"max_json_depth = {value}\n")
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertIn("max_json_depth", proc.stderr)

    def test_config_nested_100000_deep_is_refused_with_exit_2(self):
        cases = {
            "dotted key": "a" + ".a" * 100_000 + " = 1\n",
            "table header": "[apps" + ".a" * 100_000 + "]\n",
            "inline tables": "x = " + "{a = " * 100_000 + "1" + "}" * 100_000 + "\n",
            "arrays": "x = " + nested(100_000) + "\n",
            "inline dotted key": "x = {" + "a." * 100_000 + "a = 1}\n",
        }
        for kind, config in cases.items():
            with self.subTest(kind=kind):
                proc = self.run_host(config)
                self.assertEqual(proc.returncode, 2, f"{kind}: {proc.returncode} {proc.stderr[-300:]}")
                self.assertIn("config", proc.stderr)
                self.assertLess(len(proc.stderr), 1000)


if __name__ == "__main__":
    unittest.main()
