"""`meson install` into a temporary DESTDIR: the programs, libdohost with its headers and
dohost.pc, the systemd unit and the sample config. Then, outside the source tree, a user's own
class (install/greeter.cc) is built with `pkg-config dohost` as a host of its own and as a
plugin for the installed dohost, and both serve it; the sample config starts the installed
dohost; `systemd-analyze verify` accepts the unit."""
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import unittest

from harness import Host

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("DOHOST_BUILD_ROOT", "")
PREFIX = os.environ.get("DOHOST_PREFIX", "/usr/local")
LIBDIR = os.environ.get("DOHOST_LIBDIR", "lib")
SYSCONFDIR = os.environ.get("DOHOST_SYSCONFDIR", "etc")
CXX = shlex.split(os.environ.get("DOHOST_CXX", "c++"))
SANITIZE = os.environ.get("DOHOST_SANITIZE", "none")


def under(root, *parts):
    """`parts` joined under `root`, each made relative (a DESTDIR holds absolute paths)."""
    return os.path.join(root, *[p.lstrip("/") for p in parts])


class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not BUILD:
            raise unittest.SkipTest("run through meson test (needs DOHOST_BUILD_ROOT)")
        cls.tmp = tempfile.mkdtemp(prefix="dohost-install-")
        cls.destdir = os.path.join(cls.tmp, "root")
        r = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild", "--quiet",
                            "--destdir", cls.destdir], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise AssertionError(f"meson install failed: {r.stdout}\n{r.stderr}")
        cls.prefix = under(cls.destdir, PREFIX)
        sysconfdir = SYSCONFDIR if os.path.isabs(SYSCONFDIR) else os.path.join(PREFIX, SYSCONFDIR)
        cls.sysconfdir = under(cls.destdir, sysconfdir)
        libdir = LIBDIR if os.path.isabs(LIBDIR) else os.path.join(PREFIX, LIBDIR)
        cls.env = dict(os.environ, PKG_CONFIG_PATH=under(cls.destdir, libdir, "pkgconfig"),
                       PKG_CONFIG_SYSROOT_DIR=cls.destdir)
        cls.libdir = under(cls.destdir, libdir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def bin(self, name):
        return os.path.join(self.prefix, "bin", name)

    def pkg_config(self, *args):
        r = subprocess.run(["pkg-config", *args, "dohost"], capture_output=True, text=True,
                           env=self.env, check=True)
        return shlex.split(r.stdout)

    def compile(self, output, *flags):
        sanitize = [] if SANITIZE in ("", "none") else [f"-fsanitize={SANITIZE}"]
        cmd = [*CXX, "-std=c++20", "-O1", *sanitize, os.path.join(HERE, "install", "greeter.cc"),
               "-o", os.path.join(self.tmp, output), *flags]
        r = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=600,
                           cwd=self.tmp)
        self.assertEqual(r.returncode, 0, f"{shlex.join(cmd)}\n{r.stderr[-3000:]}")
        return os.path.join(self.tmp, output)

    def test_files_are_installed(self):
        for name in ("dohost", "doctl", "dohost-bench"):
            self.assertTrue(os.access(self.bin(name), os.X_OK), name)
        self.assertTrue(os.path.isfile(os.path.join(self.libdir, "libdohost.a")))
        include = os.path.join(self.prefix, "include", "dohost")
        for header in ("dohost.h", "host.h", "durable_object.h", "status.h", "sql_value.h"):
            self.assertTrue(os.path.isfile(os.path.join(include, header)), header)
        # Every header the installed ones include is installed too.
        for header in os.listdir(include):
            with open(os.path.join(include, header)) as f:
                for line in f:
                    if line.startswith('#include "dohost/'):
                        name = line.split('"')[1].split("/", 1)[1]
                        self.assertTrue(os.path.isfile(os.path.join(include, name)),
                                        f"{header} includes {name}")
        unit = under(self.prefix, "lib", "systemd", "system", "dohost.service")
        with open(unit) as f:
            text = f.read()
        self.assertIn(f"ExecStart={os.path.join(PREFIX, 'bin', 'dohost')} --config ", text)
        self.assertNotRegex(text, "@[a-z]+@")  # every placeholder was filled
        self.assertTrue(os.path.isfile(under(self.prefix, "lib", "sysusers.d", "dohost.conf")))
        self.assertTrue(os.path.isfile(os.path.join(self.sysconfdir, "dohost", "dohost.toml")))
        cflags = self.pkg_config("--cflags")
        self.assertIn(f"-I{os.path.join(self.prefix, 'include')}", cflags)
        self.assertIn("-ldohost", self.pkg_config("--libs"))

    def test_own_host_built_with_pkg_config(self):
        exe = self.compile("greeter-host", "-DGREETER_MAIN", *self.pkg_config("--cflags", "--libs"))
        with Host(apps=(), program=exe, extra_apps=("greeter",), bundled=False) as host:
            for n in (1, 2):
                status, _, body = host.http("GET", "greeter", "/greet/ann")
                self.assertEqual((status, body), (200, f"hello ann #{n}\n".encode()))
            host.restart()
            status, _, body = host.http("GET", "greeter", "/greet/ann")
            self.assertEqual((status, body), (200, b"hello ann #3\n"))
            status, _, _ = host.admin("GET", "/objects/Greeter/ann")
            self.assertEqual(status, 200)

    def test_plugin_built_with_pkg_config_runs_in_the_installed_dohost(self):
        plugin = self.compile("libgreeter.so", "-shared", "-fPIC", *self.pkg_config("--cflags"))
        with Host(apps=("broadcaster",), program=self.bin("dohost"), extra_apps=("greeter",),
                  args=["--plugin", plugin]) as host:
            status, _, body = host.http("GET", "greeter", "/greet/bob")
            self.assertEqual((status, body), (200, b"hello bob #1\n"))
            status, _, body = host.http("GET", "broadcaster", "/health")
            self.assertEqual(status, 200, body)

    def test_sample_config_starts_the_installed_dohost(self):
        config = os.path.join(self.sysconfdir, "dohost", "dohost.toml")
        # The flags (data folder, ports) win over the sample's values.
        with Host(program=self.bin("dohost"), args=["--config", config]) as host:
            status, _, _ = host.http("GET", "broadcaster", "/health")
            self.assertEqual(status, 200)
            self.assertEqual(host.stop(), 0)

    def test_systemd_unit_verifies(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("needs systemd-analyze (Debian package systemd; tools/test installs it)")
        with open(under(self.prefix, "lib", "systemd", "system", "dohost.service")) as f:
            text = f.read()
        # verify checks that ExecStart's program exists: point it at the installed copy.
        installed = os.path.join(PREFIX, "bin", "dohost")
        self.assertIn(f"ExecStart={installed} ", text)
        unit = os.path.join(self.tmp, "dohost.service")
        with open(unit, "w") as f:
            f.write(text.replace(f"ExecStart={installed} ", f"ExecStart={self.bin('dohost')} "))
        r = subprocess.run([analyze, "verify", "--man=no", unit], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))
        # The hardening, as systemd rates it (0 is the most locked down, 10 the least).
        r = subprocess.run([analyze, "security", "--offline=yes", unit], capture_output=True,
                           text=True, timeout=60)
        exposure = re.search(r"Overall exposure level for dohost.service: ([0-9.]+)", r.stdout)
        self.assertIsNotNone(exposure, r.stdout + r.stderr)
        self.assertLessEqual(float(exposure.group(1)), 2.5, r.stdout)
        for setting in ("User=dohost", "StateDirectory=dohost", "Restart=on-failure",
                        "KillSignal=SIGTERM", "ProtectSystem=strict", "NoNewPrivileges=yes"):
            self.assertIn(setting + "\n", text)

if __name__ == "__main__":
    unittest.main()
