"""What `cmake --install` and `cpack -G DEB` ship, proven by using it.

StagingTest     installs the build into a staging prefix, checks the tree (programs, units,
                example configurations, docs), that each example lists every key its daemon's
                --help names, that the units agree with the examples and pass
                `systemd-analyze verify`, then runs the three daemons FROM THE STAGING PREFIX
                with the example configurations (changed only in paths, ports, URLs) against two
                emulated instances: initiate, accept, an incident and a comment each way.
PackageTest     `cpack -G DEB`: the package lists the programs, units and examples, carries the
                postinst, and its programs run from the unpacked tree.
ConfigErrorTest each configuration error (missing key, unreadable secret file, world-readable
                secret file, bad URL, unreachable broker, bad broker settings) ends the daemon
                at start with a non-zero status and ONE line on stderr naming the key and the
                file.

CTest runs each class (tests/install/CMakeLists.txt) with TWINSYNC_BUILD_DIR and
TWINSYNC_SOURCE_DIR set. Python 3, standard library only. TWINSYNC_INSTALL_KEEP=1 keeps the
temporary directories.
"""

import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

BUILD = os.environ.get("TWINSYNC_BUILD_DIR", "")
SOURCE = os.environ.get("TWINSYNC_SOURCE_DIR",
                        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
                            __file__)))))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(SOURCE, "scripts"))
import twinsync_harness as harness  # noqa: E402

DAEMONS = ("broker", "public", "private")
PROGRAMS = {d: "twinsync-" + d for d in DAEMONS}
HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "Restart=on-failure", "User=twinsync")


def install(prefix):
    """cmake --install of the build tree into prefix; returns the prefix."""
    harness.run(["cmake", "--install", BUILD, "--prefix", prefix])
    return prefix


def help_keys(program):
    """{(section, key)} of every configuration key `program --help` lists, as `section.key`
    (the three programs spell keys, and their flags --section.key, the same way)."""
    text = harness.run([program, "--help"]).stdout
    keys = set()
    for line in text.splitlines():
        key = re.match(r"^\s+(node|servicenow|broker)\.([a-z_]+)\s", line)
        if key:
            keys.add((key.group(1), key.group(2)))
    return keys


def ini_lines(path):
    """{(section, key): value} of every key line of an INI file, commented (#key = value) or
    not; a commented value is recorded with a leading '#'."""
    found, section = {}, None
    with open(path) as f:
        for line in f:
            header = re.match(r"^\s*\[([^\]]+)\]", line)
            entry = re.match(r"^\s*(#?)\s*([a-z_]+)\s*=\s*(.*?)\s*$", line)
            if header:
                section = header.group(1)
            elif entry and section:
                found[(section, entry.group(2))] = entry.group(1) + entry.group(3)
    return found


def unit_settings(path):
    """{key: [values]} of a systemd unit file."""
    settings = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"^([A-Za-z]+)=(.*)$", line.strip())
            if m:
                settings.setdefault(m.group(1), []).append(m.group(2))
    return settings


class Workdir(unittest.TestCase):
    """A temporary directory per class, removed unless TWINSYNC_INSTALL_KEEP is set."""

    @classmethod
    def setUpClass(cls):
        if not BUILD:
            raise unittest.SkipTest("TWINSYNC_BUILD_DIR is not set (CTest sets it)")
        cls.tmp = tempfile.mkdtemp(prefix="twinsync-install-")

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("TWINSYNC_INSTALL_KEEP"):
            print("kept", cls.tmp)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)


class StagingTest(Workdir):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.prefix = install(os.path.join(cls.tmp, "staging"))
        cls.bindir = os.path.join(cls.prefix, "bin")
        cls.examples = os.path.join(cls.prefix, "share", "doc", "twinsync", "examples")
        cls.units = os.path.join(cls.prefix, "lib", "systemd", "system")

    def test_tree_holds_programs_units_examples_docs(self):
        for daemon, program in PROGRAMS.items():
            self.assertTrue(os.access(os.path.join(self.bindir, program), os.X_OK), program)
            self.assertTrue(os.path.isfile(os.path.join(self.units, program + ".service")))
            self.assertTrue(os.path.isfile(os.path.join(self.examples, daemon + ".ini")))
        for doc in ("README.md", "operations.md", "configuration.md", "reliability.md"):
            self.assertTrue(os.path.isfile(os.path.join(self.prefix, "share", "doc", "twinsync",
                                                        doc)), doc)

    def test_programs_answer_help_and_version(self):
        versions = set()
        for program in PROGRAMS.values():
            path = os.path.join(self.bindir, program)
            shown = harness.run([path, "--help"])
            self.assertIn("usage", shown.stdout.lower(), program)
            self.assertIn("--config", shown.stdout, program)
            versions.add(harness.run([path, "version"]).stdout.split()[-1])
        self.assertEqual(len(versions), 1, f"the three programs disagree on the version: "
                                           f"{versions}")

    def test_examples_list_every_key(self):
        for daemon, program in PROGRAMS.items():
            keys = help_keys(os.path.join(self.bindir, program))
            self.assertGreater(len(keys), 10, f"{program} --help lists too few keys: {keys}")
            shown = ini_lines(os.path.join(self.examples, daemon + ".ini"))
            missing = sorted(f"{s}.{k}" for s, k in keys - set(shown))
            self.assertEqual(missing, [], f"{daemon}.ini does not show these keys of "
                                          f"{program} --help")
            unknown = sorted(f"{s}.{k}" for s, k in set(shown) - keys)
            self.assertEqual(unknown, [], f"{daemon}.ini shows keys {program} does not know")

    def test_units_match_examples(self):
        for daemon, program in PROGRAMS.items():
            unit = unit_settings(os.path.join(self.units, program + ".service"))
            config = f"/etc/twinsync/{daemon}.ini"
            self.assertEqual(unit["ExecStart"], [f"/usr/bin/{program} run --config {config}"])
            for setting in HARDENING:
                key, value = setting.split("=", 1)
                self.assertIn(value, unit.get(key, []), f"{program}.service lacks {setting}")
            state_dir = unit["StateDirectory"][0]
            shown = ini_lines(os.path.join(self.examples, daemon + ".ini"))
            section = "broker" if daemon == "broker" else "node"
            self.assertEqual(shown[(section, "state_dir")].lstrip("#"), "/var/lib/" + state_dir)
            if daemon != "broker":
                secret = shown[("servicenow", "password_file")]
                self.assertTrue(secret.startswith("/etc/twinsync/"), secret)

    def test_units_pass_systemd_analyze_verify(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze is not installed")
        # The units name /usr/bin; point them at the staging prefix (a path change only).
        for program in PROGRAMS.values():
            with open(os.path.join(self.units, program + ".service")) as f:
                text = f.read().replace("/usr/bin/", self.bindir + "/")
            copy = harness.write_file(os.path.join(self.tmp, program + ".service"), text, 0o644)
            checked = harness.run(["systemd-analyze", "verify", "--man=no", copy], check=False)
            self.assertEqual((checked.returncode, checked.stderr.strip()), (0, ""), program)
            security = harness.run(["systemd-analyze", "security", "--offline=yes", copy],
                                   check=False)
            lines = security.stdout.strip().splitlines()
            if security.returncode == 0 and lines:
                print(f"{program}.service: {lines[-1].strip()}", file=sys.stderr)

    def operations_doc(self):
        with open(os.path.join(self.prefix, "share", "doc", "twinsync", "operations.md")) as f:
            return f.read()

    def test_documented_alert_rules_load_in_prometheus(self):
        if not shutil.which("promtool"):
            self.skipTest("promtool is not installed")
        blocks = [b for b in re.findall(r"```yaml\n(.*?)```", self.operations_doc(), re.S)
                  if "groups:" in b]
        self.assertEqual(len(blocks), 1, "operations.md should hold one block of alert rules")
        rules = harness.write_file(os.path.join(self.tmp, "rules.yml"), blocks[0], 0o644)
        checked = harness.run(["promtool", "check", "rules", rules], check=False)
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
        self.assertIn("SUCCESS", checked.stdout)

    def documented_textfile_script(self):
        """The Python part of the textfile-collector script in operations.md."""
        found = re.search(r"python3 -c '\n(.*?)\n' >", self.operations_doc(), re.S)
        self.assertIsNotNone(found, "operations.md lost its textfile-collector script")
        return found.group(1)

    def test_daemons_from_staging_sync_an_incident_each_way(self):
        bins = harness.binaries(bindir=self.bindir)
        poll = {("node", "poll_interval_ms"): "500"}
        dep = harness.Deployment(bins, os.path.join(self.tmp, "run"),
                                 public=("acme", {"alice": ("alice-pw", "Alice Adams")}),
                                 private=("globex", {"bob": ("bob-pw", "Bob Brown")}),
                                 examples=self.examples,
                                 settings={"public": poll, "private": poll})
        os.makedirs(dep.dir, exist_ok=True)
        try:
            dep.start_all()
            conn = dep.connect()
            acme, globex = dep.instances["public"], dep.instances["private"]
            inc = acme.create("alice", short_description="Shipped and working", urgency="1")
            twin = harness.wait_for("the twin on globex", lambda: globex.find(
                "bob", "correlation_id=" + inc["sys_id"]), timeout=30)[0]
            self.assertEqual(twin["short_description"], "Shipped and working")
            self.assertEqual(twin["correlation_display"], inc["number"] + "@acme")
            globex.update("bob", twin["sys_id"], comments="Seen here, thanks")
            harness.wait_for("bob's comment on acme", lambda: [
                c for c in acme.comments("alice", inc["sys_id"])
                if c["value"] == "[globex] bob wrote:\nSeen here, thanks"], timeout=30)
            self.assertEqual(dep.cli_json("private", "connection", "show", conn)["status"],
                             "active")
            status = dep.cli("public", "status", "--json").stdout
            figures = harness.run([sys.executable, "-c", self.documented_textfile_script()],
                                  stdin=status).stdout
            self.assertIn("twinsync_node_link_ready 1\n", figures)
            self.assertIn(f'twinsync_node_connection_active{{connection="{conn}"}} 1\n', figures)
            self.assertIn(f'twinsync_node_twins{{connection="{conn}"}} 1\n', figures)
        except harness.HarnessError as e:
            tails = "".join(f"\n--- {d.name}.log\n{d.tail()}" for d in dep.daemons.values())
            self.fail(f"{e}{tails}")
        finally:
            statuses = dep.stop_all()
        self.assertEqual(statuses, {"broker": 0, "public": 0, "private": 0},
                         "exit status of each daemon on SIGTERM")


class PackageTest(Workdir):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not (shutil.which("cpack") and shutil.which("dpkg-deb")):
            raise unittest.SkipTest("cpack or dpkg-deb is not installed")
        harness.run(["cpack", "-G", "DEB", "--config", os.path.join(BUILD, "CPackConfig.cmake"),
                     "-B", cls.tmp], timeout=300)
        debs = glob.glob(os.path.join(cls.tmp, "*.deb"))
        assert len(debs) == 1, debs
        cls.deb = debs[0]

    def test_package_lists_programs_units_examples(self):
        listing = harness.run(["dpkg-deb", "-c", self.deb]).stdout
        for daemon, program in PROGRAMS.items():
            self.assertRegex(listing, rf"-rwxr-xr-x .* \./usr/bin/{program}\n")
            self.assertIn(f"./usr/lib/systemd/system/{program}.service\n", listing)
            self.assertIn(f"./usr/share/doc/twinsync/examples/{daemon}.ini\n", listing)
        self.assertIn("./usr/share/doc/twinsync/operations.md\n", listing)

    def test_package_control_creates_the_user(self):
        fields = harness.run(["dpkg-deb", "-f", self.deb, "Package", "Depends"]).stdout
        self.assertIn("Package: twinsync", fields)
        self.assertIn("adduser", fields)
        control = os.path.join(self.tmp, "control")
        harness.run(["dpkg-deb", "-e", self.deb, control])
        postinst = os.path.join(control, "postinst")
        self.assertTrue(os.access(postinst, os.X_OK), "postinst is not executable")
        harness.run(["sh", "-n", postinst])
        with open(postinst) as f:
            self.assertIn("adduser --system", f.read())

    def test_packaged_programs_run(self):
        root = os.path.join(self.tmp, "root")
        harness.run(["dpkg-deb", "-x", self.deb, root])
        for program in PROGRAMS.values():
            shown = harness.run([os.path.join(root, "usr", "bin", program), "version"])
            self.assertRegex(shown.stdout, r"\d+\.\d+\.\d+", program)


class ConfigErrorTest(Workdir):
    """Each case writes a config from the installed example with one thing wrong, runs the daemon
    and expects: exit status != 0 within 15 s, exactly one line on stderr, naming the key and the
    file (the config file, or for secret files the secret file). A broker that does not answer
    (down, or its name does not resolve yet) is not a configuration error for certain: the node
    may instead keep running, provided it logs a warning naming the endpoint it dials. Every
    case is tried and every failure reported together."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        prefix = install(os.path.join(cls.tmp, "staging"))
        cls.bins = harness.binaries(bindir=os.path.join(prefix, "bin"))
        cls.examples = os.path.join(prefix, "share", "doc", "twinsync", "examples")
        cls.secret = harness.write_file(os.path.join(cls.tmp, "good.password"), "pw\n")
        cls.open_secret = harness.write_file(os.path.join(cls.tmp, "open.password"), "pw\n",
                                             0o644)
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            cls.dead_port = s.getsockname()[1]

    def config(self, daemon, name, changes, drop=()):
        """The installed example with working paths, then `changes` ({(section, key): value})
        applied and the keys in `drop` removed; returns its path."""
        with open(os.path.join(self.examples, daemon + ".ini")) as f:
            text = f.read()
        state = os.path.join(self.tmp, name + "-state")
        base = ({("broker", "state_dir"): state, ("broker", "metrics_port"): "0",
                 ("broker", "endpoint"): "tcp://127.0.0.1:%d" % self.dead_port}
                if daemon == "broker" else
                {("node", "state_dir"): state, ("servicenow", "url"): "http://127.0.0.1:9",
                 ("servicenow", "password_file"): self.secret})
        if daemon == "public":
            base[("broker", "endpoint")] = "tcp://127.0.0.1:%d" % self.dead_port
        for (section, key), value in {**base, **changes}.items():
            text = harness.ini_set(text, section, key, value)
        for section, key in drop:
            text = re.sub(rf"(?m)^{key}\s*=.*\n", "", text)
        return harness.write_file(os.path.join(self.tmp, name + ".ini"), text)

    def attempt(self, daemon, config, must_name, may_run=None):
        """Runs the daemon; returns a description of what is wrong, or None when it behaved.
        With may_run (a text), a daemon still running after 15 s is also right if it has logged
        a warn or error line holding that text (a broker that is down may come back: the node
        waits for it, saying where it dials)."""
        proc = subprocess.Popen([self.bins[daemon], "run", "--config", config],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            warned = [line for line in err.splitlines()
                      if re.search(r"level=(warn|error)", line) and may_run and may_run in line]
            if warned:
                return None
            return (f"still running after 15 s without exiting"
                    + (f" or a warn line naming {may_run!r}" if may_run else "")
                    + f"; stderr: {err.strip()!r}")
        lines = err.strip().splitlines()
        problems = []
        if proc.returncode == 0:
            problems.append("exit status 0")
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines on stderr")
        missing = [word for word in must_name if not lines or word not in lines[-1]]
        if missing:
            problems.append(f"the line does not name {missing}")
        if not problems:
            return None
        return f"{'; '.join(problems)} (status {proc.returncode}); stderr: {err.strip()!r}"

    def test_each_error_is_one_line_naming_key_and_file(self):
        node_cases = [
            ("missing key", "public", {}, [("servicenow", "user")], ["servicenow.user", "{cfg}"]),
            ("missing key (private)", "private", {}, [("node", "name")], ["node.name", "{cfg}"]),
            ("unreadable secret file", "public",
             {("servicenow", "password_file"): os.path.join(self.tmp, "absent.password")}, [],
             ["password_file", os.path.join(self.tmp, "absent.password")]),
            ("secret file is a directory", "private",
             {("servicenow", "password_file"): self.tmp}, [], ["password_file", self.tmp]),
            ("world-readable secret file", "public",
             {("servicenow", "password_file"): self.open_secret}, [],
             ["password_file", self.open_secret]),
            ("bad URL", "public", {("servicenow", "url"): "htps:/acme service-now.com"}, [],
             ["url", "{cfg}"]),
            ("bad URL (private)", "private", {("servicenow", "url"): "acme"}, [],
             ["url", "{cfg}"]),
            ("broker endpoint not an endpoint", "public", {("broker", "endpoint"): "broker:5570"},
             [], ["endpoint", "{cfg}"]),
            ("broker host unknown", "public",
             {("broker", "endpoint"): "tcp://broker.invalid:5570"}, [], ["endpoint", "{cfg}"],
             "tcp://broker.invalid:5570"),
            ("broker not answering", "public", {}, [], ["endpoint", "{cfg}"],
             "tcp://127.0.0.1:%d" % self.dead_port),
            ("bad broker key", "public", {("broker", "public_key"): "not-a-key"}, [],
             ["public_key", "{cfg}"]),
        ]
        broker_cases = [
            ("unknown key", "broker", {}, [], ["colour", "{cfg}"]),
            ("bad value", "broker", {("broker", "metrics_port"): "99999"}, [],
             ["metrics_port", "{cfg}"]),
            ("bad public key", "broker", {("broker", "public_keys"): "abc"}, [],
             ["public_keys", "{cfg}"]),
            ("endpoint cannot be bound", "broker", {("broker", "endpoint"): "tcp://192.0.2.1:5570"},
             [], ["endpoint", "{cfg}"]),
            ("state_dir cannot be made", "broker", {("broker", "state_dir"): "/proc/twinsync"},
             [], ["state_dir", "{cfg}"]),
        ]
        failures = []
        for n, (case, daemon, changes, drop, must_name, *may_run) in enumerate(
                node_cases + broker_cases):
            cfg = self.config(daemon, f"case{n}", changes, drop)
            if case == "unknown key":
                with open(cfg, "a") as f:
                    f.write("colour = blue\n")
            wanted = [w.replace("{cfg}", cfg) for w in must_name]
            problem = self.attempt(daemon, cfg, wanted, *may_run)
            if problem:
                failures.append(f"twinsync-{daemon}, {case}: {problem}")
        missing = os.path.join(self.tmp, "absent.ini")
        for daemon in DAEMONS:
            problem = self.attempt(daemon, missing, [missing])
            if problem:
                failures.append(f"twinsync-{daemon}, config file missing: {problem}")
        self.assertEqual(failures, [], "\n" + "\n".join(failures))


if __name__ == "__main__":
    unittest.main()
