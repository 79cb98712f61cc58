"""Named schedules through the real host (the test plugin's TestEcho sets them over HTTP):
delivery to onSchedule after an eviction and after a host restart, retries with backoff and
the failure kept visible, the API's errors, and what the admin API and doctl show report.
Second-level intervals and a short retry base keep it fast."""
import json
import subprocess
import time
import unittest

from harness import Host, binary

DOCTL = binary("doctl")


def run_doctl(*args):
    p = subprocess.run([DOCTL, *args], capture_output=True, text=True, timeout=20)
    return p.returncode, p.stdout, p.stderr


class SchedulesTest(unittest.TestCase):
    def setUp(self):
        self.host = Host(test_plugin=True, idle_evict=0.5,
                         args=["--alarm-retry-base", "0.2", "--alarm-max-retries", "2",
                               "--max-schedules-per-object", "3"])
        self.host.start()
        self.addCleanup(self.host.close)

    def set(self, obj, **body):
        status, _, data = self.host.http("POST", "testapp", f"/o/{obj}/schedule", body=body)
        return status, json.loads(data)

    def events(self, obj, kind="schedule"):
        status, _, data = self.host.http("GET", "testapp", f"/o/{obj}/events")
        self.assertEqual(status, 200)
        return [e for e in json.loads(data) if e["event"] == kind]

    def failed_runs(self, obj):
        status, _, data = self.host.http("GET", "testapp", f"/o/{obj}/failed-runs")
        self.assertEqual(status, 200)
        return json.loads(data)

    def wait_events(self, obj, n, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.events(obj)
            if len(got) >= n:
                return got
            time.sleep(0.1)
        self.fail(f"{obj}: fewer than {n} schedule runs: {self.events(obj)}")

    def detail(self, obj):
        status, detail = self.host.admin_json("GET", f"/objects/TestEcho/{obj}")
        self.assertEqual(status, 200, detail)
        return detail

    def test_a_schedule_wakes_an_evicted_object(self):
        self.assertEqual(self.set("evicted", name="later", inMs=2000, payload="p1"),
                         (200, {"ok": True}))
        detail = self.detail("evicted")
        [s] = detail["schedules"]
        self.assertEqual((s["name"], s["kind"], s["retryCount"], s["lastError"]),
                         ("later", "once", 0, None))
        self.assertEqual(detail["nextSchedule"], s["nextRun"])
        deadline = time.time() + 5
        while self.detail("evicted")["state"] != "evicted":
            self.assertLess(time.time(), deadline, "never evicted")
            time.sleep(0.1)
        [run] = self.wait_events("evicted", 1)
        self.assertEqual((run["name"], run["payload"], run["retry"]), ("later", "p1", 0))
        self.assertGreaterEqual(run["at"], s["nextRun"])
        self.assertEqual(self.detail("evicted")["schedules"], [])

    def test_schedules_survive_a_restart(self):
        self.assertEqual(self.set("restarted", name="tick", everyMs=1000)[0], 200)
        self.assertEqual(self.set("restarted", name="once", inMs=1500, payload="p2")[0], 200)
        self.host.stop()
        time.sleep(2)  # "once" is due while the host is down: it runs at the start
        self.host.start()
        runs = self.wait_events("restarted", 2)
        self.assertIn(("once", "p2"), [(r["name"], r["payload"]) for r in runs])
        ticks = [r for r in self.wait_events("restarted", 4) if r["name"] == "tick"]
        # The interval keeps its grid: planned times one second apart, missed ones skipped.
        planned = [r["scheduledTime"] for r in ticks]
        self.assertTrue(all((b - a) % 1000 == 0 and b > a for a, b in zip(planned, planned[1:])),
                        planned)

    def test_a_failing_schedule_is_retried_then_kept_with_its_error(self):
        self.assertEqual(self.set("failing", name="bad", inMs=100, payload="fail")[0], 200)
        deadline = time.time() + 10
        while True:
            [s] = self.detail("failing")["schedules"]
            if s["nextRun"] is None:
                break
            self.assertLess(time.time(), deadline, s)
            time.sleep(0.1)
        # Each failed run's own record rolled back with it: none is in the object's storage.
        self.assertEqual(self.events("failing"), [])
        self.assertEqual([r["retry"] for r in self.failed_runs("failing")], [0, 1, 2])
        deadline = time.time() + 5
        while True:
            [s] = self.detail("failing")["schedules"]
            if s["nextRun"] is None:
                break
            self.assertLess(time.time(), deadline, s)
            time.sleep(0.1)
        self.assertEqual(s["retryCount"], 2)
        self.assertEqual(s["lastError"], "the schedule fails on purpose")
        time.sleep(0.5)
        self.assertEqual(len(self.failed_runs("failing")), 3)
        # doctl show reads the object's file: the schedule with its error.
        code, out, err = run_doctl("--data", self.host.data, "show", "TestEcho", "failing")
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"(?m)^schedules\s+1$")
        self.assertRegex(out, r"(?m)^SCHEDULE\s+KIND\s+NEXT RUN\s+RETRIES\s+LAST ERROR$")
        self.assertRegex(out, r"(?m)^bad\s+once\s+- \(given up\)\s+2\s+the schedule fails on purpose$")
        code, out, err = run_doctl("--data", self.host.data, "show", "TestEcho", "failing", "--json")
        self.assertEqual(code, 0, err)
        [s] = json.loads(out)["schedules"]
        self.assertEqual((s["name"], s["nextRun"], s["retryCount"]), ("bad", None, 2))

    def test_doctl_show_lists_interval_and_cron_schedules(self):
        self.assertEqual(self.set("listed", name="tick", everyMs=3600000)[0], 200)
        self.assertEqual(self.set("listed", name="nightly", cron="30 2 * * *")[0], 200)
        time.sleep(1)  # evicted, so the file is all there is
        code, out, err = run_doctl("--data", self.host.data, "show", "TestEcho", "listed")
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"(?m)^nightly\s+cron 30 2 \* \* \*\s+\d{4}-\d\d-\d\dT02:30:00\.000Z \(in ")
        self.assertRegex(out, r"(?m)^tick\s+every 3600s\s+\d{4}-.*\s+0\s+-$")
        [cron] = [s for s in self.detail("listed")["schedules"] if s["name"] == "nightly"]
        self.assertEqual(cron["cron"], "30 2 * * *")
        self.assertEqual(cron["nextRun"] % 86400000, (2 * 60 + 30) * 60000)

    def test_errors_store_nothing_and_the_limit_holds(self):
        status, body = self.set("errors", name="c", cron="* * * * 8")
        self.assertEqual(status, 400)
        self.assertEqual(body["error"], "bad cron expression: cron day-of-week field: '8' is "
                                        "outside 0-7")
        self.assertEqual(self.set("errors", name="bad name", inMs=10)[0], 400)
        self.assertEqual(self.set("errors", name="fast", everyMs=10)[0], 400)
        for name in ("a", "b", "c"):
            self.assertEqual(self.set("errors", name=name, inMs=60000)[0], 200)
        status, body = self.set("errors", name="d", inMs=60000)
        self.assertEqual((status, body["error"]),
                         (400, "an object has at most 3 schedules (max_schedules_per_object)"))
        status, _, data = self.host.http("POST", "testapp", "/o/errors/cancel?name=a")
        self.assertEqual(json.loads(data), {"cancelled": True})
        self.assertEqual(self.set("errors", name="d", inMs=60000)[0], 200)
        self.assertEqual(sorted(s["name"] for s in self.detail("errors")["schedules"]),
                         ["b", "c", "d"])


if __name__ == "__main__":
    unittest.main()
