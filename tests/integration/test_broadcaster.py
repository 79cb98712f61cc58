"""The `broadcaster` app (Broadcaster objects, seed 001), rule by rule, over real sockets."""
import asyncio
import json
import re
import time
import unittest

from harness import CLUSTER, Host, metric, recv_json, recv_until
from project_support import (ProjectClients, close_all, ms_now, node_script, open_many,
                             raise_fd_limit, raw_request, refused)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TYPES = ("runtime", "data-agent", "admin")

raise_fd_limit()



class Project(ProjectClients):
    """Clients of one broadcaster project, by name: `await p.join("r1", "runtime")`."""

    app = "broadcaster"

    def __init__(self, host, project_id):
        super().__init__(host, project_id)
        self.barriers = 0

    @staticmethod
    def client_id(welcome):
        return welcome["payload"]["clientId"]

    def is_admin(self, name):
        return self.welcome[name]["payload"]["clientType"] == "admin"

    async def nothing_before_barrier(self, sender, names):
        """True if none of `names` received anything before the markers `sender` sends each of
        them now by id (each socket receives in order, so this needs no waiting). Admins get a
        copy of every marker; those copies are consumed too."""
        markers = []
        for n in names:
            self.barriers += 1
            markers.append(f"barrier-{self.barriers}")
            await self.send(sender, {"id": markers[-1], "type": "barrier", "to": {"id": self.ids[n]}})
        for n, ws in self.ws.items():
            if n == sender or (n not in names and not self.is_admin(n)):
                continue
            last = markers[-1] if self.is_admin(n) else markers[names.index(n)]
            while True:
                got = await recv_json(ws)
                if n in names and got.get("id") not in markers:
                    return False
                if got.get("id") == last:
                    break
        return True

    async def close(self):
        await close_all(self.ws.values())


class BroadcasterTest(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.host = Host(apps=("broadcaster",)).start()
        cls.port = cls.host.apps["broadcaster"]

    @classmethod
    def tearDownClass(cls):
        cls.host.close()

    def project(self):
        return Project(self.host, f"{self._testMethodName}-{ms_now()}")

    async def test_connected_message_has_client_id_project_count_and_time(self):
        p = self.project()
        before = ms_now()
        await p.join("r", "runtime")
        w = p.welcome["r"]
        self.assertEqual(w["type"], "connected")
        self.assertEqual(w["from"], {"type": "system"})
        self.assertTrue(UUID.match(w["id"]))
        self.assertTrue(UUID.match(w["payload"]["clientId"]))
        self.assertEqual(w["payload"]["projectId"], p.id)
        self.assertEqual(w["payload"]["clientCount"], 1)
        self.assertEqual(w["payload"]["clientType"], "runtime")
        self.assertGreaterEqual(w["payload"]["timestamp"], before - 5)
        self.assertLessEqual(w["payload"]["timestamp"], ms_now() + 5)
        await p.join("a", "data-agent")
        await p.join("m", "admin")
        self.assertEqual(p.welcome["a"]["payload"]["clientCount"], 2)
        self.assertEqual(p.welcome["m"]["payload"]["clientCount"], 3)
        self.assertEqual(len(set(p.ids.values())), 3)
        await p.close()

    async def test_to_id_reaches_only_that_client_and_the_admins(self):
        p = self.project()
        for name, t in (("r", "runtime"), ("a1", "data-agent"), ("a2", "data-agent"),
                        ("m1", "admin"), ("m2", "admin")):
            await p.join(name, t)
        msg = {"id": "q-1", "type": "graphql_query", "from": {"type": "runtime"},
               "to": {"id": p.ids["a1"]}, "payload": {"query": "query { posts { id } }"}}
        await p.send("r", msg)
        got = await p.recv("a1")
        self.assertEqual(got, {**msg, "from": {"type": "runtime", "id": p.ids["r"]}})
        self.assertEqual(await p.recv("m1"), got)
        self.assertEqual(await p.recv("m2"), got)
        self.assertTrue(await p.nothing_before_barrier("a1", ["a2", "r"]))
        # A client may address itself by id.
        await p.send("a2", {"id": "self", "type": "note", "to": {"id": p.ids["a2"]}, "payload": 1})
        self.assertEqual((await p.recv("a2"))["id"], "self")
        self.assertEqual((await p.recv("m1"))["id"], "self")
        await p.close()

    async def test_to_type_reaches_that_type_except_the_sender_and_the_admins(self):
        p = self.project()
        for name, t in (("r1", "runtime"), ("r2", "runtime"), ("a1", "data-agent"),
                        ("a2", "data-agent"), ("m", "admin")):
            await p.join(name, t)
        await p.send("r1", {"id": "d-1", "type": "get_docs", "from": {"type": "runtime"},
                            "to": {"type": "data-agent"}, "payload": {"requestId": "docs-123"}})
        for n in ("a1", "a2", "m"):
            got = await p.recv(n)
            self.assertEqual((got["id"], got["from"]["id"]), ("d-1", p.ids["r1"]))
        self.assertTrue(await p.nothing_before_barrier("a1", ["r1", "r2"]))
        await p.send("r1", {"id": "t-2", "type": "sync", "to": {"type": "runtime"}, "payload": {}})
        self.assertEqual((await p.recv("r2"))["id"], "t-2")
        self.assertEqual((await p.recv("m"))["id"], "t-2")
        self.assertTrue(await p.nothing_before_barrier("a1", ["r1", "a1", "a2"]))
        await p.close()

    async def test_to_type_admin_reaches_each_admin_once(self):
        p = self.project()
        for name, t in (("r", "runtime"), ("m1", "admin"), ("m2", "admin")):
            await p.join(name, t)
        await p.send("r", {"id": "x", "type": "alert", "to": {"type": "admin"}, "payload": {}})
        self.assertEqual((await p.recv("m1"))["id"], "x")
        self.assertEqual((await p.recv("m2"))["id"], "x")
        await p.send("r", {"id": "y", "type": "alert", "to": {"type": "admin"}, "payload": {}})
        self.assertEqual((await p.recv("m1"))["id"], "y")  # not a second copy of x
        self.assertEqual((await p.recv("m2"))["id"], "y")
        # An admin sending to the admins reaches the others, not itself.
        await p.send("m1", {"id": "z", "type": "alert", "to": {"type": "admin"}, "payload": {}})
        self.assertEqual((await p.recv("m2"))["id"], "z")
        self.assertTrue(await p.nothing_before_barrier("r", ["m1"]))
        await p.close()

    async def test_without_to_every_other_client_but_not_admins(self):
        p = self.project()
        for name, t in (("r1", "runtime"), ("r2", "runtime"), ("a", "data-agent"),
                        ("m", "admin")):
            await p.join(name, t)
        msg = {"id": "b-1", "type": "announcement", "from": {"type": "runtime"},
               "payload": {"message": "Server will restart in 5 minutes"}}
        await p.send("r1", msg)
        for n in ("r2", "a"):
            self.assertEqual(await p.recv(n), {**msg, "from": {"type": "runtime", "id": p.ids["r1"]}})
        self.assertTrue(await p.nothing_before_barrier("a", ["m", "r1"]))
        # An admin's broadcast goes to the runtimes and agents.
        await p.send("m", {"id": "b-2", "type": "announcement", "payload": {}})
        for n in ("r1", "r2", "a"):
            got = await p.recv(n)
            self.assertEqual((got["id"], got["from"]), ("b-2", {"type": "admin", "id": p.ids["m"]}))
        await p.close()

    async def test_the_server_sets_from_whatever_the_client_wrote(self):
        p = self.project()
        await p.join("r", "runtime")
        await p.join("a", "data-agent")
        forged = [{"type": "admin", "id": "someone-else", "name": "kept"}, "system", None, 42]
        for i, f in enumerate(forged):
            await p.send("r", {"id": f"f-{i}", "type": "t", "from": f, "to": {"type": "data-agent"},
                               "payload": {}})
            got = await p.recv("a")
            self.assertEqual(got["from"]["id"], p.ids["r"])
            self.assertEqual(got["from"]["type"], "runtime")
        # Without `from` or `id` at all: the server adds both.
        await p.send("r", {"type": "t", "payload": {}})
        got = await p.recv("a")
        self.assertEqual(got["from"], {"type": "runtime", "id": p.ids["r"]})
        self.assertTrue(UUID.match(got["id"]))
        await p.close()

    async def test_client_left_goes_to_every_remaining_client(self):
        p = self.project()
        for name, t in (("r", "runtime"), ("a", "data-agent"), ("m", "admin")):
            await p.join(name, t)
        await p.ws["a"].close()
        for n in ("r", "m"):
            left = await p.recv(n)
            self.assertEqual(left["type"], "client_left")
            self.assertEqual(left["from"], {"type": "system"})
            self.assertEqual(left["payload"]["clientId"], p.ids["a"])
            self.assertEqual(left["payload"]["clientType"], "data-agent")
            self.assertEqual(left["payload"]["clientCount"], 2)
            self.assertEqual(left["payload"]["projectId"], p.id)
        # An abrupt disconnect (no close frame) counts too.
        p.ws["r"].transport.abort()
        left = await p.recv("m")
        self.assertEqual((left["type"], left["payload"]["clientId"], left["payload"]["clientCount"]),
                         ("client_left", p.ids["r"], 1))
        await p.close()

    async def test_errors_leave_the_socket_usable(self):
        p = self.project()
        await p.join("r", "runtime")
        await p.join("a", "data-agent")
        cases = [
            ("{not json", "invalid_json", None),
            ('["an", "array"]', "invalid_message", None),
            ({"id": "m1", "payload": {}}, "missing_type", "m1"),
            ({"id": "m2", "type": "", "payload": {}}, "missing_type", "m2"),
            ({"id": "m3", "type": "q", "to": {"id": "nobody"}}, "unknown_target", "m3"),
            ({"id": "m4", "type": "q", "to": {"type": "system"}}, "unknown_target", "m4"),
            ({"id": "m5", "type": "q", "to": {"type": "admin"}}, "unknown_target", "m5"),
            ({"id": "m6", "type": "q", "to": {}}, "invalid_target", "m6"),
            ({"id": "m7", "type": "q", "to": "data-agent"}, "invalid_target", "m7"),
        ]
        for msg, code, message_id in cases:
            await p.send("r", msg)
            err = await p.recv("r")
            self.assertEqual((err["type"], err["payload"]["code"]), ("error", code), msg)
            self.assertEqual(err["from"], {"type": "system"})
            self.assertIsInstance(err["payload"]["message"], str)
            self.assertEqual(err["payload"]["projectId"], p.id)
            self.assertEqual(err["payload"].get("messageId"), message_id)
        self.assertTrue(await p.nothing_before_barrier("r", ["a"]))
        await p.send("r", {"id": "ok", "type": "q", "to": {"type": "data-agent"}, "payload": 1})
        self.assertEqual((await p.recv("a"))["id"], "ok")
        self.assertTrue(p.ws["r"].open)
        await p.close()

    async def test_refused_upgrades_answer_400_json_and_a_plain_get_426(self):
        status, body = refused(self.port, "/websocket?type=runtime")
        self.assertEqual(status, 400)
        self.assertIn("projectId", body["error"])
        status, body = refused(self.port, "/websocket?type=runtime&projectId=")
        self.assertEqual(status, 400)
        status, body = refused(self.port, "/websocket?projectId=p")
        self.assertEqual((status, body["error"]), (400, "Missing type parameter"))
        self.assertEqual(body["validTypes"], list(TYPES))
        for bad in ("agent", "system", "RUNTIME"):
            status, body = refused(self.port, f"/websocket?type={bad}&projectId=p")
            self.assertEqual((status, body["error"]), (400, "Invalid type parameter"))
        status, hdrs, body = raw_request(self.port, "/websocket?type=runtime&projectId=p",
                                         upgrade=False)
        self.assertEqual(status, 426)
        self.assertEqual(json.loads(body), {"error": "Expected Upgrade: websocket"})
        status, _, _ = self.host.http("GET", "broadcaster", "/websocket")
        self.assertEqual(status, 426)
        status, _, body = self.host.http("GET", "broadcaster", "/elsewhere")
        self.assertEqual((status, json.loads(body)), (404, {"error": "Not found"}))
        # The host still serves upgrades afterwards.
        p = self.project()
        await p.join("r", "runtime")
        await p.close()

    async def test_status_lists_clients_and_counts(self):
        p = self.project()
        for name, t in (("r", "runtime"), ("a1", "data-agent"), ("a2", "data-agent"),
                        ("m", "admin")):
            await p.join(name, t)
        status, hdrs, body = self.host.http("GET", "broadcaster", f"/status?projectId={p.id}")
        self.assertEqual(status, 200)
        self.assertTrue(hdrs["content-type"].startswith("application/json"))
        s = json.loads(body)
        self.assertEqual(s["projectId"], p.id)
        self.assertEqual(s["clientCount"], 4)
        self.assertEqual(s["counts"], {"runtime": 1, "data-agent": 2, "admin": 1})
        self.assertEqual([(c["id"], c["type"]) for c in s["clients"]],
                         [(p.ids[n], t) for n, t in (("r", "runtime"), ("a1", "data-agent"),
                                                     ("a2", "data-agent"), ("m", "admin"))])
        for c in s["clients"]:
            self.assertLessEqual(c["connectedAt"], s["timestamp"])
            self.assertEqual(c["connectedFor"], s["timestamp"] - c["connectedAt"])
        self.assertIsInstance(s["lastActivity"], int)
        await p.ws["a2"].close()
        await p.recv("r")  # client_left
        s = json.loads(self.host.http("GET", "broadcaster", f"/status?projectId={p.id}")[2])
        self.assertEqual((s["clientCount"], s["counts"]["data-agent"]), (3, 1))
        await p.close()

    async def test_health_with_and_without_project(self):
        status, _, body = self.host.http("GET", "broadcaster", "/health")
        h = json.loads(body)
        self.assertEqual((status, h["status"], h["service"]), (200, "healthy", "broadcaster"))
        p = self.project()
        h = json.loads(self.host.http("GET", "broadcaster", f"/health?projectId={p.id}")[2])
        self.assertEqual((h["status"], h["projectId"], h["clientCount"], h["lastActivity"]),
                         ("healthy", p.id, 0, None))
        await p.join("r", "runtime")
        await p.join("a", "data-agent")
        before = ms_now()
        await p.send("r", {"type": "t", "to": {"type": "data-agent"}, "payload": {}})
        await p.recv("a")
        h = json.loads(self.host.http("GET", "broadcaster", f"/health?projectId={p.id}")[2])
        self.assertEqual(h["clientCount"], 2)
        self.assertGreaterEqual(h["lastActivity"], before - 5)
        self.assertLessEqual(h["lastActivity"], h["timestamp"])
        status, _, body = self.host.http("GET", "broadcaster", "/status")
        self.assertEqual(status, 400)
        self.assertIn("projectId", json.loads(body)["error"])
        await p.close()

    async def test_projects_are_isolated(self):
        p1, p2 = self.project(), Project(self.host, f"other-{ms_now()}")
        for p in (p1, p2):
            await p.join("r", "runtime")
            await p.join("a", "data-agent")
            await p.join("m", "admin")
        self.assertEqual(p2.welcome["m"]["payload"]["clientCount"], 3)
        await p1.send("r", {"id": "b", "type": "announcement", "payload": {}})
        await p1.send("r", {"id": "t", "type": "q", "to": {"type": "data-agent"}, "payload": {}})
        self.assertEqual((await p1.recv("a"))["id"], "b")
        self.assertEqual((await p1.recv("a"))["id"], "t")
        # A client of another project is unknown here, even by its id.
        await p1.send("r", {"id": "x", "type": "q", "to": {"id": p2.ids["a"]}, "payload": {}})
        err = await p1.recv("r")
        self.assertEqual(err["payload"]["code"], "unknown_target")
        self.assertTrue(await p2.nothing_before_barrier("r", ["a", "m"]))
        s2 = json.loads(self.host.http("GET", "broadcaster", f"/status?projectId={p2.id}")[2])
        self.assertEqual(sorted(c["id"] for c in s2["clients"]), sorted(p2.ids.values()))
        await p1.close()
        await p2.close()

    async def test_seed_client_snippets_run_unchanged_in_node(self):
        # The snippets use projectId=user123; no other test here uses it.
        lines = node_script(self, "seed_broadcaster.js", self.port)
        self.assertEqual(lines[-1]["check"], "done")
        self.assertTrue(all(l["ok"] for l in lines))
        self.assertGreaterEqual(len(lines), 12)


class BroadcasterEvictionTest(unittest.IsolatedAsyncioTestCase):
    """The object is dropped from memory in the middle of a conversation; its clients, their
    ids and types come back from the socket attachments and tags."""

    async def asyncSetUp(self):
        self.host = Host(apps=("broadcaster",)).start()

    async def asyncTearDown(self):
        self.host.close()

    async def test_routing_survives_eviction(self):
        p = Project(self.host, "evicted-project")
        for name, t in (("r", "runtime"), ("a1", "data-agent"), ("a2", "data-agent"),
                        ("m", "admin")):
            await p.join(name, t)
        await p.send("r", {"id": "before", "type": "q", "to": {"id": p.ids["a1"]}, "payload": 1})
        self.assertEqual((await p.recv("a1"))["id"], "before")
        self.assertEqual((await p.recv("m"))["id"], "before")
        m0 = self.host.metrics()
        status, body = self.host.admin_json("POST", "/objects/Broadcaster/evicted-project/evict")
        self.assertEqual((status, body["evicted"]), (200, True))
        status, detail = self.host.admin_json("GET", "/objects/Broadcaster/evicted-project")
        self.assertEqual((detail["state"], detail["sockets"]), ("evicted", 4))
        attachments = {s["attachment"]["id"]: s for s in detail["socketList"]}
        self.assertEqual(set(attachments), set(p.ids.values()))
        for name, t in (("r", "runtime"), ("a1", "data-agent"), ("m", "admin")):
            sock = attachments[p.ids[name]]
            self.assertEqual(sock["attachment"]["type"], t)
            self.assertIn(t, sock["tags"])
            self.assertIn(f"client:{p.ids[name]}", sock["tags"])

        # After the rebuild: by id, by type, broadcast, forged from, admin copies.
        await p.send("a2", {"id": "after", "type": "r", "from": {"type": "admin", "id": "x"},
                            "to": {"id": p.ids["r"]}, "payload": 2})
        got = await p.recv("r")
        self.assertEqual((got["id"], got["from"]), ("after", {"type": "data-agent", "id": p.ids["a2"]}))
        self.assertEqual((await p.recv("m"))["id"], "after")
        self.assertTrue(await p.nothing_before_barrier("r", ["a1"]))
        await p.send("r", {"id": "by-type", "type": "q", "to": {"type": "data-agent"}})
        for n in ("a1", "a2", "m"):
            self.assertEqual((await p.recv(n))["id"], "by-type")
        m1 = self.host.metrics()
        cls = {"class": "Broadcaster"}
        self.assertGreaterEqual(metric(m1, "dohost_object_evictions_total", **cls) -
                                metric(m0, "dohost_object_evictions_total", **cls), 1)
        self.assertGreaterEqual(metric(m1, "dohost_object_rehydrations_total", **cls) -
                                metric(m0, "dohost_object_rehydrations_total", **cls), 1)
        # client_left after another eviction still names the client.
        self.host.admin_json("POST", "/objects/Broadcaster/evicted-project/evict")
        await p.ws["a1"].close()
        left = await recv_until(p.ws["r"], lambda m: m["type"] == "client_left")
        self.assertEqual((left["payload"]["clientId"], left["payload"]["clientCount"]),
                         (p.ids["a1"], 3))
        await p.close()

    async def test_idle_eviction_between_messages(self):
        self.host.close()
        self.host = Host(apps=("broadcaster",), idle_evict=0.2).start()
        p = Project(self.host, "idle-project")
        await p.join("r", "runtime")
        await p.join("a", "data-agent")
        await p.join("m", "admin")
        cls = {"class": "Broadcaster"}
        for round_ in range(3):
            before = metric(self.host.metrics(), "dohost_object_evictions_total", **cls)
            deadline = time.time() + 5
            while metric(self.host.metrics(), "dohost_object_evictions_total", **cls) <= before:
                self.assertLess(time.time(), deadline, "the idle object was not evicted")
                await asyncio.sleep(0.05)
            await p.send("r", {"id": f"round-{round_}", "type": "q", "to": {"id": p.ids["a"]}})
            got = await p.recv("a")
            self.assertEqual((got["id"], got["from"]["id"]), (f"round-{round_}", p.ids["r"]))
            self.assertEqual((await p.recv("m"))["id"], f"round-{round_}")
        self.assertGreaterEqual(
            metric(self.host.metrics(), "dohost_object_rehydrations_total", **cls), 3)
        await p.close()


class BroadcasterCleanupTest(unittest.IsolatedAsyncioTestCase):
    """The inactivity cleanup: an alarm armed when the last client leaves, which deletes the
    project's storage if nobody came back (delay from DOHOST_BROADCASTER_CLEANUP_SECONDS)."""

    async def asyncSetUp(self):
        self.host = Host(apps=("broadcaster",),
                         env={"DOHOST_BROADCASTER_CLEANUP_SECONDS": "0.5"}).start()

    async def asyncTearDown(self):
        self.host.close()

    def detail(self, name):
        return self.host.admin_json("GET", f"/objects/Broadcaster/{name}")[1]

    def health(self, name):
        return json.loads(self.host.http("GET", "broadcaster", f"/health?projectId={name}")[2])

    def fired(self):
        return metric(self.host.metrics(), "dohost_alarms_fired_total", **{"class": "Broadcaster"})

    async def wait_for_alarm_at_least(self, name, at):
        deadline = time.time() + 5
        while (alarm := self.detail(name)["alarm"]) is None or alarm < at:
            self.assertLess(time.time(), deadline, "the cleanup alarm was not moved")
            await asyncio.sleep(0.02)
        return alarm

    async def test_alarm_deletes_storage_when_nobody_is_left(self):
        p = Project(self.host, "cleanup-project")
        await p.join("r", "runtime")
        await p.join("a", "data-agent")
        self.assertIsNotNone(self.detail(p.id)["alarm"])  # armed by the first client
        await p.ws["a"].close()
        await p.recv("r")
        closed_at = ms_now()
        await p.ws["r"].close()
        # The last client's departure moves the alarm to departure + 0.5 s.
        alarm = await self.wait_for_alarm_at_least(p.id, closed_at + 500 - 50)
        self.assertLessEqual(alarm, ms_now() + 500)
        self.assertIsInstance(self.health(p.id)["lastActivity"], int)
        fired = self.fired()
        deadline = time.time() + 10
        while self.health(p.id)["lastActivity"] is not None:
            self.assertLess(time.time(), deadline, "the cleanup alarm did not delete the storage")
            await asyncio.sleep(0.05)
        self.assertIsNone(self.detail(p.id)["alarm"])
        self.assertGreater(self.fired(), fired)
        # Evicted and rebuilt, the object still has nothing stored.
        self.host.admin_json("POST", f"/objects/Broadcaster/{p.id}/evict")
        self.assertIsNone(self.health(p.id)["lastActivity"])
        # The project works as new.
        await p.join("r2", "runtime")
        self.assertEqual(p.welcome["r2"]["payload"]["clientCount"], 1)
        await p.close()

    async def test_connected_clients_prevent_cleanup(self):
        p = Project(self.host, "comeback-project")
        await p.join("r", "runtime")
        closed_at = ms_now()
        await p.ws["r"].close()
        await self.wait_for_alarm_at_least(p.id, closed_at + 450)
        await p.join("r2", "runtime")  # back before the cleanup
        await p.join("a", "data-agent")
        # The alarm fires (at least twice) while clients are connected: it only re-arms.
        fired = self.fired()
        deadline = time.time() + 10
        while self.fired() < fired + 2:
            self.assertLess(time.time(), deadline, "the alarm did not fire")
            await asyncio.sleep(0.05)
        self.assertIsNotNone(self.detail(p.id)["alarm"])
        self.assertIsInstance(self.health(p.id)["lastActivity"], int)
        await p.send("r2", {"id": "still", "type": "q", "to": {"id": p.ids["a"]}})
        self.assertEqual((await p.recv("a"))["id"], "still")
        await p.close()

    async def test_a_killed_host_still_cleans_up_after_restart(self):
        p = Project(self.host, "killed-project")
        await p.join("r", "runtime")
        self.assertIsNotNone(self.detail(p.id)["alarm"])
        self.host.kill()  # no close events run
        self.host.start()
        deadline = time.time() + 10
        while self.health(p.id)["lastActivity"] is not None:
            self.assertLess(time.time(), deadline, "the project was not cleaned up")
            await asyncio.sleep(0.05)
        self.assertIsNone(self.detail(p.id)["alarm"])
        await close_all(p.ws.values())


class BroadcasterRestartCleanupTest(unittest.IsolatedAsyncioTestCase):
    """An alarm that fires right after a restart, before the project's clients are back, finds
    no client but recent activity: the project is kept for the rest of the delay (the soak
    found projects deleted this way, their acknowledged activity with them)."""

    async def asyncSetUp(self):
        self.host = Host(apps=("broadcaster",),
                         env={"DOHOST_BROADCASTER_CLEANUP_SECONDS": "3"}).start()

    async def asyncTearDown(self):
        self.host.close()

    def health(self, name):
        return json.loads(self.host.http("GET", "broadcaster", f"/health?projectId={name}")[2])

    def alarm(self, name):
        return self.host.admin_json("GET", f"/objects/Broadcaster/{name}")[1]["alarm"]

    async def test_an_alarm_right_after_a_restart_keeps_a_recently_active_project(self):
        p = Project(self.host, "restart-project")
        await p.join("r", "runtime")
        await p.join("a", "data-agent")
        first = self.alarm(p.id)  # armed by the first client: connect + 3 s
        # Activity until just before that alarm, then the host dies with the clients on it.
        while ms_now() < first - 400:
            await p.send("r", {"id": "m", "type": "q", "to": {"id": p.ids["a"]}})
            await p.recv("a")
            await asyncio.sleep(0.1)
        last = self.health(p.id)["lastActivity"]
        self.host.kill()
        self.host.start()
        # The alarm is due: it runs with no client connected, and must not delete the project.
        deadline = time.time() + 10
        while (alarm := self.alarm(p.id)) is not None and alarm <= first:
            self.assertLess(time.time(), deadline, "the alarm did not run")
            await asyncio.sleep(0.05)
        self.assertIsNotNone(alarm, "the project was deleted")
        # Activity is stored at most once a second: counted from what was stored.
        stored = self.health(p.id)["lastActivity"]
        self.assertGreaterEqual(stored, last - 1001)
        self.assertEqual(alarm, stored + 3000)
        # With nobody back for a whole delay it goes.
        deadline = time.time() + 15
        while self.health(p.id)["lastActivity"] is not None:
            self.assertLess(time.time(), deadline, "the project was never cleaned up")
            await asyncio.sleep(0.1)
        self.assertIsNone(self.alarm(p.id))
        await close_all(p.ws.values())


class BroadcasterSettingsTest(unittest.TestCase):
    def test_a_bad_cleanup_delay_stops_the_host_with_exit_code_2(self):
        for value in ("soon", "-1", "5s", ""):
            host = Host(apps=("broadcaster",), env={"DOHOST_BROADCASTER_CLEANUP_SECONDS": value})
            try:
                with self.assertRaisesRegex(RuntimeError, "exited with 2: .*cleanup_seconds"):
                    host.start()
            finally:
                host.close()


class BroadcasterAdminTokenTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.host = Host(apps=("broadcaster",),
                         env={"DOHOST_BROADCASTER_ADMIN_TOKEN": "s3cret-token"}).start()
        self.port = self.host.apps["broadcaster"]

    async def asyncTearDown(self):
        self.host.close()

    async def test_admin_upgrade_needs_the_token(self):
        for query in ("", "&token=", "&token=wrong", "&token=s3cret-toke", "&token=s3cret-token2"):
            status, body = refused(self.port, f"/websocket?type=admin&projectId=guarded{query}")
            self.assertEqual(status, 401, query)
            self.assertIn("error", body)
        status, _ = refused(self.port, "/websocket?type=admin&projectId=guarded",
                            headers={"Authorization": "Bearer nope"})
        self.assertEqual(status, 401)
        p = Project(self.host, "guarded")
        await p.join("r", "runtime")  # other types need no token
        await p.join("m", "admin", "&token=s3cret-token")
        self.assertEqual(p.welcome["m"]["payload"]["clientType"], "admin")
        await p.send("r", {"id": "seen", "type": "q", "to": {"type": "admin"}})
        self.assertEqual((await p.recv("m"))["id"], "seen")
        ws = await self.host.connect("broadcaster", "/websocket?type=admin&projectId=guarded",
                                     headers={"Authorization": "Bearer s3cret-token"})
        self.assertEqual((await recv_json(ws))["payload"]["clientType"], "admin")
        await ws.close()
        await p.close()


class BroadcasterScaleTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        # asyncio's debug mode (on in these tests) triples the time 1,000 clients take.
        asyncio.get_running_loop().set_debug(False)
        self.host = Host(apps=("broadcaster",)).start()

    async def asyncTearDown(self):
        self.host.close()

    async def test_a_thousand_clients_receive_one_broadcast(self):
        n = 1000
        project = "crowd"
        paths = [f"/websocket?type={'runtime' if i % 2 else 'data-agent'}&projectId={project}"
                 for i in range(n)]
        clients = await open_many(self.host, "broadcaster", paths)
        welcomes = await asyncio.gather(*(recv_json(ws, 20) for ws in clients))
        ids = [w["payload"]["clientId"] for w in welcomes]
        self.assertEqual(len(set(ids)), n)
        self.assertEqual(max(w["payload"]["clientCount"] for w in welcomes), n)
        status = json.loads(self.host.http("GET", "broadcaster", f"/status?projectId={project}")[2])
        self.assertEqual(status["clientCount"], n)
        sender = await self.host.connect("broadcaster", f"/websocket?type=admin&projectId={project}")
        await recv_json(sender)
        # Over a cluster, the owner's count: an edge counts again what it writes to its clients.
        counter = self.host.owner_of("Broadcaster", project) if CLUSTER else self.host
        out0 = metric(counter.metrics(), "dohost_websocket_messages_out_total",
                      **{"class": "Broadcaster"})
        await sender.send(json.dumps({"id": "to-all", "type": "announcement",
                                      "payload": {"message": "hello, crowd"}}))
        got = await asyncio.gather(*(recv_json(ws, 20) for ws in clients))
        for g in got:
            self.assertEqual((g["id"], g["payload"]), ("to-all", {"message": "hello, crowd"}))
            self.assertEqual(g["from"]["type"], "admin")
        out1 = metric(counter.metrics(), "dohost_websocket_messages_out_total",
                      **{"class": "Broadcaster"})
        self.assertEqual(out1 - out0, n)
        # Leaving: stop the host first, so 1,000 departures do not each notify the rest.
        self.host.stop()
        await close_all(clients + [sender])


@unittest.skipUnless(CLUSTER, "needs a cluster (DOHOST_TEST_CLUSTER=3)")
class BroadcasterClusterTest(unittest.IsolatedAsyncioTestCase):
    """One project with clients on every host of the cluster: the routing rules of seed 001
    hold across hosts, and the object is live on one host, on which every host agrees."""

    @classmethod
    def setUpClass(cls):
        cls.host = Host(apps=("broadcaster",)).start()

    @classmethod
    def tearDownClass(cls):
        cls.host.close()

    async def test_clients_on_every_host_share_one_live_object(self):
        p = Project(self.host, f"spread-{ms_now()}")
        hosts = self.host.hosts
        for i, h in enumerate(hosts):
            p.host = h
            for t in ("runtime", "data-agent", "admin"):
                await p.join(f"{t}{i}", t)
        self.assertEqual(p.welcome[f"admin{len(hosts) - 1}"]["payload"]["clientCount"], 3 * len(hosts))
        admins = [f"admin{i}" for i in range(len(hosts))]
        others = [n for n in p.ws if n not in admins]
        # Without `to`: every other client, admins excepted.
        await p.send("runtime0", {"id": "b-1", "type": "announcement", "payload": {}})
        for n in others[1:]:
            got = await p.recv(n)
            self.assertEqual((got["id"], got["from"]["id"]), ("b-1", p.ids["runtime0"]))
        self.assertTrue(await p.nothing_before_barrier("data-agent1", admins + ["runtime0"]))
        # To one id on another host: that client and every admin.
        await p.send("runtime0", {"id": "q-1", "type": "q", "to": {"id": p.ids["data-agent2"]}})
        for n in ["data-agent2"] + admins:
            self.assertEqual((await p.recv(n))["id"], "q-1")
        self.assertTrue(await p.nothing_before_barrier("data-agent1", [n for n in others if n not in (
            "data-agent1", "data-agent2")]))
        # To a type: every client of that type but the sender, and every admin.
        await p.send("data-agent0", {"id": "t-1", "type": "sync", "to": {"type": "data-agent"}})
        for n in ["data-agent1", "data-agent2"] + admins:
            self.assertEqual((await p.recv(n))["id"], "t-1")
        self.assertTrue(await p.nothing_before_barrier("data-agent1", [f"runtime{i}" for i in range(3)] + ["data-agent0"]))
        # An admin's message goes to the runtimes and agents of every host.
        await p.send("admin1", {"id": "a-1", "type": "announcement", "payload": {}})
        for n in others:
            self.assertEqual((await p.recv(n))["id"], "a-1")
        # Live on exactly one host, and every host names that host as the owner.
        owners, live = set(), []
        for h in hosts:
            _, objects = h.admin_json("GET", "/objects?class=Broadcaster")
            mine = [o for o in objects if o.get("name") == p.id]
            owners |= {o["host"] for o in mine}
            live += [h.host_id for o in mine if o["state"] == "live"]
            status, detail = h.admin_json("GET", "/cluster")
            self.assertEqual(status, 200)
        self.assertEqual(len(live), 1, live)
        self.assertEqual(owners, set(live))
        await p.close()


if __name__ == "__main__":
    unittest.main()
