"""Every number the host and its apps read has a type and a range: a value just past the range,
from a flag or from the config file (or the environment, for app settings), stops the host with
exit code 2 and one line naming the setting; values at the limits are accepted and serve."""
import os
import subprocess
import tempfile
import unittest

from harness import APPS, Host, binary, free_port

# (config key, min, max, whole numbers only): the ranges docs/operations.md lists.
HOST_NUMBERS = [
    ("idle_evict", 0, 31536000, False),
    ("max_message_bytes", 1, 1 << 30, True),
    ("max_queued_bytes", 1, 16 << 30, True),
    ("max_sockets_per_object", 1, 1000000, True),
    ("max_attachment_bytes", 0, 16 << 20, True),
    ("max_schedules_per_object", 0, 1000000, True),
    ("max_request_body_bytes", 0, 1 << 30, True),
    ("ping_interval", 0, 32767, True),
    ("ping_timeout", 1, 32767, True),
    ("alarm_retry_base", 0.001, 86400, False),
    ("alarm_max_retries", 0, 30, True),
    ("object_failure_limit", 1, 1000000, True),
    ("object_failure_window", 0.001, 86400, False),
    ("object_failure_backoff", 0.001, 86400, False),
    ("object_failure_backoff_max", 0.001, 31536000, False),
]

# (app, key, min, max, whole)
APP_NUMBERS = [
    ("channels", "max_connections", 1, 1000000, True),
    ("channels", "shards", 1, 256, True),
    ("hopeflow", "ack_timeout_ms", 1, 600000, True),
    ("broadcaster", "cleanup_seconds", 0, 315360000, False),
    ("bridge", "cleanup_seconds", 0, 315360000, False),
]


def past_the_limits(low, high, whole):
    """Values just outside [low, high], and a fraction for whole-number settings."""
    step = 1 if whole else (0.001 if low > 0 else 0.000001)
    values = [repr(low - step) if not whole else str(low - 1), str(high + 1) if whole else repr(high + 0.001)]
    if whole:
        values.append(str(low + 0.5))
    return values


def flag(key):
    return "--" + key.replace("_", "-")


def run(args, config=None, env=None, apps_on=()):
    data = tempfile.mkdtemp(prefix="dohost-settings-")
    cmd = [binary(), "--data", data, "--admin", f"127.0.0.1:{free_port()}", "--log-level", "warn"]
    for app in APPS:
        cmd += ["--app", f"{app}=127.0.0.1:{free_port()}" if app in apps_on else f"{app}=off"]
    if config is not None:
        path = os.path.join(data, "dohost.toml")
        with open(path, "w") as f:
            f.write(config)
        cmd += ["--config", path]
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=20,
                       env=dict(os.environ, JWT_SECRET="settings-test", **(env or {})))
    return r.returncode, r.stderr.strip()


class HostNumbersTest(unittest.TestCase):
    def assert_refused(self, code, err, name):
        self.assertEqual(code, 2, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith("dohost: "), err)
        self.assertIn(name, err)
        self.assertIn(" must be a ", err)

    def test_every_number_just_past_its_range_from_a_flag(self):
        for key, low, high, whole in HOST_NUMBERS:
            for value in past_the_limits(low, high, whole):
                with self.subTest(key=key, value=value):
                    code, err = run([f"{flag(key)}={value}"])
                    self.assert_refused(code, err, flag(key))

    def test_every_number_just_past_its_range_from_the_config(self):
        for key, low, high, whole in HOST_NUMBERS:
            for value in past_the_limits(low, high, whole):
                with self.subTest(key=key, value=value):
                    code, err = run([], config=f"{key} = {value}\n")
                    self.assert_refused(code, err, f"config: {key}")

    def test_the_values_of_the_issue(self):
        for args, config, name in [
            (["--idle-evict", "1e300"], None, "--idle-evict"),
            (["--idle-evict", "nan"], None, "--idle-evict"),
            (["--idle-evict", "abc"], None, "--idle-evict"),
            ([], "idle_evict = 1e300\n", "idle_evict"),
            ([], "idle_evict = inf\n", "idle_evict"),
            ([], "alarm_max_retries = 64\n", "alarm_max_retries"),
            ([], "alarm_max_retries = 9223372036854775807\n", "alarm_max_retries"),
            ([], "ping_interval = 65536\n", "ping_interval"),
            ([], 'ping_interval = "30"\n', "ping_interval"),
        ]:
            with self.subTest(args=args, config=config):
                code, err = run(args, config=config)
                self.assertEqual(code, 2, err)
                self.assertEqual(len(err.splitlines()), 1, err)
                self.assertIn(name, err)

    def test_values_at_the_limits_are_accepted(self):
        # Every number at its maximum from the config, then at its minimum from flags: the host
        # starts and serves, and stops cleanly.
        at_max = "".join(f"{key} = {high}\n" for key, _, high, _ in HOST_NUMBERS)
        at_min = [f"{flag(key)}={low}" for key, low, _, _ in HOST_NUMBERS]
        for args, config in [((), at_max), (at_min, None)]:
            with self.subTest(config=config is not None):
                with Host(apps=(), test_plugin=True, config=config, args=args) as host:
                    status, _, _ = host.http("GET", "testapp", "/o/limits/events")
                    self.assertEqual(status, 200)
                    self.assertEqual(host.stop(), 0, host.stderr())


class AppNumbersTest(unittest.TestCase):
    def test_every_app_number_just_past_its_range(self):
        for app, key, low, high, whole in APP_NUMBERS:
            for value in past_the_limits(low, high, whole):
                env_name = f"DOHOST_{app.upper()}_{key.upper()}"
                for source, kwargs in [("config", {"config": f"[apps.{app}]\n{key} = {value}\n"}),
                                       ("environment", {"env": {env_name: value}})]:
                    with self.subTest(app=app, key=key, value=value, source=source):
                        code, err = run([], apps_on=(app,), **kwargs)
                        self.assertEqual(code, 2, err)
                        self.assertEqual(len(err.splitlines()), 1, err)
                        self.assertIn(f"app {app}: {key} must be a ", err)


class OneLineErrorsTest(unittest.TestCase):
    """A refused value or key is quoted with its control characters escaped, so the error is one
    line whatever it holds (found by the config fuzz target)."""

    def test_values_and_keys_with_line_breaks_are_quoted(self):
        cases = [
            ('admin = """1ct = 10\nlog_lev"in?o"\ne-Ame"\n"""\n', 'expected HOST:PORT, got "1ct = 10\\nlog_lev\\"in?o\\"'),
            ('"bad\\nkey" = 1\n', 'unknown key "bad\\nkey"'),
            ('[apps."x\\ty"]\nlisten = "nowhere"\n', 'apps."x\\ty".listen'),
            ('idle_evict = "\\u0001"\n', None),
        ]
        for config, expected in cases:
            with self.subTest(config=config):
                code, err = run([], config=config)
                self.assertEqual(code, 2, err)
                self.assertEqual(len(err.splitlines()), 1, err)
                self.assertTrue(err.startswith("dohost: "), err)
                if expected:
                    self.assertIn(expected, err)

    def test_a_flag_value_with_a_line_break_is_quoted(self):
        code, err = run(["--idle-evict", "1\n2"])
        self.assertEqual(code, 2, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn('"1\\n2"', err)


if __name__ == "__main__":
    unittest.main()
