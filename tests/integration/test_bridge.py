"""The `bridge` app (WebSocketBridge objects, seed 000), rule by rule, over real sockets."""
import asyncio
import json
import re
import time
import unittest

from harness import Host, metric, recv_json, recv_until
from project_support import (ProjectClients, close_all, ms_now, node_script, raise_fd_limit,
                             raw_request, refused)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

raise_fd_limit()



class Project(ProjectClients):
    """Clients of one bridge project, by name: `await p.join("r1", "runtime")`."""

    app = "bridge"

    def __init__(self, host, project_id):
        super().__init__(host, project_id)

    @staticmethod
    def client_id(welcome):
        return welcome["clientId"]

    async def quiet(self, name):
        """True if `name` has nothing waiting: a ping is answered by the very next message
        (each socket receives in order), so this needs no waiting."""
        await self.send(name, {"type": "ping", "requestId": "quiet?"})
        got = await self.recv(name)
        return got.get("type") == "pong" and got.get("requestId") == "quiet?"

    async def close(self):
        await close_all(self.ws.values())


def query(request_id, text="query { posts { id title } }", **extra):
    return {"type": "graphql_query", "requestId": request_id, "projectId": "ignored",
            "query": text, "variables": {}, **extra}


class BridgeTest(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.host = Host(apps=("bridge",)).start()
        cls.port = cls.host.apps["bridge"]

    @classmethod
    def tearDownClass(cls):
        cls.host.close()

    def project(self):
        return Project(self.host, f"{self._testMethodName}-{ms_now()}")

    async def test_connected_message(self):
        p = self.project()
        before = ms_now()
        for name, t in (("r", "runtime"), ("a", "agent"), ("m", "admin")):
            await p.join(name, t)
            w = p.welcome[name]
            self.assertEqual((w["type"], w["clientType"], w["projectId"]), ("connected", t, p.id))
            self.assertTrue(UUID.match(w["clientId"]))
            self.assertIn(t, w["message"])
            self.assertGreaterEqual(w["timestamp"], before - 5)
            self.assertLessEqual(w["timestamp"], ms_now() + 5)
        self.assertEqual([p.welcome[n]["clientCount"] for n in ("r", "a", "m")], [1, 2, 3])
        self.assertEqual(len(set(p.ids.values())), 3)
        await p.close()

    async def test_query_goes_to_the_agent_and_the_answer_to_the_runtime_that_asked(self):
        p = self.project()
        for name, t in (("r1", "runtime"), ("r2", "runtime"), ("a", "agent"), ("m", "admin")):
            await p.join(name, t)
        # One query at a time: two connections have no order between them.
        await p.send("r1", query("req-1", runtimeId="forged"))
        ask1 = await p.recv("a")
        await p.send("r2", query("req-2", text="query { users { id } }"))
        ask2 = await p.recv("a")
        self.assertEqual((ask1["type"], ask1["requestId"], ask1["runtimeId"], ask1["projectId"]),
                         ("graphql_query", "req-1", p.ids["r1"], p.id))
        self.assertEqual(ask1["query"], "query { posts { id title } }")
        self.assertEqual(ask1["variables"], {})
        self.assertEqual((ask2["requestId"], ask2["runtimeId"]), ("req-2", p.ids["r2"]))
        self.assertEqual(await p.recv("m"), ask1)  # the admin copy is the forwarded message
        self.assertEqual(await p.recv("m"), ask2)
        # The agent answers in the other order, without runtimeId: requestId finds the asker.
        for rid, rows in (("req-2", [{"id": "u1"}]), ("req-1", [{"id": "p1"}])):
            await p.send("a", {"type": "query_response", "requestId": rid, "projectId": p.id,
                               "data": {"rows": rows}, "timestamp": ms_now()})
        got2, got1 = await p.recv("r2"), await p.recv("r1")
        self.assertEqual((got1["type"], got1["requestId"], got1["data"]),
                         ("query_response", "req-1", {"rows": [{"id": "p1"}]}))
        self.assertEqual((got2["requestId"], got2["data"]), ("req-2", {"rows": [{"id": "u1"}]}))
        self.assertNotIn("dummy", got1)
        self.assertEqual((await p.recv("m"))["requestId"], "req-2")
        self.assertEqual((await p.recv("m"))["requestId"], "req-1")
        for n in ("r1", "r2", "a", "m"):
            self.assertTrue(await p.quiet(n), n)
        await p.close()

    async def test_get_docs_goes_to_the_agent_and_docs_come_back(self):
        p = self.project()
        for name, t in (("r", "runtime"), ("a", "agent"), ("m", "admin")):
            await p.join(name, t)
        await p.send("r", {"type": "get_docs", "requestId": "docs-123", "projectId": p.id,
                           "timestamp": ms_now()})
        ask = await p.recv("a")
        self.assertEqual((ask["type"], ask["requestId"], ask["runtimeId"]),
                         ("get_docs", "docs-123", p.ids["r"]))
        self.assertEqual((await p.recv("m"))["type"], "get_docs")
        await p.send("a", {"type": "docs", "requestId": "docs-123", "projectId": p.id,
                           "data": {"tables": {"t": {}}}, "timestamp": ms_now()})
        docs = await p.recv("r")
        self.assertEqual((docs["type"], docs["requestId"], docs["data"]),
                         ("docs", "docs-123", {"tables": {"t": {}}}))
        self.assertEqual((await p.recv("m"))["type"], "docs")
        await p.close()

    async def test_same_request_id_from_two_runtimes(self):
        p = self.project()
        for name, t in (("r1", "runtime"), ("r2", "runtime"), ("a", "agent")):
            await p.join(name, t)
        # Two connections have no order between them: let the agent see r1's query first.
        await p.send("r1", query("same"))
        first = await p.recv("a")
        await p.send("r2", query("same"))
        second = await p.recv("a")
        # Echoing runtimeId (as received) picks the runtime; otherwise the oldest asker first.
        await p.send("a", {"type": "query_response", "requestId": "same",
                           "runtimeId": second["runtimeId"], "data": {"n": 2}})
        self.assertEqual((await p.recv("r2"))["data"], {"n": 2})
        await p.send("a", {"type": "query_response", "requestId": "same", "data": {"n": 1}})
        self.assertEqual((await p.recv("r1"))["data"], {"n": 1})
        self.assertEqual(first["runtimeId"], p.ids["r1"])
        self.assertTrue(await p.quiet("r1") and await p.quiet("r2"))
        await p.close()

    async def test_answers_without_a_known_request(self):
        p = self.project()
        for name, t in (("r1", "runtime"), ("r2", "runtime"), ("a", "agent"), ("m", "admin")):
            await p.join(name, t)
        # Naming a runtime reaches it; naming none reaches every runtime.
        await p.send("a", {"type": "query_response", "requestId": "unknown",
                           "runtimeId": p.ids["r2"], "data": 1})
        self.assertEqual((await p.recv("r2"))["data"], 1)
        self.assertTrue(await p.quiet("r1"))
        await p.send("a", {"type": "docs", "data": 2})
        self.assertEqual((await p.recv("r1"))["data"], 2)
        self.assertEqual((await p.recv("r2"))["data"], 2)
        self.assertEqual((await p.recv("m"))["data"], 1)
        self.assertEqual((await p.recv("m"))["data"], 2)
        # A query without requestId gets one, so its answer can find the way back.
        await p.send("r1", {"type": "graphql_query", "query": "{ x }"})
        ask = await p.recv("a")
        self.assertTrue(UUID.match(ask["requestId"]))
        await p.send("a", {"type": "query_response", "requestId": ask["requestId"], "data": 3})
        self.assertEqual((await p.recv("r1"))["requestId"], ask["requestId"])
        self.assertTrue(await p.quiet("r2"))
        await p.close()

    async def test_without_an_agent_the_bridge_answers_with_dummy_data(self):
        p = self.project()
        await p.join("r", "runtime")
        await p.join("m", "admin")
        await p.send("r", query("req-123", text="query { posts { id title author { name } } }"))
        reply = await p.recv("r")
        self.assertEqual((reply["type"], reply["requestId"], reply["projectId"], reply["dummy"]),
                         ("query_response", "req-123", p.id, True))
        posts = reply["data"]["posts"]
        self.assertGreater(len(posts), 0)
        self.assertTrue(all({"id", "title", "author"} <= set(x) for x in posts))
        self.assertIsInstance(reply["timestamp"], int)
        self.assertEqual(await p.recv("m"), reply)  # admins see the dummy answer too
        await p.send("r", query("req-u", text="query { users { id name email } }"))
        self.assertIn("users", (await p.recv("r"))["data"])
        await p.send("r", query("req-x", text="query { weather }"))
        other = (await p.recv("r"))["data"]
        self.assertEqual(other["query"], "query { weather }")
        await p.send("r", {"type": "get_docs", "requestId": "docs-123", "projectId": p.id})
        docs = await p.recv("r")
        self.assertEqual((docs["type"], docs["requestId"]), ("docs", "docs-123"))
        self.assertIn("users", docs["data"]["tables"])
        self.assertIn("columns", docs["data"]["tables"]["users"])
        # An agent arrives: queries go to it; it leaves: dummy data again.
        await p.join("a", "agent")
        await p.send("r", query("req-live"))
        self.assertEqual((await p.recv("a"))["requestId"], "req-live")
        await p.ws["a"].close()
        deadline = time.time() + 5
        while json.loads(self.host.http("GET", "bridge", f"/status?projectId={p.id}")[2])["agentCount"]:
            self.assertLess(time.time(), deadline)
            await asyncio.sleep(0.02)
        await p.send("r", query("req-after"))
        after = await recv_until(p.ws["r"], lambda m: m.get("requestId") == "req-after")
        self.assertTrue(after["dummy"])
        await p.close()

    async def test_ping_pong(self):
        p = self.project()
        for name, t in (("r", "runtime"), ("a", "agent"), ("m", "admin")):
            await p.join(name, t)
            before = ms_now()
            await p.send(name, {"type": "ping"})
            pong = await p.recv(name)
            self.assertEqual(pong["type"], "pong")
            self.assertGreaterEqual(pong["timestamp"], before - 5)
        await p.send("r", {"type": "ping", "requestId": 7})
        pong = await p.recv("r")
        self.assertEqual((pong["type"], pong["requestId"]), ("pong", 7))
        await p.close()

    async def test_errors_leave_the_socket_usable(self):
        p = self.project()
        await p.join("r", "runtime")
        await p.join("a", "agent")
        cases = [
            ("r", "{not json", "invalid_json", None),
            ("r", "42", "invalid_message", None),
            ("r", {"requestId": "q1"}, "missing_type", "q1"),
            ("r", {"type": "teleport", "requestId": "q2"}, "unknown_type", "q2"),
            ("r", {"type": "query_response", "requestId": "q3"}, "wrong_sender", "q3"),
            ("r", {"type": "docs"}, "wrong_sender", None),
            ("a", query("q4"), "wrong_sender", "q4"),
            ("a", {"type": "get_docs", "requestId": "q5"}, "wrong_sender", "q5"),
        ]
        for sender, msg, code, request_id in cases:
            await p.send(sender, msg)
            err = await p.recv(sender)
            self.assertEqual((err["type"], err["code"]), ("error", code), msg)
            self.assertIsInstance(err["message"], str)
            self.assertEqual(err["projectId"], p.id)
            self.assertEqual(err.get("requestId"), request_id)
        self.assertTrue(await p.quiet("r") and await p.quiet("a"))
        await p.send("r", query("fine"))
        self.assertEqual((await p.recv("a"))["requestId"], "fine")
        await p.close()

    async def test_agent_answer_with_no_runtime_is_an_error_to_the_agent(self):
        p = self.project()
        await p.join("r", "runtime")
        await p.join("a", "agent")
        await p.send("r", query("gone"))
        await p.recv("a")
        await p.ws["r"].close()
        deadline = time.time() + 5
        while json.loads(self.host.http("GET", "bridge", f"/health?projectId={p.id}")[2])["hasRuntime"]:
            self.assertLess(time.time(), deadline)
            await asyncio.sleep(0.02)
        await p.send("a", {"type": "query_response", "requestId": "gone", "data": {}})
        err = await p.recv("a")
        self.assertEqual((err["type"], err["code"], err["requestId"]), ("error", "no_runtime", "gone"))
        await p.close()

    async def test_askers_learn_when_the_agent_leaves_without_answering(self):
        p = self.project()
        for name, t in (("r", "runtime"), ("a1", "agent"), ("a2", "agent")):
            await p.join(name, t)
        await p.send("r", query(7))
        await p.send("r", {"type": "get_docs", "requestId": "d"})
        self.assertEqual((await p.recv("a1"))["requestId"], 7)  # the earliest agent
        self.assertEqual((await p.recv("a1"))["requestId"], "d")
        await p.ws["a1"].close()
        errors = [await p.recv("r"), await p.recv("r")]
        self.assertEqual(sorted((e["type"], e["code"], str(e["requestId"])) for e in errors),
                         [("error", "agent_gone", "7"), ("error", "agent_gone", "d")])
        self.assertIn(7, [e["requestId"] for e in errors])  # the requestId keeps its JSON type
        # The next query goes to the agent that is left.
        await p.send("r", query("again"))
        self.assertEqual((await p.recv("a2"))["requestId"], "again")
        self.assertTrue(await p.quiet("r"))
        await p.close()

    async def test_refused_upgrades_answer_400_json_and_a_plain_get_426(self):
        status, body = refused(self.port, "/websocket?type=runtime")
        self.assertEqual(status, 400)
        self.assertIn("projectId", body["error"])
        status, body = refused(self.port, "/websocket?projectId=p")
        self.assertEqual((status, body["error"]), (400, "Missing type parameter"))
        self.assertEqual(body["validTypes"], ["runtime", "agent", "admin"])
        for bad in ("data-agent", "system", ""):
            status, body = refused(self.port, f"/websocket?type={bad}&projectId=p")
            self.assertEqual(status, 400)
        status, _, body = raw_request(self.port, "/websocket?type=runtime&projectId=p",
                                      upgrade=False)
        self.assertEqual((status, json.loads(body)), (426, {"error": "Expected Upgrade: websocket"}))
        p = self.project()
        await p.join("r", "runtime")
        await p.close()

    async def test_status_and_health(self):
        p = self.project()
        h = json.loads(self.host.http("GET", "bridge", f"/health?projectId={p.id}")[2])
        self.assertEqual((h["status"], h["projectId"], h["hasRuntime"], h["agentCount"]),
                         ("healthy", p.id, False, 0))
        self.assertIsNone(h["lastActivity"])
        for name, t in (("r", "runtime"), ("a1", "agent"), ("a2", "agent"), ("m", "admin")):
            await p.join(name, t)
        status, hdrs, body = self.host.http("GET", "bridge", f"/status?projectId={p.id}")
        self.assertEqual(status, 200)
        self.assertEqual(hdrs["access-control-allow-origin"], "*")
        s = json.loads(body)
        self.assertEqual((s["projectId"], s["hasRuntime"], s["runtimeCount"], s["agentCount"],
                          s["adminCount"], s["clientCount"]), (p.id, True, 1, 2, 1, 4))
        c = s["connections"]
        self.assertEqual(c["runtime"]["id"], p.ids["r"])
        self.assertEqual([x["id"] for x in c["agents"]], [p.ids["a1"], p.ids["a2"]])
        self.assertEqual([x["id"] for x in c["admins"]], [p.ids["m"]])
        self.assertEqual(c["runtime"]["connectedFor"], s["timestamp"] - c["runtime"]["connectedAt"])
        h = json.loads(self.host.http("GET", "bridge", f"/health?projectId={p.id}")[2])
        self.assertEqual((h["hasRuntime"], h["agentCount"], h["clientCount"]), (True, 2, 4))
        self.assertIsInstance(h["lastActivity"], int)
        status, _, body = self.host.http("GET", "bridge", "/health")
        self.assertEqual((status, json.loads(body)["service"]), (200, "bridge"))
        self.assertEqual(self.host.http("GET", "bridge", "/status")[0], 400)
        await p.close()

    async def test_projects_are_isolated(self):
        p1, p2 = self.project(), Project(self.host, f"other-{ms_now()}")
        await p1.join("r", "runtime")
        await p1.join("m", "admin")
        await p2.join("r", "runtime")
        await p2.join("a", "agent")
        await p2.join("m", "admin")
        # p1 has no agent of its own: p2's agent is not used, p1 gets dummy data.
        await p1.send("r", query("p1-q"))
        self.assertTrue((await p1.recv("r"))["dummy"])
        self.assertEqual((await p1.recv("m"))["requestId"], "p1-q")
        for n in ("r", "a", "m"):
            self.assertTrue(await p2.quiet(n))
        # p2's agent cannot answer p1's runtime, even naming it.
        await p2.send("a", {"type": "query_response", "requestId": "p1-q",
                            "runtimeId": p1.ids["r"], "data": "leak?"})
        self.assertEqual((await p2.recv("r"))["data"], "leak?")  # only its own runtime
        self.assertTrue(await p1.quiet("r"))
        await p1.close()
        await p2.close()

    async def test_seed_client_snippets_run_unchanged_in_node(self):
        lines = node_script(self, "seed_bridge.js", self.port)
        self.assertEqual(lines[-1]["check"], "done")
        self.assertTrue(all(l["ok"] for l in lines))
        self.assertGreaterEqual(len(lines), 9)


class BridgeEvictionTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.host = Host(apps=("bridge",)).start()

    async def asyncTearDown(self):
        self.host.close()

    async def test_a_pending_request_survives_eviction(self):
        p = Project(self.host, "bridge-evicted")
        for name, t in (("r1", "runtime"), ("r2", "runtime"), ("a", "agent"), ("m", "admin")):
            await p.join(name, t)
        await p.send("r2", query("before-eviction"))
        ask = await p.recv("a")
        self.assertEqual(ask["runtimeId"], p.ids["r2"])
        await p.recv("m")
        m0 = self.host.metrics()
        status, body = self.host.admin_json("POST", "/objects/WebSocketBridge/bridge-evicted/evict")
        self.assertEqual((status, body["evicted"]), (200, True))
        detail = self.host.admin_json("GET", "/objects/WebSocketBridge/bridge-evicted")[1]
        self.assertEqual(detail["state"], "evicted")
        # The answer (no runtimeId) still reaches r2 alone, found through storage.
        await p.send("a", {"type": "query_response", "requestId": "before-eviction", "data": 42})
        got = await p.recv("r2")
        self.assertEqual((got["requestId"], got["data"]), ("before-eviction", 42))
        self.assertEqual((await p.recv("m"))["data"], 42)
        self.assertTrue(await p.quiet("r1"))
        # After another eviction, the agent is still known by its tag: no dummy data.
        self.host.admin_json("POST", "/objects/WebSocketBridge/bridge-evicted/evict")
        await p.send("r1", query("after-eviction"))
        ask = await p.recv("a")
        self.assertEqual((ask["requestId"], ask["runtimeId"]), ("after-eviction", p.ids["r1"]))
        m1 = self.host.metrics()
        cls = {"class": "WebSocketBridge"}
        self.assertGreaterEqual(metric(m1, "dohost_object_evictions_total", **cls) -
                                metric(m0, "dohost_object_evictions_total", **cls), 2)
        self.assertGreaterEqual(metric(m1, "dohost_object_rehydrations_total", **cls) -
                                metric(m0, "dohost_object_rehydrations_total", **cls), 2)
        await p.close()


class BridgeCleanupAndTokenTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.host = Host(apps=("bridge",), env={"DOHOST_BRIDGE_CLEANUP_SECONDS": "0.3",
                                                "DOHOST_BRIDGE_ADMIN_TOKEN": "bridge-token"}).start()
        self.port = self.host.apps["bridge"]

    async def asyncTearDown(self):
        self.host.close()

    async def test_cleanup_deletes_pending_requests_and_activity(self):
        p = Project(self.host, "bridge-cleanup")
        await p.join("r", "runtime")
        await p.join("a", "agent")
        await p.send("r", query("never-answered"))
        await p.recv("a")
        await p.close()
        deadline = time.time() + 10
        while True:
            h = json.loads(self.host.http("GET", "bridge", "/health?projectId=bridge-cleanup")[2])
            if h["lastActivity"] is None:
                break
            self.assertLess(time.time(), deadline, "the cleanup alarm did not run")
            await asyncio.sleep(0.05)
        detail = self.host.admin_json("GET", "/objects/WebSocketBridge/bridge-cleanup")[1]
        self.assertIsNone(detail["alarm"])
        # The project starts again from nothing: a new agent answers an old requestId only to
        # every runtime (the pending request is gone).
        await p.join("r2", "runtime")
        await p.join("a2", "agent")
        self.assertEqual(p.welcome["r2"]["clientCount"], 1)
        await p.send("a2", {"type": "query_response", "requestId": "never-answered", "data": 1})
        self.assertEqual((await p.recv("r2"))["data"], 1)
        await p.close()

    async def test_admin_needs_the_token(self):
        for q in ("", "&token=", "&token=bridge-toke", "&token=x"):
            status, _ = refused(self.port, f"/websocket?type=admin&projectId=guarded{q}")
            self.assertEqual(status, 401, q)
        p = Project(self.host, "guarded")
        await p.join("r", "runtime")
        await p.join("a", "agent")
        await p.join("m", "admin", "&token=bridge-token")
        await p.send("r", query("watched"))
        await p.recv("a")
        self.assertEqual((await p.recv("m"))["requestId"], "watched")
        await p.close()


class CrossAppTest(unittest.IsolatedAsyncioTestCase):
    """Both projectId apps in one host: same projectId, different objects."""

    async def asyncSetUp(self):
        self.host = Host(apps=("broadcaster", "bridge")).start()

    async def asyncTearDown(self):
        self.host.close()

    async def test_same_project_in_both_apps_are_separate_objects(self):
        b = await self.host.connect("broadcaster", "/websocket?type=runtime&projectId=shared")
        self.assertEqual((await recv_json(b))["payload"]["clientCount"], 1)
        r = await self.host.connect("bridge", "/websocket?type=runtime&projectId=shared")
        w = await recv_json(r)
        self.assertEqual((w["type"], w["clientCount"]), ("connected", 1))
        self.assertIn("clientType", w)
        objects = self.host.admin_json("GET", "/objects")[1]
        self.assertEqual(sorted(o["class"] for o in objects if o["name"] == "shared"),
                         ["Broadcaster", "WebSocketBridge"])
        await close_all([b, r])

    async def test_a_refused_upgrade_does_not_misroute_the_next_one(self):
        b = await self.host.connect("broadcaster", "/websocket?type=runtime&projectId=mixed")
        await recv_json(b)
        status, _ = refused(self.host.apps["broadcaster"], "/websocket?type=bogus&projectId=mixed")
        self.assertEqual(status, 400)
        r = await self.host.connect("bridge", "/websocket?type=runtime&projectId=mixed")
        w = await recv_json(r)
        self.assertEqual((w["type"], w.get("clientType"), w.get("clientCount")),
                         ("connected", "runtime", 1), "the bridge upgrade reached another app")
        await close_all([b, r])


if __name__ == "__main__":
    unittest.main()
